// SPDX-License-Identifier: GPL-2.0
/*
 * vapics_in_nmi_mode, but create reads back the register at an offset a
 * helper the model does not run computes (the LVT0 it just masked, if
 * the helper is right); destroy never uncounts. The model follows the
 * page at the offsets the code names, not at one it cannot know: the
 * value read there is a guess, and a trace of a leak through it is
 * inconclusive, not a confirmed finding.
 */
#define FIXTURE_KVM_ARCH atomic_t vapics_in_nmi_mode;
#define FIXTURE_VCPU_ARCH char *regs; bool lvt0_nmi;
#include <fixture.h>

char *alloc_regs(void);
int lvt0_offset(struct kvm_vcpu *vcpu);
void free_regs(char *regs);

static u32 get_reg(struct kvm_vcpu *vcpu, int off)
{
	return *(u32 *)(vcpu->arch.regs + off);
}

static void set_reg(struct kvm_vcpu *vcpu, int off, u32 val)
{
	*(u32 *)(vcpu->arch.regs + off) = val;
}

static void manage_nmi(struct kvm_vcpu *vcpu, u32 lvt0)
{
	bool nmi = (lvt0 & 0x10700) == 0x400;

	if (vcpu->arch.lvt0_nmi == nmi)
		return;
	vcpu->arch.lvt0_nmi = nmi;
	if (nmi)
		atomic_inc(&vcpu->kvm->arch.vapics_in_nmi_mode);
	else
		atomic_dec(&vcpu->kvm->arch.vapics_in_nmi_mode);
}

int kvm_arch_vcpu_create(struct kvm_vcpu *vcpu)
{
	vcpu->arch.regs = alloc_regs();
	if (!vcpu->arch.regs)
		return -12;
	set_reg(vcpu, 0x350, 0x10000);
	manage_nmi(vcpu, get_reg(vcpu, lvt0_offset(vcpu)));
	return 0;
}

void kvm_arch_vcpu_destroy(struct kvm_vcpu *vcpu)
{
	free_regs(vcpu->arch.regs);
}

int lapic_write(struct kvm_vcpu *vcpu, u32 reg, u32 val)
{
	if (reg == 0x350) {
		set_reg(vcpu, reg, val);
		manage_nmi(vcpu, val);
	}
	return 0;
}
