// SPDX-License-Identifier: GPL-2.0
/*
 * Sample tree: the vendor-neutral part of x86 KVM.
 *
 * Owns the VM-wide APICv inhibit word and the generic vCPU run loop that
 * calls into the vendor module through kvm_x86_ops and static calls.
 */
#include <linux/kvm_host.h>
#include <linux/kernel.h>
#include <linux/export.h>

#include "lapic.h"
#include "hyperv.h"

struct kvm_x86_ops kvm_x86_ops __read_mostly;

/* Module parameter: use APICv/AVIC if the hardware supports it. */
bool enable_apicv __read_mostly = true;
EXPORT_SYMBOL_GPL(enable_apicv);

#define KVM_X86_OP(func)						\
	DEFINE_STATIC_CALL_NULL(kvm_x86_##func, *kvm_x86_ops.func);
#include <asm/kvm-x86-ops.h>

static void kvm_ops_update(const struct kvm_x86_ops *ops)
{
	kvm_x86_ops = *ops;

#define KVM_X86_OP(func)						\
	static_call_update(kvm_x86_##func, kvm_x86_ops.func);
#include <asm/kvm-x86-ops.h>
}

int kvm_x86_vendor_init(const struct kvm_x86_ops *ops)
{
	kvm_ops_update(ops);
	return 0;
}
EXPORT_SYMBOL_GPL(kvm_x86_vendor_init);

/* Re-read the VM-wide inhibit state into this vCPU. */
void kvm_vcpu_update_apicv(struct kvm_vcpu *vcpu)
{
	struct kvm *kvm = vcpu->kvm;
	bool activate;

	down_read(&kvm->arch.apicv_update_lock);
	activate = enable_apicv && !READ_ONCE(kvm->arch.apicv_inhibit_reasons);
	if (vcpu->arch.apicv_active != activate) {
		vcpu->arch.apicv_active = activate;
		kvm_x86_call(refresh_apicv_exec_ctrl)(vcpu);
		/* Pending interrupts may need to be injected differently. */
		kvm_make_request(KVM_REQ_EVENT, vcpu);
	}
	up_read(&kvm->arch.apicv_update_lock);
}
EXPORT_SYMBOL_GPL(kvm_vcpu_update_apicv);

/*
 * Set or clear one inhibit reason.  The caller holds apicv_update_lock
 * for write.  Note that a reason is a single bit: it does not count how
 * many callers asked for it, so whoever clears it last wins.
 */
void __kvm_set_or_clear_apicv_inhibit(struct kvm *kvm,
				      enum kvm_apicv_inhibit reason, bool set)
{
	unsigned long old = kvm->arch.apicv_inhibit_reasons;
	unsigned long new = old;
	struct kvm_vcpu *vcpu;
	int i;

	/* Reasons the vendor code does not care about are ignored. */
	if (!(kvm_x86_ops.required_apicv_inhibits & BIT(reason)))
		return;

	if (set)
		new |= BIT(reason);
	else
		new &= ~BIT(reason);

	/*
	 * Only a transition between "no reasons" and "some reasons" changes
	 * the activation state; in that case every vCPU must reload it.
	 */
	if (!!old != !!new) {
		kvm_for_each_vcpu(i, vcpu, kvm)
			kvm_make_request(KVM_REQ_APICV_UPDATE, vcpu);
	}

	kvm->arch.apicv_inhibit_reasons = new;
}

void kvm_set_or_clear_apicv_inhibit(struct kvm *kvm,
				    enum kvm_apicv_inhibit reason, bool set)
{
	down_write(&kvm->arch.apicv_update_lock);
	__kvm_set_or_clear_apicv_inhibit(kvm, reason, set);
	up_write(&kvm->arch.apicv_update_lock);
}
EXPORT_SYMBOL_GPL(kvm_set_or_clear_apicv_inhibit);

/* VM-scope helper: @reason is forwarded unchanged from the caller. */
static void kvm_vm_update_inhibit(struct kvm *kvm,
				  enum kvm_apicv_inhibit reason, bool set)
{
	kvm_set_or_clear_apicv_inhibit(kvm, reason, set);
}

/*
 * In reinject mode the PIT needs to see EOIs of its interrupt, which
 * APICv would swallow.  The setting is VM-wide and a single ioctl owns
 * it, so a plain set/clear of the bit is sufficient.
 */
static int kvm_vm_ioctl_reinject(struct kvm *kvm,
				 struct kvm_reinject_control *control)
{
	bool reinject = !!control->pit_reinject;

	guard(mutex)(&kvm->lock);
	if (kvm->arch.pit_reinject != reinject) {
		kvm->arch.pit_reinject = reinject;
		kvm_vm_update_inhibit(kvm, APICV_INHIBIT_REASON_PIT_REINJ,
				      reinject);
	}
	return 0;
}

long kvm_arch_vm_ioctl(struct kvm *kvm, unsigned int ioctl, unsigned long arg)
{
	switch (ioctl) {
	case KVM_REINJECT_CONTROL:
		return kvm_vm_ioctl_reinject(kvm,
				(struct kvm_reinject_control *)arg);
	default:
		return -ENOTTY;
	}
}

int kvm_arch_init_vm(struct kvm *kvm, unsigned long type)
{
	if (type)
		return -EINVAL;

	init_rwsem(&kvm->arch.apicv_update_lock);
	mutex_init(&kvm->arch.apic_map_lock);
	atomic_set(&kvm->arch.vapics_in_nmi_mode, 0);
	kvm->arch.apicv_inhibit_reasons = 0;

	if (IS_ENABLED(CONFIG_KVM_HYPERV))
		kvm->arch.hyperv.synic_auto_eoi_used = 0;

	/* APICv stays off for the lifetime of the VM if disabled globally. */
	if (!enable_apicv)
		kvm_set_apicv_inhibit(kvm, APICV_INHIBIT_REASON_DISABLED);

	return kvm_x86_call(vm_init)(kvm);
}

/*
 * BLOCKIRQ is requested per vCPU, but the inhibit is VM-wide: recompute
 * it from every vCPU's debug flags while holding the lock, so the bit is
 * cleared only once no vCPU asks for it any more.
 */
static void kvm_arch_vcpu_guestdbg_update_apicv_inhibit(struct kvm *kvm)
{
	struct kvm_vcpu *vcpu;
	bool set = false;
	int i;

	down_write(&kvm->arch.apicv_update_lock);

	kvm_for_each_vcpu(i, vcpu, kvm) {
		if (vcpu->guest_debug & KVM_GUESTDBG_BLOCKIRQ) {
			set = true;
			break;
		}
	}
	__kvm_set_or_clear_apicv_inhibit(kvm, APICV_INHIBIT_REASON_BLOCKIRQ, set);

	up_write(&kvm->arch.apicv_update_lock);
}

int kvm_arch_vcpu_ioctl_set_guest_debug(struct kvm_vcpu *vcpu,
					struct kvm_guest_debug *dbg)
{
	if (dbg->control & ~KVM_GUESTDBG_VALID_MASK)
		return -EINVAL;

	if (dbg->control & KVM_GUESTDBG_ENABLE)
		vcpu->guest_debug = dbg->control;
	else
		vcpu->guest_debug = 0;

	kvm_arch_vcpu_guestdbg_update_apicv_inhibit(vcpu->kvm);
	return 0;
}

int kvm_set_msr_common(struct kvm_vcpu *vcpu, u32 msr, u64 data)
{
	if (kvm_hv_is_synic_msr(msr))
		return kvm_hv_set_msr(vcpu, msr, data);
	if (msr >= APIC_BASE_MSR && msr < APIC_BASE_MSR + 0x100)
		return kvm_x2apic_msr_write(vcpu, msr, data);
	return 1;
}
EXPORT_SYMBOL_GPL(kvm_set_msr_common);

static void kvm_check_and_inject_events(struct kvm_vcpu *vcpu)
{
	/* Re-inject an interrupt whose delivery was interrupted by an exit. */
	if (vcpu->arch.interrupt.injected) {
		kvm_x86_call(inject_irq)(vcpu, true);
		return;
	}

	if (kvm_cpu_has_injectable_intr(vcpu) &&
	    kvm_x86_call(interrupt_allowed)(vcpu, true)) {
		vcpu->arch.interrupt.injected = true;
		vcpu->arch.interrupt.soft = false;
		vcpu->arch.interrupt.nr = kvm_cpu_get_interrupt(vcpu);
		kvm_x86_call(inject_irq)(vcpu, false);
	}

	/*
	 * Something is still pending that cannot be delivered right now:
	 * ask the vendor code for an exit once the guest can take it.
	 */
	if (kvm_cpu_has_injectable_intr(vcpu))
		kvm_x86_call(enable_irq_window)(vcpu);
}

static int vcpu_enter_guest(struct kvm_vcpu *vcpu)
{
	if (kvm_check_request(KVM_REQ_APICV_UPDATE, vcpu))
		kvm_vcpu_update_apicv(vcpu);
	if (kvm_check_request(KVM_REQ_EVENT, vcpu))
		kvm_check_and_inject_events(vcpu);

	kvm_x86_call(vcpu_run)(vcpu);
	vcpu->stat.exits++;

	return kvm_x86_ops.handle_exit(vcpu);
}

int kvm_arch_vcpu_ioctl_run(struct kvm_vcpu *vcpu)
{
	int r;

	/* A positive return value means "keep running the guest". */
	do {
		r = vcpu_enter_guest(vcpu);
	} while (r > 0);
	return r;
}
