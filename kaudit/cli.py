"""The `kaudit` command line (click).

Exit status, as checkpatch-minded CI expects (docs/inputs.md): 0 clean, 1
findings at or above --fail-on (--strict: warnings too), 2 bad usage or
input, with a one-line message naming the problem, also after a report of
a run that did not read or parse every file it found, 3 an internal error
of kaudit (never mistaken for findings), 130 interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import click

from kaudit import __version__
from kaudit.cache import SIZE_LIMIT, Store
from kaudit.entry import interrupted
from kaudit.errors import UsageError
from kaudit.gitchanges import range_changes, worktree_change
from kaudit.model.settings import ModelSettings
from kaudit.output import STDOUT, check_cache_dir, check_target, write_target
from kaudit.patches import read_patches
from kaudit.progress import Progress
from kaudit.reading import MAX_READ, bounded
from kaudit.report.color import colorize, wanted
from kaudit.report.json_report import dumps, suppressed
from kaudit.report.sarif import dumps_sarif
from kaudit.report.text import model_lines as _model_lines
from kaudit.report.text import render_patch_text, render_text
from kaudit.report_cache import audit_report
from kaudit.resources import default_rules_dir, report_schema, sample_tree
from kaudit.rules import RULE_SCHEMA, Rule, load_rules, rule_sources
from kaudit.suppress import Baseline, baseline_text
from kaudit.timings import Timings
from kaudit.tree import parse_jobs

if TYPE_CHECKING:
    from kaudit.patchcheck import Change

_RANK = {"info": 0, "warning": 1, "error": 2}
MAX_SIM_STEPS = 1_000_000  # ~70 s per violation on a laptop core: a bound, so a typo cannot run for months


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaudit"


def _write(output: Path | None, text: str, color: bool = False, what: str = "report") -> None:
    """Write all or nothing: a report is never left half-written (kaudit/output.py)."""
    if output is None or str(output) == STDOUT:
        click.echo(text, nl=False, color=color)
        return
    write_target(output, text.encode(), what)


def _targets(tree: Path, output: Path | None, cache_dir: Path | None, **others: Path | None) -> None:
    """Refuse, before any work, outputs kaudit must not write: not a regular file, or inside the tree."""
    if output is not None:
        check_target(output, "report", tree)
    for what, path in others.items():
        if path is not None:
            check_target(path, what)
    if cache_dir is not None:
        check_cache_dir(cache_dir, tree)


def _failing(findings: list[dict[str, Any]], fail_on: str, strict: bool) -> list[dict[str, Any]]:
    """The findings, not suppressed, at or above the threshold (--strict: warning)."""
    threshold = "warning" if strict else fail_on
    if threshold == "never":
        return []
    return [f for f in findings if "suppressed" not in f and _RANK[f["severity"]] >= _RANK[threshold]]


def _fails(findings: list[dict[str, Any]], parse_errors: int, fail_on: str, strict: bool) -> bool:
    return bool(strict and parse_errors) or bool(_failing(findings, fail_on, strict))


def _status(report: dict[str, Any], fail_on: str, strict: bool) -> int:
    """2 when any file found was not read or parsed cleanly (--fail-on decides for findings, not for
    missing input), else 1 for failing findings, else 0."""
    tree = report["tree"]
    if tree["parse_errors"]:
        click.echo(f"kaudit: error: {tree['parse_errors']} of {tree['files_analyzed']} file(s) not read or parsed "
                   "cleanly (see the report's parse errors): the audit is incomplete", err=True)
        return 2
    return 1 if _fails(report["findings"], 0, fail_on, strict) else 0


class _Group(click.Group):
    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Usage errors in one line, exit 2; Ctrl-C exits 130 without a traceback (click's own: 1, "Aborted!")."""
        try:
            status = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.UsageError as err:
            where = err.ctx.command_path if err.ctx is not None else "kaudit"
            click.echo(f"kaudit: error: {err.format_message()} (see {where} --help)", err=True)
            sys.exit(2)
        except click.ClickException as err:
            click.echo(f"kaudit: error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):
            interrupted()
        sys.exit(status if isinstance(status, int) else 0)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except UsageError as err:
            click.echo(f"kaudit: error: {err}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:  # before click's own handler prints a blank line and "Aborted!"
            interrupted()
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception:  # a bug in kaudit: say so, and exit apart from "findings"
            click.echo(f"kaudit: internal error:\n{traceback.format_exc(limit=-12)}", err=True)
            sys.exit(3)


def _rules_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--rules", "rules_dir", type=click.Path(path_type=Path),
                        help="Rule directory (default: bundled rules/).")(fn)


def _common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command that parses a tree shares: rules, workers, cache, compile database."""
    for option in (
        click.option("--compdb", type=click.Path(path_type=Path),
                     help="The kernel's compile_commands.json (default: no-build mode, headers synthesised "
                          "in the cache)."),
        click.option("--objtree", type=click.Path(path_type=Path),
                     help="With --compdb: the O= build directory, whose generated headers the commands name."),
        click.option("--no-cache", is_flag=True, help="Parse every file afresh."),
        click.option("--cache-dir", type=click.Path(path_type=Path), help="Facts cache (default: ~/.cache/kaudit)."),
        click.option("-j", "--jobs", type=click.IntRange(1, 256), default=min(os.cpu_count() or 1, 256),
                     show_default="CPUs, at most 256", help="Parallel libclang workers."),
        _rules_option,
    ):
        fn = option(fn)
    return fn


@dataclass
class _Run:
    """How a tree command talks while it works: a progress line (on a
    terminal, without --quiet) and, with --timings, where the time went."""

    progress: Progress
    timings: Timings | None
    times: Timings = field(default_factory=Timings)
    pch: bool = True

    def finish(self) -> None:
        if self.timings is not None:
            for line in self.times.lines():
                click.echo(line, err=True)


def _run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--quiet, --timings and --no-pch, kept out of the command's own parameters (see _run())."""

    @click.option("-q", "--quiet", is_flag=True, help="No progress line.")
    @click.option("--timings", is_flag=True, help="Print where the time went (on stderr).")
    @click.option("--no-pch", is_flag=True, help="Parse every file plainly, without shared precompiled headers.")
    @functools.wraps(fn)
    def wrapper(*args: Any, quiet: bool, timings: bool, no_pch: bool, **kwargs: Any) -> Any:
        times = Timings()
        run = _Run(Progress(not quiet), times if timings else None, times, pch=not no_pch)
        click.get_current_context().meta["kaudit.run"] = run
        return fn(*args, **kwargs)

    return wrapper


def _run() -> _Run:
    return click.get_current_context().meta.get("kaudit.run") or _Run(Progress(False), None)


def _cache(cache_dir: Path | None, no_cache: bool) -> Path | None:
    return None if no_cache else (cache_dir or _default_cache())


def _rules(rules_dir: Path | None) -> list[Rule]:
    return load_rules(rules_dir if rules_dir is not None else default_rules_dir())


def _format(*choices: str) -> Callable[..., Any]:
    return click.option("--format", "fmt", type=click.Choice(choices), default="text", show_default=True,
                        help="sarif: SARIF 2.1.0, for code-scanning UIs." if "sarif" in choices else None)


def _emit(output: Path | None, fmt: str, color: str, report: dict[str, Any], rules: list[Rule],
          text: Callable[[], str]) -> None:
    """The report in its format, to output or stdout; text in colour when --color says so."""
    if fmt != "text":
        _write(output, dumps(report) if fmt == "json" else dumps_sarif(report, rules))
        return
    painted = wanted(color, output is None and sys.stdout.isatty())
    _write(output, colorize(text()) if painted else text(), color=painted)


_REPORT_FORMAT = _format("text", "json", "sarif")
_OUTPUT = click.option("-o", "--output", type=click.Path(path_type=Path),
                       help="Write the report to FILE, a regular file or a new name outside the tree (-: stdout).")
_TERSE = click.option("--terse", is_flag=True, help="Text: one line per finding, no notes.")
_COLOR = click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
                      help="Colour text output (auto: on a terminal, unless NO_COLOR is set).")
