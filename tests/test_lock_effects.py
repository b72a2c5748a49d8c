"""What a call leaves changed in the locks its caller holds (kaudit.ir.effects.Effects.lock_effect):
the model inlines exactly the callees that change them, so a wrong answer either loses a lock
the protocol relies on or inlines half of KVM."""

from __future__ import annotations

import shutil
from pathlib import Path

from kaudit.audit import audit_tree
from kaudit.ir.effects import LockEffect
from kaudit.resources import default_rules_dir
from kaudit.rules import load_rules

FIXTURES = Path(__file__).parent / "fixtures"
SOURCE = """
#include <fixture.h>
struct thing { struct mutex m; spinlock_t s; int n; };
spinlock_t *spinlock_check(spinlock_t *lock);
unsigned long _raw_spin_lock_irqsave(spinlock_t *lock);
void spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags);

void take(struct thing *t) { mutex_lock(&t->m); }
void drop(struct thing *t) { mutex_unlock(&t->m); }
void paired_through_helpers(struct thing *t) { take(t); t->n++; drop(t); }
void early_return(struct thing *t) {
	mutex_lock(&t->m);
	if (t->n) { mutex_unlock(&t->m); return; }
	t->n = 1;
	mutex_unlock(&t->m);
}
void same_test(struct thing *t, int c) {
	int locked = 0;
	if (c) { mutex_lock(&t->m); locked = 1; }
	t->n++;
	if (locked) mutex_unlock(&t->m);
}
void scoped(struct thing *t) { guard(mutex)(&t->m); if (t->n) return; t->n = 2; }
void irqsave(struct thing *t) {
	unsigned long flags = _raw_spin_lock_irqsave(spinlock_check(&t->s));
	t->n++;
	spin_unlock_irqrestore(&t->s, flags);
}
void takes_for_caller(struct thing *t) { if (t->n) take(t); else mutex_lock(&t->m); }
"""


def effects(tmp_path: Path):
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "include", tree / "include")
    (tree / "arch/x86/kvm").mkdir(parents=True)
    (tree / "arch/x86/kvm/locks.c").write_text(SOURCE)
    result = audit_tree(tree, load_rules(default_rules_dir()), model=None, cache_dir=None)
    lowered = result.analyses[0].lowered
    return lambda name: lowered.effects.lock_effect(next(iter(lowered.program.functions_named(name))))


def test_helpers_take_and_drop_for_their_callers(tmp_path: Path) -> None:
    of = effects(tmp_path)
    assert of("take") == LockEffect(frozenset({"thing.m"}), frozenset())
    assert of("drop") == LockEffect(frozenset(), frozenset({"thing.m"}))
    assert of("takes_for_caller") == LockEffect(frozenset({"thing.m"}), frozenset())  # held on every return


def test_functions_that_pair_their_locks_leave_the_caller_as_it_was(tmp_path: Path) -> None:
    of = effects(tmp_path)
    neutral = LockEffect(frozenset(), frozenset())
    for name in ("paired_through_helpers", "early_return", "same_test", "scoped", "irqsave"):
        assert of(name) == neutral, name
