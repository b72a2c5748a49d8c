"""The runtime model on the sample: the bug's counterexample, the fix's proof, the cost simulation.

Code shapes beyond the sample are annotated C under tests/fixtures/ (test_fixtures.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE

from kaudit.analysis.context import Scopes
from kaudit.audit import AuditResult, audit_tree
from kaudit.ir.nodes import Binary, Const, CType, Field, Select, Unary, Var
from kaudit.model import extract, inline
from kaudit.model.check import ModelSettings, check_key, proof, protocol_of
from kaudit.model.code import Entry, Generations, Loc, Op, Protocol
from kaudit.model.domains import domains, for_vcpus
from kaudit.model.explore import Explorer, stores_references
from kaudit.model.extract import Unmodelled
from kaudit.model.flat import deciders, post_dominators
from kaudit.model.generations import generations
from kaudit.model.machine import Machine
from kaudit.model.reliance import Reliance
from kaudit.model.resolve import Resolver, Slots
from kaudit.model.simulate import simulate
from kaudit.report.json_report import build_report, dumps
from kaudit.resources import default_rules_dir
from kaudit.rules import load_rules

IRQWIN = "APICV_INHIBIT_REASON_IRQWIN"
RULE = load_rules(default_rules_dir())[0]


def test_sample_bug_is_confirmed_by_a_trace_of_two_requests_and_one_clear(sample_result: AuditResult) -> None:
    found = check_key(sample_result.analyses[0], RULE, IRQWIN, ModelSettings(vcpus=3))
    assert not isinstance(found, Unmodelled)
    assert (found.status, found.violation) == ("violation", "premature-clear")
    actions = [(step["vcpu"], step["action"]) for step in found.trace]
    sets = {v for v, a in actions if a.startswith("kvm_set_apicv_inhibit")}
    clears = [v for v, a in actions if a.startswith("kvm_clear_apicv_inhibit")]
    assert len(sets) == 2 and len(clears) == 1
    last = found.trace[-1]["vm_state_after"]
    assert last["inhibited"] == 0 and 2 in last["demand"]  # a vCPU's request returned, and AVIC is enabled


@pytest.mark.parametrize("vcpus", [2, 3, 4])
def test_fix_is_verified_and_named_from_what_the_proof_needs(fixed_result: AuditResult, vcpus: int) -> None:
    protocol = protocol_of(fixed_result.analyses[0], RULE, IRQWIN)
    assert not isinstance(protocol, Unmodelled)
    settings = ModelSettings(vcpus=vcpus)
    found = check_key(fixed_result.analyses[0], RULE, IRQWIN, settings)
    assert found.status == "verified" and not found.bound_hit
    named = proof(protocol, settings)
    assert named.discipline == "per-vcpu-flag-counter"
    assert named.relied == {"flags": True, "counts": True, "lock": True}  # without any one of them it breaks


def test_audit_marks_the_finding_confirmed_and_the_fixed_sites_verified(fixed_tree: Path) -> None:
    buggy = audit_tree(SAMPLE, [RULE], model=ModelSettings(sim_steps=0))
    (finding,) = [f for a in buggy.analyses for f in a.findings if f.severity == "error"]
    assert finding.model["status"] == "confirmed" and finding.model["trace"]
    fixed = audit_tree(fixed_tree, [RULE], model=ModelSettings(sim_steps=0))
    irq = [j for a in fixed.analyses for j in a.sites if j.site.key == IRQWIN]
    assert {j.model["status"] for j in irq} == {"verified"}
    assert {j.verdict.discipline for j in irq} == {"per-vcpu-flag-counter"}


def test_cost_simulation_shows_the_churn_the_fix_removes(sample_result: AuditResult, fixed_result: AuditResult) -> None:
    def cost(result: AuditResult) -> dict:
        protocol = protocol_of(result.analyses[0], RULE, IRQWIN)
        assert not isinstance(protocol, Unmodelled)
        return simulate(protocol, vcpus=4, steps=20_000, seed=0).to_json()

    buggy, fixed = cost(sample_result), cost(fixed_result)
    assert buggy["requests"] > 100 and fixed["requests"] > 100
    assert buggy["premature_clears"] > 0 and fixed["premature_clears"] == 0
    assert buggy["toggles_per_request"] > 2 * fixed["toggles_per_request"]
    assert buggy["locks_per_request"] > fixed["locks_per_request"]
    assert cost(sample_result) == buggy  # seeded: the same numbers every run
    reported = audit_tree(SAMPLE, [RULE], model=ModelSettings(sim_steps=20_000)).analyses[0].model[IRQWIN]["cost"]
    assert reported == buggy  # the report's cost of a confirmed violation is this simulation


def test_a_warm_run_reuses_the_judgements_and_reports_the_same(tmp_path: Path, monkeypatch) -> None:
    rules = load_rules(default_rules_dir())
    first = dumps(build_report(audit_tree(SAMPLE, rules, cache_dir=tmp_path, model=ModelSettings(sim_steps=500))))

    def refuse(self):
        raise AssertionError("explored again although the protocol did not change")

    monkeypatch.setattr(Explorer, "run", refuse)
    again = dumps(build_report(audit_tree(SAMPLE, rules, cache_dir=tmp_path, model=ModelSettings(sim_steps=500))))
    assert again == first


def test_a_protocol_too_large_to_explore_is_unmodelled_and_keeps_its_static_finding(monkeypatch) -> None:
    monkeypatch.setattr(extract, "MAX_OPS", 10)
    result = audit_tree(SAMPLE, [RULE], model=ModelSettings(sim_steps=0))
    irqwin = [j for j in result.analyses[0].sites if j.site.key == IRQWIN]
    assert irqwin and all(j.model["status"] == "not-modelled" for j in irqwin)
    assert all("too large to explore" in j.model["reason"] for j in irqwin)
    (error,) = [f for f in result.analyses[0].findings if f.severity == "error"]
    assert error.key == IRQWIN and error.model == {"status": "not-run"}  # the static finding, not confirmed


def test_a_long_call_chain_that_moves_nothing_of_the_protocol_is_summarised(tmp_path: Path) -> None:
    """The release behind nine helpers (the x86 emulator behind svm_update_soft_interrupt_rip()): their value
    and what they write are any value, not compiled code, and the fix is still verified."""
    tree = tmp_path / "tree"
    fixtures = Path(__file__).parent / "fixtures"
    shutil.copytree(fixtures / "include", tree / "include")
    (tree / "arch/x86/kvm").mkdir(parents=True)
    shutil.copy(fixtures / "KVM001/fix-after-a-long-call-chain.c", tree / "arch/x86/kvm")
    result = audit_tree(tree, [RULE], model=None, cache_dir=None)
    protocol = protocol_of(result.analyses[0], RULE, IRQWIN)
    assert not isinstance(protocol, Unmodelled)
    assert not {op.function for op in protocol.code if op.function.startswith("emulate_step")}
    assert [op.text for op in protocol.code if "summarised" in op.text] == ["emulate_step1(vcpu, soft) (summarised)"]
    assert check_key(result.analyses[0], RULE, IRQWIN, ModelSettings(vcpus=3)).status == "verified"


def _fixture_tree(tmp_path: Path, fixture: str) -> Path:
    tree = tmp_path / "tree"
    fixtures = Path(__file__).parent / "fixtures"
    shutil.copytree(fixtures / "include", tree / "include")
    (tree / "arch/x86/kvm").mkdir(parents=True)
    shutil.copy(fixtures / fixture, tree / "arch/x86/kvm")
    return tree


def test_code_that_changes_nothing_modelled_is_left_out_and_a_heavy_value_becomes_a_guess(tmp_path: Path,
                                                                                         monkeypatch) -> None:
    """The 6.1 shape of apic_hw_disabled: destroy loads guest MSRs through a switch whose base case alone moves
    the key. Compiled in full, the value of each MSR write decides the loop, so every case returning it is
    compiled; over the bound, the write's value is a guess, and the cases that change nothing modelled
    (the PAT and EFER checks) are left out. Verified both ways."""
    rule = load_rules(default_rules_dir())[1]
    result = audit_tree(_fixture_tree(tmp_path, "KVM002/count-behind-an-msr-switch.c"), [rule], model=None,
                        cache_dir=None)
    full = protocol_of(result.analyses[0], rule, "apic_hw_disabled")
    assert not isinstance(full, Unmodelled) and {"pat_valid", "set_efer"} <= {op.function for op in full.code}
    monkeypatch.setattr(extract, "MAX_COMPILED", 80)
    monkeypatch.setattr(inline, "SUMMARY_INSTRUCTIONS", 20)
    coarse = protocol_of(result.analyses[0], rule, "apic_hw_disabled")
    assert not isinstance(coarse, Unmodelled)
    assert not {"pat_valid", "set_efer"} & {op.function for op in coarse.code}
    assert [op.text for op in coarse.code if "its value not modelled" in op.text] == \
        ["set_msr(vcpu, guest_msr_index(vcpu, i), guest_msr_value(vcpu, i)) (its value not modelled)"]
    assert check_key(result.analyses[0], rule, "apic_hw_disabled", ModelSettings(vcpus=3)).status == "verified"


def test_a_trace_through_memory_the_model_cannot_name_is_inconclusive(tmp_path: Path) -> None:
    """Create counts the vCPU by a register it reads back from its register page at an offset an opaque
    helper computes. The model's leak trace needs a value of that read it made up (the page is modelled
    at the offsets the code names, kaudit.model.resolve): the site is inconclusive and says so, and no
    finding is reported."""
    tree = tmp_path / "tree"
    shutil.copytree(Path(__file__).parent / "fixtures/include", tree / "include")
    (tree / "arch/x86/kvm").mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "data/model/count-from-a-register-page.c", tree / "arch/x86/kvm")
    rule = load_rules(default_rules_dir())[1]
    result = audit_tree(tree, [rule], model=ModelSettings(sim_steps=0), cache_dir=None)
    (analysis,) = result.analyses
    assert not [f for f in analysis.findings if f.severity in ("error", "warning")]
    statuses = {(j.model["status"], tuple(j.model["assumes"])) for j in analysis.sites}
    assert statuses == {("inconclusive", ("*(vcpu->arch.regs + off)",))}


def test_an_input_takes_every_value_a_test_tells_apart_and_none_a_slice_emptied() -> None:
    """A switch on an input (an MSR index): the case that still does something is a value to try; the
    case whose body the slice emptied goes where every other value goes, and is not; an ordered test
    gives both sides of its threshold. Nothing is cut to a fixed count: a value never tried would be a
    behaviour never checked."""
    msr, state = Loc("local", 0), Loc("vm", 0)
    code = [Op("input", (msr, None, (), False, ""), "f", "f.c", 1, "msr"),
            Op("branch", (Binary("==", msr, Const(0x1b)), 3, 2), "f", "f.c", 2, "case APICBASE"),
            Op("branch", (Binary("==", msr, Const(0x277)), 4, 5), "f", "f.c", 3, "case PAT"),
            Op("set", (state, Const(1)), "f", "f.c", 4, "moves the state"),
            Op("jump", (9,), "f", "f.c", 5, "PAT: emptied"),
            Op("branch", (Binary(">=", msr, Const(0x40000090)), 6, 9), "f", "f.c", 6, "SINT range"),
            Op("set", (state, Const(2)), "f", "f.c", 7, ""),
            Op("jump", (9,), "f", "f.c", 8, ""),
            Op("jump", (9,), "f", "f.c", 8, ""),
            Op("end", (), "f", "f.c", 9, "")]
    inputs, _, _ = domains(code, Slots(), Scopes(frozenset(), frozenset()), {})
    assert inputs[0] == (0, 1, 0x1b, 0x4000008f, 0x40000090, 0x40000091)


def test_variables_compared_with_one_another_may_each_equal_any_other_or_none() -> None:
    """`if (index == vcpu->arch.vp_index) return; if (index != vcpu->vcpu_idx) ...; vp_index = index`: no
    constant is named, yet moving from one mismatched index to another needs three values. The vCPU's
    index is an identity: with more vCPUs than values it gets fresh ones, and so does the input."""
    index, old, own = Loc("local", 0), Loc("mine", 0), Loc("mine", 1)
    code = [Op("input", (index, None, (), False, ""), "f", "f.c", 1, "index"),
            Op("branch", (Binary("==", index, old), 4, 2), "f", "f.c", 2, ""),
            Op("branch", (Binary("!=", index, own), 3, 3), "f", "f.c", 3, ""),
            Op("set", (old, index), "f", "f.c", 4, ""),
            Op("end", (), "f", "f.c", 5, "")]
    slots = Slots(cpu_constant={1: CType("u32")}, identity={1})
    inputs, constants, identities = domains(code, slots, Scopes(frozenset(), frozenset()), {})
    assert inputs[0] == (0, 1, 2) and constants == {1: (0, 1)}  # the index need only equal it or not
    assert identities == {1: (("input", 0),)}
    protocol = Protocol("KVM002", "k", code, [], [], [], ["old", "own"], cpu_init=constants, domains=inputs,
                        identities=identities)
    three, four = for_vcpus(protocol, 3), for_vcpus(protocol, 4)  # the index: any vCPU's, or none of theirs
    assert three.cpu_init[1] == (0, 1, 2) and three.domains[0] == (0, 1, 2, 3)
    assert four.cpu_init[1] == (0, 1, 2, 3) and four.domains[0] == (0, 1, 2, 3, 4)


def test_only_a_generation_compared_for_equality_is_held_as_a_rank() -> None:
    """`cur_gen++`, copied into the vCPU and compared with `!=`: its numbers do not matter. Compared with a
    number (`cur_gen > 5`), they do, and it stays a number."""
    gen, mine = Loc("vm", 0), Loc("mine", 0)

    def op(kind: str, *args: object) -> Op:
        return Op(kind, args, "f", "f.c", 1, "")

    code = [op("set", gen, Binary("+", gen, Const(1))), op("set", mine, gen),
            op("branch", Binary("!=", mine, gen), 0, 0)]
    assert generations(code, [], set()) == Generations(frozenset({0}), frozenset({0}), frozenset())
    assert not generations(code, [], {0})  # a count the checks read as a number
    assert not generations([*code, op("branch", Binary(">", gen, Const(5)), 0, 0)], [], set())
    assert not generations([*code, op("set", gen, mine)], [], set())  # set back to a copy: not the largest
    assert not generations([*code, op("set", Loc("vm", 1), gen)], [], {1})  # copied into a count


def test_a_guess_another_vcpu_wrote_is_relied_on_where_it_is_read() -> None:
    mine, theirs, value = Loc("mine", 3), Loc("cpu", 3, 7), Loc("local", 1)
    reliance = Reliance({}, 0)
    reliance.step(1, Op("input", (value, None, (), False, "summarised()"), "f", "f.c", 1, ""))
    reliance.step(1, Op("set", (mine, value), "f", "f.c", 2, ""))
    reliance.step(0, Op("branch", (theirs, 0, 0), "f", "f.c", 3, ""))
    assert reliance.relied == ["summarised()"]


def test_a_write_in_a_loop_that_never_exits_keeps_the_branch_before_it() -> None:
    """Control dependence walks post-dominators; code that never reaches the exit has none, so there the
    branch decides everything it reaches before its paths join (`0: if -> 1 | 4; 1-3: a loop writing`)."""
    def op(kind: str, *args: object) -> Op:
        return Op(kind, args, "f", "f.c", 1, "", False, -1)

    code = [op("branch", Const(1), 1, 4), op("jump", 2), op("set", Loc("vm", 0), Const(1)), op("jump", 1), op("end")]
    assert {pc: sorted(d) for pc, d in deciders(code, post_dominators(code)).items()} == {1: [0], 2: [0], 3: [0]}


def _resolved(ops: list[Op], per_vcpu: frozenset[str]) -> tuple[list[Op], Resolver]:
    draft = inline.Draft(ops=ops)
    resolver = Resolver(draft, Scopes(per_vcpu, frozenset()), lambda key: True, lambda key: True)
    return resolver.run()[0], resolver


def test_a_register_page_is_state_element_by_element() -> None:
    """`apic->regs`, a pointer field: a write at a constant offset is that element's, a write at an offset
    the code computes writes whichever named element it hits, a read at a computed offset is a guess, and
    a copy from user space gives every element any value (an input, no guess)."""
    apic = Var("apic", "param", CType("struct kvm_lapic *", "kvm_lapic", 1))
    regs = Field(apic, "regs", True, "kvm_lapic", CType("void *", "", 1))
    i = Var("i", "local", CType("int"))
    user = Field(Var("s", "param", CType("struct state *", "state", 1)), "regs", True, "state", CType("char *", "", 1))

    def at(offset):
        return Unary("*", Binary("+", regs, offset))

    ops = [Op("set", (at(Const(0x350)), Const(0x10000)), "f", "f.c", 1, "LVT0 = masked"),
           Op("set", (at(Binary("+", Const(0x320), Binary("*", Const(16), i))), Const(0x400)), "f", "f.c", 2,
              "LVT(i) = NMI"),
           Op("set", (Var("x", "local"), at(Const(0x350))), "f", "f.c", 3, "x = LVT0"),
           Op("set", (Var("y", "local"), at(i)), "f", "f.c", 4, "y = reg(i)"),
           Op("fill", (regs, user, None), "f", "f.c", 5, "memcpy(apic->regs, s->regs, 1024)")]
    code, resolver = _resolved(ops, frozenset({"kvm_lapic"}))
    lvt0 = Loc("mine", resolver.slots.cpu["kvm_lapic.regs[848]"], name="kvm_lapic.regs[848]")
    assert set(resolver.slots.cpu) == {"kvm_lapic.regs[848]"}
    assert code[0].args == (lvt0, Const(0x10000))
    assert code[1].args[0] == lvt0 and isinstance(code[1].args[1], Select)  # LVT0 if 0x320 + 16 * i == 0x350
    assert code[2].args[1] == lvt0
    guessed = [op for op in code if op.kind == "input" and op.args[4]]
    assert [op.args[4] for op in guessed] == ["*(apic->regs + i)"]
    assert [op.kind for op in code if op.line == 5] == ["input", "set"] and not code[-2].args[4]


def test_a_field_of_a_local_struct_is_the_locals_even_through_a_pointer() -> None:
    """`struct msr_entry e` filled by a call the model does not run, then read as `(&e)->index` by a helper:
    a local (its value a guess, as for any local filled by code not run), not the state of every
    `struct msr_entry` a vCPU holds; one the code assigns is a local slot."""
    entry = CType("struct msr_entry", "msr_entry")
    e, h = Var("e", "local", entry), Var("h", "local", entry)
    ops = [Op("set", (Field(Unary("&", h), "index", True, "msr_entry"), Const(3)), "f", "f.c", 1, "h.index = 3"),
           Op("set", (Var("x", "local"), Field(Unary("&", h), "index", True, "msr_entry")), "f", "f.c", 2, ""),
           Op("set", (Var("y", "local"), Field(Unary("&", e), "index", True, "msr_entry")), "f", "f.c", 3, "")]
    code, resolver = _resolved(ops, frozenset({"msr_entry"}))
    assert not resolver.slots.cpu and "msr_entry.index" not in resolver.modelled
    assert code[1].args[1] == Loc("local", resolver.slots.locals["h.index"], name="h.index")
    (read,) = [op for op in code if op.kind == "input"]
    assert read.args[2] == () and read.args[4] == "(&e)->index"  # no state to widen for


BACKEND_CORE = """#include <fixture.h>
struct static_key_false nested_users;
struct backend_ops { void (*enter)(struct kvm_vcpu *vcpu); void (*leave)(struct kvm_vcpu *vcpu); };
extern struct backend_ops *backend;
int kvm_arch_vcpu_create(struct kvm_vcpu *vcpu) { return 0; }
void kvm_arch_vcpu_destroy(struct kvm_vcpu *vcpu) { backend->leave(vcpu); }
"""
BACKEND = """#define FIXTURE_VCPU_ARCH bool nested;
#include <fixture.h>
struct static_key_false nested_users;
struct backend_ops { void (*enter)(struct kvm_vcpu *vcpu); void (*leave)(struct kvm_vcpu *vcpu); };
static void NAME_enter(struct kvm_vcpu *vcpu)
{
	if (COUNTS && !vcpu->arch.nested) { vcpu->arch.nested = true; static_branch_inc(&nested_users); }
}
static void NAME_leave(struct kvm_vcpu *vcpu)
{
	if (COUNTS && vcpu->arch.nested) { vcpu->arch.nested = false; static_branch_dec(&nested_users); }
	vcpu->arch.nested = false;
}
struct backend_ops NAME_ops = { .enter = NAME_enter, .leave = NAME_leave };
"""


def test_a_vcpu_runs_one_backend_through_every_call_of_its_ops(tmp_path: Path) -> None:
    """Two vendor modules bind one ops interface; only svm/ counts its nested users (vmx/ enters without
    a count, and its leave drops the flag), and destroy leaves through the interface. A vCPU runs one
    backend, in its own entries and in every call through the interface: entering with svm's and
    destroying with vmx's leave, which would leak the count, is not a behaviour of any vCPU."""
    tree = tmp_path / "tree"
    shutil.copytree(Path(__file__).parent / "fixtures/include", tree / "include")
    for path, text in (("x86.c", "#define FIXTURE_VCPU_ARCH bool nested;\n" + BACKEND_CORE),
                       ("svm/svm.c", BACKEND.replace("NAME", "svm").replace("COUNTS", "1")),
                       ("vmx/vmx.c", BACKEND.replace("NAME", "vmx").replace("COUNTS", "0"))):
        (tree / "arch/x86/kvm" / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / "arch/x86/kvm" / path).write_text(text)
    rule = load_rules(default_rules_dir())[1]
    result = audit_tree(tree, [rule], model=None, cache_dir=None)
    outcome = check_key(result.analyses[0], rule, "nested_users", ModelSettings(vcpus=2))
    assert not isinstance(outcome, Unmodelled) and outcome.status == "verified", outcome


