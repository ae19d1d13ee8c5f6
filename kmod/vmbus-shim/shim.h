/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vmbus-shim: a VMBus stand-in for testing the distribution's own hv_utils.ko off Hyper-V.
 * Shared state of the three compilation units (see vmbus_shim.c for the whole design).
 */
#ifndef VMBUS_SHIM_H
#define VMBUS_SHIM_H

#include <linux/types.h>
#include <linux/spinlock.h>
#include <linux/mutex.h>

struct vmbus_channel;

/* The largest IC message (hv_utils receives with a buffer of HV_HYP_PAGE_SIZE). */
#define SHIM_MSG_MAX 4096

struct shim_chan {
	struct mutex io;		/* one host message at a time; open/close */
	spinlock_t lock;		/* the fields below */
	void (*callback)(void *context);
	void *context;
	bool open;
	u8 in[SHIM_MSG_MAX];		/* the host's message, until hv_utils receives it */
	u32 in_len;
	u64 next_request;
	u8 out[SHIM_MSG_MAX];		/* hv_utils' last reply, until the host reads it */
	u32 out_len;
	u64 received;			/* messages hv_utils took / replied to */
	u64 replied;
};

/* The one channel (TimeSync) this shim offers, and its state. */
extern struct vmbus_channel *shim_channel;
extern struct shim_chan shim_chan_state;

#endif
