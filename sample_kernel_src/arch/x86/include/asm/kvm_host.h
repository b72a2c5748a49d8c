/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _ASM_X86_KVM_HOST_H
#define _ASM_X86_KVM_HOST_H

#include <linux/types.h>
#include <linux/bits.h>
#include <linux/atomic.h>
#include <linux/rwsem.h>
#include <linux/mutex.h>
#include <linux/static_call.h>

struct kvm;
struct kvm_vcpu;
struct kvm_lapic;
struct kvm_vcpu_hv;

#define KVM_MAX_VCPUS			64

/* Architecture specific vCPU requests, see kvm_make_request(). */
#define KVM_REQ_EVENT			4
#define KVM_REQ_APICV_UPDATE		5
#define KVM_REQ_NMI			6
#define KVM_REQ_HV_STIMER		7

/* Indices into vcpu->arch.regs[] */
enum kvm_reg {
	VCPU_REGS_RAX = 0,
	VCPU_REGS_RCX = 1,
	VCPU_REGS_RDX = 2,
	VCPU_REGS_RBX = 3,
	NR_VCPU_REGS = 16,
};

#define X86_EFLAGS_IF			(1UL << 9)

/* vcpu->arch.hflags */
#define HF_GUEST_MASK			(1 << 0)	/* running L2 */
#define HF_GIF_MASK			(1 << 1)

/*
 * Reasons for which APIC virtualization (APICv on Intel, AVIC on AMD)
 * must be turned off.  The bits live in a single VM-wide word; APICv is
 * active only while that word is zero.
 */
enum kvm_apicv_inhibit {
	/* disabled by the module parameter or the vendor code */
	APICV_INHIBIT_REASON_DISABLED,
	/* a vCPU uses Hyper-V SynIC auto-EOI vectors */
	APICV_INHIBIT_REASON_HYPERV,
	/* the VM has no in-kernel local APIC */
	APICV_INHIBIT_REASON_ABSENT,
	/* a vCPU is being debugged with interrupts blocked */
	APICV_INHIBIT_REASON_BLOCKIRQ,
	/* the PIT is in reinject mode and needs EOI notifications */
	APICV_INHIBIT_REASON_PIT_REINJ,
	/* an ExtINT is pending and an IRQ window was requested */
	APICV_INHIBIT_REASON_IRQWIN,
	/* the VM is an SEV guest */
	APICV_INHIBIT_REASON_SEV,
	/* the guest changed its APIC ID */
	APICV_INHIBIT_REASON_APIC_ID_MODIFIED,
	NR_APICV_INHIBIT_REASONS,
};

struct kvm_queued_interrupt {
	bool injected;
	bool soft;
	u8 nr;
};

struct kvm_vcpu_stat {
	u64 irq_window_exits;
	u64 halt_exits;
	u64 irq_injections;
	u64 exits;
};

struct kvm_vcpu_arch {
	unsigned long regs[NR_VCPU_REGS];
	u64 efer;
	u32 hflags;
	bool apicv_active;
	bool nmi_pending;
	/* ExtINT vector from the legacy PIC, or -1 if none is pending */
	int pending_extint;
	struct kvm_queued_interrupt interrupt;
	struct kvm_lapic *apic;
	struct kvm_vcpu_hv *hyperv;
};

/* VM-wide Hyper-V emulation state. */
struct kvm_hv {
	u64 hv_guest_os_id;
	u64 hv_hypercall;
	/* number of vCPUs with at least one auto-EOI SINT configured */
	int synic_auto_eoi_used;
};

struct kvm_arch {
	/*
	 * apicv_update_lock serializes changes to apicv_inhibit_reasons
	 * with vCPUs that refresh their APICv state from it.
	 */
	struct rw_semaphore apicv_update_lock;
	unsigned long apicv_inhibit_reasons;

	bool pit_reinject;
	atomic_t vapics_in_nmi_mode;

	struct mutex apic_map_lock;
	atomic_t apic_map_dirty;

#ifdef CONFIG_KVM_HYPERV
	struct kvm_hv hyperv;
#endif
};

/*
 * Vendor (VMX/SVM) callbacks.  Every member is also reachable through a
 * static call named kvm_x86_<member>, see kvm_x86_call().
 */
struct kvm_x86_ops {
	const char *name;

	int (*vm_init)(struct kvm *kvm);
	int (*vcpu_create)(struct kvm_vcpu *vcpu);
	void (*vcpu_run)(struct kvm_vcpu *vcpu);
	int (*handle_exit)(struct kvm_vcpu *vcpu);

	void (*inject_irq)(struct kvm_vcpu *vcpu, bool reinjected);
	int (*interrupt_allowed)(struct kvm_vcpu *vcpu, bool for_injection);
	void (*enable_irq_window)(struct kvm_vcpu *vcpu);

	void (*refresh_apicv_exec_ctrl)(struct kvm_vcpu *vcpu);
	unsigned long required_apicv_inhibits;
};

extern struct kvm_x86_ops kvm_x86_ops;
extern bool enable_apicv;

#define KVM_X86_OP(func)						\
	DECLARE_STATIC_CALL(kvm_x86_##func, *kvm_x86_ops.func);
#include <asm/kvm-x86-ops.h>

#define kvm_x86_call(func)	static_call(kvm_x86_##func)

int kvm_x86_vendor_init(const struct kvm_x86_ops *ops);

/*
 * Inhibit updates.  The double-underscore variant expects the caller to
 * hold apicv_update_lock for write; the plain one takes it.
 */
void __kvm_set_or_clear_apicv_inhibit(struct kvm *kvm,
				      enum kvm_apicv_inhibit reason, bool set);
void kvm_set_or_clear_apicv_inhibit(struct kvm *kvm,
				    enum kvm_apicv_inhibit reason, bool set);

static inline void kvm_set_apicv_inhibit(struct kvm *kvm,
					 enum kvm_apicv_inhibit reason)
{
	kvm_set_or_clear_apicv_inhibit(kvm, reason, true);
}

static inline void kvm_clear_apicv_inhibit(struct kvm *kvm,
					   enum kvm_apicv_inhibit reason)
{
	kvm_set_or_clear_apicv_inhibit(kvm, reason, false);
}

void kvm_vcpu_update_apicv(struct kvm_vcpu *vcpu);
int kvm_set_msr_common(struct kvm_vcpu *vcpu, u32 msr, u64 data);
int kvm_cpu_has_injectable_intr(struct kvm_vcpu *vcpu);
int kvm_cpu_get_interrupt(struct kvm_vcpu *vcpu);

#endif /* _ASM_X86_KVM_HOST_H */
