"""Measured planning: modes, trace-time measurement under transformations, wisdom reuse and damage."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jtconv
from jtconv import testing
from jtconv.lowering.plan import Plan
from jtconv.plans import measure, wisdom
from jtconv.plans import resolve as planning

LAYER = dict(stride=2, padding=1)
X_SHAPE, W_SHAPE = (2, 3, 5), (3, 2, 4)


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """Every test starts with an empty wisdom file of its own and no measured plans in memory."""
    monkeypatch.setenv("JTCONV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("JTCONV_PLANNING", raising=False)
    monkeypatch.setattr(measure, "MIN_RUNS", 1)
    monkeypatch.setattr(measure, "MAX_RUNS", 2)
    monkeypatch.setattr(measure, "TRAINING_ROUNDS", 1)
    wisdom.forget_wisdom()
    measure.forget_measurements()
    planning.set_planning(None)
    jax.clear_caches()  # a cached trace would skip planning
    yield tmp_path / "cache"
    wisdom.forget_wisdom()
    measure.forget_measurements()
    planning.set_planning(None)


@pytest.fixture
def measurements(monkeypatch):
    """Every new measurement made during the test."""
    seen: list[measure.Measurement] = []
    monkeypatch.setattr(measure, "_listeners", [seen.append])
    return seen


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(X_SHAPE).astype(np.float32), rng.standard_normal(W_SHAPE).astype(np.float32)


def _torch(x, w):
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = torch.nn.functional.conv_transpose1d(tx, tw, **LAYER)
    (y**2).sum().backward()
    return y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()


def _close(got, want):
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=testing.relative_tolerance(np.float32) * scale)


def _layer(x, w):
    return jtconv.conv_transpose1d(x, w, **LAYER)


def test_measure_mode_times_each_role_and_matches_torch(fresh_cache, measurements, caplog):
    x, w = _data()
    with caplog.at_level(logging.INFO, logger="jtconv"), jtconv.planning("measure"):
        y = jax.jit(_layer)(x, w)
        dx, dw = jax.jit(jax.grad(lambda x, w: jnp.sum(_layer(x, w) ** 2), (0, 1)))(x, w)
        plan = jtconv.plan_for(X_SHAPE, W_SHAPE, **LAYER)
    for got, want in zip((y, dx, dw), _torch(x, w)):
        _close(got, want)
    (found,) = measurements
    assert found.plan == plan
    for role in ("forward", "input_transpose", "weight_transpose"):
        timed = found.times[role]
        assert getattr(plan, role) in timed and all(t is None or t > 0 for t in timed.values())
    assert "xla-wgrad" in found.times["weight_transpose"]
    # The finalists' whole training programs were raced (unless there was one); the fastest
    # met itself with `waits` flipped, and the faster of those two, up to a tie, is the plan.
    a, b = (Plan.parse(text) for text in found.rematch)
    assert a == b.replace(waits=not b.waits) and plan in (a, b)
    assert found.rematch[str(plan)] <= (1 + measure.TIE_FRACTION) * min(found.rematch.values())
    timed = {text: t for text, t in found.training.items() if t is not None}
    if timed:
        (leader,) = set(found.rematch) & set(timed)
        assert len(timed) >= 2 and timed[leader] <= (1 + measure.TIE_FRACTION) * min(timed.values())
    assert found.rematch[str(plan)] <= (1 + measure.TIE_FRACTION) * min(found.rematch.values())
    messages = [r.getMessage() for r in caplog.records if r.name == "jtconv" and r.levelno == logging.INFO]
    assert any("measured 1d 3→2 channels" in m and str(plan) in m for m in messages)
    (stored,) = (fresh_cache / "wisdom-v2").iterdir()
    assert Plan.from_dict(json.loads(stored.read_text())["entry"]["plan"]) == plan


def test_estimate_mode_never_measures(measurements):
    x, w = _data()
    jax.jit(_layer)(x, w)
    assert jtconv.plan_for(X_SHAPE, W_SHAPE, **LAYER) == jtconv.plan_for(X_SHAPE, W_SHAPE, algorithm="matmul", **LAYER)
    assert measurements == []


def test_a_second_process_reuses_the_plan_without_measuring(fresh_cache):
    script = textwrap.dedent(
        f"""
        import jax, numpy as np, jtconv
        from jtconv.plans import measure
        seen = []
        measure._listeners.append(seen.append)
        x = np.ones({X_SHAPE}, np.float32); w = np.ones({W_SHAPE}, np.float32)
        jax.jit(lambda x, w: jtconv.conv_transpose1d(x, w, stride=2, padding=1))(x, w)
        made = sum(not m.from_wisdom for m in seen)
        print(made, len(seen) - made, jtconv.plan_for({X_SHAPE}, {W_SHAPE}, stride=2, padding=1))
        """
    )
    env = dict(os.environ, JTCONV_CACHE_DIR=str(fresh_cache), JTCONV_PLANNING="measure")

    def run():
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        made, stored, plan = done.stdout.strip().splitlines()[-1].split(" ", 2)
        return (int(made), int(stored)), plan

    first_counts, first_plan = run()
    second_counts, second_plan = run()
    assert (first_counts, second_counts) == ((1, 0), (0, 1))
    assert second_plan == first_plan


def test_a_corrupt_wisdom_file_is_ignored_with_one_warning(measurements, caplog):
    geom = jtconv.make_geometry(X_SHAPE, W_SHAPE, **LAYER)
    path = wisdom._file(wisdom.environment_key(), measure.layer_key(geom, X_SHAPE[0], "float32", jax.default_backend()))
    path.parent.mkdir(parents=True)
    path.write_text('{"format": "jtconv-wisdom", "version": 2, "environment": ')
    x, w = _data(1)
    with caplog.at_level(logging.WARNING, logger="jtconv"), jtconv.planning("measure"):
        y = jax.jit(_layer)(x, w)
    _close(y, _torch(x, w)[0])
    assert len(measurements) == 1
    assert sum(r.levelno == logging.WARNING for r in caplog.records if r.name == "jtconv") == 1
    json.loads(path.read_text())  # rewritten whole


def test_a_stored_plan_the_layer_does_not_support_is_measured_again(measurements, caplog):
    geom = jtconv.make_geometry(X_SHAPE, W_SHAPE, **LAYER)
    key = measure.layer_key(geom, X_SHAPE[0], "float32", jax.default_backend())
    split = Plan("split", "split", "split")  # split cannot express stride 2
    wisdom.record(key, {"plan": split.to_dict(), "estimate": split.to_dict(), "times": {}, "seconds": 1.0})
    x, w = _data(2)
    with caplog.at_level(logging.WARNING, logger="jtconv"), jtconv.planning("measure"):
        y = jax.jit(_layer)(x, w)
    _close(y, _torch(x, w)[0])
    assert len(measurements) == 1 and measurements[0].plan.forward != "split"
    assert any("does not support this layer" in r.getMessage() for r in caplog.records)


def test_transformations_measure_once_and_agree(measurements):
    x, w = _data(3)
    ws = np.stack([w, 2 * w])
    with jtconv.planning("measure"):
        plain = jax.jit(_layer)(x, w)
        batched = jax.jit(jax.vmap(_layer, in_axes=(0, None)))(x[:, None], w)  # per example: batch 1
        rematted = jax.jit(jax.grad(lambda w: jnp.sum(jax.checkpoint(_layer)(x, w) ** 2)))(w)
        scanned, _ = jax.lax.scan(lambda c, w: (c + jnp.sum(_layer(x, w)), None), 0.0, ws)
        mesh = jax.make_mesh((1,), ("data",))
        sharded = jax.jit(jax.shard_map(_layer, mesh=mesh, in_specs=(jax.P(), jax.P()), out_specs=jax.P()))(x, w)
    _close(plain, _torch(x, w)[0])
    _close(batched[:, 0], _torch(x, w)[0])
    _close(rematted, _torch(x, w)[2])
    _close(scanned, _torch(x, w)[0].sum() * 3)
    _close(sharded, _torch(x, w)[0])
    layers = {(m.key, str(m.plan)) for m in measurements}
    keys = [m.key for m in measurements]
    assert len(keys) == len(set(keys)) == 2  # batch 2 and batch 1: each signature measured once
    assert len(layers) == 2


def test_two_threads_tracing_one_layer_measure_it_once(measurements):
    x, w = _data(4)
    results, errors = [], []

    def trace():
        try:
            with jtconv.planning("measure"):
                results.append(jax.jit(lambda x, w: _layer(x, w) * 1.0)(x, w))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=trace) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(measurements) == 1
    for y in results:
        _close(y, _torch(x, w)[0])


def test_planning_mode_sources_and_precedence(monkeypatch):
    assert planning.current_planning() == "estimate"
    monkeypatch.setenv("JTCONV_PLANNING", "measure")
    assert planning.current_planning() == "measure"
    jtconv.set_planning("estimate")
    assert planning.current_planning() == "estimate"
    with jtconv.planning("measure"):
        assert planning.current_planning() == "measure"
    assert planning.current_planning() == "estimate"
    jtconv.set_planning(None)
    monkeypatch.setenv("JTCONV_PLANNING", "fastest")
    with pytest.raises(ValueError, match="JTCONV_PLANNING must be one of"):
        planning.current_planning()
    with pytest.raises(ValueError, match="planning mode must be one of"):
        jtconv.set_planning("guess")
    with pytest.raises(ValueError, match="planning mode must be one of"):
        with jtconv.planning("guess"):
            pass


def test_ties_within_noise_go_to_the_estimate():
    assert measure._fastest({"a": 1.00, "b": 1.04}, preferred="b") == "b"
    assert measure._fastest({"a": 1.00, "b": 1.09}, preferred="b") == "b"  # within 10%
    assert measure._fastest({"a": 1.00, "b": 1.12}, preferred="b") == "a"
    assert measure._fastest({"a": 1.00, "b": 1.20}, preferred="b") == "a"
    assert measure._fastest({"a": None, "b": None}, preferred="b") == "b"
    assert measure._fastest({"a": 2.0, "b": None}, preferred="b") == "a"


def test_training_finalists_pair_the_estimate_and_the_winners():
    geom = jtconv.make_geometry((2, 8, 6, 6), (8, 4, 4, 4), stride=2, padding=1)
    guess = Plan("matmul", "gemm", "gemm", waits=True)
    times = {
        "forward": {"matmul": 1.0},
        "input_transpose": {"gemm": 3.0, "phase": 1.0, "xla": 2.0, "tiled": None},
        "weight_transpose": {"gemm": 2.5, "phase": 2.0, "xla-wgrad": 1.0, "tiled": None},
    }

    def schedule(forward, dx, dw):
        return Plan(forward, dx, dw, waits=True)

    finalists = measure._training_finalists(times, guess, "matmul", schedule, geom)
    pairs = [(p.input_transpose, p.weight_transpose) for p in finalists]
    # the estimate's transposes first, then the winners, and "phase", among the two
    # fastest of both roles, filling both
    assert pairs == [("gemm", "gemm"), ("phase", "xla-wgrad"), ("phase", "phase")]
    assert all(p.forward == "matmul" and p.waits for p in finalists)
    # no duplicates: where the estimate's transposes are the winners, they are raced once
    times["input_transpose"]["gemm"] = times["weight_transpose"]["gemm"] = 0.5
    finalists = measure._training_finalists(times, guess, "matmul", schedule, geom)
    assert [(p.input_transpose, p.weight_transpose) for p in finalists] == [("gemm", "gemm")]
    # a faster forward than the estimate's races the estimate's whole plan, which comes last
    times["forward"]["phase"] = 0.5
    finalists = measure._training_finalists(times, guess, "phase", schedule, geom)
    assert finalists == [Plan("phase", "gemm", "gemm", waits=True), guess]


def test_xla_convolutions_that_xla_cpu_runs_in_its_generic_loop_are_not_timed(measurements):
    strided = jtconv.make_geometry((2, 4, 5, 5), (4, 3, 3, 3), stride=2)
    depthwise = jtconv.make_geometry((2, 4, 5, 5), (4, 1, 3, 3), stride=2, groups=4)
    unit_stride = jtconv.make_geometry((2, 4, 5, 5), (4, 3, 3, 3))
    assert "window-dilated" in measure.untimed("weight_transpose", "xla", strided, "cpu")
    assert measure.untimed("input_transpose", "xla", strided, "cpu") is None
    assert measure.untimed("weight_transpose", "xla-wgrad", strided, "cpu") is None
    assert all(
        "depthwise" in measure.untimed(role, "xla", depthwise, "cpu")
        for role in ("forward", "input_transpose", "weight_transpose")
    )
    assert measure.untimed("weight_transpose", "xla", unit_stride, "cpu") is None
    assert measure.untimed("weight_transpose", "xla", strided, "gpu") is None
    found = measure.measure(strided, 2, "float32", "cpu")
    assert found.times["weight_transpose"]["xla"] is None
    assert "generic loop" in found.skipped["weight_transpose:xla"]
    assert found.times["input_transpose"]["xla"] is not None


def test_the_fastest_training_program_wins_unless_the_preferred_one_ties():
    a, b = Plan("matmul", "gemm", "gemm"), Plan("matmul", "gemm", "gemm", waits=True)
    assert measure._fastest_plan({str(a): 1.0, str(b): 1.5}, [a, b], preferred=b) == a
    assert measure._fastest_plan({str(a): 1.0, str(b): 1.04}, [a, b], preferred=b) == b
    assert measure._fastest_plan({str(a): None, str(b): None}, [a, b], preferred=b) == b


def test_candidates_over_the_memory_budget_are_skipped(monkeypatch, measurements):
    monkeypatch.setattr(measure, "MEMORY_BUDGET_BYTES", -1)
    geom = jtconv.make_geometry(X_SHAPE, W_SHAPE, **LAYER)
    found = measure.measure(geom, 2, "float32", jax.default_backend())
    assert all(t is None for role in found.times.values() for t in role.values())
    budget = [why for why in found.skipped.values() if not why.startswith("not timed")]
    assert budget and all("temporaries" in why for why in budget)
    assert found.plan == found.estimate


def test_candidates_over_the_compile_budget_are_skipped(monkeypatch, measurements):
    monkeypatch.setattr(measure, "COMPILE_BUDGET_SECONDS", -1.0)
    geom = jtconv.make_geometry(X_SHAPE, W_SHAPE, **LAYER)
    found = measure.measure(geom, 2, "float32", jax.default_backend())
    assert all(t is None for role in found.times.values() for t in role.values())
    assert all(t is None for t in found.training.values())
    budget = [why for why in found.skipped.values() if not why.startswith("not timed")]
    assert budget and all("compiling took" in why for why in budget)
    assert found.plan == found.estimate


def test_backends_without_a_memory_analysis_are_not_held_to_the_memory_budget():
    class NoAnalysis:
        def memory_analysis(self):
            raise NotImplementedError

    assert measure._temporary_bytes(NoAnalysis()) is None
    assert measure._temporary_bytes(object()) is None


def test_a_candidate_far_behind_the_best_stops_after_its_first_runs(monkeypatch):
    monkeypatch.setattr(measure, "MIN_RUNS", 3)
    monkeypatch.setattr(measure, "MAX_RUNS", 15)
    monkeypatch.setattr(measure, "TARGET_SECONDS", 10.0)
    calls = []

    def slow_after_warm_up():
        calls.append(None)
        if len(calls) > 1:
            time.sleep(0.02)

    program = measure._Compiled(slow_after_warm_up, compile_seconds=0.0, temporary_bytes=None)
    seconds, reason = measure._time(program, best=0.001)
    # the warm-up was fast, so it ran on; the first MIN_RUNS runs were far behind the best, so it stopped
    assert reason is None and len(calls) == 1 + 3 and seconds >= 0.02
    calls.clear()
    seconds, reason = measure._time(program, best=None)  # nothing to be behind: runs until MAX_RUNS
    assert reason is None and len(calls) == 1 + 15


class _Clock:
    """A stand-in for ``measure``'s ``time`` module: only the programs below advance it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(measure, "time", fake)
    return fake


