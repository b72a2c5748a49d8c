/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __KVM_X86_LAPIC_H
#define __KVM_X86_LAPIC_H

#include <linux/kvm_host.h>

/* Register offsets within the 4KiB APIC page. */
#define APIC_ID			0x20
#define APIC_LVR		0x30
#define APIC_TASKPRI		0x80
#define APIC_EOI		0xB0
#define APIC_SPIV		0xF0
#define APIC_ISR		0x100
#define APIC_IRR		0x200
#define APIC_LVTT		0x320
#define APIC_LVT0		0x350
#define APIC_LVT1		0x360
#define APIC_REG_END		0x400

#define APIC_SPIV_APIC_ENABLED	(1 << 8)
#define APIC_LVT_MASKED		(1 << 16)
#define APIC_MODE_MASK		0x700
#define APIC_DM_FIXED		0x000
#define APIC_DM_NMI		0x400
#define APIC_DM_EXTINT		0x700

/* x2APIC MSRs map the register page at 0x800 + (offset >> 4). */
#define APIC_BASE_MSR		0x800
#define X2APIC_MSR(reg)		(APIC_BASE_MSR + ((reg) >> 4))

struct kvm_lapic {
	struct kvm_vcpu *vcpu;
	unsigned long base_address;
	bool sw_enabled;
	/* LVT0 is programmed for NMI delivery (NMI watchdog) */
	bool lvt0_in_nmi_mode;
	int highest_isr_cache;
	u32 regs[APIC_REG_END / sizeof(u32)];
};

static inline u32 kvm_lapic_get_reg(struct kvm_lapic *apic, int reg_off)
{
	return apic->regs[reg_off / sizeof(u32)];
}

static inline void kvm_lapic_set_reg(struct kvm_lapic *apic, int reg_off,
				     u32 val)
{
	apic->regs[reg_off / sizeof(u32)] = val;
}

static inline bool lapic_in_kernel(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.apic != NULL;
}

void kvm_create_lapic(struct kvm_vcpu *vcpu, struct kvm_lapic *apic);
int kvm_lapic_reg_write(struct kvm_lapic *apic, u32 reg, u32 val);
int kvm_x2apic_msr_write(struct kvm_vcpu *vcpu, u32 msr, u64 data);
int kvm_apic_has_interrupt(struct kvm_vcpu *vcpu);
bool kvm_apic_nmi_watchdog_active(struct kvm *kvm);

#endif /* __KVM_X86_LAPIC_H */
