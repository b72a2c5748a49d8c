"""Accepting findings: a baseline file (by stable id) and inline `kaudit: ignore[RULE]` comments."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from conftest import apply_patch, copy_sample, edit
from test_counter_rule import COUNTER_BUG
from test_report_cli import SCHEMA, run

CLEAR = "\tkvm_clear_apicv_inhibit(vcpu->kvm, APICV_INHIBIT_REASON_IRQWIN);\n"


def test_a_baseline_accepts_the_known_error_and_survives_line_moves(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    code, out = run("audit", "--terse", "--write-baseline", str(baseline))
    assert code == 0 and "1 finding in baseline" in out
    assert [e["key"] for e in json.loads(baseline.read_text())["findings"]] == ["APICV_INHIBIT_REASON_IRQWIN"]
    tree = copy_sample(tmp_path / "tree")
    svm = tree / "arch/x86/kvm/svm/svm.c"
    svm.write_text("/* moved */\n\n" + svm.read_text())
    code, out = run("audit", str(tree), "--baseline", str(baseline), "--format", "json")
    assert code == 0
    report = json.loads(out)
    jsonschema.validate(report, SCHEMA)
    (error,) = [f for f in report["findings"] if f["severity"] == "error"]
    assert error["suppressed"] == {"by": "baseline", "reason": "", "where": str(baseline)}
    assert report["summary"]["errors"] == 0 and report["summary"]["suppressed"] == {"baseline": 1, "inline": 0}


def test_a_finding_not_in_the_baseline_still_fails(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    run("audit", "--write-baseline", str(baseline))
    tree = copy_sample(tmp_path / "tree")
    apply_patch(tree, COUNTER_BUG)
    code, out = run("audit", str(tree), "--terse", "--baseline", str(baseline), "--no-model")
    assert code == 1 and "1 finding in baseline" in out
    assert [line.rsplit(" ", 1)[-1] for line in out.splitlines() if ": error: " in line] == ["[KVM002]"] * 2


@pytest.mark.parametrize(("comment", "suppressed"), [
    ("\t/* kaudit: ignore[KVM001] the RFC fix is queued */\n" + CLEAR, True),
    ("\t// kaudit: ignore[KVM002, KVM001] the RFC fix is queued\n" + CLEAR, True),
    (CLEAR.rstrip("\n") + " /* kaudit: ignore[KVM001] the RFC fix is queued */\n", True),
    ("\t/* kaudit: ignore[KVM002] another rule */\n" + CLEAR, False),
    ("\tsvm_clear_vintr(to_svm(vcpu)); /* kaudit: ignore[KVM001] code before it */\n" + CLEAR, False),
])
def test_an_inline_comment_suppresses_the_finding_on_its_line(tmp_path: Path, comment: str,
                                                              suppressed: bool) -> None:
    tree = copy_sample(tmp_path / "tree")
    edit(tree / "arch/x86/kvm/svm/svm.c", CLEAR, comment)
    code, out = run("audit", str(tree), "--no-model")
    errors = [line for line in out.splitlines() if ": error: " in line]
    if not suppressed:
        assert code == 1 and len(errors) == 1
        return
    assert code == 0 and errors == []
    (note,) = [line for line in out.splitlines() if "suppressed by kaudit: ignore" in line]
    assert note.endswith("[KVM001]") and ": the RFC fix is queued: premature clear of VM-wide" in note
    assert "1 suppressed inline" in out.splitlines()[-1]


def test_a_bad_baseline_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "b.json"
    bad.write_text('{"findings": 3}')
    code, out = run("audit", "--baseline", str(bad))
    assert code == 2 and out.strip() == f"kaudit: error: {bad}: not a kaudit baseline " \
        "(kaudit audit --write-baseline FILE writes one)"
