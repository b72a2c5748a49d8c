// SPDX-License-Identifier: GPL-2.0
/*
 * Sample tree: AMD SVM vendor module, trimmed down to interrupt window
 * handling and the exit dispatch that reaches it.
 */
#include <linux/kvm_host.h>
#include <linux/kernel.h>
#include <asm/svm.h>

#include "svm.h"

/* Module parameter: use the hardware virtual GIF if available. */
bool vgif = true;

static void svm_set_vintr(struct vcpu_svm *svm)
{
	struct vmcb_control_area *control = &svm->vmcb->control;

	/*
	 * Request a virtual interrupt that is never actually delivered:
	 * the VINTR intercept fires as soon as the guest could take it,
	 * which is exactly the "IRQ window is open" event KVM wants.
	 */
	control->int_vector = 0;
	control->int_ctl &= ~V_INTR_PRIO_MASK;
	control->int_ctl |= V_IRQ_MASK | V_IGN_TPR_MASK |
			    (0xf << V_INTR_PRIO_SHIFT);
	svm_set_intercept(svm, INTERCEPT_VINTR);
}

static void svm_clear_vintr(struct vcpu_svm *svm)
{
	svm_clr_intercept(svm, INTERCEPT_VINTR);
	svm->vmcb->control.int_ctl &= ~(V_IRQ_MASK | V_INTR_PRIO_MASK |
					 V_IGN_TPR_MASK);
}

static void svm_inject_irq(struct kvm_vcpu *vcpu, bool reinjected)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	u32 type = SVM_EVTINJ_TYPE_INTR;

	vcpu->stat.irq_injections++;
	svm->vmcb->control.event_inj = vcpu->arch.interrupt.nr |
				       SVM_EVTINJ_VALID | type;
}

static int svm_interrupt_allowed(struct kvm_vcpu *vcpu, bool for_injection)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	struct vmcb *vmcb = svm->vmcb;

	if (!gif_set(svm))
		return 0;
	if (vmcb->control.int_state & SVM_INTERRUPT_SHADOW_MASK)
		return 0;
	return !!(vmcb->save.rflags & X86_EFLAGS_IF);
}

static void svm_enable_irq_window(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);

	/*
	 * With vGIF the hardware holds the VINTR request until GIF is set,
	 * so it can be armed right away.  Without vGIF, KVM emulates GIF
	 * and an STGI intercept will re-evaluate pending events later.
	 */
	if (vgif || gif_set(svm)) {
		/*
		 * With AVIC enabled an IRQ window is only needed for an
		 * ExtINT, which cannot be delivered through AVIC.  V_IRQ is
		 * ignored while AVIC is on, so AVIC has to be inhibited for
		 * the VINTR intercept to fire at all.
		 *
		 * A nested (L2) guest never runs with AVIC, so there is no
		 * need to inhibit it VM-wide in that case.
		 */
		if (!is_guest_mode(vcpu))
			kvm_set_apicv_inhibit(vcpu->kvm, APICV_INHIBIT_REASON_IRQWIN);

		svm_set_vintr(svm);
	}
}

static void svm_refresh_apicv_exec_ctrl(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);

	if (vcpu->arch.apicv_active)
		svm->vmcb->control.int_ctl |= AVIC_ENABLE_MASK;
	else
		svm->vmcb->control.int_ctl &= ~AVIC_ENABLE_MASK;
}

static int cr_interception(struct kvm_vcpu *vcpu)
{
	/* CR accesses are emulated by the generic code in a 