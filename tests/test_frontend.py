"""The libclang layer: what it records from C, including broken C."""

from __future__ import annotations

from pathlib import Path

from kaudit.frontend.tu import extract_tu

PRELUDE = """
struct kvm { int nr; };
struct kvm_vcpu { struct kvm *kvm; int flag; };
struct ops { void (*enable)(struct kvm_vcpu *v); int (*run)(struct kvm_vcpu *v); };
void act(struct kvm_vcpu *v);
int busy(struct kvm_vcpu *v);
"""


def facts_of(tmp_path: Path, body: str, name: str = "t.c") -> dict:
    path = tmp_path / name
    path.write_text(PRELUDE + body)
    return extract_tu(path, ["-std=gnu11"], tmp_path)


def function(facts: dict, name: str) -> dict:
    return next(f for f in facts["functions"] if f["name"] == name)


def test_ops_table_and_handler_array_initialisers(tmp_path: Path) -> None:
    facts = facts_of(tmp_path, """
enum { EXIT_A = 4, EXIT_B = 9 };
static void my_enable(struct kvm_vcpu *v) { act(v); }
static int my_run(struct kvm_vcpu *v) { return 1; }
static struct ops my_ops = { .run = my_run, .enable = my_enable, };
static int (*const handlers[])(struct kvm_vcpu *v) = { [EXIT_B] = my_run, [EXIT_A] = my_run };
""")
    tables = {t["name"]: t for t in facts["tables"]}
    assert tables["my_ops"]["record"] == "ops" and not tables["my_ops"]["array"]
    entries = [(e["key"], e["function"]) for e in tables["my_ops"]["entries"]]
    assert entries == [("run", "my_run"), ("enable", "my_enable")]
    assert tables["handlers"]["array"]
    assert [(e["key"], e["function"]) for e in tables["handlers"]["entries"]] == [(9, "my_run"), (4, "my_run")]


def test_indirect_calls_record_how_they_go(tmp_path: Path) -> None:
    facts = facts_of(tmp_path, """
extern struct ops global_ops;
extern void (*__SCT__kvm_x86_enable)(struct kvm_vcpu *v);
#define static_call(name) (__SCT__##name)
static int (*table[4])(struct kvm_vcpu *v);
int f(struct kvm_vcpu *v, int code)
{
	static_call(kvm_x86_enable)(v);
	global_ops.enable(v);
	return table[code](v);
}
""")
    calls = [s["e"] for s in function(facts, "f")["body"]]
    assert [c["via"] for c in calls] == [
        {"kind": "static_call", "name": "kvm_x86_enable"},
        {"kind": "member", "record": "ops", "field": "enable"},
        {"kind": "array", "name": "table"},
    ]


def test_arguments_carry_constant_values(tmp_path: Path) -> None:
    facts = facts_of(tmp_path, """
enum reason { R_A, R_B, R_C };
void set(struct kvm *k, enum reason r, int on);
void f(struct kvm_vcpu *v) { set(v->kvm, R_C, 1 + 1); }
""")
    call = function(facts, "f")["body"][0]["e"]
    assert call["args"][1] == {"k": "enum", "name": "R_C", "v": 2}
    assert call["args"][2]["k"] == "binary"
    assert call["args"][0]["k"] == "member" and call["args"][0]["record"] == "kvm_vcpu"


def test_parse_errors_are_recorded_and_do_not_abort(tmp_path: Path) -> None:
    facts = facts_of(tmp_path, """
#include <does/not/exist.h>
void f(struct kvm_vcpu *v) { act(v); }
""")
    # KeepGoing parsing reports a missing header as an error, not a fatal stop
    assert [d["severity"] for d in facts["diagnostics"]] in (["error"], ["fatal"])
    assert "not found" in facts["diagnostics"][0]["message"]
    assert function(facts, "f")["params"][0]["record"] == "kvm_vcpu"


def test_scoped_guard_declaration_is_marked(tmp_path: Path) -> None:
    facts = facts_of(tmp_path, """
void lock_it(int *l);
static inline int *ctor(int *l) { lock_it(l); return l; }
static inline void dtor(int **p) { }
int the_lock;
void f(struct kvm_vcpu *v)
{
	int *g __attribute__((cleanup(dtor))) = ctor(&the_lock);
	act(v);
}
""")
    decl = function(facts, "f")["body"][0]
    assert decl["s"] == "decl" and decl["cleanup"] and decl["init"]["callee"] == "ctor"


def test_arrays_of_pointers_and_postfix_operators(tmp_path: Path) -> None:
    facts = facts_of(tmp_path, """
struct vm { struct kvm_vcpu *vcpus[4]; int n; };
void f(struct vm *vm) { vm->n++; ++vm->n; }
""")
    fields = {f["name"]: f for s in facts["structs"] if s["name"] == "vm" for f in s["fields"]}
    assert (fields["vcpus"]["record"], fields["vcpus"]["ptr"], fields["vcpus"]["array"]) == ("kvm_vcpu", 1, True)
    ops = [(s["e"]["op"], s["e"].get("post", False)) for s in function(facts, "f")["body"]]
    assert ops == [("++", True), ("++", False)]


def test_an_unnamed_struct_is_named_by_its_place_in_the_tree_wherever_the_tree_is(tmp_path: Path) -> None:
    """libclang spells an unnamed struct or union by its absolute file path; the facts say where it is in
    the tree, so two copies of one tree give the same facts (and share cached reports)."""
    body = """
struct cpu { union { int a; long b; }; struct { int c; } d; };
int get(struct cpu *x) { return x->a + x->d.c; }
"""
    facts = [facts_of(tmp_path / copy, body) for copy in ("one", "two") if (tmp_path / copy).mkdir() is None]
    assert facts[0]["functions"] == facts[1]["functions"] and facts[0]["structs"] == facts[1]["structs"]
    text = repr(facts[0]["functions"]) + repr(facts[0]["structs"])
    assert "(unnamed struct at t.c:" in text and str(tmp_path) not in text


def test_an_enum_the_code_spells_lists_every_enumerator(tmp_path: Path) -> None:
    """The model needs what a value of an enum can be, including enumerators no code names; enums the
    recorded code never spells are left out."""
    facts = facts_of(tmp_path, """
enum mode { M_OFF, M_ON = 4, M_ALSO = 4, M_LAST };
enum unused { U_A, U_B };
int f(enum mode m) { return m == M_ON; }
""")
    assert facts["enums"] == [{"name": "mode", "values": [0, 4, 5]}]