@pytest.mark.parametrize(("fixture", "key", "vcpus", "violation"), [
    ("KVM002/create-leak.c", "apic_sw_disabled", 1, "leak"),
    ("KVM002/generation-matched-count.c", "kvm.arch.nr_matched", 3, ""),
])
def test_a_count_whose_vcpus_share_nothing_else_is_explored_with_one(tmp_path: Path, fixture: str, key: str,
                                                                      vcpus: int, violation: str) -> None:
    """A static key each vCPU raises and lowers blindly: one vCPU's lifetime shows every leak (and the
    create-leak is still found). A count reset and compared through VM-wide state (the TSC generation)
    couples the vCPUs: they are explored together."""
    rule = load_rules(default_rules_dir())[1]
    result = audit_tree(_fixture_tree(tmp_path, fixture), [rule], model=None, cache_dir=None)
    outcome = check_key(result.analyses[0], rule, key, ModelSettings(vcpus=3))
    assert not isinstance(outcome, Unmodelled)
    assert (outcome.vcpus, outcome.violation) == (vcpus, violation)


def test_a_reset_runs_with_its_callers_constant_and_the_other_way_is_never_compiled(tmp_path: Path) -> None:
    """kvm_vcpu_reset() is called with `false` from create and `true` on INIT: the reset entry takes
    `true`, and the code behind `if (!init_event)` is not compiled for it (the constant-branch fold would
    drop it). As an input, init_event takes both ways."""
    rule = load_rules(default_rules_dir())[1]
    result = audit_tree(_fixture_tree(tmp_path, "KVM002/reset-on-init-keeps-the-flag.c"), [rule], model=None,
                        cache_dir=None)
    extractor = extract.Extractor(result.analyses[0], rule, "lint1_watchers")
    reset = next(iter(result.program.functions_named("kvm_vcpu_reset")))
    assert extractor.entry_subst(reset, "reset")["init_event"] == Const(1)

    def drops_the_flag(subst: dict) -> bool:
        inliner = inline.Inliner(extractor.lowered, extractor.effects, extractor.api, {"lint1_watchers",
                                 "kvm_vcpu.arch.lint1_unmasked"}, rule.update_lock, rule.word,
                                 inline.Core(frozenset(), frozenset()))
        inliner.entry(reset, subst, False)
        return any(op.text == "vcpu->arch.lint1_unmasked = false" for op in inliner.draft.ops)

    assert not drops_the_flag(extractor.entry_subst(reset, "reset"))
    assert drops_the_flag(extractor.entry_subst(reset, "transition"))


