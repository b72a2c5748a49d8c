"""Warm re-runs: the whole report, cached.

`kaudit audit` run again on a tree whose every TU's facts are as cached
(unchanged files, or files whose edit left their facts as they were: a
comment), with the same rules, model settings and kaudit code, makes the
same report: it is read back in one lookup after parsing only the changed
files, without loading the program, lowering it or running the model. The
key names all the report depends on: the facts of
every TU in order (warm.program_key), the rules as loaded, the settings,
the tree's configuration, and kaudit's own source; not the tree's place
(its facts are tree-relative), which the report read back is given. Suppressions
are applied afresh on every run (json_report.suppressed): a baseline is an
input of its own, and inline comments are in sources the facts key covers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaudit import warm
from kaudit.cache import digest_bytes, package_digest, salt
from kaudit.progress import Progress
from kaudit.report.json_report import SCHEMA_VERSION, build_report
from kaudit.rules import Rule, rule_sources
from kaudit.timings import Timings
from kaudit.tree import check_inputs, config_used, open_tree

if TYPE_CHECKING:
    from kaudit.model.check import ModelSettings


def report_key(program_key: str, rules: list[Rule], model: ModelSettings | None, config: str) -> str:
    """Where the tree is is not in the key: the facts are tree-relative, so a copy of the tree (a patched work
    copy, another checkout) with the same facts has the same report but for `tree.root`, set on reading."""
    parts = [salt(package_digest()), program_key, repr(rules), repr(model), config]
    return "report:" + digest_bytes("\0".join(parts).encode())


def _valid(raw: Any) -> bool:
    return isinstance(raw, dict) and raw.get("schema_version") == SCHEMA_VERSION and "findings" in raw


def audit_report(root: Path, rules: list[Rule], jobs: int, cache_dir: Path | None, model: ModelSettings | None,
                 compdb: Path | None = None, objtree: Path | None = None, progress: Progress | None = None,
                 timings: Timings | None = None, pch: bool = True) -> dict[str, Any]:
    """The report of auditing a tree, with no baseline (json_report.suppressed applies one, and the inline
    suppressions afresh); from the cache when nothing it depends on changed. The analysis (and the
    graph library and the model with it) is imported only when the cache cannot answer."""
    timings = timings if timings is not None else Timings()
    root = root.resolve()
    check_inputs(rules, compdb, objtree)
    if cache_dir is None:
        from kaudit.audit import audit_tree
        return build_report(audit_tree(root, rules, jobs, None, model, compdb, objtree, progress, timings, pch))
    config = config_used(root, compdb)
    with timings.phase("report cache lookup"):
        reader = open_tree(root, rule_sources(rules), jobs, cache_dir, compdb, objtree, progress, pch)
    if reader.store is not None and reader.cached_keys() is None:
        with timings.phase(f"parse ({sum(key is None for key in reader.keys)} TU(s) not in the cache)"):
            reader.parse_missing()  # their facts may be as cached (an edited comment): then so is the report
    with timings.phase("report cache lookup"):
        store, keys = reader.store, reader.cached_keys()
        raw = store.get(report_key(warm.program_key(keys), rules, model, config)) \
            if store is not None and keys else None
    if _valid(raw):
        return {**raw, "tree": {**raw["tree"], "root": str(root)}}
    from kaudit.audit import audit_tree
    report = build_report(audit_tree(root, rules, jobs, cache_dir, model, compdb, objtree, progress, timings, pch,
                                     reader))
    keys = reader.cached_keys()  # filled by the parse: every TU's facts are stored, the same tree finds it again
    if store is not None and keys:
        store.put(report_key(warm.program_key(keys), rules, model, config), report)
    return report
