// SPDX-License-Identifier: GPL-2.0
/*
 * Sample tree: a sliver of Hyper-V synthetic interrupt controller
 * (SynIC) emulation.
 *
 * A SINT configured for auto-EOI expects the hypervisor to perform the
 * EOI on the guest's behalf when the interrupt is delivered.  Hardware
 * APIC virtualization delivers interrupts without exiting, so KVM cannot
 * honour auto-EOI while APICv/AVIC is active.  The VM-wide HYPERV
 * inhibit is therefore held while any vCPU has an auto-EOI vector in use.
 */
#include <linux/kvm_host.h>
#include <linux/kernel.h>
#include <linux/bits.h>

#include "hyperv.h"

static inline int synic_get_sint_vector(u64 sint_value)
{
	if (sint_value & HV_SYNIC_SINT_MASKED)
		return -1;
	return sint_value & HV_SYNIC_SINT_VECTOR_MASK;
}

static bool synic_has_vector_connected(struct kvm_vcpu_hv_synic *synic,
				       int vector)
{
	int i;

	for (i = 0; i < HV_SYNIC_SINT_COUNT; i++) {
		if (synic_get_sint_vector(READ_ONCE(synic->sint[i])) == vector)
			return true;
	}
	return false;
}

static bool synic_has_vector_auto_eoi(struct kvm_vcpu_hv_synic *synic,
				      int vector)
{
	u64 sint_value;
	int i;

	for (i = 0; i < HV_SYNIC_SINT_COUNT; i++) {
		sint_value = READ_ONCE(synic->sint[i]);
		if (synic_get_sint_vector(sint_value) == vector &&
		    (sint_value & HV_SYNIC_SINT_AUTO_EOI))
			return true;
	}
	return false;
}

/*
 * Recompute the vector bitmaps after a SINT that used @vector changed.
 *
 * Each vCPU contributes at most one reference to the VM-wide
 * synic_auto_eoi_used count: it is bumped only when this vCPU goes from
 * "no auto-EOI vectors" to "some", and dropped on the opposite edge.  The
 * count and the inhibit bit are updated together under apicv_update_lock,
 * so a vCPU dropping its reference cannot clear the inhibit while another
 * vCPU still needs it.
 */
static void synic_update_vector(struct kvm_vcpu_hv_synic *synic, int vector)
{
	struct kvm_vcpu *vcpu = hv_synic_to_vcpu(synic);
	struct kvm_hv *hv = to_kvm_hv(vcpu->kvm);
	bool auto_eoi_old, auto_eoi_new;

	if (vector < HV_SYNIC_FIRST_VALID_VECTOR)
		return;

	if (synic_has_vector_connected(synic, vector))
		__set_bit(vector, synic->vec_bitmap);
	else
		__clear_bit(vector, synic->vec_bitmap);

	auto_eoi_old = !bitmap_empty(synic->auto_eoi_bitmap,
				     HV_SYNIC_NR_VECTORS);

	if (synic_has_vector_auto_eoi(synic, vector))
		__set_bit(vector, synic->auto_eoi_bitmap);
	else
		__clear_bit(vector, synic->auto_eoi_bitmap);

	auto_eoi_new = !bitmap_empty(synic->auto_eoi_bitmap,
				     HV_SYNIC_NR_VECTORS);

	/* This vCPU's contribution did not change, nothing to publish. */
	if (!!auto_eoi_old == !!auto_eoi_new)
		return;

	down_write(&vcpu->kvm->arch.apicv_update_lock);

	if (auto_eoi_new)
		hv->synic_auto_eoi_used++;
	else
		hv->synic_auto_eoi_used--;

	/* Inhibit APICv while at least one vCPU relies on auto-EOI. */
	__kvm_set_or_clear_apicv_inhibit(vcpu->kvm,
					 APICV_INHIBIT_REASON_HYPERV,
					 !!hv->synic_auto_eoi_used);

	up_write(&vcpu->kvm->arch.apicv_update_lock);
}

static int synic_set_sint(struct kvm_vcpu_hv_synic *synic, int sint,
			  u64 data, bool host)
{
	int vector, old_vector;
	bool masked;

	vector = data & HV_SYNIC_SINT_VECTOR_MASK;
	masked = data & HV_SYNIC_SINT_MASKED;

	/*
	 * Vectors below 16 are architecturally reserved.  Let the host
	 * restore such a value as long as the SINT is masked.
	 */
	if (vector < HV_SYNIC_FIRST_VALID_VECTOR && !host && !masked)
		return 1;
	if (data & HV_SYNIC_SINT_RESERVED)
		return 1;

	old_vector = synic->sint[sint] & HV_SYNIC_SINT_VECTOR_MASK;

	WRITE_ONCE(synic->sint[sint], data);

	/* Both the vector that went away and the new one may change state. */
	synic_update_vector(synic, old_vector);
	synic_update_vector(synic, vector);
	return 0;
}

static int synic_set_msr(struct kvm_vcpu_hv_synic *synic, u32 msr,
			 u64 data, bool host)
{
	if (!synic->active && !host)
		return 1;

	switch (msr) {
	case HV_X64_MSR_SCONTROL:
		synic->control = data;
		return 0;
	case HV_X64_MSR_SVERSION:
		/* read-only */
		return host ? 0 : 1;
	case HV_X64_MSR_SIEFP:
		synic->evt_page = data;
		return 0;
	case HV_X64_MSR_SIMP:
		synic->msg_page = data;
		return 0;
	case HV_X64_MSR_EOM:
		return 0;
	case HV_X64_MSR_SINT0 ... HV_X64_MSR_SINT15:
		return synic_set_sint(synic, msr - HV_X64_MSR_SINT0, data, host);
	default:
		return 1;
	}
}

bool kvm_hv_is_synic_msr(u32 msr)
{
	return msr >= HV_X64_MSR_SCONTROL && msr <= HV_X64_MSR_SINT15;
}

void kvm_hv_vcpu_init(struct kvm_vcpu *vcpu, struct kvm_vcpu_hv *hv_vcpu)
{
	int i;

	hv_vcpu->vcpu = vcpu;
	hv_vcpu->vp_index = vcpu->vcpu_idx;
	hv_vcpu->synic.active = true;
	for (i = 0; i < HV_SYNIC_SINT_COUNT; i++)
		hv_vcpu->synic.sint[i] = HV_SYNIC_SINT_MASKED;

	vcpu->arch.hyperv = hv_vcpu;
}

/* Guest WRMSR to a Hyper-V MSR; runs in the context of @vcpu. */
int kvm_hv_set_msr(struct kvm_vcpu *vcpu, u32 msr, u64 data)
{
	struct kvm_vcpu_hv_synic *synic = to_hv_synic(vcpu);

	if (!synic)
		return 1;

	return synic_set_msr(synic, msr, data, false);
}
