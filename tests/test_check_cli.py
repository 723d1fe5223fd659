"""The ``jtconv check`` command: exit status, JSON report schema, filters, counts, tables, the float64 referee, and
that it catches a wrong lowering."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
import torch

import jtconv
from jtconv import testing
from jtconv.cli import build_parser, main
from jtconv.commands import Console, check
from jtconv.lowering.reference import conv_transpose_reference
from jtconv.plans import estimate as planner

RESULT_KEYS = {
    "config",
    "platform",
    "dtype",
    "algorithm",
    "max_abs_err",
    "max_rel_err",
    "tolerance",
    "passed",
    "gradients",
    "referee",
    "error",
}


def _check_schema(report: dict) -> None:
    assert {"results", "rejections", "summary", "versions", "tolerances", "tf32"} <= set(report)
    for row in report["results"]:
        assert RESULT_KEYS <= set(row), set(row)
        assert isinstance(row["config"], dict) and "weight_shape" in row["config"]
        assert isinstance(row["passed"], bool)
        if row["passed"] and not row["referee"]:
            assert isinstance(row["max_abs_err"], float) and row["max_abs_err"] <= row["tolerance"] * 1e3
            assert isinstance(row["max_rel_err"], float) and row["max_rel_err"] <= row["tolerance"]
    for row in report["rejections"]:
        assert {"config", "platform", "algorithm", "torch_error", "jtconv_error", "passed"} <= set(row)
    summary = report["summary"]
    assert summary["results"] == len(report["results"])
    assert summary["passed"] == sum(r["passed"] for r in report["results"])


@pytest.mark.slow  # minutes: every lowering, dtype and gradient; the in-process tests below run the command
def test_python_m_jtconv_check_quick_passes(tmp_path):
    path = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "jtconv", "check", "--quick", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(path.read_text())
    _check_schema(report)
    passing = [r for r in report["results"] if r["passed"] and isinstance(r["max_abs_err"], float)]
    assert len({json.dumps(r["config"], sort_keys=True) for r in passing}) >= 20
    assert {r["dtype"] for r in report["results"]} == {"float32", "bfloat16", "float16"}
    assert {r["algorithm"] for r in report["results"]} == {*jtconv.ALGORITHMS, "auto"}
    assert report["summary"]["rejections"] >= 8 and report["summary"]["rejections_failed"] == 0
    assert "OK:" in done.stdout and "comparisons passed" in done.stdout


def test_check_filters_and_gradients(tmp_path, capsys):
    path = tmp_path / "r.json"
    algorithm = jtconv.ALGORITHMS[0]
    status = main(
        ["check", "--quick", "--dtype", "bfloat16", "--algorithm", algorithm, "--device", "cpu", "--json", str(path)]
    )
    assert status == 0
    report = json.loads(path.read_text())
    _check_schema(report)
    assert {r["dtype"] for r in report["results"]} == {"bfloat16"}
    assert {r["algorithm"] for r in report["results"]} == {algorithm}
    assert {r["platform"] for r in report["results"]} == {"cpu"}
    with_bias = [r for r in report["results"] if r["config"]["bias_shape"]]
    assert with_bias and all(set(r["gradients"]) == {"x", "weight", "bias"} for r in with_bias)
    assert "comparisons with torch" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algorithm", "fastest"], "--algorithm"),
        (["--dtype", "int8"], "--dtype"),
        (["--device", "quantum"], "--device"),
        (["--torch-device", "xpu"], "--torch-device"),
        (["--algorithm", "auto"], "--plan auto"),
        (["--plan", "fastest"], "--plan"),
        (["--plan", "forward=xla  dx=xla"], "--plan"),
        (["--plan", "forward=nope  dx=xla  dw=xla"], "--plan"),
    ],
)
def test_bad_filters_exit_2(argv, message, capsys):
    assert main(["check", "--quick", *argv]) == 2
    assert message in capsys.readouterr().err


def test_configs_must_be_a_positive_count(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--configs", "0"])
    assert exit_info.value.code == 2 and "--configs" in capsys.readouterr().err


@pytest.fixture
def two_configs(monkeypatch):
    """The sweep cut to two valid configurations and one invalid one."""
    configs = testing.named_configs()[:2] + testing.named_configs()[6:7]
    monkeypatch.setattr(testing, "check_configs", lambda quick, seed=0: configs)
    return configs


@pytest.mark.parametrize(
    "argv, checked",
    [
        ([], [*jtconv.ALGORITHMS, "auto"]),
        (["--algorithm", "xla,matmul"], ["xla", "matmul"]),
        (["--plan", "measure", "--plan", "auto"], ["measure", "auto"]),
        (["--algorithm", "xla", "--plan", "auto"], ["xla", "auto"]),
    ],
)
def test_what_a_run_checks(two_configs, argv, checked):
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    assert check._check_run(parser.parse_args(argv)).algorithms == checked


def test_default_run_checks_every_algorithm_and_auto(two_configs, tmp_path):
    path = tmp_path / "r.json"
    assert main(["check", "--dtype", "float32", "--no-grads", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    _check_schema(report)
    assert report["algorithms"] == [*jtconv.ALGORITHMS, "auto"]
    assert {r["algorithm"] for r in report["results"]} == {*jtconv.ALGORITHMS, "auto"}
    assert {r["algorithm"] for r in report["rejections"]} == {*jtconv.ALGORITHMS, "auto"}


def _plan_for(row: dict, **kwargs) -> str:
    config = testing.ConvTransposeConfig.from_json(row["config"])
    return str(
        jtconv.plan_for(
            config.input_shape,
            config.weight_shape,
            **config.jtconv_kwargs(),
            dtype=row["dtype"],
            precision=jax.lax.Precision.HIGHEST,
            **kwargs,
        )
    )


def test_check_plan_auto_passes_on_the_quick_sweep(tmp_path, capsys):
    path = tmp_path / "r.json"
    assert main(["check", "--quick", "--plan", "auto", "--dtype", "float32", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    _check_schema(report)
    assert report["summary"]["results"] >= 20 and report["summary"]["rejections"] >= 8
    assert {r["algorithm"] for r in report["results"] + report["rejections"]} == {"auto"}
    assert all(row["plan"] == _plan_for(row, backend="cpu") for row in report["results"])
    assert "OK:" in capsys.readouterr().out


def test_check_plan_measure_measures_each_layer_once_and_passes(two_configs, tmp_path, quick_measurements):
    found = quick_measurements
    path = tmp_path / "r.json"
    assert main(["check", "--plan", "measure", "--dtype", "float32", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    _check_schema(report)
    assert [r["algorithm"] for r in report["results"]] == ["measure", "measure"]
    assert [r["algorithm"] for r in report["rejections"]] == ["measure"]
    assert len(found) == 2  # one measurement per layer: recording the plan that ran measured nothing more
    assert [r["plan"] for r in report["results"]] == [str(m.plan) for m in found]
    with jtconv.planning("measure"):
        assert all(row["plan"] == _plan_for(row, backend="cpu") for row in report["results"])
    assert len(found) == 2


PHASE_PLAN = "forward=phase  dx=phase  dw=phase  waits=no  stores=no"


def test_a_plan_text_is_checked_where_it_applies(tmp_path, capsys):
    path = tmp_path / "r.json"
    argv = ["check", "--quick", "--configs", "8", "--plan", PHASE_PLAN, "--dtype", "float32", "--json", str(path)]
    assert main(argv) == 0
    report = json.loads(path.read_text())
    _check_schema(report)
    configs = testing.named_configs()[:8]
    assert report["summary"]["configs"] == 8
    checked = [testing.ConvTransposeConfig.from_json(r["config"]) for r in report["results"]]
    skipped = [testing.ConvTransposeConfig.from_json(r["config"]) for r in report["not_applicable"]]
    assert checked == configs[2:6] and skipped == configs[:2]  # phase cannot express the first two layers
    assert all(r["passed"] and r["plan"] == PHASE_PLAN and r["algorithm"] == PHASE_PLAN for r in report["results"])
    assert all("does not support this layer" in r["reason"] for r in report["not_applicable"])
    assert report["summary"]["not_applicable"] == 2 and report["summary"]["rejections"] == 2
    out = capsys.readouterr().out
    assert "not applicable (the plan does not support the layer)" in out
    assert "2 (configuration, plan) pairs not applicable" in out


def _flipped_kernel_lowering(x, weight, geom, **kwargs):
    return conv_transpose_reference(x, jnp.flip(weight, axis=tuple(range(2, weight.ndim))), geom, **kwargs)


def _off_by_one_lowering(x, weight, geom, **kwargs):
    y = conv_transpose_reference(x, weight, geom, **kwargs)
    return jnp.pad(y[..., 1:], [(0, 0)] * (y.ndim - 1) + [(0, 1)])


@pytest.mark.parametrize("wrong", [_flipped_kernel_lowering, _off_by_one_lowering])
def test_check_catches_a_wrong_lowering(wrong, monkeypatch, tmp_path, capsys):
    from jtconv.lowering import methods

    def forward(x, w, geom, *, layout, **kwargs):
        return wrong(x, w, geom, **kwargs)

    monkeypatch.setitem(
        methods.METHODS, "wrong", methods.Method("wrong", "a wrong forward", forward=forward, derived_from="wrong")
    )
    plan = jtconv.Plan("wrong", "wrong", "wrong")
    original = planner.algorithm_plan
    monkeypatch.setattr(
        planner, "algorithm_plan", lambda name, *a, **k: plan if name == "wrong" else original(name, *a, **k)
    )
    monkeypatch.setattr(jtconv, "ALGORITHMS", tuple(jtconv.ALGORITHMS) + ("wrong",))
    path = tmp_path / "r.json"
    status = main(["check", "--quick", "--dtype", "float32", "--no-grads", "--algorithm", "wrong", "--json", str(path)])
    assert status == 1
    report = json.loads(path.read_text())
    _check_schema(report)
    assert report["summary"]["failed"] > 0
    failing = [r for r in report["results"] if not r["passed"]]
    assert all(r["algorithm"] == "wrong" and r["error"] for r in failing)
    out = capsys.readouterr().out
    assert "FAILED:" in out and "FAIL" in out


def _rounded_through_bfloat16(make):
    """``make(config, ...)`` whose float32 results are rounded to bfloat16 and back (float64 is exact)."""

    def sloppy(config, *args, **kwargs):
        fn = make(config, *args, **kwargs)

        def rounded(*inputs):
            y = fn(*inputs)
            if isinstance(y, torch.Tensor):
                return y.to(torch.bfloat16).to(y.dtype) if y.dtype == torch.float32 else y
            return y.astype(jnp.bfloat16).astype(y.dtype) if y.dtype == jnp.float32 else y

        return rounded

    return sloppy


@pytest.mark.parametrize("sloppy_side", ["torch_conv_transpose", "jtconv_conv_transpose"])
def test_check_referee_passes_torch_rounding_and_blames_jtconv_rounding(sloppy_side, monkeypatch, tmp_path):
    monkeypatch.setattr(testing, "check_configs", lambda quick, seed=0: testing.named_configs()[:2])
    monkeypatch.setattr(testing, sloppy_side, _rounded_through_bfloat16(getattr(testing, sloppy_side)))
    argv = ["check", "--dtype", "float32", "--algorithm", jtconv.ALGORITHMS[0], "--json", str(tmp_path / "r.json")]
    assert main([*argv, "--no-referee"]) == 1
    status = main(argv)
    report = json.loads((tmp_path / "r.json").read_text())
    _check_schema(report)
    verdict = "torch" if sloppy_side == "torch_conv_transpose" else "jtconv"
    assert status == (0 if verdict == "torch" else 1)
    assert report["summary"]["refereed"] == (2 if verdict == "torch" else 0)
    for row in report["results"]:
        assert set(row["referee"]) >= {"output[0]", "grad[0]", "grad[1]"}
        assert {r["verdict"] for r in row["referee"].values()} == {verdict}
        assert (row["error"] is None) == (verdict == "torch")
        assert verdict == "torch" or "float64 referee: jtconv is off" in row["error"]


# --- counts, tables and report rows -----------------------------------------------------------------------------


def _small_sweep(quick: bool, seed: int = 0):
    named = testing.named_configs()
    valid = [c for c in named if testing.torch_rejection(c) is None][:2]
    invalid = [c for c in named if testing.torch_rejection(c) is not None][:2]
    return valid + invalid


def test_check_counts_agree_and_the_table_is_summarised(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(testing, "check_configs", _small_sweep)
    totals, advanced = [], []

    @contextlib.contextmanager
    def counting_progress(self, total, description, transient=False):
        totals.append(total)
        yield advanced.append

    monkeypatch.setattr(Console, "progress", counting_progress)
    path = tmp_path / "report.json"
    argv = ["check", "--quick", "--no-grads", "--dtype", "float32,bfloat16", "--algorithm", "matmul,reference"]
    assert main([*argv, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    # 2 valid configs × 2 lowerings × 2 dtypes = 8 comparisons; 2 invalid × 2 lowerings = 4 rejection checks.
    assert "12 checks = 8 comparisons with torch + 4 rejection checks" in out
    assert totals == [12] and sum(advanced) == 12
    assert "OK: 8/8 comparisons passed, 4/4 rejection checks passed" in out
    report = json.loads(path.read_text())
    assert len(report["results"]) == 8 and len(report["rejections"]) == 4
    labels = {row["label"] for row in report["results"] + report["rejections"]}
    assert not any(label in out for label in labels)  # one row per lowering and dtype, not per check
    rows = re.findall(r"(matmul|reference)\s*\S*\s*(float32|bfloat16)\s*\S*\s*(\d+)/(\d+)", out)
    assert sorted((a, d, n, m) for a, d, n, m in rows) == sorted(
        (a, d, "2", "2") for a in ("matmul", "reference") for d in ("float32", "bfloat16")
    )

    assert main([*argv, "--verbose"]) == 0
    verbose = capsys.readouterr().out
    assert all(label in verbose for label in labels)


def test_check_quick_help_states_a_measured_time(capsys):
    with pytest.raises(SystemExit):
        build_parser("check").parse_args(["check", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "about a minute" not in help_text
    assert re.search(r"--quick a short sweep \(about \d+ to \d+ minutes on a 2-core CPU\)", help_text)


VALID = testing.named_configs()[0]  # the 4×4 tutorial example
INVALID = testing.named_configs()[6]  # output_padding ≥ stride


@pytest.fixture(scope="module")
def report() -> dict:
    """A real report: one valid and one invalid configuration, one lowering, float32, no gradients."""
    checks = check.CheckRun(
        configs=[VALID, INVALID],
        rejected=[False, True],
        jax_devices=jax.devices("cpu")[:1],
        torch_devices=["cpu"],
        dtypes=["float32"],
        algorithms=["auto"],
        grads=False,
    )
    advanced = []
    result = check._run_checks(checks, advanced.append)
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
    assert main(["check", "--quick"]) == 2
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


@pytest.fixture
def plain(monkeypatch) -> Console:
    monkeypatch.setitem(sys.modules, "rich.console", None)  # `import rich.console` raises ImportError
    return Console()


def test_plain_report_prints_the_summary_tables_and_line(plain, capsys, report):
    check._print_report(plain, report, verbose=False)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "comparisons with torch"
    assert lines[1].split() == " ".join(check._SUMMARY_COLUMNS).split()
    assert lines[2].split()[:5] == ["cpu:0", "cpu", "auto", "float32", "1/1"] and lines[2].split()[-1] == "pass"
    assert lines[3:5] == ["invalid arguments", "device  algorithm  raised ValueError like torch  result"]
    assert lines[5].split() == ["cpu:0", "auto", "1/1", "pass"]
    assert lines[6].startswith("OK: 1/1 comparisons passed, 1/1 rejection checks passed") and len(lines) == 7
    (row,) = report["results"]
    worst = f"{row['max_rel_err'] / row['tolerance']:.3f}"
    assert lines[6].endswith(f"2 configurations, worst forward error {worst} of its tolerance, 0.5 s")


def test_plain_report_lists_failed_rejections_only(plain, capsys, report):
    failed = {**report, "rejections": [{**row, "passed": False} for row in report["rejections"]]}
    failed["summary"] = {**report["summary"], "rejections_passed": 0, "rejections_failed": 1}
    check._print_report(plain, failed, verbose=False)
    out = capsys.readouterr().out
    assert "failed invalid arguments (jtconv must raise ValueError)" in out
    assert "failed comparisons with torch" not in out
    assert out.splitlines()[-2].split()[-1] == "FAIL" and out.splitlines()[-1].startswith("FAILED: 1/1 comparisons")


def test_plain_report_without_rejections_and_verbose(plain, capsys, report):
    check._print_report(plain, {**report, "rejections": []}, verbose=False)
    out = capsys.readouterr().out
    assert out.startswith("comparisons with torch\n") and "\ninvalid arguments\n" not in out
    check._print_report(plain, report, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["configuration", "device"] and lines[2].startswith(VALID.label())
    assert lines[2].split()[-2:] == ["-", "pass"]  # no gradients compared
