"""Kernel primitives kaudit understands by name: locks, atomics, bit operations.

These are the kernel's own synchronisation and data-structure APIs (what
they do is fixed by the kernel), never a list of suspect functions: a
finding always comes from how the analysed code uses them.
"""

from __future__ import annotations

# Lock acquire/release -> mode: "read" shares with other readers, "write" excludes everyone.
LOCK_ACQUIRE = {
    "down_write": "write", "down_read": "read", "down_write_killable": "write", "down_read_killable": "read",
    "mutex_lock": "write", "mutex_lock_interruptible": "write", "mutex_lock_killable": "write",
    "spin_lock": "write", "spin_lock_irq": "write", "spin_lock_irqsave": "write", "spin_lock_bh": "write",
    "raw_spin_lock": "write", "raw_spin_lock_irq": "write", "raw_spin_lock_irqsave": "write",
    "write_lock": "write", "read_lock": "read",
    # what the spinlock and rwlock macros expand to
    "_raw_spin_lock": "write", "_raw_spin_lock_irq": "write", "_raw_spin_lock_irqsave": "write",
    "_raw_spin_lock_bh": "write", "_raw_read_lock": "read", "_raw_write_lock": "write",
    "_raw_read_lock_irqsave": "read", "_raw_write_lock_irqsave": "write",
}
LOCK_RELEASE = {
    "up_write": "write", "up_read": "read", "mutex_unlock": "write", "spin_unlock": "write",
    "spin_unlock_irq": "write", "spin_unlock_irqrestore": "write", "spin_unlock_bh": "write",
    "raw_spin_unlock": "write", "raw_spin_unlock_irq": "write", "raw_spin_unlock_irqrestore": "write",
    "write_unlock": "write", "read_unlock": "read",
    "_raw_spin_unlock": "write", "_raw_spin_unlock_irq": "write", "_raw_spin_unlock_irqrestore": "write",
    "_raw_spin_unlock_bh": "write", "_raw_read_unlock": "read", "_raw_write_unlock": "write",
    "_raw_read_unlock_irqrestore": "read", "_raw_write_unlock_irqrestore": "write",
}
# lockdep_assert_held*() (a do-while(0) macro without CONFIG_LOCKDEP) -> the mode it expects held
LOCK_ASSERT = {"lockdep_assert_held": "any", "lockdep_assert_held_write": "write",
               "lockdep_assert_held_read": "read"}

# Atomic read-modify-write operations: name -> delta applied (None: the first operand).
ATOMIC_UPDATE = {
    "atomic_inc": 1, "atomic_dec": -1, "atomic_add": None, "atomic_sub": None,
    "atomic_inc_return": 1, "atomic_dec_return": -1, "atomic_add_return": None, "atomic_sub_return": None,
    "atomic_inc_and_test": 1, "atomic_dec_and_test": -1,
    "atomic_long_inc": 1, "atomic_long_dec": -1, "atomic_long_add": None, "atomic_long_sub": None,
    "atomic_sub_and_test": None, "atomic_long_inc_return": 1, "atomic_long_dec_return": -1,
    "atomic_long_add_return": None, "atomic_long_sub_return": None, "atomic_long_dec_and_test": -1,
    # these return the old value
    "atomic_fetch_inc": 1, "atomic_fetch_dec": -1, "atomic_fetch_add": None, "atomic_fetch_sub": None,
    "atomic_long_fetch_inc": 1, "atomic_long_fetch_dec": -1, "atomic_long_fetch_add": None,
    "atomic_long_fetch_sub": None,
}
# Atomic updates that do nothing while the object holds one value, and return whether they moved it:
# name -> (delta, or None: the second operand; the value that stops it, or None: the third operand).
# The object is the first operand (`atomic_inc_not_zero(&users)`: join only where someone already is).
ATOMIC_UNLESS = {
    "atomic_add_unless": (None, None), "atomic_long_add_unless": (None, None),
    "atomic_inc_not_zero": (1, 0), "atomic_long_inc_not_zero": (1, 0),
}
# Operations whose result is the new value (or, for *_and_test, whether it is zero).
ATOMIC_RETURNS_NEW = frozenset({
    "atomic_inc_return", "atomic_dec_return", "atomic_add_return", "atomic_sub_return",
    "atomic_inc_and_test", "atomic_dec_and_test", "atomic_sub_and_test", "atomic_long_inc_return",
    "atomic_long_dec_return", "atomic_long_add_return", "atomic_long_sub_return", "atomic_long_dec_and_test",
})
ATOMIC_READ = frozenset({"atomic_read", "atomic_long_read", "atomic_read_acquire", "raw_atomic_read",
                         "arch_atomic_read"})
