"""``jtconv check``'s helpers: argument parsing, report rows for failed
comparisons, and the plain-text output used when rich is not installed."""

from __future__ import annotations

import argparse
import sys

import jax
import pytest

from jtconv import testing
from jtconv.commands import check

VALID = testing.named_configs()[0]  # the 4×4 tutorial example
INVALID = testing.named_configs()[6]  # output_padding ≥ stride


def namespace(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    args = parser.parse_args(["--quick"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@pytest.fixture(scope="module")
def report() -> dict:
    """A real report: one valid and one invalid configuration, one lowering, float32, no gradients."""
    plan = check.Plan(
        configs=[VALID, INVALID],
        rejected=[False, True],
        jax_devices=jax.devices("cpu")[:1],
        torch_devices=["cpu"],
        dtypes=["float32"],
        algorithms=["auto"],
        grads=False,
    )
    advanced = []
    result = check._run_plan(plan, advanced.append)
    assert advanced == [1, 1]
    result["summary"]["seconds"] = 0.5
    return result


def test_name_list_needs_a_name():
    assert check._name_list(" cpu , gpu,") == ("cpu", "gpu")
    with pytest.raises(argparse.ArgumentTypeError, match="expected one or more names separated by commas"):
        check._name_list(" , ")
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--dtype", ","])
    assert exit_info.value.code == 2


def test_run_without_torch_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert check.run(namespace()) == 2
    assert capsys.readouterr().err == (
        "jtconv check: error: compares against torch, which is not installed: pip install torch==2.13.0\n"
    )


def test_result_row_of_a_comparison_that_never_ran():
    outcome = testing.ConfigResult(VALID, "values", False, jtconv_error="ValueError: boom")
    row = check._result_row(outcome, jax.devices("cpu")[0], "cpu", "float32", "auto", grads=True)
    assert row["passed"] is False and row["error"] == "ValueError: boom"
    assert row["max_abs_err"] is None and row["max_rel_err"] is None and row["gradients"] == {}
    assert row["tolerance"] == testing.relative_tolerance("float32", VALID.reduction_lengths()["output"])
    assert row["label"] == VALID.label() and row["jax_device"] == "cpu:0"


def test_result_row_of_a_shape_mismatch():
    x, w = testing.make_inputs(VALID)
    comparison = testing.compare_with_torch(lambda x, w: x[..., :3], lambda x, w: x, x, w)
    assert not comparison.passed
    outcome = testing.ConfigResult(VALID, "values", False, comparison=comparison)
    row = check._result_row(outcome, jax.devices("cpu")[0], "cpu", "float32", "auto", grads=False)
    assert row["error"] == "shape mismatch: jtconv (1, 1, 4, 3) vs torch (1, 1, 4, 4)"
    assert row["max_abs_err"] is None and row["gradients"] == {}


def plain_console(monkeypatch) -> check._Console:
    monkeypatch.setitem(sys.modules, "rich.console", None)  # `import rich.console` raises ImportError
    console = check._Console()
    assert console._rich is None
    return console


def test_plain_console_prints_tables_and_lines(monkeypatch, capsys, report):
    console = plain_console(monkeypatch)
    console.line("hello")
    console.summary_table(report)
    console.summary(report)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "hello"
    assert lines[1] == "comparisons with torch"
    assert lines[2].split() == " ".join(check._SUMMARY_COLUMNS).split()
    assert lines[3].split()[:5] == ["cpu:0", "cpu", "auto", "float32", "1/1"] and lines[3].split()[-1] == "pass"
    assert "invalid arguments" in lines and any(line.split()[:3] == ["cpu:0", "auto", "1/1"] for line in lines)
    assert lines[-1].startswith("OK: 1/1 comparisons passed, 1/1 rejection checks passed")
    assert "FAIL" not in out


def test_plain_console_lists_failed_rejections_only(monkeypatch, capsys, report):
    console = plain_console(monkeypatch)
    failed = {**report, "rejections": [{**row, "passed": False} for row in report["rejections"]]}
    console.summary_table(failed)
    out = capsys.readouterr().out
    assert "failed invalid arguments (jtconv must raise ValueError)" in out
    assert "failed comparisons with torch" not in out
    assert out.rstrip().splitlines()[-1].split()[-1] == "FAIL"


def test_summary_table_without_rejections(monkeypatch, capsys, report):
    console = plain_console(monkeypatch)
    console.summary_table({**report, "rejections": []})
    out = capsys.readouterr().out
    assert out.startswith("comparisons with torch\n") and "invalid arguments" not in out


def test_plain_progress_reports_every_tenth(monkeypatch, capsys):
    console = plain_console(monkeypatch)
    advance = console.progress(20, "checking")
    assert isinstance(advance, check._PlainProgress)
    for _ in range(20):
        advance(1)
    err = capsys.readouterr().err.splitlines()
    assert err == ["checking: 1/20"] + [f"checking: {n}/20" for n in range(2, 21, 2)]
    empty = check._PlainProgress(0, "nothing")
    empty(0)
    assert capsys.readouterr().err == "nothing: 0/0\n"


def test_rich_console_on_a_terminal_keeps_its_width(monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "97")
    console = check._Console()
    assert console._rich.is_terminal and console._rich.width == 97
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    assert check._Console()._rich.width == 160


def test_rich_progress_of_no_checks_stops_at_once(monkeypatch):
    import rich.progress

    stopped = []
    original = rich.progress.Progress.stop

    def stop(self):
        stopped.append(self)
        original(self)

    monkeypatch.setattr(rich.progress.Progress, "stop", stop)
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    check._Console().progress(0, "nothing to check")
    assert len(stopped) == 1
    advance = check._Console().progress(2, "two")
    advance(1)
    assert len(stopped) == 1
    advance(1)
    assert len(stopped) == 2 and stopped[1].tasks[0].completed == 2
