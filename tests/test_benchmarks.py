"""The benchmark suite (benchmarks/): its helpers, its shapes and a smoke run.

Benchmarks are not tests: nothing here asserts a timing. These tests check
that the instrument is sound — the suite's layers are the ones torch runs,
FLOPs are counted as documented, candidates are interleaved, a wrong result
is caught, and one short run exits 0 with numbers in every column.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import jtconv

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import harness  # noqa: E402 - importable once benchmarks/ is on sys.path (above)
import random_layers  # noqa: E402 - as harness
import shapes  # noqa: E402 - as harness

_limits_spec = importlib.util.spec_from_file_location("benchmarks_xla_limits", BENCHMARKS / "xla_limits.py")
xla_limits = importlib.util.module_from_spec(_limits_spec)
_limits_spec.loader.exec_module(xla_limits)

_tuning_spec = importlib.util.spec_from_file_location("benchmarks_tuning_time", BENCHMARKS / "tuning_time.py")
tuning_time = importlib.util.module_from_spec(_tuning_spec)
_tuning_spec.loader.exec_module(tuning_time)

_gpu_spec = importlib.util.spec_from_file_location("benchmarks_gpu_check", BENCHMARKS / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_gpu_spec)
sys.modules[_gpu_spec.name] = gpu_check  # dataclasses look their module up there
_gpu_spec.loader.exec_module(gpu_check)

_spec = importlib.util.spec_from_file_location("benchmarks_run", BENCHMARKS / "run.py")
bench_run = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench_run  # dataclasses look their module up there
_spec.loader.exec_module(bench_run)

TINY = shapes.BenchShape(
    name="tiny",
    description="test",
    x_shape=(2, 4, 5, 5),
    w_shape=(4, 3, 3, 3),
    stride=(2, 2),
    padding=(1, 1),
    output_padding=(1, 1),
    dilation=(1, 1),
)


# --- shapes --------------------------------------------------------------------


def test_suite_has_the_issue_layers_with_unique_names():
    names = [s.name for s in shapes.SHAPES]
    assert len(names) == len(set(names))
    by_name = shapes.SHAPES_BY_NAME
    assert by_name["dcgan"].x_shape == (16, 128, 16, 16) and by_name["dcgan"].out_channels == 64
    assert (by_name["dcgan"].kernel_size, by_name["dcgan"].stride, by_name["dcgan"].padding) == ((4, 4), (2, 2), (1, 1))
    assert by_name["vae"].output_padding == (1, 1) and by_name["vae"].x_shape == (2, 64, 64, 64)
    assert by_name["vocoder1d"].kernel_size == (16,) and by_name["vocoder1d"].stride == (8,)
    assert by_name["conv3d"].x_shape == (1, 32, 8, 16, 16) and by_name["conv3d"].out_channels == 16
    assert by_name["unet2d"].kernel_size == by_name["unet2d"].stride == (2, 2)
    assert by_name["unet3d"].kernel_size == by_name["unet3d"].stride == (2, 2, 2)
    assert by_name["stride1"].stride == (1, 1) and by_name["stride1"].kernel_size == (3, 3)
    depthwise = by_name["depthwise"]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == 64
    assert by_name["dilated"].dilation == (2, 2)


RANDOM_LAYERS = random_layers.random_layers(40, seed=7)


@pytest.mark.parametrize(
    "shape", shapes.SHAPES + shapes.HOLDOUT_SHAPES + shapes.MODEL_SHAPES + RANDOM_LAYERS, ids=lambda s: s.name
)
def test_suite_shape_is_the_layer_torch_and_jtconv_run(shape):
    torch = pytest.importorskip("torch")
    import jtconv

    conv = bench_run.torch_conv_transpose(shape.ndim)
    x = torch.empty(shape.x_shape, device="meta")
    w = torch.empty(shape.w_shape, device="meta")
    b = torch.empty(shape.out_channels, device="meta") if shape.bias else None
    assert tuple(conv(x, w, b, **shape.torch_kwargs).shape) == shape.output_shape
    geom = jtconv.make_geometry(shape.x_shape, shape.w_shape, **shape.torch_kwargs)
    assert geom.output_size == shape.output_shape[2:]


def test_select_shapes_keeps_suite_order_and_rejects_unknown_names():
    assert [s.name for s in shapes.select_shapes(["vae", "dcgan"])] == ["dcgan", "vae"]
    assert [s.name for s in shapes.select_shapes(["dw-up32", "fcn32s"], "large")] == ["fcn32s", "dw-up32"]
    assert shapes.select_shapes(None) == list(shapes.SHAPES)
    with pytest.raises(ValueError, match="--shapes.*nope"):
        shapes.select_shapes(["dcgan", "nope"])


def test_holdout_suite_is_disjoint_from_the_main_suite_and_selectable():
    main = {(s.x_shape, s.w_shape, s.stride, s.padding, s.groups) for s in shapes.SHAPES}
    holdout = shapes.select_shapes(None, "holdout")
    assert holdout == list(shapes.HOLDOUT_SHAPES) and len(holdout) >= 9
    assert not main & {(s.x_shape, s.w_shape, s.stride, s.padding, s.groups) for s in holdout}
    assert {s.ndim for s in holdout} == {1, 2, 3} and any(1 < s.groups < s.in_channels for s in holdout)
    assert [s.name for s in shapes.select_shapes(["grouped", "dcgan"], "holdout")] == ["dcgan", "grouped"]
    with pytest.raises(ValueError, match="--suite.*nope"):
        shapes.select_shapes(None, "nope")


def test_model_suite_is_disjoint_from_the_tuned_suites_and_covers_the_families():
    tuned = {(s.x_shape, s.w_shape, s.stride, s.padding, s.groups) for s in shapes.SHAPES + shapes.HOLDOUT_SHAPES}
    models = shapes.select_shapes(None, "models")
    assert models == list(shapes.MODEL_SHAPES)
    assert not tuned & {(s.x_shape, s.w_shape, s.stride, s.padding, s.groups) for s in models}
    assert {s.ndim for s in models} == {1, 2, 3}
    assert any(s.groups == s.in_channels > 1 for s in models)  # depthwise learned up-sampling
    by_name = shapes.SHAPES_BY_NAME
    vocoder = by_name["hifigan-up3"]
    assert (vocoder.in_channels, vocoder.out_channels, vocoder.kernel_size, vocoder.stride) == (128, 64, (4,), (2,))


def test_random_layers_are_reproducible_varied_and_sized_for_a_few_milliseconds():
    again = random_layers.random_layers(40, seed=7)
    assert again == RANDOM_LAYERS
    assert random_layers.random_layers(40, seed=8) != RANDOM_LAYERS
    assert len({s.name for s in RANDOM_LAYERS}) == 40
    assert {s.ndim for s in RANDOM_LAYERS} == {1, 2, 3}
    assert any(s.groups == s.in_channels > 1 for s in RANDOM_LAYERS)  # depthwise
    assert any(max(s.stride) == 1 for s in RANDOM_LAYERS) and any(max(s.dilation) == 2 for s in RANDOM_LAYERS)
    for shape in RANDOM_LAYERS:  # a few milliseconds each: 2 MFLOP (depthwise) to ~2 GFLOP
        assert 1e6 <= harness.useful_flops(shape.x_shape, shape.w_shape) <= 2.5e9, shape
        assert 1 <= shape.x_shape[0] <= 64
    with pytest.raises(ValueError, match="--random-count"):
        random_layers.random_layers(0, seed=1)


def test_random_suite_is_selected_by_seed_and_count():
    args = bench_run.parse_args(["--suite", "random", "--random-count", "5", "--layer-seed", "3"])
    assert args.shape_list == list(random_layers.random_layers(5, 3))
    name = args.shape_list[2].name
    one = bench_run.parse_args(["--suite", "random", "--random-count", "5", "--layer-seed", "3", "--shapes", name])
    assert [s.name for s in one.shape_list] == [name]
    with pytest.raises(SystemExit):
        bench_run.parse_args(["--suite", "random", "--shapes", "dcgan"])


def test_shape_summary_names_the_non_default_arguments():
    assert shapes.SHAPES_BY_NAME["dcgan"].summary() == "x(16,128,16,16)→64 k4 s2 p1"
    assert TINY.summary() == "x(2,4,5,5)→3 k3 s2 p1 op1"
    assert shapes.SHAPES_BY_NAME["depthwise"].summary().endswith("g64 no bias")


# --- harness -------------------------------------------------------------------


def test_useful_flops_is_two_per_input_tap_and_output_channel_of_the_group():
    dcgan = shapes.SHAPES_BY_NAME["dcgan"]
    assert harness.useful_flops(dcgan.x_shape, dcgan.w_shape) == 2 * (16 * 128 * 16 * 16) * 64 * 16
    depthwise = shapes.SHAPES_BY_NAME["depthwise"]
    assert harness.useful_flops(depthwise.x_shape, depthwise.w_shape) == 2 * (4 * 64 * 32 * 32) * 1 * 16


def test_useful_flops_counts_the_scatter_views_multiply_adds():
    """With ones everywhere and no crop, every multiply-add of the scatter view
    adds exactly 1 to the output, so ``sum(y)`` counts them."""
    torch = pytest.importorskip("torch")

    x_shape, w_shape, groups = (2, 4, 5, 6), (4, 3, 3, 2), 2
    y = torch.nn.functional.conv_transpose2d(torch.ones(x_shape), torch.ones(w_shape), stride=2, groups=groups)
    assert harness.useful_flops(x_shape, w_shape) == 2 * int(y.sum())


def test_geometric_mean_and_scaled_error():
    assert harness.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
    assert math.isnan(harness.geometric_mean([]))
    expected = np.array([1.0, -4.0])
    assert harness.scaled_max_error(expected + [0.0, 4e-5], expected) == pytest.approx(1e-5)
    assert harness.scaled_max_error(np.zeros(3), expected) == math.inf
    assert harness.scaled_max_error(np.array([np.nan, 0.0]), expected) == math.inf


def test_round_robin_order_rotates_a_permutation():
    names = ["a", "b", "c"]
    assert harness.round_robin_order(names, 0) == ["a", "b", "c"]
    assert harness.round_robin_order(names, 1) == ["b", "c", "a"]
    assert harness.round_robin_order(names, 5) == ["c", "a", "b"]


def test_time_interleaved_samples_every_candidate_each_round_within_budget():
    log: list[str] = []

    def slow():
        log.append("c")
        time.sleep(0.3)

    calls = {"a": lambda: log.append("a"), "b": lambda: log.append("b"), "c": slow}
    timings = harness.time_interleaved(calls, repeats=3, warmup=0, budget_s=0.5, known_call_s=dict.fromkeys("abc", 0.0))
    # c's first sample takes 0.3 s; a second would pass the 0.5 s budget, so c drops out after round 0.
    assert log == ["a", "b", "c", "b", "a", "a", "b"]
    assert [len(timings[n].samples_s) for n in "abc"] == [3, 3, 1]
    assert timings["c"].median_s >= 0.3 and math.isnan(timings["c"].spread)
    assert all(t.calls_per_sample == 1 for t in timings.values())


def test_within_budget_counts_the_samples_taken_and_one_more():
    assert harness.within_budget([], 1, 0.1)  # the first sample is always taken
    assert harness.within_budget([1.0, 1.0], 1, None)
    assert harness.within_budget([0.2, 0.2], 1, 0.61)
    assert not harness.within_budget([0.2, 0.2], 1, 0.59)
    assert not harness.within_budget([0.1], 5, 0.9)  # 5 calls per sample: 0.5 s spent, 0.5 s more


def test_time_interleaved_repeats_fast_calls_up_to_the_minimum_sample():
    log: list[str] = []
    timings = harness.time_interleaved(
        {"fast": lambda: log.append("fast")}, repeats=2, warmup=0, min_sample_s=0.0045, known_call_s={"fast": 0.001}
    )
    assert timings["fast"].calls_per_sample == 5
    assert len(log) == 10 and len(timings["fast"].samples_s) == 2
    with pytest.raises(ValueError, match="repeats"):
        harness.time_interleaved({}, repeats=0)


def test_transposed_conv_padding_is_torchs_crop_as_conv_padding():
    assert bench_run.transposed_conv_padding(TINY) == ((1, 2), (1, 2))
    dilated = shapes.SHAPES_BY_NAME["dilated"]
    assert bench_run.transposed_conv_padding(dilated) == ((2, 3), (2, 3))


# --- verification catches wrong results ----------------------------------------


def _settings(**overrides) -> argparse.Namespace:
    values = dict(repeats=2, warmup=0, min_sample_ms=0.0, budget_s=1.0)
    values.update(overrides)
    return argparse.Namespace(**values)


def test_float32_tolerance_grows_with_the_reduction_only_beyond_1500_terms():
    dcgan = shapes.SHAPES_BY_NAME["dcgan"]  # dweight sums 16·16·16 = 4,096 terms
    assert dcgan.reduction_lengths == {"y": 128 * 16 + 1, "dx": 64 * 16, "dweight": 4096, "dbias": 16 * 32 * 32}
    (y,) = bench_run.float32_tolerances(dcgan, "forward")
    dx, dweight, dbias = bench_run.float32_tolerances(dcgan, "fwd+bwd")
    assert y == pytest.approx(4 * 2.0**-24 * math.sqrt(2049)) and dx == 1e-5
    assert dweight == pytest.approx(4 * 2.0**-24 * 64) and dbias == pytest.approx(4 * 2.0**-24 * 128)
    assert bench_run.float32_tolerances(TINY, "forward") == (1e-5,)


def test_header_warns_of_other_load_only_above_the_core_count():
    quiet = {"usable_cores": 2, "load_average_start": 0.3, "load_average_end": 1.9}
    assert bench_run._busy_note(quiet) == ""
    assert "other processes" in bench_run._busy_note(dict(quiet, load_average_end=2.5))
    assert bench_run._busy_note(dict(quiet, load_average_start=None)) == ""


def test_busy_cores_tells_an_idle_wait_from_a_busy_loop():
    idle = xla_limits.busy_cores(lambda: time.sleep(0.01), seconds=0.2)

    def spin():
        end = time.perf_counter() + 0.01
        while time.perf_counter() < end:
            pass

    busy = xla_limits.busy_cores(spin, seconds=0.2)
    # A spinning thread gets a core's share of the machine (less than a whole
    # core when the other test worker keeps both busy); a sleeping one none.
    assert idle < 0.1
    assert busy > 0.25 and busy > 5 * idle


def test_the_report_header_says_how_malloc_treats_freed_memory():
    assert "retained" in harness.malloc_setting(True) and harness.malloc_setting(False).startswith("default")


def test_a_wrong_jtconv_result_is_flagged_and_a_wrong_status_quo_is_na():
    pytest.importorskip("torch")
    import torch

    problem = bench_run.make_problem(TINY, seed=0)
    (y,) = problem.expected["forward"]
    grads = problem.expected["fwd+bwd"]
    scale = float(np.max(np.abs(y)))

    def fake(name: str, kind: str, forward) -> bench_run.Candidate:
        return bench_run.Candidate(
            name,
            kind,
            runnables={
                "forward": bench_run.Runnable(forward, lambda out: (out,)),
                "fwd+bwd": bench_run.Runnable(lambda: tuple(g.astype(np.float32) for g in grads), lambda out: out),
            },
        )

    def raises():
        raise RuntimeError("boom")

    candidates = [
        bench_run.torch_candidate(problem, torch.device("cpu")),
        fake("jtconv[right]", "jtconv", lambda: y.astype(np.float32)),
        fake("jtconv[off]", "jtconv", lambda: y.astype(np.float32) + 1e-3 * scale),
        fake("jtconv[cropped]", "jtconv", lambda: y[..., :-1]),
        fake("jtconv[raises]", "jtconv", raises),
        fake("status-quo[off]", "status quo", lambda: y.astype(np.float32) + 1e-3 * scale),
    ]
    rows = {r.candidate: r for r in bench_run.measure_pass(problem, candidates, "forward", _settings())}
    assert rows["torch"].status == "ok" and rows["torch"].ratio_to_torch == 1.0
    assert rows["jtconv[right]"].status == "ok" and rows["jtconv[right]"].median_s > 0
    assert rows["jtconv[off]"].status == "WRONG" and rows["jtconv[off]"].median_s is None
    assert rows["jtconv[off]"].max_scaled_error == pytest.approx(1e-3, rel=1e-3)
    assert rows["jtconv[cropped]"].status == "WRONG" and "shape" in rows["jtconv[cropped]"].note
    assert rows["jtconv[raises]"].status == "error" and "boom" in rows["jtconv[raises]"].note
    assert rows["status-quo[off]"].status == "n/a" and "differs from torch" in rows["status-quo[off]"].note
    backward = bench_run.measure_pass(problem, candidates, "fwd+bwd", _settings())
    assert all(r.status == "ok" for r in backward)


@pytest.mark.slow  # every candidate's fwd+bwd compiled and compared; the other measure_pass tests run quick
def test_square_loss_gradients_of_every_candidate_match_the_oracle():
    """--loss square: the backward reads y (cotangent = y); jtconv, the status
    quo and torch must all reproduce the float64 oracle's gradients."""
    pytest.importorskip("torch")
    import torch

    problem = bench_run.make_problem(TINY, seed=0, loss="square")
    dot = bench_run.make_problem(TINY, seed=0)
    assert not np.allclose(problem.expected["fwd+bwd"][1], dot.expected["fwd+bwd"][1])
    candidates = [
        bench_run.torch_candidate(problem, torch.device("cpu")),
        *bench_run.jtconv_candidates(problem, ["auto", *jtconv.ALGORITHMS]),
        *bench_run.status_quo_candidates(problem),
    ]
    rows = bench_run.measure_pass(problem, candidates, "fwd+bwd", _settings())
    assert {r.candidate: r.status for r in rows} == {c.name: "ok" for c in candidates}


