"""The lowered form: guards, locks and loops read off the CFG of small C functions."""

from __future__ import annotations

from pathlib import Path

from kaudit.frontend.tu import extract_tu
from kaudit.ir.flow import LockTracker, events
from kaudit.ir.lower import embedding_paths, lower_function
from kaudit.ir.names import Keys, field_key, render, render_call, returned_only, with_outer
from kaudit.ir.nodes import Assign, CallOp, Cleanup, EachVcpu, Function, Slot
from kaudit.ir.slots import give_slots, own_slots

PRELUDE = """
struct kvm { int nr; int lock; };
struct kvm_vcpu { struct kvm *kvm; int flag; };
void act(struct kvm_vcpu *v);
void other(struct kvm_vcpu *v);
int busy(struct kvm_vcpu *v);
void mutex_lock(int *l);
void mutex_unlock(int *l);
"""


def lowered(tmp_path: Path, body: str, name: str) -> Function:
    path = tmp_path / "t.c"
    path.write_text(PRELUDE + body)
    facts = extract_tu(path, ["-std=gnu11"], tmp_path)
    fn = next(f for f in facts["functions"] if f["name"] == name)
    return lower_function(name, fn)


def event_at(fn: Function, callee: str, nth: int = 0):
    found = [e for e in events(fn, LockTracker(lambda call: None))
             if isinstance(e.instr, CallOp) and e.instr.call.callee == callee]
    return found[nth]


def guards(fn: Function, callee: str, nth: int = 0) -> list[tuple[str, bool]]:
    return [(render(g.atom, fn.temps), g.polarity) for g in event_at(fn, callee, nth).guards]


def test_conditions_split_into_atoms_with_polarity(tmp_path: Path) -> None:
    fn = lowered(tmp_path, """
void f(struct kvm_vcpu *v)
{
	if (!v->flag && !busy(v))
		act(v);
	else
		other(v);
}
""", "f")
    assert guards(fn, "act") == [("v->flag", False), ("busy(v)", False)]
    assert guards(fn, "other") == []  # the else side holds on two paths with nothing in common


def test_early_return_and_goto_dominate_what_follows(tmp_path: Path) -> None:
    fn = lowered(tmp_path, """
void f(struct kvm_vcpu *v)
{
	if (v->flag)
		return;
	if (busy(v))
		goto out;
	act(v);
out:
	other(v);
}
""", "f")
    assert guards(fn, "act") == [("v->flag", False), ("busy(v)", False)]
    assert guards(fn, "other") == [("v->flag", False)]  # the label joins both paths


def test_side_effects_become_instructions_in_order(tmp_path: Path) -> None:
    fn = lowered(tmp_path, """
int f(struct kvm_vcpu *v)
{
	int r = busy(v) + v->kvm->nr++;
	return v->flag && busy(v);
}
""", "f")
    instrs = [i for _, i in fn.instructions()]
    assert isinstance(instrs[0], CallOp) and instrs[0].call.callee == "busy"
    assert [render(i.target) for i in instrs if isinstance(i, Assign)][:3] == ["%c1", "v->kvm->nr", "r"]
    assert guards(fn, "busy", 1) == [("v->flag", True)]  # the right operand of && runs only if the left holds


def test_locks_held_through_goto_and_released_at_the_label(tmp_path: Path) -> None:
    fn = lowered(tmp_path, """
void f(struct kvm_vcpu *v)
{
	mutex_lock(&v->kvm->lock);
	if (busy(v))
		goto out;
	act(v);
out:
	mutex_unlock(&v->kvm->lock);
	other(v);
}
""", "f")
    assert event_at(fn, "act").locks == ("kvm.lock",)
    assert event_at(fn, "other").locks == ()


def test_scoped_guard_releases_on_every_exit(tmp_path: Path) -> None:
    fn = lowered(tmp_path, """
typedef int *guard_t;
static inline guard_t take(int *l) { mutex_lock(l); return l; }
static inline void drop(guard_t *g) { mutex_unlock(*g); }
void f(struct kvm_vcpu *v)
{
	guard_t g __attribute__((cleanup(drop))) = take(&v->kvm->lock);
	if (busy(v))
		return;
	act(v);
}
""", "f")
    cleanups = [(b.id, i) for b, i in fn.instructions() if isinstance(i, Cleanup)]
    assert len(cleanups) == 2 and {render_call(i.init) for _, i in cleanups} == {"take(&v->kvm->lock)"}
    tracker = LockTracker(lambda call: ("kvm.lock", "write") if call.callee == "take" else None)
    act = next(e for e in events(fn, tracker) if isinstance(e.instr, CallOp) and e.instr.call.callee == "act")
    assert act.locks == ("kvm.lock",)


