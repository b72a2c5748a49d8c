"""SARIF 2.1.0 output, validated against the official OASIS schema (tests/data, errata01)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from conftest import copy_sample, edit
from test_report_cli import run

SARIF_SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())


def sarif(*args: str) -> tuple[int, dict]:
    code, out = run(*args, "--format", "sarif")
    log = json.loads(out)
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(log)
    return code, log


def test_the_sample_audit_is_valid_sarif_with_rules_fingerprints_and_the_model_trace() -> None:
    code, log = sarif("audit", "--sim-steps", "0")
    _, report = run("audit", "--format", "json")
    assert code == 1
    (run_,) = log["runs"]
    rules = run_["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == ["KVM001", "KVM002"]
    assert "## What it does" in rules[0]["help"]["markdown"]
    findings = json.loads(report)["findings"]
    results = run_["results"]
    assert [r["partialFingerprints"]["kauditFindingId/v1"] for r in results] == [f["id"] for f in findings]
    error = results[0]
    assert (error["ruleId"], error["level"]) == ("KVM001", "error")
    region = error["locations"][0]["physicalLocation"]
    assert region["artifactLocation"]["uri"] == "arch/x86/kvm/svm/svm.c" and region["region"]["startLine"] == 117
    assert error["relatedLocations"][0]["physicalLocation"]["region"]["startLine"] == 80
    call_path, model = error["codeFlows"]
    assert call_path["threadFlows"][0]["locations"][-1]["location"]["physicalLocation"]["region"]["startLine"] == 117
    steps = sorted((loc["executionOrder"], flow["id"]) for flow in model["threadFlows"] for loc in flow["locations"])
    trace = findings[0]["model"]["trace"]
    assert [order for order, _ in steps] == list(range(1, len(trace) + 1))
    assert [vcpu for _, vcpu in steps] == [f"vCPU{step['vcpu']}" for step in trace]
    assert results[1]["level"] == "note"  # the sticky info


def test_the_fixed_sample_has_no_error_result(fixed_tree: Path) -> None:
    code, log = sarif("audit", str(fixed_tree))
    assert code == 0
    assert [r["level"] for r in log["runs"][0]["results"]] == ["note"]


def test_an_inline_suppression_is_a_sarif_suppression(tmp_path: Path) -> None:
    tree = copy_sample(tmp_path / "tree")
    clear = "\tkvm_clear_apicv_inhibit(vcpu->kvm, APICV_INHIBIT_REASON_IRQWIN);\n"
    edit(tree / "arch/x86/kvm/svm/svm.c", clear, "\t/* kaudit: ignore[KVM001] known */\n" + clear)
    code, log = sarif("audit", str(tree), "--no-model")
    assert code == 0
    assert log["runs"][0]["results"][0]["suppressions"] == [{"kind": "inSource", "justification": "known"}]
