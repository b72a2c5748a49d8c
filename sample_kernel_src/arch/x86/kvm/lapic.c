// SPDX-License-Identifier: GPL-2.0
/*
 * Sample tree: local APIC emulation, reduced to the register writes that
 * matter for VM-wide bookkeeping.
 */
#include <linux/kvm_host.h>
#include <linux/kernel.h>
#include <linux/atomic.h>

#include "lapic.h"

#define APIC_VERSION		0x14
#define APIC_LVT_NUM		6

static inline bool apic_lvt_nmi_mode(u32 lvt_val)
{
	return (lvt_val & (APIC_MODE_MASK | APIC_LVT_MASKED)) == APIC_DM_NMI;
}

/*
 * Track whether this APIC uses LVT0 in NMI mode, e.g. for the guest's NMI
 * watchdog.  The VM-wide vapics_in_nmi_mode count is only touched when
 * this APIC's own state flips, so each vCPU holds at most one reference
 * and the count cannot be driven below zero by repeated writes.
 */
static void apic_manage_nmi_watchdog(struct kvm_lapic *apic, u32 lvt0_val)
{
	bool lvt0_in_nmi_mode = apic_lvt_nmi_mode(lvt0_val);

	if (apic->lvt0_in_nmi_mode != lvt0_in_nmi_mode) {
		apic->lvt0_in_nmi_mode = lvt0_in_nmi_mode;
		if (lvt0_in_nmi_mode)
			atomic_inc(&apic->vcpu->kvm->arch.vapics_in_nmi_mode);
		else
			atomic_dec(&apic->vcpu->kvm->arch.vapics_in_nmi_mode);
	}
}

bool kvm_apic_nmi_watchdog_active(struct kvm *kvm)
{
	return atomic_read(&kvm->arch.vapics_in_nmi_mode) > 0;
}

static int apic_find_highest_vector(struct kvm_lapic *apic, int base)
{
	int i, bit;
	u32 val;

	/* The 256-bit IRR/ISR arrays are spread over 8 registers 0x10 apart. */
	for (i = 7; i >= 0; i--) {
		val = kvm_lapic_get_reg(apic, base + i * 0x10);
		for (bit = 31; bit >= 0; bit--) {
			if (val & (1U << bit))
				return i * 32 + bit;
		}
	}
	return -1;
}

static void apic_set_eoi(struct kvm_lapic *apic)
{
	int vector = apic_find_highest_vector(apic, APIC_ISR);
	int reg;

	if (vector < 0)
		return;

	reg = APIC_ISR + (vector / 32) * 0x10;
	kvm_lapic_set_reg(apic, reg,
			  kvm_lapic_get_reg(apic, reg) & ~(1U << (vector % 32)));
	apic->highest_isr_cache = -1;
	kvm_make_request(KVM_REQ_EVENT, apic->vcpu);
}

static void apic_set_spiv(struct kvm_lapic *apic, u32 val)
{
	bool enabled = val & APIC_SPIV_APIC_ENABLED;
	int i;

	kvm_lapic_set_reg(apic, APIC_SPIV, val);
	if (enabled == apic->sw_enabled)
		return;

	apic->sw_enabled = enabled;

	/* Software-disabling the APIC masks every LVT entry. */
	if (!enabled) {
		for (i = 0; i < APIC_LVT_NUM; i++) {
			int reg = APIC_LVTT + 0x10 * i;

			kvm_lapic_set_reg(apic, reg, kvm_lapic_get_reg(apic, reg) |
					  APIC_LVT_MASKED);
		}
		apic_manage_nmi_watchdog(apic, kvm_lapic_get_reg(apic, APIC_LVT0));
	}
}

int kvm_lapic_reg_write(struct kvm_lapic *apic, u32 reg, u32 val)
{
	switch (reg) {
	case APIC_ID:
		kvm_lapic_set_reg(apic, APIC_ID, val);
		break;
	case APIC_TASKPRI:
		kvm_lapic_set_reg(apic, APIC_TASKPRI, val & 0xff);
		kvm_make_request(KVM_REQ_EVENT, apic->vcpu);
		break;
	case APIC_EOI:
		apic_set_eoi(apic);
		break;
	case APIC_SPIV:
		apic_set_spiv(apic, val);
		break;
	case APIC_LVT0:
		if (!apic->sw_enabled)
			val |= APIC_LVT_MASKED;
		apic_manage_nmi_watchdog(apic, val);
		kvm_lapic_set_reg(apic, reg, val);
		break;
	case APIC_LVTT:
	case APIC_LVT1:
		if (!apic->sw_enabled)
			val |= APIC_LVT_MASKED;
		kvm_lapic_set_reg(apic, reg, val);
		break;
	default:
		return 1;
	}
	return 0;
}

int kvm_x2apic_msr_write(struct kvm_vcpu *vcpu, u32 msr, u64 data)
{
	struct kvm_lapic *apic = vcpu->arch.apic;

	if (!lapic_in_kernel(vcpu))
		return 1;

	return kvm_lapic_reg_write(apic, (msr - APIC_BASE_MSR) << 4, (u32)data);
}

int kvm_apic_has_interrupt(struct kvm_vcpu *vcpu)
{
	struct kvm_lapic *apic = vcpu->arch.apic;
	int vector;

	if (!apic || !apic->sw_enabled)
		return -1;

	vector = apic_find_highest_vector(apic, APIC_IRR);
	if (vector < 0 ||
	    (vector & 0xf0) <= (int)(kvm_lapic_get_reg(apic, APIC_TASKPRI) & 0xf0))
		return -1;
	return vector;
}

/*
 * An interrupt is injectable if the PIC has an ExtINT pending or the
 * local APIC has a deliverable vector.  Only the former requires an
 * IRQ window when APICv is active.
 */
int kvm_cpu_has_injectable_intr(struct kvm_vcpu *vcpu)
{
	if (vcpu->arch.pending_extint >= 0)
		return 1;
	if (vcpu->arch.apicv_active)
		return 0;
	return kvm_apic_has_interrupt(vcpu) != -1;
}

int kvm_cpu_get_interrupt(struct kvm_vcpu *vcpu)
{
	int vector = vcpu->arch.pending_extint;

	if (vector >= 0) {
		vcpu->arch.pending_extint = -1;
		return vector;
	}
	return kvm_apic_has_interrupt(vcpu);
}

void kvm_create_lapic(struct kvm_vcpu *vcpu, struct kvm_lapic *apic)
{
	apic->vcpu = vcpu;
	apic->sw_enabled = false;
	apic->lvt0_in_nmi_mode = false;
	apic->highest_isr_cache = -1;
	kvm_lapic_set_reg(apic, APIC_LVR, APIC_VERSION);
	kvm_lapic_set_reg(apic, APIC_LVT0, APIC_LVT_MASKED);
	vcpu->arch.apic = apic;
	vcpu->arch.pending_extint = -1;
}