_NO_MODEL = click.option("--no-model", is_flag=True, help="Skip the runtime model (interleaving check).")


def _fail_on(what: str) -> Callable[..., Any]:
    return click.option("--fail-on", type=click.Choice(["error", "warning", "never"]), default="error",
                        show_default=True, help=f"Lowest severity of {what} that makes the exit status 1.")


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="kaudit")
def main() -> None:
    """Audit KVM code for VM-wide state changed from per-vCPU context."""


@main.command()
@click.argument("tree", required=False, type=click.Path(path_type=Path))
@_common_options
@_REPORT_FORMAT
@_OUTPUT
@_fail_on("a finding")
@click.option("--strict", is_flag=True, help="Fail on warnings too (parse errors always fail: exit 2).")
@_TERSE
@_COLOR
@_NO_MODEL
@_run_options
@click.option("--vcpus", type=click.IntRange(2, 4), default=3, show_default=True, help="vCPUs in the runtime model.")
@click.option("--sim-steps", type=click.IntRange(0, MAX_SIM_STEPS), default=4_000, show_default=True,
              help=f"Steps of the seeded 4-vCPU cost simulation of each confirmed violation (0: skip; at most "
                   f"{MAX_SIM_STEPS:,}, about a minute).")
@click.option("--baseline", "baseline_file", type=click.Path(path_type=Path),
              help="Accepted findings (matched by id): they are reported as suppressed and do not fail.")