def test_an_inhibits_reset_runs_only_where_it_moves_the_protocols_bookkeeping(tmp_path: Path) -> None:
    """The IRQ window's protocol is built without kvm_vcpu_reset(); INIT dropping the per-vCPU flag moves its
    bookkeeping, so the reset runs with it (and the leak is found); the same tree with a reset that touches
    nothing of the protocol leaves it out, saying it cannot change the verdict."""
    rule = load_rules(default_rules_dir())[0]
    key = "APICV_INHIBIT_REASON_IRQWIN"
    result = audit_tree(_fixture_tree(tmp_path / "drops", "KVM001/flag-dropped-on-init.c"), [rule], model=None,
                        cache_dir=None)
    protocol = extract.inhibit_protocol(result.analyses[0], rule, key)
    assert [e.kind for e in protocol.entries if e.name == "kvm_vcpu_reset"] == ["reset"]
    assert not protocol.left_out

    source = (Path(__file__).parent / "fixtures/KVM001/flag-dropped-on-init.c").read_text()
    harmless = source.replace("to_svm(vcpu)->avic_irq_window = false;", "vcpu->guest_debug = 0;")
    assert harmless != source
    (tmp_path / "harmless.c").write_text(harmless)
    result = audit_tree(_fixture_tree(tmp_path / "harmless", tmp_path / "harmless.c"), [rule], model=None,
                        cache_dir=None)
    protocol = extract.inhibit_protocol(result.analyses[0], rule, key)
    assert "kvm_vcpu_reset" not in [e.name for e in protocol.entries]
    assert protocol.left_out == [("kvm_vcpu_reset", "not run: it writes nothing the protocol models or reads and "
                                  f"reaches no set or clear of {key}, so it cannot change the verdict")]