ATOMIC_SET = frozenset({"atomic_set", "atomic_long_set", "atomic_set_release", "raw_atomic_set",
                        "arch_atomic_set"})

# Static keys count their enablers (host-wide); the key is the first argument.
STATIC_KEY_UPDATE = {
    "static_branch_inc": 1, "static_branch_dec": -1, "static_key_slow_inc": 1, "static_key_slow_dec": -1,
    "static_key_fast_inc_not_disabled": 1, "static_key_slow_inc_cpuslocked": 1,
    "static_key_slow_dec_cpuslocked": -1, "static_branch_deferred_inc": 1, "static_branch_slow_dec_deferred": -1,
    "static_key_slow_dec_deferred": -1, "__static_key_slow_dec_deferred": -1,
}
# Reading a static key: true while its count is non-zero.
STATIC_KEY_READ = frozenset({"arch_static_branch", "arch_static_branch_jump", "static_key_enabled",
                             "static_key_count"})

# Bit operations on a word or bitmap: (bit number, address) arguments.
BIT_SET = frozenset({"set_bit", "__set_bit", "___set_bit", "arch_set_bit", "arch___set_bit", "const___set_bit",
                     "generic___set_bit", "generic_set_bit"})
BIT_CLEAR = frozenset({"clear_bit", "__clear_bit", "___clear_bit", "arch_clear_bit", "arch___clear_bit",
                       "const___clear_bit", "generic___clear_bit", "generic_clear_bit"})
BIT_TEST = frozenset({"test_bit", "_test_bit", "arch_test_bit", "const_test_bit", "generic_test_bit",
                      "variable_test_bit", "constant_test_bit", "test_bit_acquire"})
# Atomic test-and-modify of one bit: its old value, the bit then set (or cleared) in the same step.
BIT_TEST_AND_SET = frozenset({"test_and_set_bit", "arch_test_and_set_bit", "test_and_set_bit_lock",
                              "arch_test_and_set_bit_lock"})
BIT_TEST_AND_CLEAR = frozenset({"test_and_clear_bit", "arch_test_and_clear_bit"})
BITMAP_EMPTY = frozenset({"bitmap_empty"})

# Block copies and fills of memory: (destination, source or fill byte, size) arguments.
MEM_COPY = frozenset({"memcpy", "memmove", "__builtin_memcpy", "__builtin_memmove", "__memcpy", "__memmove"})
MEM_FILL = frozenset({"memset", "__builtin_memset", "__memset"})

# Compiler builtins whose value is their first argument.
BUILTIN_IDENTITY = frozenset({"__builtin_expect", "__builtin_expect_with_probability"})

# Fields KVM's core gives every vCPU of a VM its own value of: vcpu_idx is its index in kvm->vcpu_array
# (the count of vCPUs online when it was created), and KVM_CREATE_VCPU refuses a vcpu_id already in use.
VCPU_IDENTITIES = frozenset({"kvm_vcpu.vcpu_idx", "kvm_vcpu.vcpu_id"})

# Loops over every vCPU of a VM (the macro that writes the loop).
VCPU_ITERATORS = frozenset({"kvm_for_each_vcpu"})
# The same loop written out: an index from 0 below the VM's count of online vCPUs, each vCPU fetched by it
# (`for (i = 0; i < atomic_read(&kvm->online_vcpus); i++) { v = kvm_get_vcpu(kvm, i); ... }`).
ONLINE_VCPUS = "online_vcpus"
VCPU_BY_INDEX = frozenset({"kvm_get_vcpu"})
VCPU_ARRAY = "vcpus"  # kvm->vcpus[i] before the xarray


def lock_mode(name: str | None) -> str | None:
    """The mode a lock call takes ("read" or "write"), None if it takes none."""
    return LOCK_ACQUIRE.get(name or "")