def test_for_each_vcpu_is_a_loop_over_every_vcpu(tmp_path: Path) -> None:
    fn = lowered(tmp_path, """
struct vm { struct kvm_vcpu *vcpus[4]; int online; };
#define kvm_for_each_vcpu(i, v, k) for (i = 0; i < (k)->online && ((v) = (k)->vcpus[i]); i++)
int f(struct vm *k)
{
	struct kvm_vcpu *v;
	int i, any = 0;
	kvm_for_each_vcpu(i, v, k) {
		if (v->flag) {
			any = 1;
			break;
		}
	}
	return any;
}
""", "f")
    heads = [b.term for b in fn.blocks if isinstance(b.term, EachVcpu)]
    assert len(heads) == 1 and heads[0].iterator.name == "v"
    assert [loop.kind for loop in fn.loops] == ["vcpus"]


def test_an_open_coded_loop_over_the_online_vcpus_is_the_same_loop(tmp_path: Path) -> None:
    """`for (i = 0; i < atomic_read(&kvm->online_vcpus); i++) { v = kvm_get_vcpu(kvm, i); ...}` is
    kvm_for_each_vcpu written out: a scan of every vCPU, not a loop over an unknown bound; a loop over
    another bound, or one that fetches by another index, stays a plain loop."""
    source = """
typedef struct { int counter; } atomic_t;
int atomic_read(const atomic_t *v);
struct vm { atomic_t online_vcpus; int nr; };
struct kvm_vcpu *kvm_get_vcpu(struct vm *kvm, int i);
int f(struct vm *kvm)
{
	struct kvm_vcpu *v;
	int i, any = 0;
	for (i = 0; i < BOUND; i++) {
		v = kvm_get_vcpu(kvm, INDEX);
		if (v->flag)
			any = 1;
	}
	return any;
}
"""
    kinds = {}
    for bound, index in [("atomic_read(&kvm->online_vcpus)", "i"), ("kvm->nr", "i"),
                         ("atomic_read(&kvm->online_vcpus)", "0")]:
        fn = lowered(tmp_path, source.replace("BOUND", bound).replace("INDEX", index), "f")
        heads = [b.term for b in fn.blocks if isinstance(b.term, EachVcpu)]
        kinds[bound, index] = ([loop.kind for loop in fn.loops], [h.iterator.name for h in heads])
    assert kinds == {
        ("atomic_read(&kvm->online_vcpus)", "i"): (["vcpus"], ["v"]),
        ("kvm->nr", "i"): (["generic"], []),
        ("atomic_read(&kvm->online_vcpus)", "0"): (["generic"], []),
    }


def test_a_case_range_is_both_of_its_bounds(tmp_path: Path) -> None:
    """`case 0x90 ... 0x9f:` (the SINT MSRs of kvm_hv_set_msr()) is every value between its bounds, not
    only the first: a value the explorer never tries would be a behaviour it never checks."""
    fn = lowered(tmp_path, """
void f(struct kvm_vcpu *v, int msr)
{
	switch (msr) {
	case 0x90 ... 0x9f:
		act(v);
		break;
	case 0x80:
		other(v);
		break;
	}
}
""", "f")
    assert guards(fn, "act") == [("msr >= 144", True), ("msr <= 159", True)]
    assert guards(fn, "other") == [("msr == 128", True)]


def test_a_value_only_returned_is_told_from_one_the_function_reads(tmp_path: Path) -> None:
    """`ret = busy(v); return ret;` and `return busy(v);` only pass the value on; a value the function
    also tests, or passes to a call, is read there."""
    body = """
int passes(struct kvm_vcpu *v) { int ret = busy(v); return ret; }
int direct(struct kvm_vcpu *v) { return busy(v); }
int tests(struct kvm_vcpu *v) { int ret = busy(v); if (ret) act(v); return ret; }
"""
    assert returned_only(lowered(tmp_path, body, "passes")) == {"ret"}
    assert len(returned_only(lowered(tmp_path, body, "direct"))) == 1  # the call's temp
    assert returned_only(lowered(tmp_path, body, "tests")) == frozenset()


def test_a_struct_embedded_in_one_place_is_named_by_it_unless_embedded_twice_or_pointed_at() -> None:
    """kvm_vcpu_arch lives only in kvm_vcpu: its fields are kvm_vcpu.arch.*; kvm_mmu is embedded twice
    (which one a pointer designates is unknown) and kvm is pointed at (an object of its own, though one
    container embeds it): both keep their own names."""
    def field(name: str, record: str, ptr: int = 0) -> dict:
        return {"name": name, "record": record, "ptr": ptr, "array": False}

    structs = {
        "kvm_vcpu": {"fields": [field("arch", "kvm_vcpu_arch"), field("kvm", "kvm", 1)]},
        "kvm_vcpu_arch": {"fields": [field("root_mmu", "kvm_mmu"), field("guest_mmu", "kvm_mmu")]},
        "kvm_svm": {"fields": [field("kvm", "kvm")]},
        "kvm": {"fields": [field("arch", "kvm_arch")]},
    }
    assert embedding_paths(structs) == {"kvm_vcpu_arch": "kvm_vcpu.arch", "kvm_arch": "kvm.arch"}