def test_a_writer_of_the_bookkeeping_no_entry_reaches_runs_as_an_entry(tmp_path: Path) -> None:
    """An ioctl that drops a vCPU's flag (an inhibit's, or the one a count of vCPUs keeps with it) runs
    although nothing calls it; a caller-less function that writes only other state does not."""
    rules = load_rules(default_rules_dir())
    for rule, fixture, build in ((rules[0], "KVM001/flag-dropped-by-an-ioctl.c", extract.inhibit_protocol),
                                 (rules[1], "KVM002/flag-dropped-by-an-ioctl.c", extract.counter_protocol)):
        result = audit_tree(_fixture_tree(tmp_path / rule.id, fixture), [rule], model=None, cache_dir=None)
        analysis = result.analyses[0]
        protocol = build(analysis, rule, analysis.sites[0].site.key)
        writers = [e.name for e in protocol.entries if e.kind == "writer"]
        assert writers and all(name.startswith("kvm_vcpu_ioctl") for name in writers), protocol.entries

    source = (Path(__file__).parent / "fixtures/KVM001/flag-dropped-by-an-ioctl.c").read_text()
    other = source.replace("to_svm(vcpu)->avic_irq_window = false;", "vcpu->guest_debug = 0;")
    assert other != source
    (tmp_path / "other.c").write_text(other)
    result = audit_tree(_fixture_tree(tmp_path / "other", tmp_path / "other.c"), [rules[0]], model=None,
                        cache_dir=None)
    protocol = extract.inhibit_protocol(result.analyses[0], rules[0], "APICV_INHIBIT_REASON_IRQWIN")
    assert not [e for e in protocol.entries if e.kind == "writer"] and not protocol.left_out


