/* SPDX-License-Identifier: GPL-2.0 */
/*
 * List of kvm_x86_ops members that are also exposed as static calls.
 *
 * No include guard on purpose: the includer defines KVM_X86_OP(func) to
 * generate declarations, definitions or updates for each entry, and the
 * macro is undefined again at the end of this file.
 */
KVM_X86_OP(vm_init)
KVM_X86_OP(vcpu_create)
KVM_X86_OP(vcpu_run)
KVM_X86_OP(handle_exit)
KVM_X86_OP(inject_irq)
KVM_X86_OP(interrupt_allowed)
KVM_X86_OP(enable_irq_window)
KVM_X86_OP(refresh_apicv_exec_ctrl)

#undef KVM_X86_OP
