"""JSON report (schema, determinism, stable ids) and the CLI contract."""

from __future__ import annotations

import json
import subprocess
import sysconfig
from pathlib import Path

import jsonschema
import pytest
import variants
from click.testing import CliRunner, Result
from conftest import SAMPLE, copy_sample

from kaudit.cli import main
from kaudit.report.color import wanted

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "report-v2.schema.json").read_text())


def invoke(*args: str) -> Result:
    """Invoke the CLI; audits skip the cost simulation (tested in test_model),
    and nothing reads or writes the user's cache unless a test says so."""
    argv = list(args)
    if argv[0] == "audit" and "--sim-steps" not in argv:
        argv += ["--sim-steps", "0"]
    if argv[0] in ("audit", "model", "check-patch") and "--cache-dir" not in argv and "--no-cache" not in argv:
        argv.append("--no-cache")
    return CliRunner().invoke(main, argv)


def run(*args: str) -> tuple[int, str]:
    """(exit status, stdout and stderr together)."""
    result = invoke(*args)
    return result.exit_code, result.output


def json_report(tree: Path, *extra: str) -> tuple[int, str]:
    return run("audit", str(tree), "--no-cache", "--format", "json", *extra)


def test_default_run_reports_the_error_and_exits_1() -> None:
    code, out = run("audit", "--no-cache")
    assert code == 1
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert len(errors) == 1
    assert "svm/svm.c:" in errors[0] and errors[0].endswith("[KVM001]")
    assert "APICV_INHIBIT_REASON_IRQWIN" in errors[0]
    note = ": note: set of APICV_INHIBIT_REASON_IRQWIN in svm_enable_irq_window"
    assert any(note in line for line in out.splitlines())


