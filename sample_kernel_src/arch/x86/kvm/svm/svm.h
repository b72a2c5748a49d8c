/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __SVM_SVM_H
#define __SVM_SVM_H

#include <linux/kvm_host.h>
#include <linux/kernel.h>
#include <asm/svm.h>

/* Inhibit reasons AVIC has to honour. */
#define AVIC_REQUIRED_APICV_INHIBITS			\
	(BIT(APICV_INHIBIT_REASON_DISABLED) |		\
	 BIT(APICV_INHIBIT_REASON_HYPERV) |		\
	 BIT(APICV_INHIBIT_REASON_ABSENT) |		\
	 BIT(APICV_INHIBIT_REASON_BLOCKIRQ) |		\
	 BIT(APICV_INHIBIT_REASON_PIT_REINJ) |		\
	 BIT(APICV_INHIBIT_REASON_IRQWIN) |		\
	 BIT(APICV_INHIBIT_REASON_SEV) |		\
	 BIT(APICV_INHIBIT_REASON_APIC_ID_MODIFIED))

extern bool vgif;

struct vcpu_svm {
	struct kvm_vcpu vcpu;
	struct vmcb *vmcb;
	u64 next_rip;

	bool nmi_masked;
	bool guest_state_loaded;

	bool x2avic_msrs_intercepted;

	/* Guest GIF value, used when vGIF is not enabled */
	bool guest_gif;
};

static inline struct vcpu_svm *to_svm(struct kvm_vcpu *vcpu)
{
	return container_of(vcpu, struct vcpu_svm, vcpu);
}

/* True while the vCPU runs a nested (L2) guest. */
static inline bool is_guest_mode(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.hflags & HF_GUEST_MASK;
}

static inline void svm_set_intercept(struct vcpu_svm *svm, int bit)
{
	svm->vmcb->control.intercepts |= BIT_ULL(bit);
}

static inline void svm_clr_intercept(struct vcpu_svm *svm, int bit)
{
	svm->vmcb->control.intercepts &= ~BIT_ULL(bit);
}

static inline bool svm_is_intercept(struct vcpu_svm *svm, int bit)
{
	return svm->vmcb->control.intercepts & BIT_ULL(bit);
}

/* Global interrupt flag: tracked by hardware with vGIF, else by KVM. */
static inline bool gif_set(struct vcpu_svm *svm)
{
	if (vgif)
		return !!(svm->vmcb->control.int_ctl & V_GIF_MASK);
	return svm->guest_gif;
}

/* Low-level VMRUN, implemented in assembly outside of the sample tree. */
void __svm_vcpu_run(struct vcpu_svm *svm);

#endif /* __SVM_SVM_H */
