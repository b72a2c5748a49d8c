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
	/* CR accesses are emulated by the generic code in a real tree. */
	return 1;
}

static int intr_interception(struct kvm_vcpu *vcpu)
{
	/* The host interrupt has already been handled on VM-exit. */
	return 1;
}

static int interrupt_window_interception(struct kvm_vcpu *vcpu)
{
	kvm_make_request(KVM_REQ_EVENT, vcpu);
	svm_clear_vintr(to_svm(vcpu));

	/*
	 * The window this vCPU asked for is open; let AVIC run again.  The
	 * pending ExtINT is injected on the next entry via KVM_REQ_EVENT.
	 */
	kvm_clear_apicv_inhibit(vcpu->kvm, APICV_INHIBIT_REASON_IRQWIN);

	vcpu->stat.irq_window_exits++;
	return 1;
}

static int halt_interception(struct kvm_vcpu *vcpu)
{
	vcpu->stat.halt_exits++;
	/* Let userspace (or the generic blocking code) handle HLT. */
	return 0;
}

static int msr_interception(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	u32 msr = vcpu->arch.regs[VCPU_REGS_RCX];
	u64 data;

	/* exit_info_1 is 1 for WRMSR and 0 for RDMSR. */
	if (!svm->vmcb->control.exit_info_1)
		return 1;

	data = ((u64)vcpu->arch.regs[VCPU_REGS_RDX] << 32) |
	       (u32)vcpu->arch.regs[VCPU_REGS_RAX];
	if (kvm_set_msr_common(vcpu, msr, data))
		return 1;

	svm->vmcb->save.rip = svm->vmcb->control.next_rip;
	return 1;
}

static int (*const svm_exit_handlers[])(struct kvm_vcpu *vcpu) = {
	[SVM_EXIT_READ_CR0]	= cr_interception,
	[SVM_EXIT_WRITE_CR0]	= cr_interception,
	[SVM_EXIT_INTR]		= intr_interception,
	[SVM_EXIT_VINTR]	= interrupt_window_interception,
	[SVM_EXIT_HLT]		= halt_interception,
	[SVM_EXIT_MSR]		= msr_interception,
};

static int svm_handle_exit(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	u64 exit_code = svm->vmcb->control.exit_code;

	if (exit_code >= ARRAY_SIZE(svm_exit_handlers) ||
	    !svm_exit_handlers[exit_code])
		return -EINVAL;

	return svm_exit_handlers[exit_code](vcpu);
}

static void svm_vcpu_run(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);

	svm->vmcb->save.rax = vcpu->arch.regs[VCPU_REGS_RAX];
	__svm_vcpu_run(svm);
	vcpu->arch.regs[VCPU_REGS_RAX] = svm->vmcb->save.rax;
}

static int svm_vcpu_create(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);

	svm->nmi_masked = false;
	svm->guest_gif = true;
	svm->x2avic_msrs_intercepted = true;
	return 0;
}

static int svm_vm_init(struct kvm *kvm)
{
	return 0;
}

static struct kvm_x86_ops svm_x86_ops __read_mostly = {
	.name			= "kvm_amd",
	.vm_init		= svm_vm_init,
	.vcpu_create		= svm_vcpu_create,
	.vcpu_run		= svm_vcpu_run,
	.handle_exit		= svm_handle_exit,
	.inject_irq		= svm_inject_irq,
	.interrupt_allowed	= svm_interrupt_allowed,
	.enable_irq_window	= svm_enable_irq_window,
	.refresh_apicv_exec_ctrl = svm_refresh_apicv_exec_ctrl,
	.required_apicv_inhibits = AVIC_REQUIRED_APICV_INHIBITS,
};

int svm_init(void)
{
	return kvm_x86_vendor_init(&svm_x86_ops);
}
