// SPDX-License-Identifier: GPL-2.0
/*
 * vmbus-shim: a VMBus stand-in on which the distribution's own, unmodified hv_utils.ko runs off
 * Hyper-V, with a user-space program (phc-harness's guest agent) as the Hyper-V host.
 *
 * What it provides:
 *  - a bus named "vmbus" with one device, the TimeSync integration component (device type
 *    9527e630-d0ae-497b-adce-e80ab0175caf), which hv_utils' id table matches;
 *  - the VMBus calls hv_utils makes: driver (un)registration here, channel open/close/receive/
 *    send in shim_channel.c, the IC version negotiation in shim_mgmt.c (module build only);
 *  - hv_read_reference_counter, pointed at a 100 ns counter that runs on the guest's
 *    CLOCK_MONOTONIC_RAW at a rate the host sets (the host's rate, not the guest oscillator's)
 *    and can be moved forward;
 *  - /dev/vmbus_shim (uapi.h): the host writes one IC message, hv_utils' channel callback runs
 *    at once with bottom halves disabled (the real bus runs it from a tasklet), and the host
 *    reads the reply.
 *
 * What it does not exercise: VMBus ring buffers and their interrupts (SynIC), the tasklet's
 * timing, channel offers and rescinds, and the Hyper-V TSC page clocksource.
 *
 * Built as a module where VMBus is a module (its exports carry the distribution's symbol CRCs:
 * the three files include what drivers/hv/{vmbus_drv,channel,channel_mgmt}.c include), or with
 * SHIM_LIVEPATCH=1 as a livepatch where VMBus is built in. It refuses to load on Hyper-V.
 *
 * The includes are those of drivers/hv/vmbus_drv.c (see shim_channel.c for why).
 */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/device.h>
#include <linux/platform_device.h>
#include <linux/interrupt.h>
#include <linux/sysctl.h>
#include <linux/slab.h>
#include <linux/acpi.h>
#include <linux/completion.h>
#include <linux/hyperv.h>
#include <linux/kernel_stat.h>
#include <linux/of_address.h>
#include <linux/clockchips.h>
#include <linux/cpu.h>
#include <linux/sched/isolation.h>
#include <linux/sched/task_stack.h>
#include <linux/smpboot.h>
#include <linux/delay.h>
#include <linux/panic_notifier.h>
#include <linux/ptrace.h>
#include <linux/screen_info.h>
#include <linux/efi.h>
#include <linux/random.h>
#include <linux/kernel.h>
#include <linux/syscore_ops.h>
#include <linux/dma-map-ops.h>
#include <linux/pci.h>
#include <clocksource/hyperv_timer.h>
#include <asm/mshyperv.h>
#ifdef SHIM_HV_PRIVATE
#include "hyperv_vmbus.h"
#endif

#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/uaccess.h>
#include <linux/seqlock.h>
#include <linux/timekeeping.h>
#include <linux/math64.h>
#include <linux/version.h>
#include <asm/hypervisor.h>
#ifdef SHIM_LIVEPATCH
#include <linux/livepatch.h>
#endif

#include "shim.h"
#include "shim_fn.h"
#include "uapi.h"

#define SHIM_RATE_MAX_PPB 100000000LL

/* The driver core's constness by release: bus_register() takes a const bus from 6.4 (Debian
 * bookworm's 6.1 takes a plain one), and a bus's match() a const driver from 6.11. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
#define SHIM_BUS_CONST const
#else
#define SHIM_BUS_CONST
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
#define SHIM_MATCH_CONST const
#else
#define SHIM_MATCH_CONST
#endif

struct vmbus_channel *shim_channel;
struct shim_chan shim_chan_state;

static struct device *shim_root;
static struct hv_device *shim_dev;
static u64 (*shim_saved_refcounter)(void);

/* The reference counter: ref = anchor_ref + (raw - anchor_raw) * (1 + rate_ppb / 1e9) / 100. */
static struct {
	seqlock_t lock;
	u64 anchor_raw_ns;
	u64 anchor_ref;
	s64 rate_ppb;
} shim_ref;

static u64 shim_ref_at(u64 raw_ns)
{
	u64 d = raw_ns - shim_ref.anchor_raw_ns;
	s64 adj;

	/* d * rate / 1e9 without overflow: d up to years, |rate| <= 1e8. */
	adj = (s64)div_u64(d, NSEC_PER_SEC) * shim_ref.rate_ppb +
	      div_s64((s64)(d % NSEC_PER_SEC) * shim_ref.rate_ppb, NSEC_PER_SEC);
	return shim_ref.anchor_ref + div_u64(d + adj, 100);
}

