/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * vmbus-shim's device node, /dev/vmbus_shim: the host side of the one TimeSync channel.
 *
 * write(2): one IC message as the host sends it (struct vmbuspipe_hdr, struct icmsg_hdr, then
 *           the negotiation or time sample); it is handed to hv_utils' channel callback at once.
 *           A message the shim does not accept fails EINVAL; with no driver on the channel,
 *           ENOTCONN.
 * read(2):  hv_utils' reply to the last message, once (EAGAIN when there is none).
 * ioctl:    the partition reference counter (100 ns units) hv_read_reference_counter() returns.
 */
#ifndef VMBUS_SHIM_UAPI_H
#define VMBUS_SHIM_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Reads the reference counter now. */
#define VMBUS_SHIM_REF_READ	_IOR('v', 0x01, __u64)
/*
 * Sets the counter's rate against the guest's CLOCK_MONOTONIC_RAW, in parts per billion
 * (|rate_ppb| <= 100000000), from now on: the host's rate, not the guest oscillator's. Answers
 * the new anchor: from it the counter reads
 *   anchor_ref + (raw - anchor_raw_ns) * (1e9 + rate_ppb) / 1e9 / 100
 * at CLOCK_MONOTONIC_RAW raw (the product split so it cannot overflow, each part truncated).
 */
struct vmbus_shim_rate {
	__s64 rate_ppb;
	__u64 anchor_raw_ns;
	__u64 anchor_ref;
};
#define VMBUS_SHIM_RATE_SET	_IOWR('v', 0x02, struct vmbus_shim_rate)
/* Moves the counter forward by this many 100 ns units (it never goes back). */
#define VMBUS_SHIM_REF_SHIFT	_IOW('v', 0x03, __u64)

#endif
