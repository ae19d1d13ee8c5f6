// SPDX-License-Identifier: GPL-2.0
/*
 * vmbus-shim: the IC version negotiation hv_utils asks of the VMBus driver, and the VMBus
 * protocol version it reads. Module build only: as a livepatch the kernel's own built-in
 * vmbus_prep_negotiate_resp runs.
 *
 * The includes are those of drivers/hv/channel_mgmt.c (see shim_channel.c for why).
 */
#include <linux/kernel.h>
#include <linux/interrupt.h>
#include <linux/sched.h>
#include <linux/wait.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/cpu.h>
#include <linux/hyperv.h>
#include <asm/mshyperv.h>
#include <linux/sched/isolation.h>

#ifdef SHIM_HV_PRIVATE
#include "hyperv_vmbus.h"
#endif

/* What a Windows Server 2019 or newer host negotiates. */
__u32 vmbus_proto_version = VERSION_WIN10_V5_3;
EXPORT_SYMBOL_GPL(vmbus_proto_version);

/* The first of @ours (in the driver's order of preference) that @offered holds. */
static bool shim_pick(const struct ic_version *offered, int n, const int *ours, int ours_n,
		      struct ic_version *picked)
{
	int i, j;

	for (i = 0; i < ours_n; i++) {
		u16 major = ours[i] >> 16, minor = ours[i] & 0xffff;

		for (j = 0; j < n; j++) {
			if (offered[j].major == major && offered[j].minor == minor) {
				picked->major = major;
				picked->minor = minor;
				return true;
			}
		}
	}
	return false;
}

/*
 * The reply to the host's negotiation, written over the request in @buf: one framework version
 * and one message version, the first of the driver's lists the host also offers (or none of
 * either when there is no common pair), and the pair in the two nego_ pointers.
 */
bool vmbus_prep_negotiate_resp(struct icmsg_hdr *icmsghdrp, u8 *buf, u32 buflen,
			       const int *fw_version, int fw_vercnt, const int *srv_version,
			       int srv_vercnt, int *nego_fw_version, int *nego_srv_version)
{
	struct icmsg_negotiate *neg;
	struct ic_version fw = { 0, 0 }, srv = { 0, 0 };
	u32 nfw, nmsg;
	bool ok = false;

	if (buflen < ICMSG_HDR + offsetof(struct icmsg_negotiate, reserved)) {
		pr_err_ratelimited("vmbus_shim: negotiation message too short (%u bytes)\n", buflen);
		return false;
	}
	icmsghdrp->icmsgsize = 0x10;
	neg = (struct icmsg_negotiate *)&buf[ICMSG_HDR];
	nfw = neg->icframe_vercnt;
	nmsg = neg->icmsg_vercnt;
	/* As the real bus does, a refused negotiation still reports the counts as its versions. */
	fw.major = nfw;
	srv.major = nmsg;
	if (nfw <= IC_VERSION_NEGOTIATION_MAX_VER_COUNT && nmsg <= IC_VERSION_NEGOTIATION_MAX_VER_COUNT &&
	    ICMSG_NEGOTIATE_PKT_SIZE(nfw, nmsg) <= buflen) {
		ok = shim_pick(neg->icversion_data, nfw, fw_version, fw_vercnt, &fw) &&
		     shim_pick(neg->icversion_data + nfw, nmsg, srv_version, srv_vercnt, &srv);
	} else {
		pr_err_ratelimited("vmbus_shim: negotiation with %u/%u versions refused\n", nfw, nmsg);
	}
	neg->icframe_vercnt = ok ? 1 : 0;
	neg->icmsg_vercnt = ok ? 1 : 0;
	if (nego_fw_version)
		*nego_fw_version = (fw.major << 16) | fw.minor;
	if (nego_srv_version)
		*nego_srv_version = (srv.major << 16) | srv.minor;
	neg->icversion_data[0] = fw;
	neg->icversion_data[1] = srv;
	return ok;
}
EXPORT_SYMBOL_GPL(vmbus_prep_negotiate_resp);
