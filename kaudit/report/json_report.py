"""The JSON report, v1 (docs/report.md, docs/report-v2.schema.json).

Everything is sorted so the same tree gives byte-identical output whatever
the number of parse workers.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaudit import __version__
from kaudit.ir.names import callee_name, render
from kaudit.suppress import Baseline, mark_suppressed

if TYPE_CHECKING:  # a warm run reads its report without loading what made it
    from kaudit.analysis.results import Finding, JudgedSite
    from kaudit.audit import AuditResult
    from kaudit.program import Program

SCHEMA_VERSION = 2


def _location(program: Program, judged: JudgedSite) -> dict[str, Any]:
    site = judged.site
    fn = program.functions[site.function]
    call = site.event.call
    return {"file": fn["file"], "line": site.event.line, "column": call.col if call else 0, "function": fn["name"]}


def _call_path(program: Program, judged: JudgedSite) -> list[dict[str, Any]]:
    path = []
    for fid in judged.call_path:
        fn = program.functions[fid]
        path.append({"function": fn["name"], "file": fn["file"], "line": fn["line"]})
    return path


def site_json(program: Program, rule: str, judged: JudgedSite) -> dict[str, Any]:
    site = judged.site
    return {
        "rule": rule,
        "key": site.key,
        "action": site.action,
        "location": _location(program, judged),
        "context": judged.context,
        "discipline": judged.verdict.discipline,
        "why": judged.verdict.why,
        "via": [callee_name(hop.event.call) for hop in site.hops if hop.event.call],
        "guards": [{"expr": render(g.atom, site.event.function.temps), "polarity": g.polarity}
                   for g in site.event.guards],
        "locks": sorted(set().union(*(hop.event.locks for hop in site.hops))),
        "call_path": _call_path(program, judged),
        "model": judged.model,
    }


def finding_json(program: Program, finding: Finding) -> dict[str, Any]:
    return {
        "id": finding.fingerprint(program),
        "rule": finding.rule.id,
        "severity": finding.severity,
        "kind": finding.kind,
        "key": finding.key,
        "message": finding.message,
        "location": _location(program, finding.at),
        "related": [
            {**_location(program, r), "action": r.site.action, "discipline": r.verdict.discipline}
            for r in finding.related
        ],
        "call_path": _call_path(program, finding.at),
        "discipline": finding.at.verdict.discipline,
        "model": finding.model,
    }


def _order(item: dict[str, Any]) -> tuple:
    loc = item["location"]
    return (loc["file"], loc["line"], loc["column"], item.get("rule", ""), item.get("kind", ""), item["key"])


def _distinct_ids(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Identical calls in one function share a fingerprint; the second and
    later (in source order) get -2, -3...: a patch that adds one is seen."""
    seen: Counter[str] = Counter()
    for finding in findings:
        seen[finding["id"]] += 1
        if seen[finding["id"]] > 1:
            finding["id"] = f"{finding['id']}-{seen[finding['id']]}"
    return findings


def build_report(result: AuditResult, baseline: Baseline | None = None) -> dict[str, Any]:
    """The report; findings an inline comment or the baseline accepts are marked `suppressed`."""
    program = result.program
    findings = _distinct_ids(sorted((finding_json(program, f) for a in result.analyses for f in a.findings),
                                    key=_order))
    sites = sorted((site_json(program, rule.id, s) for rule, a in zip(result.rules, result.analyses, strict=True)
                    for s in a.sites), key=_order)
    diagnostics = sorted(program.diagnostics, key=lambda d: (d["tu"] or "", d["file"], d["line"], d["column"]))
    report = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "kaudit", "version": __version__},
        "tree": {
            "root": str(result.root),
            "files_analyzed": len(program.files),
            "config": result.config,
            "parse_errors": len({d["tu"] for d in diagnostics}),
            "diagnostics": diagnostics,
        },
        "rules": [rule.to_json() for rule in result.rules],
        "findings": findings,
        "sites": sites,
        "model": [m for a in result.analyses for _, m in sorted(a.model.items())],
    }
    return suppressed(report, result.root, baseline)


def suppressed(report: dict[str, Any], root: Path, baseline: Baseline | None) -> dict[str, Any]:
    """The report with the findings an inline comment in root's sources or the baseline accepts marked
    `suppressed` (marks made before are dropped), and the summary that follows."""
    findings = [{k: v for k, v in f.items() if k != "suppressed"} for f in report["findings"]]
    mark_suppressed(findings, root, baseline)
    sites = report["sites"]
    severities = Counter(f["severity"] for f in findings if "suppressed" not in f)
    by = Counter(f["suppressed"]["by"] for f in findings if "suppressed" in f)
    return {**report, "findings": findings, "summary": {
        "errors": severities["error"],
        "warnings": severities["warning"],
        "infos": severities["info"],
        "suppressed": {"baseline": by["baseline"], "inline": by["inline"]},
        "sites": len(sites),
        "disciplines": dict(sorted(Counter(s["discipline"] for s in sites).items())),
    }}


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"