@click.option("--write-baseline", type=click.Path(path_type=Path),
              help="Write the findings that would fail this run to FILE as the baseline (and accept them).")
def audit(tree: Path | None, rules_dir: Path | None, jobs: int, cache_dir: Path | None, no_cache: bool,
          compdb: Path | None, objtree: Path | None, fmt: str, output: Path | None, fail_on: str, strict: bool,
          terse: bool, color: str, no_model: bool, vcpus: int, sim_steps: int, baseline_file: Path | None,
          write_baseline: Path | None) -> None:
    """Audit TREE (default: the bundled sample kernel tree)."""
    root = tree if tree is not None else sample_tree()
    _targets(root, output, _cache(cache_dir, no_cache), baseline=write_baseline)
    baseline = Baseline.load(baseline_file) if baseline_file is not None else None
    settings = None if no_model else ModelSettings(vcpus=vcpus, sim_steps=sim_steps)
    rules = _rules(rules_dir)
    run = _run()
    plain = audit_report(root, rules, jobs, _cache(cache_dir, no_cache), settings, compdb, objtree, run.progress,
                         run.times, run.pch)
    with run.times.phase("report"):
        report = suppressed(plain, root.resolve(), baseline)
        if write_baseline is not None:
            _write(write_baseline, baseline_text(_failing(report["findings"], fail_on, strict)), what="baseline")
            report = suppressed(plain, root.resolve(), Baseline.load(write_baseline))
        shown = tree if tree is not None else PurePosixPath("sample_kernel_src")  # not site-packages/kaudit/_bundled
        _emit(output, fmt, color, report, rules, lambda: render_text(report, shown, terse=terse))
    run.finish()
    sys.exit(_status(report, fail_on, strict))


@main.command()
@click.argument("rule_id", required=False)
@_rules_option
def rule(rule_id: str | None, rules_dir: Path | None) -> None:
    """Print a rule's page (what it does, why, example, fix); no ID lists the rules."""
    rules = _rules(rules_dir)
    if rule_id is None:
        for r in rules:
            click.echo(f"{r.id}  {r.name:28}  {r.title}")
        return
    for r in rules:
        if rule_id in (r.id, r.name):
            click.echo(r.page())
            return
    raise UsageError(f"no rule {rule_id!r} (known: {', '.join(r.id for r in rules)})")


@main.command()
@click.argument("which", type=click.Choice(["report", "rule"]))
def schema(which: str) -> None:
    """Print the JSON schema of the report (--format json) or of a rule file."""
    click.echo((report_schema() if which == "report" else RULE_SCHEMA).read_text(), nl=False)


