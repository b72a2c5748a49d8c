"""Annotated fixtures: each C file under tests/fixtures/<RULE>/ says in its comments what kaudit must find.

    /* kaudit-expect: error KVM001 premature-clear */
        a finding of that rule, kind and severity on the next line of code, confirmed by the runtime model;
    /* kaudit-expect: ok KVM001 per-vcpu-flag-counter */
        a site of that rule there, with that discipline, verified by the model, and no finding;
    ... static=<shape>
        the static reading of the site, before the model judged it.

Nothing else at error or warning severity may be reported in the file. Each file is audited as the one
source of a small tree that also holds tests/fixtures/include/fixture.h (the kernel scaffolding).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from kaudit.audit import audit_tree
from kaudit.model.check import ModelSettings
from kaudit.report.json_report import build_report
from kaudit.resources import default_rules_dir
from kaudit.rules import load_rules

FIXTURES = Path(__file__).parent / "fixtures"
FILES = sorted(FIXTURES.glob("KVM*/*.c"))
EXPECT = re.compile(r"kaudit-expect:\s*(?P<verdict>ok|error|warning|info)\s+(?P<rule>KVM\d+)\s+(?P<what>[\w-]+)"
                    r"(?:\s+static=(?P<static>[\w-]+))?")


@dataclass(frozen=True)
class Expectation:
    line: int  # of the code the comment stands above
    verdict: str
    rule: str
    what: str
    static: str | None


def expectations(path: Path) -> list[Expectation]:
    lines = path.read_text().splitlines()
    found = []
    for index, text in enumerate(lines):
        match = EXPECT.search(text)
        if match is None:
            continue
        target = next(n for n in range(index + 1, len(lines)) if lines[n].strip()
                      and not lines[n].strip().startswith(("/*", "*", "//")))
        found.append(Expectation(target + 1, match["verdict"], match["rule"], match["what"], match["static"]))
    return found


def audited(tmp_path: Path, source: Path) -> dict:
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "include", tree / "include")
    (tree / "arch/x86/kvm").mkdir(parents=True)
    shutil.copy(source, tree / "arch/x86/kvm" / source.name)
    result = audit_tree(tree, load_rules(default_rules_dir()), model=ModelSettings(sim_steps=0), cache_dir=None)
    return build_report(result)


def test_every_fixture_says_what_it_expects() -> None:
    assert len(FILES) >= 20
    assert all(expectations(path) for path in FILES)


@pytest.mark.parametrize("source", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture(tmp_path: Path, source: Path) -> None:
    report = audited(tmp_path, source)
    assert report["tree"]["parse_errors"] == 0, report["tree"]["diagnostics"]
    name = f"arch/x86/kvm/{source.name}"
    findings = [f for f in report["findings"] if f["location"]["file"] == name]
    sites = [s for s in report["sites"] if s["location"]["file"] == name]
    explained = set()
    for want in expectations(source):
        here = f"{source.name}:{want.line}"
        if want.verdict == "ok":
            judged = [s for s in sites if s["rule"] == want.rule and s["location"]["line"] == want.line]
            assert judged, f"{here}: no {want.rule} site"
            assert {s["discipline"] for s in judged} == {want.what}, (here, [s["why"] for s in judged])
            assert {s["model"]["status"] for s in judged} == {"verified"}, (here, judged[0]["model"])
            assert not [f for f in findings if f["location"]["line"] == want.line and f["severity"] != "info"], here
        else:
            match = [f for f in findings if (f["rule"], f["kind"], f["severity"], f["location"]["line"]) ==
                     (want.rule, want.what, want.verdict, want.line)]
            assert match, (here, [(f["kind"], f["severity"], f["location"]["line"], f["message"]) for f in findings])
            if want.verdict == "error":
                assert match[0]["model"]["status"] == "confirmed" and match[0]["model"]["trace"], here
                assert all(step["file"] and step["line"] > 0 for step in match[0]["model"]["trace"]), here
            explained |= {id(f) for f in match}
        if want.static:
            judged = [s for s in sites if s["rule"] == want.rule and s["location"]["line"] == want.line]
            assert {s["model"].get("static_shape", s["discipline"]) for s in judged} == {want.static}, here
    unexpected = [f for f in findings if id(f) not in explained and f["severity"] in ("error", "warning")]
    assert not unexpected, [(f["kind"], f["location"]["line"], f["message"]) for f in unexpected]