def _scripted(clock: _Clock, seconds_per_call: list[float], calls: list) -> measure._Compiled:
    """A stand-in compiled program whose ``i``-th call takes ``seconds_per_call[i]`` on
    ``clock`` (the last one for every call after)."""

    def call():
        clock.now += seconds_per_call[min(len(calls), len(seconds_per_call) - 1)]
        calls.append(None)

    return measure._Compiled(call, compile_seconds=0.0, temporary_bytes=None)


def test_a_candidate_well_behind_the_best_in_warm_up_and_first_run_stops_after_that_run(monkeypatch, clock):
    monkeypatch.setattr(measure, "MIN_RUNS", 3)
    monkeypatch.setattr(measure, "MAX_RUNS", 15)
    monkeypatch.setattr(measure, "TARGET_SECONDS", 10.0)
    best = 0.01
    calls = []
    behind = _scripted(clock, [1.7 * best], calls)  # between SHORTLIST_FACTOR and HOPELESS_FACTOR times the best
    seconds, reason = measure._time(behind, best=best)
    assert reason is None and len(calls) == 1 + 1 and seconds == pytest.approx(1.7 * best)
    calls.clear()
    # a slow warm-up alone does not stop it: the runs after it are close to the best
    slow_start = _scripted(clock, [1.7 * best, 1.1 * best], calls)
    seconds, reason = measure._time(slow_start, best=best)
    assert reason is None and len(calls) == 1 + 15 and seconds == pytest.approx(1.1 * best)