@main.command()
@click.argument("tree", required=False, type=click.Path(path_type=Path))
@click.option("--key", required=True, help="The key to model, e.g. APICV_INHIBIT_REASON_IRQWIN.")
@click.option("--vcpus", type=click.IntRange(2, 4), default=3, show_default=True)
@_common_options
@_format("text", "json")
def model(tree: Path | None, key: str, vcpus: int, rules_dir: Path | None, jobs: int, cache_dir: Path | None,
          no_cache: bool, compdb: Path | None, objtree: Path | None, fmt: str) -> None:
    """Run the runtime model for one KEY of TREE and print its verdict and trace.

    Exit 1 when the model finds a violation."""
    from kaudit.audit import audit_tree  # the commands that need the analysis load it (a warm audit need not)
    from kaudit.model.check import check_key, protocol_of
    from kaudit.model.extract import Unmodelled

    root = tree if tree is not None else sample_tree()
    _targets(root, None, _cache(cache_dir, no_cache))
    rules = _rules(rules_dir)
    result = audit_tree(root, rules, jobs=jobs, cache_dir=_cache(cache_dir, no_cache), compdb=compdb, objtree=objtree)
    modelled = []
    for rule, analysis in zip(rules, result.analyses, strict=True):
        for known in sorted({j.site.key for j in analysis.sites}):
            outcome = check_key(analysis, rule, known, ModelSettings(vcpus=vcpus)) if known == key else None
            if outcome is None:
                if not isinstance(protocol_of(analysis, rule, known), Unmodelled):
                    modelled.append(known)
                continue
            if isinstance(outcome, Unmodelled):
                raise UsageError(f"{key}: not modelled: {outcome.reason}")
            confirmed = outcome.status == "violation" and not outcome.assumes  # else it rests on a guess
            status = "confirmed" if confirmed else "inconclusive" if outcome.assumes else outcome.status
            data = {**outcome.to_json(), "status": status}
            text = json.dumps(data, indent=2, sort_keys=True) if fmt == "json" else "\n".join(_model_lines(data))
            click.echo(text)
            sys.exit(1 if confirmed else 0)
    raise UsageError(f"{key}: no protocol to model (keys that have one: {', '.join(modelled) or 'none'})")


def _series(inputs: tuple[Path, ...], git_rev: str | None, scratch: Path
            ) -> tuple[Path, list[Change], dict[str, bytes | None] | None]:
    """(tree, changes, base state) from check-patch's arguments: PATCH... [TREE], or --git REV [TREE]."""
    tree = inputs[-1] if inputs and str(inputs[-1]) != "-" and inputs[-1].is_dir() else None
    sources = list(inputs[:-1] if tree is not None else inputs)
    if git_rev is not None:
        if sources:
            raise UsageError("--git takes no patch files: the changes come from the repository")
        root = tree if tree is not None else Path(".")
        series = range_changes(root, git_rev) if ".." in git_rev else worktree_change(root, git_rev)
        return root, list(series.changes), series.base
    if not sources:
        raise UsageError("no patch given (a file, an mbox, - for stdin, or --git REV)")
    if sum(str(s) == "-" for s in sources) > 1:
        raise UsageError("- (stdin) given twice")
    root = tree if tree is not None else sample_tree()
    stdin = _stdin() if any(str(s) == "-" for s in sources) else None
    return root, list(read_patches(sources, stdin, scratch)), None


def _stdin() -> bytes:
    try:
        return bounded(sys.stdin.buffer, MAX_READ)
    except OSError as err:
        raise UsageError(f"- (stdin): cannot read patch: {err.strerror or err}") from err


@main.command("check-patch")
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path), metavar="[PATCH|MBOX|-]... [TREE]")
@click.option("--git", "git_rev", metavar="REV|A..B",
              help="Check each commit of the range A..B, or the work tree (staged and unstaged) against REV, "
                   "read from TREE's repository (default TREE: the current directory).")
