// SPDX-License-Identifier: GPL-2.0
/*
 * vmbus-shim: the channel calls hv_utils makes (vmbus_open, vmbus_close, vmbus_recvpacket,
 * vmbus_sendpacket). There are no ring buffers: a host message waits in shim_chan_state.in until
 * the callback receives it, and the reply waits in .out until the host reads it.
 *
 * The includes are those of drivers/hv/channel.c, so that genksyms sees the same types and the
 * exported symbols carry the distribution's CRCs (a plain insmod of the signed hv_utils.ko).
 */
#include <linux/kernel.h>
#include <linux/sched.h>
#include <linux/wait.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/module.h>
#include <linux/hyperv.h>
#include <linux/uio.h>
#include <linux/interrupt.h>
#include <linux/set_memory.h>
#include <asm/page.h>
#include <asm/mshyperv.h>

#ifdef SHIM_HV_PRIVATE
#include "hyperv_vmbus.h"
#endif
#include "shim.h"
#include "shim_fn.h"

int SHIM_FN(vmbus_open)(struct vmbus_channel *newchannel, u32 send_ringbuffer_size,
			u32 recv_ringbuffer_size, void *userdata, u32 userdatalen,
			void (*onchannelcallback)(void *context), void *context)
{
	struct shim_chan *c = &shim_chan_state;
	unsigned long flags;
	int ret = 0;

	if (newchannel != shim_channel || !onchannelcallback)
		return -EINVAL;
	mutex_lock(&c->io);
	spin_lock_irqsave(&c->lock, flags);
	if (c->open) {
		ret = -EBUSY;
	} else {
		c->callback = onchannelcallback;
		c->context = context;
		c->in_len = 0;
		c->out_len = 0;
		c->open = true;
	}
	spin_unlock_irqrestore(&c->lock, flags);
	mutex_unlock(&c->io);
	if (!ret)
		pr_info("vmbus_shim: channel opened (ring sizes %u/%u, no rings: messages are handed over)\n",
			send_ringbuffer_size, recv_ringbuffer_size);
	return ret;
}
SHIM_EXPORT_GPL(vmbus_open);

void SHIM_FN(vmbus_close)(struct vmbus_channel *channel)
{
	struct shim_chan *c = &shim_chan_state;
	unsigned long flags;

	if (channel != shim_channel)
		return;
	/* Waits for a host message in flight: no callback runs after this returns. */
	mutex_lock(&c->io);
	spin_lock_irqsave(&c->lock, flags);
	c->open = false;
	c->callback = NULL;
	c->context = NULL;
	c->in_len = 0;
	spin_unlock_irqrestore(&c->lock, flags);
	mutex_unlock(&c->io);
	pr_info("vmbus_shim: channel closed\n");
}
SHIM_EXPORT_GPL(vmbus_close);

int SHIM_FN(vmbus_sendpacket)(struct vmbus_channel *channel, void *buffer, u32 bufferlen,
			      u64 requestid, enum vmbus_packet_type type, u32 flags)
{
	struct shim_chan *c = &shim_chan_state;
	unsigned long irqflags;

	if (channel != shim_channel || bufferlen > SHIM_MSG_MAX || type != VM_PKT_DATA_INBAND)
		return -EINVAL;
	spin_lock_irqsave(&c->lock, irqflags);
	memcpy(c->out, buffer, bufferlen);
	c->out_len = bufferlen;
	c->replied++;
	spin_unlock_irqrestore(&c->lock, irqflags);
	return 0;
}
SHIM_EXPORT(vmbus_sendpacket);

int SHIM_FN(vmbus_recvpacket)(struct vmbus_channel *channel, void *buffer, u32 bufferlen,
			      u32 *buffer_actual_len, u64 *requestid)
{
	struct shim_chan *c = &shim_chan_state;
	unsigned long flags;
	int ret = 0;

	if (channel != shim_channel)
		return -EINVAL;
	spin_lock_irqsave(&c->lock, flags);
	*buffer_actual_len = 0;
	if (c->in_len) {
		if (c->in_len > bufferlen) {
			/* The ring buffer's answer to a packet larger than the buffer. */
			*buffer_actual_len = c->in_len;
			ret = -ENOBUFS;
		} else {
			memcpy(buffer, c->in, c->in_len);
			*buffer_actual_len = c->in_len;
			*requestid = c->next_request++;
			c->received++;
		}
		c->in_len = 0;
	}
	spin_unlock_irqrestore(&c->lock, flags);
	return ret;
}
SHIM_EXPORT(vmbus_recvpacket);