def test_training_races_run_fewer_rounds_once_they_have_taken_their_time(monkeypatch, clock):
    monkeypatch.setattr(measure, "TRAINING_ROUNDS", 7)
    monkeypatch.setattr(measure, "TRAINING_MIN_ROUNDS", 3)
    monkeypatch.setattr(measure, "TARGET_SECONDS", 0.0)
    calls_a, calls_b = [], []
    programs = {"a": _scripted(clock, [0.01], calls_a), "b": _scripted(clock, [0.011], calls_b)}
    monkeypatch.setattr(measure, "TRAINING_SECONDS", 10.0)
    times = measure._time_interleaved(programs)
    assert len(calls_a) == len(calls_b) == 1 + 7 and times == pytest.approx({"a": 0.01, "b": 0.011})
    calls_a.clear(), calls_b.clear()
    monkeypatch.setattr(measure, "TRAINING_SECONDS", 0.001)  # spent after the first round
    times = measure._time_interleaved(programs)
    assert len(calls_a) == len(calls_b) == 1 + 3 and times == pytest.approx({"a": 0.01, "b": 0.011})


def test_a_single_finalist_goes_straight_to_the_waits_rematch(fresh_cache, measurements, monkeypatch):
    only = []

    def one_finalist(times, guess, forward, schedule, geom):
        only.append(schedule(forward, guess.input_transpose, guess.weight_transpose))
        return list(only)

    monkeypatch.setattr(measure, "_training_finalists", one_finalist)
    x, w = _data()
    with jtconv.planning("measure"):
        jax.jit(_layer)(x, w)
    (found,) = measurements
    (leader,) = only
    assert found.training == {}
    assert set(found.rematch) == {str(leader), str(leader.replace(waits=not leader.waits))}
    assert found.plan in (leader, leader.replace(waits=not leader.waits))


def test_a_forward_faster_only_one_after_the_other_loses_the_interleaved_race(monkeypatch, clock):
    monkeypatch.setattr(measure, "TRAINING_ROUNDS", 3)
    times = {"matmul": 0.010, "phase": 0.008}  # timed one after the other: phase looked faster
    calls: list = []
    steady = {"matmul": _scripted(clock, [0.010], calls), "phase": _scripted(clock, [0.0105], calls)}
    forward, race = measure._confirmed_forward(times, steady, preferred="matmul")
    assert forward == "matmul" and race == pytest.approx({"matmul": 0.010, "phase": 0.0105})
    faster = {"matmul": _scripted(clock, [0.010], calls), "phase": _scripted(clock, [0.008], calls)}
    assert measure._confirmed_forward(times, faster, preferred="matmul")[0] == "phase"
    # the estimate's forward fastest, or not run: nothing to confirm
    assert measure._confirmed_forward({"matmul": 0.01, "phase": 0.02}, faster, "matmul") == ("matmul", {})
    assert measure._confirmed_forward({"matmul": None, "phase": 0.02}, {"phase": faster["phase"]}, "matmul") == (
        "phase",
        {},
    )
