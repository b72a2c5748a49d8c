"""Kernel-style text: `file:line:col: severity: message [rule-id]`.

Editors and CI parse these lines; the related sites follow as `note:` lines
(omitted in terse mode), then a one-line summary.
"""

from __future__ import annotations

from pathlib import PurePath, PurePosixPath
from typing import Any

_BEFORE, _AFTER = PurePosixPath("a"), PurePosixPath("b")  # git's names for the two sides of a change


def _where(root: PurePath, loc: dict[str, Any]) -> str:
    return f"{root / loc['file']}:{loc['line']}:{loc['column']}"


def model_lines(model: dict[str, Any]) -> list[str]:
    """The model's verdict and its counterexample as numbered steps."""
    if model["status"] == "not-run":
        return []
    lines = [f"  model: {model['status']} ({model.get('violation') or 'no violation'}) with {model['vcpus']} vCPUs, "
             f"{model['states']} states{' (bound hit)' if model['bound_hit'] else ''}"]
    for n, step in enumerate(model.get("trace", []), 1):
        who = "env " if step["vcpu"] == "env" else f"vCPU{step['vcpu']}"
        vm = ", ".join(f"{k}={v}" for k, v in step["vm_state_after"].items())
        lines.append(f"    {n:2}. {who} {step['file']}:{step['line']} {step['function']}: {step['action']}  [{vm}]")
    return lines


def _cost_line(entry: dict[str, Any]) -> str:
    cost = entry["cost"]
    return (f"kaudit: cost of {entry['key']} ({cost['vcpus']} vCPUs, {cost['steps']} random steps, seed "
            f"{cost['seed']}): {cost['toggles_per_request']} bit toggles and {cost['locks_per_request']} lock "
            f"acquisitions per request, {cost['premature_clears']} premature clears in {cost['requests']} requests")


def _finding_lines(finding: dict[str, Any], root: PurePath, terse: bool) -> list[str]:
    loc = finding["location"]
    suppressed = finding.get("suppressed")
    if suppressed is not None:  # accepted: one line for an inline comment, only the count for the baseline
        reason = f": {suppressed['reason']}" if suppressed["reason"] else ""
        return [] if suppressed["by"] == "baseline" else [
            f"{_where(root, loc)}: note: suppressed by kaudit: ignore at {suppressed['where']}{reason}: "
            f"{finding['message']} [{finding['rule']}]"]
    lines = [f"{_where(root, loc)}: {finding['severity']}: {finding['message']} [{finding['rule']}]"]
    if terse:
        return lines
    for rel in finding["related"]:
        lines.append(f"{_where(root, rel)}: note: {rel['action']} of {finding['key']} in "
                     f"{rel['function']} ({rel['discipline']})")
    if finding["call_path"]:
        path = " -> ".join(step["function"] for step in finding["call_path"])
        lines.append(f"{_where(root, loc)}: note: runs on a vCPU via {path}")
    return lines + model_lines(finding["model"])


def _diagnostic_lines(report: dict[str, Any], root: PurePath) -> list[str]:
    return [f"{root / d['file']}:{d['line']}:{d['column']}: parse {d['severity']}: {d['message']} "
            f"(in {d['tu']}; its facts may be incomplete)" for d in report["tree"]["diagnostics"]]


def render_text(report: dict[str, Any], root: PurePath, terse: bool = False) -> str:
    lines = _diagnostic_lines(report, root)
    for finding in report["findings"]:
        lines += _finding_lines(finding, root, terse)
    if not terse:
        lines += [_cost_line(entry) for entry in report["model"] if entry["cost"]]
    summary = report["summary"]
    tree = report["tree"]
    lines.append(
        f"kaudit: {summary['errors']} error(s), {summary['warnings']} warning(s), {summary['infos']} note(s)"
        f"{_suppressed_text(summary['suppressed'])}; {summary['sites']} site(s) judged in "
        f"{tree['files_analyzed']} file(s), {tree['parse_errors']} with parse errors; config: {tree['config']}"
    )
    return "\n".join(lines) + "\n"


def _suppressed_text(counts: dict[str, int]) -> str:
    parts = []
    if counts["baseline"]:
        parts.append(f"{counts['baseline']} finding{'s' if counts['baseline'] != 1 else ''} in baseline")
    if counts["inline"]:
        parts.append(f"{counts['inline']} suppressed inline")
    return "".join(f"; {part}" for part in parts)


def _patch_lines(patch: dict[str, Any], terse: bool) -> list[str]:
    """One change of a series: what it introduces (b/: the file after it) and fixes (a/: before it)."""
    applied = " (already in the tree: checked from its pre-image)" if patch["already_applied"] else ""
    lines = [f"kaudit: {patch['name']}: {patch['subject']}{applied}"] if patch["subject"] or applied else []
    for finding in patch["introduced"]:
        lines += _finding_lines(finding, _AFTER, terse)
    for finding in patch["fixed"]:
        lines.append(f"{_where(_BEFORE, finding['location'])}: note: fixed by the patch: {finding['message']} "
                     f"[{finding['rule']}]")
    for path in patch["not_analyzed"]:
        lines.append(f"{_AFTER / path}: warning: not analysed: the build (compile database or KVM "
                     "Makefiles) does not compile it")
    for tu in patch["new_parse_errors"]:
        lines.append(f"{_AFTER / tu}: error: the patch makes this file fail to parse: its findings are unknown, "
                     "so what it seems to fix is unverified")
    lines.append(f"kaudit: {patch['name']}: {len(patch['introduced'])} finding(s) introduced, "
                 f"{len(patch['fixed'])} fixed, {len(patch['unchanged'])} unchanged; "
                 f"{patch['parse_errors']} file(s) with parse errors")
    return lines


def render_patch_text(report: dict[str, Any], terse: bool = False) -> str:
    """Per change of the series, in order; paths name the side they point at (a/ before, b/ after)."""
    patches = report["patches"]
    lines = _diagnostic_lines(report, _AFTER)
    for patch in patches:
        lines += _patch_lines(patch, terse)
    if not patches:
        lines.append("kaudit: no change to check")
    elif len(patches) > 1:
        lines.append(f"kaudit: {len(patches)} patches: {sum(len(p['introduced']) for p in patches)} finding(s) "
                     f"introduced, {sum(len(p['fixed']) for p in patches)} fixed")
    return "\n".join(lines) + "\n"