def test_json_report_validates_and_is_written_to_file(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, _ = run("audit", "--no-cache", "--format", "json", "-o", str(out))
    assert code == 1
    report = json.loads(out.read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["summary"]["errors"] == 1
    (finding,) = [f for f in report["findings"] if f["severity"] == "error"]
    assert finding["location"]["file"] == "arch/x86/kvm/svm/svm.c"
    assert finding["related"][0]["function"] == "svm_enable_irq_window"
    assert finding["call_path"][-1]["function"] == "interrupt_window_interception"
    assert finding["model"]["status"] == "confirmed" and finding["model"]["trace"]
    code, out = run("audit", "--no-cache", "--no-model", "--format", "json")
    assert [f["model"] for f in json.loads(out)["findings"]] == [{"status": "not-run"}] * 2


def test_fixed_tree_is_clean_and_exits_0(fixed_tree: Path) -> None:
    code, out = json_report(fixed_tree)
    assert code == 0
    report = json.loads(out)
    jsonschema.validate(report, SCHEMA)
    assert report["summary"]["errors"] == report["summary"]["warnings"] == 0
    irq = [s for s in report["sites"] if s["key"] == "APICV_INHIBIT_REASON_IRQWIN"]
    assert {s["discipline"] for s in irq} == {"per-vcpu-flag-counter"}


def test_output_is_identical_whatever_jobs() -> None:
    one = json_report(SAMPLE, "--jobs", "1")[1]
    two = json_report(SAMPLE, "--jobs", "2")[1]
    assert one == two


def test_cache_gives_the_same_report_without_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cold = run("audit", str(SAMPLE), "--cache-dir", str(tmp_path), "--format", "json", "--jobs", "1")[1]
    assert (tmp_path / "store" / "cache.db").is_file()

    def no_parsing(fn: object, tasks: list, *args: object) -> list:
        assert not tasks, "a warm cache must not parse again"
        return []

    monkeypatch.setattr("kaudit.scan.run_tasks", no_parsing)
    warm = run("audit", str(SAMPLE), "--cache-dir", str(tmp_path), "--format", "json", "--jobs", "1")[1]
    assert cold == warm


def test_finding_id_survives_unrelated_line_moves(tmp_path: Path) -> None:
    tree = copy_sample(tmp_path / "t")
    svm = tree / "arch/x86/kvm/svm/svm.c"
    svm.write_text("/* an unrelated comment */\n\n\n" + svm.read_text())
    before = json.loads(json_report(SAMPLE)[1])["findings"]
    after = json.loads(json_report(tree)[1])["findings"]
    assert [f["id"] for f in before] == [f["id"] for f in after]
    assert len({f["id"] for f in before}) == len(before)  # and ids tell findings apart
    assert [f["location"]["line"] + 3 for f in before if "svm" in f["location"]["file"]] == [
        f["location"]["line"] for f in after if "svm" in f["location"]["file"]]


@pytest.mark.parametrize(("args", "message"), [
    (["audit", "/nonexistent/tree"], "no such directory"),
    (["audit", "."], "no C files"),
    (["rule", "KVM999"], "no rule 'KVM999'"),
])
def test_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run(*args)
    assert code == 2
    assert message in out and len(out.strip().splitlines()) == 1


def test_unreadable_rule_file_names_file_and_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("id: X\nname: [unclosed\n")
    code, out = run("audit", "--no-cache", "--rules", str(rules))
    assert code == 2
    assert f"{rules / 'bad.yaml'}:" in out


def test_rule_page_has_the_ruff_style_sections() -> None:
    code, out = run("rule", "KVM001")
    assert code == 0
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Known problems"):
        assert heading in out
    assert run("rule")[1].startswith("KVM001")


def test_fail_on_and_strict(tmp_path: Path) -> None:
    assert run("audit", "--no-cache", "--fail-on", "never")[0] == 0
    code, out = run("audit", "--no-cache", "--terse")
    assert code == 1 and ": note:" not in out
    warning_only = variants.counter_without_flag(tmp_path / "t")  # one warning, no error
    assert run("audit", str(warning_only), "--no-model")[0] == 0
    assert run("audit", str(warning_only), "--no-model", "--fail-on", "warning")[0] == 1
    assert run("audit", str(warning_only), "--no-model", "--strict")[0] == 1


def test_installed_console_script_finds_bundled_data(tmp_path: Path) -> None:
    # the README's test command installs the package into the environment that runs pytest
    script = Path(sysconfig.get_path("scripts")) / "kaudit"
    assert script.is_file(), f"no {script}: run pip install ."
    proc = subprocess.run([str(script), "audit", "--no-cache", "--terse"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 1, proc.stderr
    assert "APICV_INHIBIT_REASON_IRQWIN" in proc.stdout


def test_model_command_prints_the_trace_and_exits_1_on_violation(fixed_tree: Path) -> None:
    code, out = run("model", "--key", "APICV_INHIBIT_REASON_IRQWIN")
    assert code == 1 and "premature-clear" in out and "kvm_clear_apicv_inhibit" in out
    key = "APICV_INHIBIT_REASON_IRQWIN"
    code, out = run("model", str(fixed_tree), "--key", key, "--vcpus", "3", "--format", "json")
    assert code == 0 and json.loads(out)["status"] == "verified"
    assert run("model", "--key", "NO_SUCH_KEY")[0] == 2


def test_internal_error_exits_3_not_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("kaudit.cli.audit_report", broken)
    code, out = run("audit", "--no-cache")
    assert code == 3 and "internal error" in out and "simulated bug" in out


def test_model_key_error_lists_the_keys_that_can_be_modelled() -> None:
    code, out = run("model", "--key", "NOPE")
    assert code == 2
    assert out.strip() == ("kaudit: error: NOPE: no protocol to model (keys that have one: "
                           "APICV_INHIBIT_REASON_BLOCKIRQ, APICV_INHIBIT_REASON_HYPERV, APICV_INHIBIT_REASON_IRQWIN, "
                           "kvm.arch.hyperv.synic_auto_eoi_used, kvm.arch.vapics_in_nmi_mode)")


def test_sample_paths_are_shown_relative_not_under_the_package() -> None:
    _, out = run("audit", "--terse")
    assert out.startswith("sample_kernel_src/arch/x86/kvm/svm/svm.c:117:2: error: ")
    assert "_bundled" not in out and "site-packages" not in out


@pytest.mark.parametrize(("args", "env", "coloured"), [
    ([], {}, False),  # auto: the runner is no terminal
    (["--color", "always"], {}, True),
    (["--color", "never"], {}, False),
    (["--color", "always"], {"NO_COLOR": "1"}, True),  # an explicit choice wins
])
def test_color(args: list[str], env: dict[str, str], coloured: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _, out = run("audit", "--terse", *args)
    assert ("\x1b[31m\x1b[1merror\x1b[0m" in out) == coloured
    assert ("\x1b[" in out) == coloured
    _, out = run("audit", "--format", "json", *args)
    assert "\x1b[" not in out


def test_color_auto_on_a_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert wanted("auto", to_terminal=True) and not wanted("auto", to_terminal=False)
    monkeypatch.setenv("NO_COLOR", "")
    assert not wanted("auto", to_terminal=True) and wanted("always", to_terminal=False)