def test_a_field_an_entry_writes_before_it_reads_is_forgotten_between_calls() -> None:
    """Entry 0 writes field 0 then reads it, and reads field 1 before any write: between calls field 0's
    value is never seen again, field 1's is."""
    mine0, mine1, x = Loc("mine", 0), Loc("mine", 1), Loc("local", 0)
    code = [Op("set", (mine0, Const(1)), "f", "f.c", 1, ""),
            Op("set", (x, Binary("+", mine0, mine1)), "f", "f.c", 2, ""),
            Op("set", (mine1, x), "f", "f.c", 3, ""),
            Op("end", (), "f", "f.c", 4, "")]
    assert extract.dead_when_idle(code, [], [0], 2) == (0,)


def test_an_input_forks_where_a_test_tells_its_values_apart_and_keeps_every_value() -> None:
    """An input of ten values tested once (`x == 3`) forks the move in two, not ten; the way that stores it
    in state then takes each of the nine values still possible, so no behaviour is lost. (The lock makes
    the call a move of its own: a call runs on to its first visible op, the write here.)"""
    x, word = Loc("local", 1), Loc("vm", 0)
    code = [Op("acquire", ("lock", "write", None), "f", "f.c", 1, "lock"),
            Op("release", ("lock", None), "f", "f.c", 1, "unlock"),
            Op("input", (x, tuple(range(10)), (), False, ""), "f", "f.c", 1, "x"),
            Op("branch", (Binary("==", x, Const(3)), 4, 5), "f", "f.c", 2, "x == 3"),
            Op("end", (), "f", "f.c", 3, ""),
            Op("set", (word, x), "f", "f.c", 4, "word = x"),
            Op("end", (), "f", "f.c", 5, "")]
    protocol = Protocol("KVM002", "word", code, [Entry("f", "f", 0)], [], ["word"], [],
                        live=extract.liveness(code, 0, []), domains={2: tuple(range(10))})
    machine = Machine(protocol, 1)
    start = machine.initial()
    first = [state for _, state, _ in machine.moves(start, 0)]
    assert sorted(state[1][0][1] for state in first) == [0, 5]  # x == 3 returned; the rest stops at the write
    [at_write] = [state for state in first if state[1][0][1] == 5]
    written = sorted(state[0][0] for _, state, _ in machine.moves(at_write, 0))
    assert written == [0, 1, 2, 4, 5, 6, 7, 8, 9]