def test_a_pointer_to_a_field_of_a_call_evaluated_once_is_that_field(tmp_path: Path) -> None:
    """`int *p = &self(v)->flag` outside any loop: the call's result never changes after it, so `*p` is
    the field where it is tested and where it is written (the rules' flag as the model's)."""
    fn = lowered(tmp_path, """
struct kvm_vcpu *self(struct kvm_vcpu *v);
void f(struct kvm_vcpu *v)
{
	int *p = &self(v)->flag;

	if (!*p) {
		*p = 1;
		act(v);
	}
}
""", "f")
    assert guards(fn, "act") == [("self(v)->flag", False)]
    assert "self(v)->flag" in [render(i.target, fn.temps) for _, i in fn.instructions() if isinstance(i, Assign)]


def test_storage_overlaps_its_members_but_a_path_reads_only_its_end() -> None:
    """A write of a struct changes every field in it and a write of a field changes the struct that holds
    it; a read names every struct on its path (`kvm->arch` in `kvm->arch.x`), so it reads a key only
    where it reads the key or a field inside it."""
    keys = Keys({"vcpu_svm.irq.window_requested", "kvm.arch.count"})
    assert keys.touched("vcpu_svm.irq")  # memset(&svm->irq, 0, ...)
    assert keys.touched("kvm.arch.count") and not keys.touched("kvm.arch.other")
    assert Keys({"vcpu_svm.irq"}).touched("vcpu_svm.irq.window_requested")
    assert keys.touched_by({"vcpu_svm.irq", "kvm.arch.other"}) == {"vcpu_svm.irq.window_requested"}
    # what Effects.reads_any intersects with the keys: a read and the structs holding it, never their fields
    assert not with_outer({"kvm.arch"}) & keys.keys and with_outer({"kvm.arch.count"}) & keys.keys
    assert with_outer({"vcpu_svm.irq.window_requested"}) & Keys({"vcpu_svm.irq"}).keys


SLOTS = """
typedef _Bool bool;
enum { false, true };
struct kvm_arch { bool waiting[8]; unsigned long pending[1]; unsigned long seen[1]; bool other[8]; };
struct kvm { struct kvm_arch arch; };
struct kvm_vcpu { struct kvm *kvm; int vcpu_idx; };
bool global_waiting[8];
bool test_and_set_bit(long nr, unsigned long *addr);
bool bitmap_empty(const unsigned long *src, unsigned int nbits);
void note(bool *b);

void ask(struct kvm_vcpu *vcpu)
{
	vcpu->kvm->arch.waiting[vcpu->vcpu_idx] = true;
	test_and_set_bit(vcpu->vcpu_idx, vcpu->kvm->arch.pending);
	test_and_set_bit(vcpu->vcpu_idx, vcpu->kvm->arch.seen);
	vcpu->kvm->arch.other[vcpu->vcpu_idx] = true;
	global_waiting[vcpu->vcpu_idx] = true;
}

bool any_seen(struct kvm *kvm)
{
	note(&kvm->arch.other[0]);
	return bitmap_empty(kvm->arch.seen, 8);
}
"""


def test_vm_storage_reached_only_at_each_vcpus_identity_is_that_vcpus_own(tmp_path: Path) -> None:
    path = tmp_path / "t.c"
    path.write_text(SLOTS)
    facts = extract_tu(path, ["-std=gnu11"], tmp_path)
    functions = [lower_function(f["name"], f) for f in facts["functions"]]
    own = own_slots(functions)
    # `seen` is tested whole, `other` at index 0, and a global is every VM's
    assert own == {"kvm.arch.waiting", "kvm.arch.pending"}
    ask = functions[0]
    give_slots(ask, own)
    targets = [i.target for _, i in ask.instructions() if isinstance(i, Assign)]
    assert isinstance(targets[0], Slot) and field_key(targets[0]) == "kvm_vcpu.kvm/arch/waiting[vcpu_idx]"
    assert render(targets[0]) == "vcpu->kvm->arch.waiting[vcpu->vcpu_idx]"
    assert not isinstance(targets[1], Slot) and not isinstance(targets[2], Slot)
    calls = [i.call for _, i in ask.instructions() if isinstance(i, CallOp)]
    assert render_call(calls[0]) == "test_and_set_bit(0, &vcpu->kvm->arch.pending[vcpu->vcpu_idx])"
    assert field_key(calls[0].args[1]) == "kvm_vcpu.kvm/arch/pending[vcpu_idx]"
    assert render_call(calls[1]) == "test_and_set_bit(vcpu->vcpu_idx, vcpu->kvm->arch.seen)"
