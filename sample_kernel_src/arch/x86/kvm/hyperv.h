/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __ARCH_X86_KVM_HYPERV_H__
#define __ARCH_X86_KVM_HYPERV_H__

#include <linux/kvm_host.h>

/* Synthetic interrupt controller MSRs. */
#define HV_X64_MSR_SCONTROL		0x40000080
#define HV_X64_MSR_SVERSION		0x40000081
#define HV_X64_MSR_SIEFP		0x40000082
#define HV_X64_MSR_SIMP			0x40000083
#define HV_X64_MSR_EOM			0x40000084
#define HV_X64_MSR_SINT0		0x40000090
#define HV_X64_MSR_SINT15		0x4000009F

#define HV_SYNIC_SINT_COUNT		16
#define HV_SYNIC_FIRST_VALID_VECTOR	16
#define HV_SYNIC_NR_VECTORS		256

/* Layout of a SINTx MSR. */
#define HV_SYNIC_SINT_VECTOR_MASK	0xFFULL
#define HV_SYNIC_SINT_MASKED		(1ULL << 16)
#define HV_SYNIC_SINT_AUTO_EOI		(1ULL << 17)
#define HV_SYNIC_SINT_RESERVED		(~0x300FFULL)

#define HV_SYNIC_CONTROL_ENABLE		(1ULL << 0)

struct kvm_vcpu_hv_synic {
	bool active;
	u64 control;
	u64 msg_page;
	u64 evt_page;
	u64 sint[HV_SYNIC_SINT_COUNT];
	/* vectors used by at least one unmasked SINT */
	DECLARE_BITMAP(vec_bitmap, HV_SYNIC_NR_VECTORS);
	/* vectors used by at least one unmasked auto-EOI SINT */
	DECLARE_BITMAP(auto_eoi_bitmap, HV_SYNIC_NR_VECTORS);
};

/* Per-vCPU Hyper-V state, reached via vcpu->arch.hyperv. */
struct kvm_vcpu_hv {
	struct kvm_vcpu *vcpu;
	u32 vp_index;
	struct kvm_vcpu_hv_synic synic;
};

static inline struct kvm_hv *to_kvm_hv(struct kvm *kvm)
{
	return &kvm->arch.hyperv;
}

static inline struct kvm_vcpu_hv *to_hv_vcpu(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.hyperv;
}

static inline struct kvm_vcpu_hv_synic *to_hv_synic(struct kvm_vcpu *vcpu)
{
	struct kvm_vcpu_hv *hv_vcpu = to_hv_vcpu(vcpu);

	return hv_vcpu ? &hv_vcpu->synic : NULL;
}

static inline struct kvm_vcpu *hv_synic_to_vcpu(struct kvm_vcpu_hv_synic *synic)
{
	struct kvm_vcpu_hv *hv_vcpu;

	hv_vcpu = container_of(synic, struct kvm_vcpu_hv, synic);
	return hv_vcpu->vcpu;
}

void kvm_hv_vcpu_init(struct kvm_vcpu *vcpu, struct kvm_vcpu_hv *hv_vcpu);
bool kvm_hv_is_synic_msr(u32 msr);
int kvm_hv_set_msr(struct kvm_vcpu *vcpu, u32 msr, u64 data);

#endif /* __ARCH_X86_KVM_HYPERV_H__ */
