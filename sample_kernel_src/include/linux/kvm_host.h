/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _LINUX_KVM_HOST_H
#define _LINUX_KVM_HOST_H

#include <linux/types.h>
#include <linux/compiler.h>
#include <linux/kernel.h>
#include <linux/bits.h>
#include <linux/atomic.h>
#include <linux/rwsem.h>
#include <linux/mutex.h>
#include <uapi/linux/kvm.h>
#include <asm/kvm_host.h>

/* Generic vCPU state; the architecture specific part is in @arch. */
struct kvm_vcpu {
	struct kvm *kvm;
	int vcpu_id;
	int vcpu_idx;
	int mode;
	unsigned long requests;
	unsigned long guest_debug;
	struct kvm_vcpu_stat stat;
	struct kvm_vcpu_arch arch;
};

struct kvm {
	struct mutex lock;
	struct kvm_vcpu *vcpus[KVM_MAX_VCPUS];
	int online_vcpus;
	int created_vcpus;
	struct kvm_arch arch;
};

/*
 * Iterate over the online vCPUs of @kvm.  @idx must be an int lvalue and
 * @vcpup a struct kvm_vcpu pointer lvalue.
 */
#define kvm_for_each_vcpu(idx, vcpup, kvm)				\
	for (idx = 0;							\
	     idx < (kvm)->online_vcpus &&				\
	     ((vcpup) = (kvm)->vcpus[idx]) != NULL;			\
	     idx++)

static inline struct kvm_vcpu *kvm_get_vcpu(struct kvm *kvm, int i)
{
	if (i < 0 || i >= READ_ONCE(kvm->online_vcpus))
		return NULL;
	return kvm->vcpus[i];
}

/* Post a request to @vcpu; it is handled on the next guest entry. */
static inline void kvm_make_request(int req, struct kvm_vcpu *vcpu)
{
	__atomic_fetch_or(&vcpu->requests, BIT(req), __ATOMIC_SEQ_CST);
}

static inline bool kvm_test_request(int req, struct kvm_vcpu *vcpu)
{
	return test_bit(req, &vcpu->requests);
}

/* Consume @req if it is pending; returns true if it was. */
static inline bool kvm_check_request(int req, struct kvm_vcpu *vcpu)
{
	if (!kvm_test_request(req, vcpu))
		return false;

	__atomic_fetch_and(&vcpu->requests, ~BIT(req), __ATOMIC_SEQ_CST);
	return true;
}

void kvm_vcpu_kick(struct kvm_vcpu *vcpu);
void kvm_make_all_cpus_request(struct kvm *kvm, unsigned int req);

int kvm_arch_init_vm(struct kvm *kvm, unsigned long type);
long kvm_arch_vm_ioctl(struct kvm *kvm, unsigned int ioctl, unsigned long arg);
int kvm_arch_vcpu_ioctl_run(struct kvm_vcpu *vcpu);
int kvm_arch_vcpu_ioctl_set_guest_debug(struct kvm_vcpu *vcpu,
					struct kvm_guest_debug *dbg);

#endif /* _LINUX_KVM_HOST_H */
