"""The speed-related CLI: --timings, --quiet, kaudit cache, kaudit compdb."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner
from conftest import SAMPLE

from kaudit.cli import main
from kaudit.resources import default_rules_dir
from kaudit.rules import load_rules, rule_sources
from kaudit.tree import parse_jobs

GLOBS = rule_sources(load_rules(default_rules_dir()))


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_timings_name_every_phase_on_stderr(tmp_path: Path) -> None:
    cache = ["--cache-dir", str(tmp_path)]
    code, out, err = invoke("audit", *cache, "--timings", "--sim-steps", "0", "--terse")
    assert code == 1 and "timings" not in out
    phases = [line.split("timings: ")[1] for line in err.splitlines() if "timings: " in line]
    names = " ".join(phases)
    for phase in ("cache lookup", "parse+walk (4 TU(s), 4 against 1 PCH(s)", "libclang parse", "facts walk",
                  "merge", "call graph", "cache store", "rules", "model and cost simulation", "report"):
        assert phase in names
    warm = invoke("audit", *cache, "--timings", "--sim-steps", "0", "--terse")[2]
    assert "report cache lookup" in warm and "rules" not in warm  # the same inputs: the report read back whole
    other = invoke("audit", *cache, "--timings", "--sim-steps", "0", "--terse", "--vcpus", "2")[2]
    assert "parse+walk" not in other and "rules" in other  # other settings: nothing parsed, the program loaded whole


def test_a_report_read_back_whole_is_the_report_and_takes_the_baseline_afresh(tmp_path: Path) -> None:
    cache = ["--cache-dir", str(tmp_path / "cache")]
    cold = invoke("audit", *cache, "--format", "json", "--sim-steps", "0")
    assert invoke("audit", *cache, "--format", "json", "--sim-steps", "0") == cold
    baseline = tmp_path / "baseline"
    assert invoke("audit", *cache, "--sim-steps", "0", "--write-baseline", str(baseline))[0] == 0
    code, out, _ = invoke("audit", *cache, "--format", "json", "--sim-steps", "0", "--baseline", str(baseline))
    assert code == 0 and json.loads(out)["summary"]["suppressed"]["baseline"] == 1


def test_an_edit_that_leaves_the_facts_as_they_were_reparses_that_file_only(tmp_path: Path) -> None:
    """Facts are keyed by their content: a comment added to one file re-parses that file, finds its facts
    as cached, and reads the report back whole. An edit of code is a new report."""
    tree = tmp_path / "tree"
    shutil.copytree(SAMPLE, tree, symlinks=True)
    cache = ["--cache-dir", str(tmp_path / "cache"), "--sim-steps", "0", "--timings", "--format", "json", str(tree)]
    cold = invoke("audit", *cache)
    svm = tree / "arch/x86/kvm/svm/svm.c"
    svm.write_text(svm.read_text() + "\n/* a comment */\n")
    code, out, err = invoke("audit", *cache)
    assert (code, out) == cold[:2]
    assert "parse (1 TU(s) not in the cache)" in err and "rules" not in err
    svm.write_text(svm.read_text().replace("/* a comment */", "void kaudit_test_fn(void) { }"))
    code, out, err = invoke("audit", *cache)
    assert "parse (1 TU(s) not in the cache)" in err and "rules" in err


def test_a_copy_of_the_tree_with_a_comment_reads_the_originals_report_back(tmp_path: Path) -> None:
    """Facts are tree-relative, and so is the report's key: a copy of the tree elsewhere (a work copy, a
    patched checkout) whose facts are the original's reads its report back; only `tree.root` differs."""
    cache = ["--cache-dir", str(tmp_path / "cache"), "--sim-steps", "0", "--timings", "--format", "json"]
    original, copy = tmp_path / "original", tmp_path / "elsewhere/copy"
    shutil.copytree(SAMPLE, original, symlinks=True)
    shutil.copytree(SAMPLE, copy, symlinks=True)
    svm = copy / "arch/x86/kvm/svm/svm.c"
    svm.write_text(svm.read_text() + "\n/* a comment */\n")
    code, out, _ = invoke("audit", *cache, str(original))
    copied = invoke("audit", *cache, str(copy))
    assert "rules" not in copied[2] and copied[0] == code
    report, again = json.loads(out), json.loads(copied[1])
    assert again["tree"].pop("root") == str(copy) and report["tree"].pop("root") == str(original)
    assert again == report


def test_no_progress_line_off_a_terminal() -> None:
    code, _, err = invoke("audit", "--no-cache", "--sim-steps", "0", "--terse")
    assert code == 1 and err == ""


def test_cache_info_and_clear(tmp_path: Path) -> None:
    invoke("audit", "--cache-dir", str(tmp_path), "--sim-steps", "0")
    code, out, _ = invoke("cache", "info", "--cache-dir", str(tmp_path))
    entries = int(next(line for line in out.splitlines() if line.startswith("entries:")).split()[1])
    assert code == 0 and entries >= 9  # 4 TU keys, 4 facts, 1 program
    assert invoke("cache", "clear", "--cache-dir", str(tmp_path))[0] == 0
    assert "entries: 0" in invoke("cache", "info", "--cache-dir", str(tmp_path))[1]


def test_compdb_writes_the_flags_kaudit_parses_with(tmp_path: Path) -> None:
    out = tmp_path / "compile_commands.json"
    assert invoke("compdb", "-o", str(out))[0] == 0
    entries = json.loads(out.read_text())
    jobs = parse_jobs(SAMPLE.resolve(), tmp_path, None, GLOBS)
    assert [e["file"] for e in entries] == [str(j.path) for j in jobs]
    assert [e["arguments"][2:-2] for e in entries] == [list(j.args) for j in jobs]
    assert all(e["arguments"][:2] == ["clang", "--no-default-config"] for e in entries)


def test_report_is_byte_identical_whatever_the_hash_seed(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    def report(seed: str, *extra: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        command = [sys.executable, "-c", "from kaudit.cli import main; main()", "audit", "--format", "json",
                   "--sim-steps", "2000", *extra]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path).stdout

    cache = ["--cache-dir", str(tmp_path / "cache")]
    first = report("1", "--no-cache")
    assert first and first == report("2", "--no-cache", "--jobs", "1") == report("3", *cache) == report("4", *cache)


def test_concurrent_runs_share_one_cache(tmp_path: Path) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-c", "from kaudit.cli import main; main()", "audit", "--format", "json",
               "--sim-steps", "0", "--cache-dir", str(tmp_path / "cache")]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=tmp_path) for _ in range(3)]
    outputs = [run.communicate()[0] for run in runs]
    assert [run.returncode for run in runs] == [1, 1, 1]
    assert outputs[0] and outputs.count(outputs[0]) == 3
    warm = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert warm.stdout == outputs[0]
