/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _UAPI_LINUX_KVM_H
#define _UAPI_LINUX_KVM_H

#include <linux/types.h>

/*
 * The slice of the KVM user ABI used by the sample tree.  Ioctl numbers
 * are plain constants; nothing here is meant to match a real ABI.
 */
#define KVM_CREATE_IRQCHIP		0xae60
#define KVM_REINJECT_CONTROL		0xae71
#define KVM_SET_GUEST_DEBUG		0xae9b
#define KVM_RUN				0xae80

/* for KVM_REINJECT_CONTROL */
struct kvm_reinject_control {
	__u8 pit_reinject;
	__u8 reserved[31];
};

/* for KVM_SET_GUEST_DEBUG */
#define KVM_GUESTDBG_ENABLE		0x00000001
#define KVM_GUESTDBG_SINGLESTEP		0x00000002
#define KVM_GUESTDBG_USE_SW_BP		0x00010000
#define KVM_GUESTDBG_USE_HW_BP		0x00020000
#define KVM_GUESTDBG_BLOCKIRQ		0x00100000

#define KVM_GUESTDBG_VALID_MASK						\
	(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP |		\
	 KVM_GUESTDBG_USE_SW_BP | KVM_GUESTDBG_USE_HW_BP |		\
	 KVM_GUESTDBG_BLOCKIRQ)

struct kvm_guest_debug {
	__u32 control;
	__u32 pad;
	__u64 debugreg[8];
};

#endif /* _UAPI_LINUX_KVM_H */