static u64 shim_read_reference_counter(void)
{
	unsigned int seq;
	u64 ref;

	do {
		seq = read_seqbegin(&shim_ref.lock);
		ref = shim_ref_at(ktime_get_raw_ns());
	} while (read_seqretry(&shim_ref.lock, seq));
	return ref;
}

/* ---- the bus ---------------------------------------------------------------------------- */

static const struct hv_vmbus_device_id *shim_id(const struct hv_driver *drv,
						const struct hv_device *dev)
{
	const struct hv_vmbus_device_id *id;

	for (id = drv->id_table; id && !guid_is_null(&id->guid); id++)
		if (guid_equal(&id->guid, &dev->dev_type))
			return id;
	return NULL;
}

static int shim_match(struct device *dev, SHIM_MATCH_CONST struct device_driver *drv)
{
	const struct hv_driver *hv = container_of(drv, struct hv_driver, driver);

	return shim_id(hv, device_to_hv_device(dev)) != NULL;
}

static int shim_bus_probe(struct device *dev)
{
	struct hv_driver *hv = drv_to_hv_drv(dev->driver);
	struct hv_device *hdev = device_to_hv_device(dev);
	const struct hv_vmbus_device_id *id = shim_id(hv, hdev);

	if (!id || !hv->probe)
		return -ENODEV;
	return hv->probe(hdev, id);
}

static void shim_bus_remove(struct device *dev)
{
	struct hv_driver *hv = drv_to_hv_drv(dev->driver);

	if (hv->remove)
		hv->remove(device_to_hv_device(dev));
}

static SHIM_BUS_CONST struct bus_type shim_bus = {
	.name = "vmbus",
	.match = shim_match,
	.probe = shim_bus_probe,
	.remove = shim_bus_remove,
};

int SHIM_FN(__vmbus_driver_register)(struct hv_driver *hv_driver, struct module *owner,
				     const char *mod_name)
{
	pr_info("vmbus_shim: registering driver %s\n", hv_driver->name);
	hv_driver->driver.name = hv_driver->name;
	hv_driver->driver.owner = owner;
	hv_driver->driver.mod_name = mod_name;
	hv_driver->driver.bus = &shim_bus;
	spin_lock_init(&hv_driver->dynids.lock);
	INIT_LIST_HEAD(&hv_driver->dynids.list);
	return driver_register(&hv_driver->driver);
}
SHIM_EXPORT_GPL(__vmbus_driver_register);

void SHIM_FN(vmbus_driver_unregister)(struct hv_driver *hv_driver)
{
	pr_info("vmbus_shim: unregistering driver %s\n", hv_driver->name);
	driver_unregister(&hv_driver->driver);
}
SHIM_EXPORT_GPL(vmbus_driver_unregister);

static void shim_dev_release(struct device *dev)
{
	struct hv_device *hdev = device_to_hv_device(dev);

	kfree(hdev->channel);
	kfree(hdev);
}

/* ---- /dev/vmbus_shim ---------------------------------------------------------------------- */

/* Whether @m (@len bytes) is a host-to-guest TimeSync message this shim hands on. */
static bool shim_msg_ok(const u8 *m, size_t len)
{
	const struct icmsg_hdr *h;
	const struct icmsg_negotiate *neg;

	if (len < ICMSG_HDR || len > SHIM_MSG_MAX)
		return false;
	h = (const struct icmsg_hdr *)&m[sizeof(struct vmbuspipe_hdr)];
	if ((h->icflags & (ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_REQUEST)) !=
	    (ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_REQUEST) || (h->icflags & ICMSGHDRFLAG_RESPONSE))
		return false;
	switch (h->icmsgtype) {
	case ICMSGTYPE_NEGOTIATE:
		if (len < ICMSG_HDR + sizeof(*neg))
			return false;
		neg = (const struct icmsg_negotiate *)&m[ICMSG_HDR];
		/* Room for the two versions of the reply, and no more than the protocol allows. */
		return neg->icframe_vercnt >= 1 && neg->icmsg_vercnt >= 1 &&
		       neg->icframe_vercnt <= IC_VERSION_NEGOTIATION_MAX_VER_COUNT &&
		       neg->icmsg_vercnt <= IC_VERSION_NEGOTIATION_MAX_VER_COUNT &&
		       len == ICMSG_NEGOTIATE_PKT_SIZE(neg->icframe_vercnt, neg->icmsg_vercnt);
	case ICMSGTYPE_TIMESYNC:
		return len == ICMSG_HDR + sizeof(struct ictimesync_ref_data) ||
		       len == ICMSG_HDR + sizeof(struct ictimesync_data);
	default:
		return false;
	}
}

