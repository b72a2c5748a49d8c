"""SARIF 2.1.0, built from the JSON report, for code-scanning UIs and CI dashboards.

One run: the rules with their pages as help, one result per finding (for
check-patch: what each patch introduces, as `new`, and fixes, as `absent`),
the finding's stable id as its fingerprint, the related sites as related
locations, and two code flows: the call path from a vCPU entry, and the
runtime model's counterexample with one thread flow per vCPU, ordered across
them by `executionOrder`. Suppressed findings carry SARIF suppressions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kaudit.rules import Rule

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_LEVEL = {"error": "error", "warning": "warning", "info": "note"}
_ROOT = "SRCROOT"


def _location(file: str, line: int, column: int = 0, message: str = "") -> dict[str, Any]:
    """A SARIF location; a step the model cannot place in the source (no file or line) keeps only its message."""
    location: dict[str, Any] = {}
    if file and line > 0:
        region = {"startLine": line, **({"startColumn": column} if column > 0 else {})}
        location["physicalLocation"] = {"artifactLocation": {"uri": quote(file), "uriBaseId": _ROOT},
                                        "region": region}
    if message:
        location["message"] = {"text": message}
    return location


def _call_path_flow(finding: dict[str, Any]) -> dict[str, Any]:
    loc = finding["location"]
    steps = [_location(s["file"], s["line"], message=f"{s['function']} (runs on a vCPU)")
             for s in finding["call_path"]]
    steps.append(_location(loc["file"], loc["line"], loc["column"], f"{finding['key']} changed here"))
    return {"message": {"text": "call path from a per-vCPU entry"},
            "threadFlows": [{"locations": [{"location": step} for step in steps]}]}


def _model_flow(model: dict[str, Any]) -> dict[str, Any]:
    threads: dict[int, list[dict[str, Any]]] = {}
    for order, step in enumerate(model["trace"], 1):
        state = {name: {"text": json.dumps(value)} for name, value in step["vm_state_after"].items()}
        threads.setdefault(step["vcpu"], []).append({
            "executionOrder": order,
            "location": _location(step["file"], step["line"], message=f"vCPU{step['vcpu']}: {step['action']}"),
            "state": state,
        })
    return {"message": {"text": f"runtime model: {model['status']} ({model.get('violation') or 'no violation'}) "
                                f"with {model['vcpus']} vCPUs, {model['states']} states"},
            "threadFlows": [{"id": f"vCPU{vcpu}", "locations": steps} for vcpu, steps in sorted(threads.items())]}


def _result(finding: dict[str, Any], rule_index: dict[str, int], state: str | None) -> dict[str, Any]:
    loc = finding["location"]
    primary = _location(loc["file"], loc["line"], loc["column"])
    primary["logicalLocations"] = [{"name": loc["function"], "kind": "function"}]
    result: dict[str, Any] = {
        "ruleId": finding["rule"],
        "ruleIndex": rule_index[finding["rule"]],
        "level": _LEVEL[finding["severity"]],
        "message": {"text": finding["message"]},
        "locations": [primary],
        "partialFingerprints": {"kauditFindingId/v1": finding["id"]},
        "properties": {"kind": finding["kind"], "key": finding["key"], "discipline": finding["discipline"],
                       "model": finding["model"]["status"]},
    }
    related = [_location(r["file"], r["line"], r["column"],
                         f"{r['action']} of {finding['key']} in {r['function']} ({r['discipline']})")
               for r in finding["related"]]
    if related:
        result["relatedLocations"] = [{"id": n, **location} for n, location in enumerate(related, 1)]
    flows = [_call_path_flow(finding)] if finding["call_path"] else []
    if finding["model"].get("trace"):
        flows.append(_model_flow(finding["model"]))
    if flows:
        result["codeFlows"] = flows
    suppressed = finding.get("suppressed")
    if suppressed is not None:
        kind = "inSource" if suppressed["by"] == "inline" else "external"
        result["suppressions"] = [{"kind": kind, "justification": suppressed["reason"] or suppressed["where"]}]
    if state is not None:
        result["baselineState"] = state
    return result


def _rule(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.docs["what_it_does"].strip()},
        "help": {"text": rule.page(), "markdown": rule.page()},
        "defaultConfiguration": {"level": _LEVEL[rule.severity]},
        "properties": {"confidence": rule.confidence},
    }


def _results(report: dict[str, Any], rule_index: dict[str, int]) -> list[dict[str, Any]]:
    """An audit's findings; for check-patch, each patch's introduced (new) and fixed (absent) ones."""
    if "patches" not in report:
        return [_result(f, rule_index, None) for f in report["findings"]]
    results = []
    for patch in report["patches"]:
        results += [_result(f, rule_index, "new") for f in patch["introduced"]]
        results += [_result(f, rule_index, "absent") for f in patch["fixed"]]
    return results


def _notifications(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"level": "error", "message": {"text": f"parse {d['severity']} (in {d['tu']}): {d['message']}"},
             "locations": [_location(d["file"], d["line"], d["column"])]} for d in report["tree"]["diagnostics"]]


def build_sarif(report: dict[str, Any], rules: list[Rule]) -> dict[str, Any]:
    rule_index = {rule.id: n for n, rule in enumerate(rules)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "kaudit", "version": report["tool"]["version"],
                                "rules": [_rule(rule) for rule in rules]}},
            "originalUriBaseIds": {_ROOT: {"uri": Path(report["tree"]["root"]).as_uri() + "/"}},
            "columnKind": "unicodeCodePoints",
            "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": _notifications(report)}],
            "results": _results(report, rule_index),
        }],
    }


def dumps_sarif(report: dict[str, Any], rules: list[Rule]) -> str:
    return json.dumps(build_sarif(report, rules), indent=2, sort_keys=True) + "\n"