@_common_options
@_REPORT_FORMAT
@_OUTPUT
@_fail_on("a finding a patch introduces")
@_TERSE
@_COLOR
@_NO_MODEL
def check_patch_command(inputs: tuple[Path, ...], git_rev: str | None, rules_dir: Path | None, jobs: int,
                        cache_dir: Path | None, no_cache: bool, compdb: Path | None, objtree: Path | None, fmt: str,
                        output: Path | None, fail_on: str, terse: bool, color: str, no_model: bool) -> None:
    """Pre-submit check: apply each patch of a series (files, mboxes, - for stdin) in turn to a
    work copy of TREE, or take the changes from git, and report what each introduces and fixes.
    TREE defaults to the bundled sample (with --git, the current directory). Exit 1 when any
    change introduces a finding at --fail-on or breaks parsing."""
    from kaudit.patchcheck import Audit, check_series

    rules = _rules(rules_dir)
    settings = None if no_model else ModelSettings(sim_steps=0)
    with tempfile.TemporaryDirectory(prefix="kaudit-patch-") as scratch:
        root, changes, base = _series(inputs, git_rev, Path(scratch))
        if not root.is_dir():
            raise UsageError(f"{root}: no such directory")
        _targets(root, output, _cache(cache_dir, no_cache))
        how = Audit(rules, jobs, _cache(cache_dir, no_cache), settings, compdb, objtree)
        report = check_series(root, changes, how, Path(scratch) / "series", base).report
    _emit(output, fmt, color, report, rules, lambda: render_patch_text(report, terse=terse))
    patches = report["patches"]
    introduced = [f for patch in patches for f in patch["introduced"]]
    broken = sum(len(patch["new_parse_errors"]) for patch in patches) if fail_on != "never" else 0
    sys.exit(1 if _fails(introduced, broken, fail_on, strict=bool(broken)) else 0)


@main.group()
def cache() -> None:
    """Inspect or empty kaudit's cache (facts, programs, generated headers)."""


_CACHE_DIR = click.option("--cache-dir", type=click.Path(path_type=Path),
                          help="Cache directory (default: ~/.cache/kaudit).")


@contextlib.contextmanager
def _opened(cache_dir: Path | None) -> Iterator[tuple[Path, Store]]:
    directory = cache_dir or _default_cache()
    store = Store(directory)
    try:
        yield directory, store
    finally:
        store.close()


@cache.command("info")
@_CACHE_DIR
def cache_info(cache_dir: Path | None) -> None:
    """Where the cache is, how many entries it holds and how big it is."""
    with _opened(cache_dir) as (directory, store):
        click.echo(f"cache: {directory}")
        click.echo(f"entries: {len(store)}")
        click.echo(f"size: {store.volume() / (1 << 20):.1f} MiB (bound {SIZE_LIMIT >> 20} MiB, least recently used "
                   f"evicted first)")


@cache.command("clear")
@_CACHE_DIR
def cache_clear(cache_dir: Path | None) -> None:
    """Remove every cached entry and the generated headers of no-build mode."""
    with _opened(cache_dir) as (directory, store):
        store.clear()
        shutil.rmtree(directory / "generated", ignore_errors=True)
    click.echo(f"kaudit: cleared {directory}")


@main.command("compdb")
@click.argument("tree", required=False, type=click.Path(path_type=Path))
@click.option("--compdb", "source_compdb", type=click.Path(path_type=Path),
              help="Translate this compile_commands.json (default: no-build mode's flags).")
@_rules_option
@_CACHE_DIR
@_OUTPUT
def compdb_command(tree: Path | None, source_compdb: Path | None, rules_dir: Path | None, cache_dir: Path | None,
                   output: Path | None) -> None:
    """Write the compile database kaudit parses TREE with (clang's JSON format).

    In no-build mode the generated headers it names live in the cache, so
    clangd and other tools see exactly what kaudit sees."""
    root = (tree if tree is not None else sample_tree()).resolve()
    _targets(root, None, cache_dir or _default_cache(), **{"compile database": output})
    jobs = parse_jobs(root, cache_dir or _default_cache(), source_compdb, rule_sources(_rules(rules_dir)))
    entries = [{"directory": str(root), "file": str(job.path),
                "arguments": ["clang", "--no-default-config", *job.args, "-c", str(job.path)]}
               for job in jobs if job.refused is None]
    _write(output, json.dumps(entries, indent=1) + "\n", what="compile database")