static ssize_t shim_write(struct file *f, const char __user *buf, size_t len, loff_t *off)
{
	struct shim_chan *c = &shim_chan_state;
	void (*cb)(void *);
	void *ctx;
	unsigned long flags;
	u8 *m;
	ssize_t ret;

	if (len < ICMSG_HDR || len > SHIM_MSG_MAX)
		return -EINVAL;
	m = memdup_user(buf, len);
	if (IS_ERR(m))
		return PTR_ERR(m);
	if (!shim_msg_ok(m, len)) {
		kfree(m);
		return -EINVAL;
	}
	mutex_lock(&c->io);
	spin_lock_irqsave(&c->lock, flags);
	cb = c->open ? c->callback : NULL;
	ctx = c->context;
	if (cb) {
		memcpy(c->in, m, len);
		c->in_len = len;
		c->out_len = 0;
	}
	spin_unlock_irqrestore(&c->lock, flags);
	kfree(m);
	if (!cb) {
		ret = -ENOTCONN;
	} else {
		local_bh_disable();
		cb(ctx);
		local_bh_enable();
		ret = len;
	}
	mutex_unlock(&c->io);
	return ret;
}

static ssize_t shim_read(struct file *f, char __user *buf, size_t len, loff_t *off)
{
	struct shim_chan *c = &shim_chan_state;
	u8 *out;
	u32 n;
	unsigned long flags;

	out = kmalloc(SHIM_MSG_MAX, GFP_KERNEL);
	if (!out)
		return -ENOMEM;
	spin_lock_irqsave(&c->lock, flags);
	n = c->out_len;
	if (n && len >= n) {
		memcpy(out, c->out, n);
		c->out_len = 0;
	}
	spin_unlock_irqrestore(&c->lock, flags);
	if (!n) {
		kfree(out);
		return -EAGAIN;
	}
	if (len < n) {
		kfree(out);
		return -EMSGSIZE;
	}
	if (copy_to_user(buf, out, n)) {
		kfree(out);
		return -EFAULT;
	}
	kfree(out);
	return n;
}