def test_a_counterexample_names_the_entry_of_a_call_that_returns_in_the_same_move() -> None:
    """A call runs on to its first visible op and may return in that move: the trace still names the
    entry (the culprit's, which the report's wording needs)."""
    count = Loc("vm", 0)
    code = [Op("set", (count, Const(5)), "bump", "f.c", 1, "count = 5"), Op("end", (), "bump", "f.c", 2, "")]
    protocol = Protocol("KVM002", "count", code, [Entry("bump", "bump", 0)], [], ["count"], [], word=0,
                        kind="counter", live=extract.liveness(code, 0, []))
    outcome = Explorer(protocol, 1).run()
    assert (outcome.violation, outcome.culprit_entry) == ("drift", "bump")
    assert [step["action"] for step in outcome.trace] == ["calls bump", "count = 5"]


def test_a_reference_to_a_vcpu_stored_in_state_turns_symmetry_reduction_off() -> None:
    """Sorting the vCPUs renumbers the references their locals hold, not one stored in the VM's slots
    (`kvm->arch.last = v` in a loop over every vCPU): such a protocol is explored unsorted."""
    v, last, mask = Loc("local", 1), Loc("vm", 0), Loc("cpu", 0, 1)

    def loop(body: Op) -> list[Op]:
        return [Op("each", (v, 1, 3), "f", "f.c", 1, "kvm_for_each_vcpu"), body,
                Op("jump", (0,), "f", "f.c", 1, ""), Op("end", (), "f", "f.c", 3, "")]

    def protocol(code: list[Op]) -> Protocol:
        return Protocol("KVM001", "key", code, [Entry("f", "f", 0)], [], ["last"], ["mask"],
                        live=extract.liveness(code, 0, []))

    stores = protocol(loop(Op("set", (last, v), "f", "f.c", 2, "kvm->arch.last = v")))
    reads = protocol(loop(Op("set", (last, mask), "f", "f.c", 2, "kvm->arch.last = v->arch.mask")))
    assert stores_references(stores) and not Explorer(stores, 3).symmetric
    assert not stores_references(reads) and Explorer(reads, 3).symmetric
