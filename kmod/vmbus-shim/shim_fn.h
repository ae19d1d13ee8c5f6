/* SPDX-License-Identifier: GPL-2.0 */
/*
 * As a module (Debian 6.12, CONFIG_HYPERV=m) the shim exports the VMBus functions under their own
 * names. As a livepatch (Debian 7.2, VMBus built in) the same code is compiled as shim_<name> and
 * replaces the built-in functions through klp.
 */
#ifndef VMBUS_SHIM_FN_H
#define VMBUS_SHIM_FN_H

#ifdef SHIM_LIVEPATCH
#include <linux/hyperv.h>

#define SHIM_FN(name) shim_##name
#define SHIM_EXPORT(name)
#define SHIM_EXPORT_GPL(name)

/* The replacements (shim_bus.c, shim_channel.c); klp_func in shim_bus.c names all six. */
int shim___vmbus_driver_register(struct hv_driver *hv_driver, struct module *owner,
				 const char *mod_name);
void shim_vmbus_driver_unregister(struct hv_driver *hv_driver);
int shim_vmbus_open(struct vmbus_channel *newchannel, u32 send_ringbuffer_size,
		    u32 recv_ringbuffer_size, void *userdata, u32 userdatalen,
		    void (*onchannelcallback)(void *context), void *context);
void shim_vmbus_close(struct vmbus_channel *channel);
int shim_vmbus_sendpacket(struct vmbus_channel *channel, void *buffer, u32 bufferlen,
			  u64 requestid, enum vmbus_packet_type type, u32 flags);
int shim_vmbus_recvpacket(struct vmbus_channel *channel, void *buffer, u32 bufferlen,
			  u32 *buffer_actual_len, u64 *requestid);
#else
#define SHIM_FN(name) name
#define SHIM_EXPORT(name) EXPORT_SYMBOL(name)
#define SHIM_EXPORT_GPL(name) EXPORT_SYMBOL_GPL(name)
#endif

#endif
