/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __ASM_X86_SVM_H
#define __ASM_X86_SVM_H

#include <linux/types.h>

/* Bit numbers in vmcb_control_area.intercepts (sample layout). */
enum svm_intercept {
	INTERCEPT_CR0_READ,
	INTERCEPT_CR0_WRITE,
	INTERCEPT_INTR,
	INTERCEPT_NMI,
	INTERCEPT_VINTR,
	INTERCEPT_HLT,
	INTERCEPT_MSR_PROT,
	MAX_INTERCEPT,
};

/* Fields of the VMCB's virtual interrupt control word (int_ctl). */
#define V_TPR_MASK		0x0f
#define V_IRQ_SHIFT		8
#define V_IRQ_MASK		(1 << V_IRQ_SHIFT)
#define V_GIF_SHIFT		9
#define V_GIF_MASK		(1 << V_GIF_SHIFT)
#define V_INTR_PRIO_SHIFT	16
#define V_INTR_PRIO_MASK	(0x0f << V_INTR_PRIO_SHIFT)
#define V_IGN_TPR_SHIFT		20
#define V_IGN_TPR_MASK		(1 << V_IGN_TPR_SHIFT)
#define V_GIF_ENABLE_SHIFT	25
#define V_GIF_ENABLE_MASK	(1 << V_GIF_ENABLE_SHIFT)
#define AVIC_ENABLE_SHIFT	31
#define AVIC_ENABLE_MASK	(1U << AVIC_ENABLE_SHIFT)

#define SVM_INTERRUPT_SHADOW_MASK	1

/* Event injection field. */
#define SVM_EVTINJ_VEC_MASK	0xff
#define SVM_EVTINJ_TYPE_INTR	(0 << 8)
#define SVM_EVTINJ_TYPE_NMI	(2 << 8)
#define SVM_EVTINJ_VALID	(1U << 31)

struct vmcb_control_area {
	u64 intercepts;
	u32 int_ctl;
	u32 int_vector;
	u32 int_state;
	u32 event_inj;
	u64 exit_code;
	u64 exit_info_1;
	u64 exit_info_2;
	u64 next_rip;
};

struct vmcb_save_area {
	u64 cr0;
	u64 rflags;
	u64 rip;
	u64 rsp;
	u64 rax;
};

struct vmcb {
	struct vmcb_control_area control;
	struct vmcb_save_area save;
};

/* #VMEXIT codes. */
#define SVM_EXIT_READ_CR0	0x000
#define SVM_EXIT_WRITE_CR0	0x010
#define SVM_EXIT_INTR		0x060
#define SVM_EXIT_NMI		0x061
#define SVM_EXIT_VINTR		0x064
#define SVM_EXIT_HLT		0x078
#define SVM_EXIT_MSR		0x07c
#define SVM_EXIT_ERR		-1

#endif /* __ASM_X86_SVM_H */