static long shim_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct vmbus_shim_rate r;
	u64 v, raw;

	switch (cmd) {
	case VMBUS_SHIM_REF_READ:
		v = shim_read_reference_counter();
		return copy_to_user((void __user *)arg, &v, sizeof(v)) ? -EFAULT : 0;
	case VMBUS_SHIM_RATE_SET:
		if (copy_from_user(&r, (void __user *)arg, sizeof(r)))
			return -EFAULT;
		if (r.rate_ppb < -SHIM_RATE_MAX_PPB || r.rate_ppb > SHIM_RATE_MAX_PPB)
			return -ERANGE;
		write_seqlock_irq(&shim_ref.lock);
		raw = ktime_get_raw_ns();
		shim_ref.anchor_ref = shim_ref_at(raw);
		shim_ref.anchor_raw_ns = raw;
		shim_ref.rate_ppb = r.rate_ppb;
		r.anchor_raw_ns = shim_ref.anchor_raw_ns;
		r.anchor_ref = shim_ref.anchor_ref;
		write_sequnlock_irq(&shim_ref.lock);
		return copy_to_user((void __user *)arg, &r, sizeof(r)) ? -EFAULT : 0;
	case VMBUS_SHIM_REF_SHIFT:
		if (copy_from_user(&v, (void __user *)arg, sizeof(v)))
			return -EFAULT;
		/* At most about 292 years, so the counter cannot wrap. */
		if (v > (1ULL << 56))
			return -ERANGE;
		write_seqlock_irq(&shim_ref.lock);
		shim_ref.anchor_ref += v;
		write_sequnlock_irq(&shim_ref.lock);
		return 0;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations shim_fops = {
	.owner = THIS_MODULE,
	.write = shim_write,
	.read = shim_read,
	.unlocked_ioctl = shim_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice shim_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "vmbus_shim",
	.fops = &shim_fops,
	.mode = 0600,
};

/* ---- livepatch (VMBus built in) ---------------------------------------------------------- */

#ifdef SHIM_LIVEPATCH
static struct klp_func shim_funcs[] = {
	{ .old_name = "__vmbus_driver_register", .new_func = shim___vmbus_driver_register },
	{ .old_name = "vmbus_driver_unregister", .new_func = shim_vmbus_driver_unregister },
	{ .old_name = "vmbus_open", .new_func = shim_vmbus_open },
	{ .old_name = "vmbus_close", .new_func = shim_vmbus_close },
	{ .old_name = "vmbus_recvpacket", .new_func = shim_vmbus_recvpacket },
	{ .old_name = "vmbus_sendpacket", .new_func = shim_vmbus_sendpacket },
	{}
};

static struct klp_object shim_objs[] = {
	{ .funcs = shim_funcs },	/* vmlinux */
	{}
};

static struct klp_patch shim_patch = {
	.mod = THIS_MODULE,
	.objs = shim_objs,
};
#endif

/* ---- load and unload ------------------------------------------------------------------------ */

static int __init shim_init(void)
{
	/* 9527e630-d0ae-497b-adce-e80ab0175caf: the TimeSync integration component. */
	static const struct hv_vmbus_device_id ts = { HV_TS_GUID };
	/* The instance: an arbitrary, fixed GUID (phc-harness's own). */
	static const guid_t inst = GUID_INIT(0x70686373, 0x6869, 0x6d00, 0x80, 0x00, 0x00, 0x00,
					     0x00, 0x00, 0x00, 0x01);
	struct vmbus_channel *chan;
	int ret;

	if (hypervisor_is_type(X86_HYPER_MS_HYPERV)) {
		pr_err("vmbus_shim: this is a Hyper-V guest; the real VMBus serves it, not this shim\n");
		return -ENODEV;
	}
	/*
	 * hv_read_reference_counter points at the MSR read (__hv_read_ref_counter) until a Hyper-V
	 * clocksource sets it; off Hyper-V nothing calls it but hv_utils. Restored on unload.
	 */
	mutex_init(&shim_chan_state.io);
	spin_lock_init(&shim_chan_state.lock);
	seqlock_init(&shim_ref.lock);
	shim_ref.anchor_raw_ns = ktime_get_raw_ns();
	/* Hyper-V's counter starts near 0 when the partition starts; so does the guest's raw clock. */
	shim_ref.anchor_ref = div_u64(shim_ref.anchor_raw_ns, 100);
	shim_ref.rate_ppb = 0;

	ret = bus_register(&shim_bus);
	if (ret) {
		pr_err("vmbus_shim: cannot register bus vmbus: %d\n", ret);
		return ret;
	}
	shim_root = root_device_register("vmbus_shim");
	if (IS_ERR(shim_root)) {
		ret = PTR_ERR(shim_root);
		goto err_bus;
	}
	chan = kzalloc(sizeof(*chan), GFP_KERNEL);
	shim_dev = kzalloc(sizeof(*shim_dev), GFP_KERNEL);
	if (!chan || !shim_dev) {
		kfree(chan);
		kfree(shim_dev);
		ret = -ENOMEM;
		goto err_root;
	}
	shim_channel = chan;
	shim_dev->channel = chan;
	shim_dev->dev_type = ts.guid;
	shim_dev->dev_instance = inst;
	shim_dev->device.bus = &shim_bus;
	shim_dev->device.parent = shim_root;
	shim_dev->device.release = shim_dev_release;
	dev_set_name(&shim_dev->device, "%pUl", &inst);

	ret = misc_register(&shim_misc);
	if (ret) {
		kfree(chan);
		kfree(shim_dev);
		goto err_root;
	}
	shim_saved_refcounter = hv_read_reference_counter;
	hv_read_reference_counter = shim_read_reference_counter;
#ifdef SHIM_LIVEPATCH
	vmbus_proto_version = VERSION_WIN10_V5_3;
	ret = klp_enable_patch(&shim_patch);
	if (ret) {
		pr_err("vmbus_shim: livepatch failed: %d\n", ret);
		goto err_misc;
	}
#endif
	ret = device_register(&shim_dev->device);
	if (ret) {
		put_device(&shim_dev->device);
		shim_dev = NULL;
		goto err_misc;
	}
	pr_info("vmbus_shim: TimeSync channel offered (%s); reference counter at %llu\n",
		IS_ENABLED(SHIM_LIVEPATCH_ON) ? "livepatch" : "module", shim_read_reference_counter());
	return 0;

err_misc:
	hv_read_reference_counter = shim_saved_refcounter;
	misc_deregister(&shim_misc);
	if (shim_dev) {
		kfree(chan);
		kfree(shim_dev);
	}
err_root:
	root_device_unregister(shim_root);
err_bus:
	bus_unregister(&shim_bus);
	return ret;
}

static void __exit shim_exit(void)
{
	device_unregister(&shim_dev->device);
	misc_deregister(&shim_misc);
	hv_read_reference_counter = shim_saved_refcounter;
	root_device_unregister(shim_root);
	bus_unregister(&shim_bus);
	pr_info("vmbus_shim: unloaded\n");
}

module_init(shim_init);
module_exit(shim_exit);

MODULE_DESCRIPTION("VMBus stand-in for testing hv_utils' TimeSync off Hyper-V (phc-harness)");
MODULE_LICENSE("GPL");
#ifdef SHIM_LIVEPATCH
MODULE_INFO(livepatch, "Y");
#endif
