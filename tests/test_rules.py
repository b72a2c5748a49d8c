"""Rule files: validated against kaudit/data/rule.schema.json, errors as file:line, sources from the rules."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import jsonschema
import pytest
from test_report_cli import run

from kaudit.resources import default_rules_dir
from kaudit.rules import RULE_SCHEMA, load_rules

KVM001 = "apicv-inhibit-balance.yaml"


def rules_copy(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), rules)
    return rules


def edit_rule(rules: Path, old: str, new: str, name: str = KVM001) -> tuple[Path, int]:
    """Replace text in a rule file; return the file and the 1-based line the new text starts on."""
    path = rules / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path, text[:text.index(old)].count("\n") + 1


def error_of(rules: Path) -> str:
    code, out = run("rule", "--rules", str(rules))
    assert code == 2, out
    (line,) = out.strip().splitlines()  # one line, never a traceback
    assert line.startswith("kaudit: error: ")
    return line.removeprefix("kaudit: error: ")


def test_the_schema_is_valid_and_the_bundled_rules_follow_it() -> None:
    schema = json.loads(RULE_SCHEMA.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert [r.id for r in load_rules(default_rules_dir())] == ["KVM001", "KVM002"]
    code, out = run("schema", "rule")
    assert code == 0 and json.loads(out) == schema


def test_a_typo_in_a_key_is_an_error_on_its_line(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    path, line = edit_rule(rules, "update_lock: kvm", "update_lok: kvm")
    assert error_of(rules) == f"{path}:{line}: unknown key 'update_lok' (did you mean 'update_lock'?)"
    edit_rule(rules, "update_lok: kvm", "update_lock: kvm")
    path, line = edit_rule(rules, "takes_lock: true}", "takes_lok: true}")
    assert error_of(rules) == f"{path}:{line}: unknown key 'api[0].takes_lok' (did you mean 'takes_lock'?)"


@pytest.mark.parametrize(("old", "new", "message"), [
    ("per_vcpu_types: [kvm_vcpu]", "per_vcpu_types: [5]", "per_vcpu_types[0]: 5 is not of type 'string'"),
    ("severity: error", "severity: fatal", "severity: 'fatal' is not one of ['error', 'warning', 'info']"),
    ("key_arg: 1, action: set,", "key_arg: 1,", "api[0] needs action or value_arg"),
    ("key_arg: 1, action: set,", "key_arg: one, action: set,", "api[0].key_arg: 'one' is not of type 'integer'"),
    ("sources: [arch/x86/kvm/**/*.c, virt/kvm/*.c]", "sources: [../../etc/*.c]",
     "sources[0]: '../../etc/*.c' is not a relative glob ending in .c (no absolute path, no ..)"),
    ("id: KVM001", "id: KVM001\nid: KVM003", "key 'id' given twice"),
])
def test_wrong_values_give_file_line_message(tmp_path: Path, old: str, new: str, message: str) -> None:
    rules = rules_copy(tmp_path)
    path, line = edit_rule(rules, old, new)
    error = error_of(rules)
    assert error.startswith(f"{path}:") and error.endswith(message), error
    reported = int(error.removeprefix(f"{path}:").split(":")[0])
    assert line <= reported <= line + new.count("\n"), error


def test_fix_hint_5_is_not_text(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    path = rules / KVM001
    text = path.read_text()
    block = re.search(r"^fix_hint: \|\n(?:  .*\n|\n)+", text, re.MULTILINE)
    assert block
    path.write_text(text[:block.start()] + "fix_hint: 5\n" + text[block.end():])
    line = text[:block.start()].count("\n") + 1
    assert error_of(rules) == f"{path}:{line}: fix_hint: 5 is not of type 'string'"


def test_a_missing_key_and_invalid_yaml_are_named(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    path, line = edit_rule(rules, "title:", "tytle:")
    assert error_of(rules) == f"{path}:{line}: unknown key 'tytle' (did you mean 'title'?)"
    edit_rule(rules, "tytle:", "# title:")
    assert error_of(rules) == f"{path}:2: rule lacks title"
    path.write_text("id: X\nname: [unclosed\n")
    assert error_of(rules).startswith(f"{path}:3:")


def test_an_alias_bomb_fails_fast(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    (rules / "bomb.yaml").write_text("\n".join(lines) + "\n")
    start = time.monotonic()
    error = error_of(rules)
    assert time.monotonic() - start < 2
    assert error == f"{rules / 'bomb.yaml'}:2: more than 8 YAML aliases"


def test_a_rule_id_used_twice_is_an_error(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    path, line = edit_rule(rules, "id: KVM002", "id: KVM001", "vm-counter-transition.yaml")
    assert error_of(rules) == f"{path}:{line}: rule id 'KVM001' is also used by {rules / KVM001}:2"


def test_the_files_scanned_follow_the_rules_sources(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    for name in (KVM001, "vm-counter-transition.yaml"):
        edit_rule(rules, "sources: [arch/x86/kvm/**/*.c, virt/kvm/*.c]", "sources: [arch/x86/kvm/svm/*.c]", name)
    code, out = run("audit", "--rules", str(rules), "--format", "json", "--no-model")
    report = json.loads(out)
    assert report["tree"]["files_analyzed"] == 1
    # the clear is in svm.c and so is the set: the premature clear is still found, from one file
    assert code == 1 and [f["key"] for f in report["findings"]] == ["APICV_INHIBIT_REASON_IRQWIN"]