def test_an_inexact_torch_baseline_is_still_timed_with_a_warning():
    problem = bench_run.make_problem(TINY, seed=0)
    (y,) = problem.expected["forward"]
    off = y.astype(np.float32) * (1 + 1e-3)
    candidates = [
        bench_run.Candidate("torch", "torch", runnables={"forward": bench_run.Runnable(lambda: off, lambda o: (o,))}),
        bench_run.Candidate(
            "jtconv[x]", "jtconv", runnables={"forward": bench_run.Runnable(lambda: y, lambda o: (o,))}
        ),
    ]
    rows = {r.candidate: r for r in bench_run.measure_pass(problem, candidates, "forward", _settings())}
    assert rows["torch"].status == "ok" and "WARNING" in rows["torch"].note and rows["torch"].median_s > 0
    assert rows["jtconv[x]"].status == "ok" and rows["jtconv[x]"].ratio_to_torch > 0


def test_status_quo_without_groups_is_na_for_grouped_layers():
    problem = bench_run.Problem(shapes.SHAPES_BY_NAME["depthwise"], None, None, None, None, {})
    assert bench_run.lax_candidate(problem).unavailable.startswith("n/a")
    assert bench_run.flax_candidate(problem).unavailable.startswith("n/a")


def test_parse_args_rejects_unknown_shapes_and_algorithms(capsys):
    for argv in (["--shapes", "nope"], ["--algorithms", "nope"], ["--repeats", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            bench_run.parse_args(argv)
        assert exit_info.value.code == 2
    assert "nope" in capsys.readouterr().err
    quick = bench_run.parse_args(["--quick"])
    assert (quick.repeats, quick.warmup, quick.status_quo) == (3, 0, False)
    assert bench_run.parse_args([]).status_quo is True


# --- smoke run -----------------------------------------------------------------


@pytest.mark.slow  # a benchmarks/run.py process timing real layers; the helpers it uses are tested above
def test_quick_run_exits_0_and_reports_numbers(tmp_path):
    """One small shape end to end, in a subprocess, as a user runs it."""
    pytest.importorskip("torch")
    json_path, markdown_path = tmp_path / "bench.json", tmp_path / "bench.md"
    command = [
        sys.executable,
        str(BENCHMARKS / "run.py"),
        "--quick",
        "--shapes",
        "stride1",
        "--repeats",
        "2",
        "--algorithms",
        "auto",
        "--status-quo",
        "--matmul-size",
        "128",
        "--json",
        str(json_path),
        "--markdown",
        str(markdown_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    number = r"\d+\.\d+"
    for candidate in ("torch", r"jtconv\[auto\]", "lax.conv_transpose", "flax.linen.ConvTranspose"):
        pattern = rf"stride1\s*\S\s*forward\s*\S\s*{candidate}\s*\S\s*{number}\s*\S"
        assert re.search(pattern, done.stdout), f"no numeric forward row for {candidate}:\n{done.stdout}"
    assert re.search(rf"fp32 128³ matmul: jnp {number} GFLOP/s, torch {number} GFLOP/s", done.stdout)

    report = json.loads(json_path.read_text())
    rows = report["results"]
    assert {(r["candidate"], r["pass_name"]) for r in rows} == {
        (c, p)
        for c in ("torch", "jtconv[auto]", "lax.conv_transpose", "flax.linen.ConvTranspose")
        for p in ("forward", "fwd+bwd")
    }
    for row in rows:
        assert row["status"] == "ok", row
        assert row["max_scaled_error"] <= 1e-5
        assert len(row["samples_s"]) == 2 and all(t > 0 for t in row["samples_s"])
        assert row["median_s"] > 0 and row["ratio_to_torch"] > 0 and row["gflops"] > 0
        if row["kind"] != "torch":
            assert row["compile_s"] > 0 and row["peak_bytes"] > 0
    assert report["matmul_gflops"]["jax"] > 0 and report["matmul_gflops"]["torch"] > 0
    assert report["machine"]["jax_backend"] and report["machine"]["usable_cores"] >= 1
    auto = report["summary"]["candidates"]["jtconv[auto]"]
    assert auto["forward"]["shapes"] == 1 and auto["forward"]["geomean"] > 0
    assert [t["target"] for t in auto["targets"]][-1] == "compile < 1 s"

    markdown = markdown_path.read_text()
    assert re.search(rf"\| stride1 \| forward \| torch \| {number} \|", markdown)
    assert "## Targets" in markdown


# --- gpu_check.py ---------------------------------------------------------------


def test_gpu_check_without_a_gpu_points_to_the_dry_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "--dry-run" in capsys.readouterr().err


def test_gpu_check_dry_run_runs_every_step_and_records_it(tmp_path):
    """The GPU check's steps, small, on the CPU, as a subprocess: the record says each one passed."""
    out = tmp_path / "out"
    env = dict(os.environ, JTCONV_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(BENCHMARKS.parent))
    command = [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--dry-run", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    record = json.loads((out / "gpu_check.json").read_text())
    assert record["dry_run"] is True and record["passed"] is True and record["seconds"] <= gpu_check.BUDGET_S
    steps = record["steps"]
    assert [s["name"] for s in steps] == ["tests", "check-float32", "check-bfloat16", "bench-main", "bench-models"]
    assert all(s["status"] == "passed" and s["returncode"] == 0 and 0 < s["seconds"] <= s["limit_s"] for s in steps)
    assert re.fullmatch(r"\d+ passed, \d+ deselected.*", steps[0]["summary"])
    import torch

    assert record["versions"]["jax"] == jax.__version__ and record["versions"]["torch"] == torch.__version__
    assert record["device"]["jax_backend"] == "cpu" and record["torch_device"] == "cpu"
    for dtype in ("float32", "bfloat16"):
        check = record["checks"][f"check-{dtype}"]
        assert check["summary"]["results"] == check["summary"]["passed"] == 4
        assert [(r["algorithm"], r["dtype"], r["passed"]) for r in check["rows"]] == [
            ("auto", dtype, 2),
            ("measure", dtype, 2),
        ]
        assert all(plan.startswith("forward=") for r in check["rows"] for plan in r["plans"])
        assert steps[1 + (dtype == "bfloat16")]["summary"].startswith("OK: 4/4 comparisons passed")
    for suite, shape in gpu_check.DRY_SHAPES.items():
        benchmark = record["benchmarks"][f"bench-{suite}"]
        assert {r["shape"] for r in benchmark["results"]} == {shape}
        assert {r["candidate"] for r in benchmark["results"]} >= {
            "torch",
            "jtconv[auto]",
            "jtconv[measure]",
            "lax.conv_transpose",
        }
        assert all(r["status"] == "ok" for r in benchmark["results"])

    markdown = (out / "RESULTS_gpu.md").read_text()
    assert "# jtconv GPU check (dry run on the CPU)" in markdown and "**passed**" in markdown
    for step in steps:
        assert f"| {step['name']} | {step['title']} | passed |" in markdown
    assert "| measure | float32 | 2/2 |" in markdown
    assert re.search(r"\| unet3d \| forward \| jtconv\[measure\] \| \d+\.\d+ \|", markdown)
    assert all((out / f"{step['name']}.log").exists() for step in steps)


# --- tuning_time.py -------------------------------------------------------------


def test_tuning_time_ratios_are_to_the_fastest_and_dash_where_not_timed():
    assert tuning_time.role_ratios({"gemm": 2.0, "tiled": 1.0, "xla": None}) == "gemm=2.00 tiled=1.00 xla=-"
    assert tuning_time.role_ratios({"xla": None}) == "xla=-"


def test_tuning_time_selects_suites_and_shapes():
    settings = tuning_time.parse_args(["--suite", "main", "--shapes", "vae,dcgan"])
    assert [(suite, shape.name) for suite, shape in tuning_time.chosen_layers(settings)] == [
        ("main", "dcgan"),
        ("main", "vae"),
    ]
    assert tuning_time.parse_args([]).suite == ["main", "holdout", "random"]
    with pytest.raises(SystemExit, match="unknown shape"):
        tuning_time.chosen_layers(tuning_time.parse_args(["--suite", "main", "--shapes", "biggan"]))


def test_tuning_time_measures_a_layer_and_counts_its_programs(monkeypatch, tmp_path):
    from jtconv.plans import measure

    monkeypatch.setenv("JTCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(measure, "MAX_RUNS", 2)
    monkeypatch.setattr(measure, "TRAINING_ROUNDS", 1)
    compile_all = measure._compile_all
    record = tuning_time.measure_layer(TINY)
    assert measure._compile_all is compile_all  # the counting wrapper is removed again
    timed = sum(t is not None for role in record["times"].values() for t in role.values())
    assert record["programs"] == timed + len(record["training"].keys() | record["rematch"].keys())
    assert record["seconds"] > 0 and record["compile_seconds"] > 0
    assert record["times"]["weight_transpose"]["xla"] is None
    assert "generic loop" in record["skipped"]["weight_transpose:xla"]
