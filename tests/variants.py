"""Small edits of the sample tree that make the rule's other disciplines.

Each returns the tree it edited; tests audit it. The edits are C text, so a
variant says plainly which code shape it is.
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import FIX_PATCH, apply_patch, copy_sample, edit

SVM = "arch/x86/kvm/svm/svm.c"
X86 = "arch/x86/kvm/x86.c"


def fixed(dest: Path) -> Path:
    tree = copy_sample(dest)
    apply_patch(tree, FIX_PATCH)
    return tree


def flag_without_counter(dest: Path) -> Path:
    """Per-vCPU flag, but the bit itself is set and cleared: not counted."""
    tree = copy_sample(dest)
    edit(tree / "arch/x86/kvm/svm/svm.h", "\tbool nmi_masked;", "\tbool nmi_masked;\n\tbool avic_irq_window;")
    edit(tree / SVM, "if (!is_guest_mode(vcpu))\n\t\t\tkvm_set_apicv_inhibit(vcpu->kvm, APICV_INHIBIT_REASON_IRQWIN);",
         "if (!svm->avic_irq_window && !is_guest_mode(vcpu)) {\n\t\t\tsvm->avic_irq_window = true;\n"
         "\t\t\tkvm_set_apicv_inhibit(vcpu->kvm, APICV_INHIBIT_REASON_IRQWIN);\n\t\t}")
    edit(tree / SVM, "\tkvm_clear_apicv_inhibit(vcpu->kvm, APICV_INHIBIT_REASON_IRQWIN);",
         "\tif (to_svm(vcpu)->avic_irq_window) {\n\t\tto_svm(vcpu)->avic_irq_window = false;\n"
         "\t\tkvm_clear_apicv_inhibit(vcpu->kvm, APICV_INHIBIT_REASON_IRQWIN);\n\t}")
    return tree


def counter_without_flag(dest: Path) -> Path:
    """The fix's count, but a vCPU may request again before its window."""
    tree = fixed(dest)
    edit(tree / SVM, "if (!svm->avic_irq_window && !is_guest_mode(vcpu)) {\n\t\t\tsvm->avic_irq_window = true;\n",
         "if (!is_guest_mode(vcpu)) {\n")
    edit(tree / SVM, "\tif (svm->avic_irq_window) {\n\t\tsvm->avic_irq_window = false;\n", "\t{\n")
    return tree


def counter_outside_lock(dest: Path) -> Path:
    """Flag and count, but the counted transition is not under the lock."""
    tree = fixed(dest)
    edit(tree / X86, "\tguard(rwsem_write)(&kvm->arch.apicv_update_lock);\n", "")
    return tree


_COUNTED = re.compile(
    r"void kvm_inc_or_dec_irq_window_inhibit\(struct kvm \*kvm, bool inc\)\n\{.*?\n\}\n", re.DOTALL)

_INC_DEC_RETURN = """void kvm_inc_or_dec_irq_window_inhibit(struct kvm *kvm, bool inc)
{
	if (!enable_apicv)
		return;
%(lock)s
	if (inc) {
		if (atomic_inc_return(&kvm->arch.apicv_nr_irq_window_req) == 1)
			%(set)s;
	} else {
		if (atomic_dec_return(&kvm->arch.apicv_nr_irq_window_req) == 0)
			%(clear)s;
	}
%(unlock)s
}
"""


def inc_dec_return(dest: Path, locked: bool) -> Path:
    """Flag + count with atomic_inc_return(...) == 1 / atomic_dec_return(...) == 0.
    Unlocked: the bit changes outside the lock that the count's transition
    should hold (kvm_set_apicv_inhibit takes it only around the bit)."""
    tree = fixed(dest)
    if locked:
        body = _INC_DEC_RETURN % {
            "lock": "\tdown_write(&kvm->arch.apicv_update_lock);",
            "unlock": "\tup_write(&kvm->arch.apicv_update_lock);",
            "set": "__kvm_set_or_clear_apicv_inhibit(kvm, APICV_INHIBIT_REASON_IRQWIN, true)",
            "clear": "__kvm_set_or_clear_apicv_inhibit(kvm, APICV_INHIBIT_REASON_IRQWIN, false)",
        }
    else:
        body = _INC_DEC_RETURN % {
            "lock": "", "unlock": "",
            "set": "kvm_set_apicv_inhibit(kvm, APICV_INHIBIT_REASON_IRQWIN)",
            "clear": "kvm_clear_apicv_inhibit(kvm, APICV_INHIBIT_REASON_IRQWIN)",
        }
    path = tree / X86
    text, count = _COUNTED.subn(body.replace("\\", "\\\\"), path.read_text())
    assert count == 1
    path.write_text(text)
    return tree


def scoped_guard(dest: Path) -> Path:
    """The fix with the lock held by scoped_guard() { } instead of guard()."""
    tree = fixed(dest)
    edit(tree / X86, "\tguard(rwsem_write)(&kvm->arch.apicv_update_lock);\n\n\tnr = ",
         "\tscoped_guard(rwsem_write, &kvm->arch.apicv_update_lock) {\n\tnr = ")
    edit(tree / X86, "\t\t\t\t\t\t inc);\n}", "\t\t\t\t\t\t inc);\n\t}\n}")
    return tree
