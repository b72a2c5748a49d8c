"""Kernel primitives kaudit understands by name: locks and atomics.

These are the kernel's own synchronisation APIs (what they do is fixed by
the kernel), never a list of suspect functions: a finding always comes from
how the analysed code uses them.
"""

from __future__ import annotations

LOCK_ACQUIRE = frozenset({
    "down_write", "down_read", "mutex_lock", "mutex_lock_interruptible", "mutex_lock_killable",
    "spin_lock", "spin_lock_irq", "spin_lock_irqsave", "spin_lock_bh",
    "raw_spin_lock", "raw_spin_lock_irq", "raw_spin_lock_irqsave",
    "write_lock", "read_lock",
    # what the spinlock and rwlock macros expand to
    "_raw_spin_lock", "_raw_spin_lock_irq", "_raw_spin_lock_irqsave", "_raw_spin_lock_bh",
    "_raw_read_lock", "_raw_write_lock", "_raw_read_lock_irqsave", "_raw_write_lock_irqsave",
})
LOCK_RELEASE = frozenset({
    "up_write", "up_read", "mutex_unlock", "spin_unlock", "spin_unlock_irq", "spin_unlock_irqrestore",
    "spin_unlock_bh", "raw_spin_unlock", "raw_spin_unlock_irq", "raw_spin_unlock_irqrestore",
    "write_unlock", "read_unlock",
    "_raw_spin_unlock", "_raw_spin_unlock_irq", "_raw_spin_unlock_irqrestore", "_raw_spin_unlock_bh",
    "_raw_read_unlock", "_raw_write_unlock", "_raw_read_unlock_irqrestore", "_raw_write_unlock_irqrestore",
})

# Atomic read-modify-write operations: name -> delta applied (None: operand).
ATOMIC_UPDATE = {
    "atomic_inc": 1, "atomic_dec": -1, "atomic_add": None, "atomic_sub": None,
    "atomic_inc_return": 1, "atomic_dec_return": -1, "atomic_add_return": None, "atomic_sub_return": None,
    "atomic_inc_and_test": 1, "atomic_dec_and_test": -1,
    "atomic_long_inc": 1, "atomic_long_dec": -1,
}
# Static keys count their enablers (host-wide); the key is the first argument.
STATIC_KEY_UPDATE = {
    "static_branch_inc": 1, "static_branch_dec": -1, "static_key_slow_inc": 1, "static_key_slow_dec": -1,
    "static_key_fast_inc_not_disabled": 1, "static_key_slow_inc_cpuslocked": 1,
    "static_key_slow_dec_cpuslocked": -1, "static_branch_deferred_inc": 1, "static_branch_slow_dec_deferred": -1,
    "static_key_slow_dec_deferred": -1, "__static_key_slow_dec_deferred": -1,
}
# Operations whose result is the new value (or a test of it).
ATOMIC_RETURNS_NEW = frozenset({
    "atomic_inc_return", "atomic_dec_return", "atomic_add_return", "atomic_sub_return",
    "atomic_inc_and_test", "atomic_dec_and_test",
})
