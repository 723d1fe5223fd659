"""Benchmark jtconv against torch and the JAX status quo, side by side in one process.

    python benchmarks/run.py                      # the full suite
    python benchmarks/run.py --quick              # about 1–2 minutes on 2 CPU cores
    python benchmarks/run.py --shapes dcgan,vae --algorithms auto,reference
    python benchmarks/run.py --json out.json --markdown out.md

For every shape of :mod:`shapes` and two passes — ``forward`` (``y``) and
``fwd+bwd`` (``sum(y · cotangent)`` with its gradients for ``x``, the weight
and the bias) — the candidates are jtconv with ``algorithm="auto"`` and with
each name in ``jtconv.ALGORITHMS``, torch (CPU, or CUDA when JAX runs on a
GPU and torch sees one), ``jax.lax.conv_transpose`` and
``flax.linen.ConvTranspose``. Every candidate's values are first checked
against torch in float64 on the CPU (float32 tolerance per tensor:
``jtconv.testing.relative_tolerance`` of its reduction length, ``1e-5 · max |ref|``
up to 1,500 summed terms); a status-quo call that cannot express the layer or disagrees is
reported ``n/a``, a jtconv one that disagrees is ``WRONG`` and makes the
exit status 1. Then all candidates of a pass are timed A/B-interleaved and
the medians reported. See ``benchmarks/README.md`` for the columns.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jtconv
from jtconv.cpu_memory import retain_freed_memory
from jtconv.testing import relative_tolerance

import harness
from random_layers import random_layers
from shapes import SUITES, BenchShape, select_shapes

PASSES = ("forward", "fwd+bwd")


def float32_tolerances(shape: BenchShape, pass_name: str) -> tuple[float, ...]:
    """Scaled-error bound per compared tensor: ``1e-5`` up to ~1,500 summed
    terms, ``4 · u · √R`` beyond (:func:`jtconv.testing.relative_tolerance`),
    since a float32 weight gradient over ~10⁵ positions is ~1e-5 away from
    float64 in torch itself."""
    lengths = shape.reduction_lengths
    labels = ("y",) if pass_name == "forward" else ("dx", "dweight", "dbias")
    return tuple(relative_tolerance("float32", lengths[label]) for label in labels)


TORCH = "torch"
LAX = "lax.conv_transpose"
FLAX = "flax.linen.ConvTranspose"
TARGETS = (
    # (pass, statistic, limit): jtconv/torch time ratio, lower is better (issue 4, CPU)
    ("forward", "geomean", 1.0),
    ("forward", "worst", 1.5),
    ("fwd+bwd", "geomean", 1.2),
    ("fwd+bwd", "worst", 2.0),
)
COMPILE_TARGET_S = 1.0
NOISE_ALLOWANCE = 0.10  # "auto no slower than reference" is judged within this relative noise


# --- one candidate -------------------------------------------------------------


@dataclasses.dataclass
class Runnable:
    """One candidate in one pass, ready to time.

    ``call()`` runs once and blocks until done; ``to_torch_layout(call())``
    gives the tensors to verify, in torch's layout: ``(y,)`` forward,
    ``(dx, dweight[, dbias])`` for fwd+bwd.
    """

    call: Callable[[], Any]
    to_torch_layout: Callable[[Any], tuple[np.ndarray, ...]]
    compile_s: float | None = None
    peak_bytes: int | None = None


@dataclasses.dataclass
class Candidate:
    name: str
    kind: str  # "jtconv" | "torch" | "status quo"
    runnables: dict[str, Runnable] = dataclasses.field(default_factory=dict)
    note: str = ""
    unavailable: str = ""  # why the candidate cannot run this shape ("n/a")
    lowering: str = ""  # jtconv: the lowering that runs ("auto" resolved)


@dataclasses.dataclass
class Row:
    """One table row: one candidate, one shape, one pass."""

    shape: str
    pass_name: str
    candidate: str
    kind: str
    status: str  # "ok" | "n/a" | "WRONG" | "error"
    note: str = ""
    lowering: str = ""
    median_s: float | None = None
    spread: float | None = None
    samples_s: tuple[float, ...] = ()
    calls_per_sample: int | None = None
    ratio_to_torch: float | None = None
    gflops: float | None = None
    peak_bytes: int | None = None
    compile_s: float | None = None
    max_scaled_error: float | None = None


# --- problem data and the float64 oracle ---------------------------------------


LOSSES: dict[str, Callable[[Any, Any], Any]] = {
    "dot": lambda y, ct: (y * ct).sum(),
    "square": lambda y, ct: 0.5 * (y * y).sum(),
}
"""The fwd+bwd pass's loss of the output ``y`` (a JAX or torch array) and a
fixed random ``ct``: ``"dot"`` gives the backward ``ct`` itself as the
cotangent; ``"square"`` gives it ``y``, so the backward reads the forward's
output, as a loss or an activation after the layer does in training."""


@dataclasses.dataclass
class Problem:
    shape: BenchShape
    x: np.ndarray
    w: np.ndarray
    b: np.ndarray | None
    cotangent: np.ndarray
    expected: dict[str, tuple[np.ndarray, ...]]  # pass -> tensors in torch layout
    loss: str = "dot"  # a key of LOSSES


def make_problem(shape: BenchShape, seed: int, loss: str = "dot") -> Problem:
    """Random float32 data, and the expected results from torch in float64 on the CPU."""
    import torch

    rng = np.random.default_rng(seed)
    fan_in = shape.in_channels // shape.groups * math.prod(shape.kernel_size)
    x = rng.standard_normal(shape.x_shape, dtype=np.float32)
    w = (rng.standard_normal(shape.w_shape, dtype=np.float32) / np.sqrt(fan_in)).astype(np.float32)
    b = rng.standard_normal(shape.out_channels, dtype=np.float32) if shape.bias else None
    ct = rng.standard_normal(shape.output_shape, dtype=np.float32)

    conv = torch_conv_transpose(shape.ndim)
    params = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b) if a is not None]
    y = conv(params[0], params[1], params[2] if shape.bias else None, **shape.torch_kwargs)
    grads = torch.autograd.grad(LOSSES[loss](y, torch.from_numpy(ct).double()), params)
    expected = {
        "forward": (y.detach().numpy(),),
        "fwd+bwd": tuple(g.numpy() for g in grads),
    }
    return Problem(shape, x, w, b, ct, expected, loss)


def torch_conv_transpose(ndim: int) -> Callable[..., Any]:
    import torch.nn.functional as F

    return getattr(F, f"conv_transpose{ndim}d")


# --- candidates ----------------------------------------------------------------


def jax_candidate(
    name: str,
    kind: str,
    fn: Callable[..., jax.Array],
    args: tuple[Any, ...],
    cotangent: jax.Array,
    output_to_torch: Callable[[Any], np.ndarray],
    grads_to_torch: Callable[[tuple[Any, ...]], tuple[np.ndarray, ...]],
    loss_name: str = "dot",
) -> Candidate:
    """A JAX candidate: ``fn(*args)`` jitted forward, and ``value_and_grad`` of
    ``LOSSES[loss_name](fn(*args), cotangent)`` for all ``args`` (the loss value
    is returned too, so the forward pass cannot be pruned from the fwd+bwd program)."""

    def forward(*a):
        return fn(*a)

    def loss(ct, *a):
        return LOSSES[loss_name](fn(*a), ct)

    fwd_bwd = jax.value_and_grad(loss, argnums=tuple(range(1, len(args) + 1)))
    candidate = Candidate(name, kind)
    for pass_name, program, program_args, to_torch in (
        ("forward", forward, args, lambda y: (output_to_torch(y),)),
        ("fwd+bwd", fwd_bwd, (cotangent, *args), lambda out: grads_to_torch(out[1])),
    ):
        compiled, seconds = harness.jax_compile(program, *program_args)
        candidate.runnables[pass_name] = Runnable(
            call=_jax_call(compiled, program_args),
            to_torch_layout=to_torch,
            compile_s=seconds,
            peak_bytes=harness.jax_peak_bytes(compiled),
        )
    return candidate


def _jax_call(compiled, args) -> Callable[[], Any]:
    return lambda: jax.block_until_ready(compiled(*args))


def _np(a) -> np.ndarray:
    return np.asarray(a)


def jtconv_candidates(problem: Problem, algorithms: Sequence[str]) -> list[Candidate]:
    shape = problem.shape
    args = tuple(jnp.asarray(a) for a in (problem.x, problem.w, problem.b) if a is not None)
    ct = jnp.asarray(problem.cotangent)
    chosen = jtconv.plan_for(shape.x_shape, shape.w_shape, **shape.torch_kwargs)
    candidates = []
    for algorithm in algorithms:
        name = f"jtconv[{algorithm}]"
        mode = "measure" if algorithm == "measure" else "estimate"
        tuning_s = None
        if algorithm == "measure":
            start = time.perf_counter()
            with jtconv.planning("measure"):
                measured = jtconv.plan_for(shape.x_shape, shape.w_shape, **shape.torch_kwargs)
            tuning_s = time.perf_counter() - start

        def fn(x, w, b=None, _algorithm=algorithm, _mode=mode):
            with jtconv.planning(_mode):
                return jtconv.conv_transpose(
                    x, w, b, **shape.torch_kwargs, algorithm="auto" if _algorithm == "measure" else _algorithm
                )

        try:
            candidate = jax_candidate(name, "jtconv", fn, args, ct, _np, lambda g: tuple(map(_np, g)), problem.loss)
        except Exception as error:  # noqa: BLE001 - reported as a failed row
            candidate = Candidate(name, "jtconv", unavailable=f"error: {type(error).__name__}: {error}")
        candidate.lowering = str(chosen) if algorithm == "auto" else algorithm
        if algorithm == "auto":
            candidate.note = f"→ {chosen}"
        if algorithm == "measure":
            candidate.lowering = str(measured)
            candidate.note = f"→ {measured} (tuned in {tuning_s:.1f} s)"
        candidates.append(candidate)
    return candidates


def torch_candidate(problem: Problem, device) -> Candidate:
    """``torch.nn.functional.conv_transpose{n}d`` on ``device``; fwd+bwd uses
    ``torch.autograd.grad`` (no gradient accumulation between calls)."""
    import torch

    shape = problem.shape
    conv = torch_conv_transpose(shape.ndim)
    sync = harness.torch_synchronizer(device)
    kwargs = shape.torch_kwargs
    # torch.tensor copies into torch's own (aligned) allocations, as a torch user's tensors are.
    x, w = (torch.tensor(a, device=device) for a in (problem.x, problem.w))
    b = torch.tensor(problem.b, device=device) if shape.bias else None
    ct = torch.tensor(problem.cotangent, device=device)
    params = [t.clone().requires_grad_(True) for t in (x, w, b) if t is not None]

    def forward():
        y = conv(x, w, b, **kwargs)
        sync()
        return y

    def fwd_bwd():
        y = conv(params[0], params[1], params[2] if shape.bias else None, **kwargs)
        loss = LOSSES[problem.loss](y, ct)
        grads = torch.autograd.grad(loss, params)
        sync()
        return loss, grads

    def to_numpy(t) -> np.ndarray:
        return t.detach().cpu().numpy()

    candidate = Candidate(TORCH, "torch", note=str(device))
    for pass_name, call, to_torch in (
        ("forward", forward, lambda y: (to_numpy(y),)),
        ("fwd+bwd", fwd_bwd, lambda out: tuple(map(to_numpy, out[1]))),
    ):
        candidate.runnables[pass_name] = Runnable(call, to_torch, peak_bytes=harness.torch_peak_bytes(call, device))
    return candidate


def transposed_conv_padding(shape: BenchShape) -> tuple[tuple[int, int], ...]:
    """Padding of the stride-1 convolution over the zero-inserted input that
    equals torch's layer: ``(d·(k−1) − p, d·(k−1) − p + op)`` per dimension."""
    return tuple(
        (d * (k - 1) - p, d * (k - 1) - p + op)
        for k, d, p, op in zip(shape.kernel_size, shape.dilation, shape.padding, shape.output_padding)
    )


def lax_candidate(problem: Problem) -> Candidate:
    """``jax.lax.conv_transpose(x, w, transpose_kernel=True)`` on torch's
    layouts with the explicit padding of :func:`transposed_conv_padding`."""
    shape = problem.shape
    if shape.groups != 1:
        return Candidate(LAX, "status quo", unavailable="n/a: no groups argument")
    spatial = "DHW"[3 - shape.ndim :]
    numbers = ("NC" + spatial, "OI" + spatial, "NC" + spatial)
    padding = transposed_conv_padding(shape)

    def fn(x, w, b=None):
        y = jax.lax.conv_transpose(
            x, w, shape.stride, padding, rhs_dilation=shape.dilation, dimension_numbers=numbers, transpose_kernel=True
        )
        return y if b is None else y + b.reshape((1, -1) + (1,) * shape.ndim)

    args = tuple(jnp.asarray(a) for a in (problem.x, problem.w, problem.b) if a is not None)
    return jax_candidate(
        LAX, "status quo", fn, args, jnp.asarray(problem.cotangent), _np, lambda g: tuple(map(_np, g)), problem.loss
    )


def flax_candidate(problem: Problem) -> Candidate:
    """``flax.linen.ConvTranspose(transpose_kernel=True)`` in its own
    channels-last layout (input, output and cotangent are converted once,
    outside the timed calls), with explicit padding pairs."""
    import flax.linen as nn

    shape = problem.shape
    if shape.groups != 1:
        return Candidate(FLAX, "status quo", unavailable="n/a: no groups argument")
    n = shape.ndim
    module = nn.ConvTranspose(
        features=shape.out_channels,
        kernel_size=shape.kernel_size,
        strides=shape.stride,
        padding=transposed_conv_padding(shape),
        kernel_dilation=shape.dilation,
        use_bias=shape.bias,
        transpose_kernel=True,
    )

    def to_channels_last(a):
        return np.moveaxis(a, 1, -1)

    def to_channels_first(a):
        return np.moveaxis(np.asarray(a), -1, 1)

    # torch (Cin, Cout, *K) -> flax (*K, Cout, Cin): "HWIO" with I = Cout, O = Cin before the swap.
    kernel_axes = (*range(2, n + 2), 1, 0)
    params = {"kernel": jnp.asarray(np.transpose(problem.w, kernel_axes))}
    if shape.bias:
        params["bias"] = jnp.asarray(problem.b)

    def fn(x, p):
        return module.apply({"params": p}, x)

    def grads_to_torch(grads):
        dx, dp = grads
        back = tuple(np.argsort(kernel_axes))
        out = (to_channels_first(dx), np.transpose(np.asarray(dp["kernel"]), back))
        return out + ((np.asarray(dp["bias"]),) if shape.bias else ())

    args = (jnp.asarray(to_channels_last(problem.x)), params)
    return jax_candidate(
        FLAX,
        "status quo",
        fn,
        args,
        jnp.asarray(to_channels_last(problem.cotangent)),
        to_channels_first,
        grads_to_torch,
        problem.loss,
    )


def status_quo_candidates(problem: Problem) -> list[Candidate]:
    candidates = []
    for name, build in ((LAX, lax_candidate), (FLAX, flax_candidate)):
        try:
            candidates.append(build(problem))
        except Exception as error:  # noqa: BLE001 - the status quo may not express the layer
            candidates.append(Candidate(name, "status quo", unavailable=f"n/a: {type(error).__name__}: {error}"))
    return candidates


# --- verification, timing, rows ------------------------------------------------


def verify(candidate: Candidate, pass_name: str, problem: Problem) -> tuple[str, float, str, float]:
    """Run once and compare every tensor with the float64 oracle:
    ``max |got − ref| ≤ tolerance · max |ref|`` per tensor, with
    :func:`float32_tolerances` (shapes must match exactly).

    Returns ``(status, worst scaled error, note, seconds the call took)`` with
    status ``"ok"``, ``"WRONG"`` (values or shapes differ) or ``"error"`` (it raised).
    """
    runnable = candidate.runnables[pass_name]
    start = time.perf_counter()
    try:
        result = runnable.call()
        seconds = time.perf_counter() - start
        got = runnable.to_torch_layout(result)
    except Exception as error:  # noqa: BLE001 - reported as a failed row
        return "error", math.inf, f"{type(error).__name__}: {error}", math.nan
    expected = problem.expected[pass_name]
    if len(got) != len(expected):
        return "WRONG", math.inf, f"{len(got)} tensors, expected {len(expected)}", seconds
    errors = [harness.scaled_max_error(g, e) for g, e in zip(got, expected)]
    worst = max(errors)
    tolerances = float32_tolerances(problem.shape, pass_name)
    if all(err <= tol for err, tol in zip(errors, tolerances)):
        return "ok", worst, "", seconds
    labels = ("y",) if pass_name == "forward" else ("dx", "dweight", "dbias")
    bad = ", ".join(
        f"{label} {'shape ' + str(np.shape(g)) if np.shape(g) != np.shape(e) else format(err, '.1e')} > {tol:.1e}"
        for label, g, e, err, tol in zip(labels, got, expected, errors, tolerances)
        if not err <= tol
    )
    return "WRONG", worst, f"scaled error {bad}", seconds


def measure_pass(
    problem: Problem, candidates: list[Candidate], pass_name: str, settings: argparse.Namespace
) -> list[Row]:
    shape = problem.shape
    rows: dict[str, Row] = {}
    calls, call_s = {}, {}
    for candidate in candidates:
        row = Row(
            shape.name,
            pass_name,
            candidate.name,
            candidate.kind,
            "ok",
            note=candidate.note,
            lowering=candidate.lowering,
        )
        rows[candidate.name] = row
        if candidate.unavailable:
            row.status = "error" if candidate.unavailable.startswith("error") else "n/a"
            row.note = candidate.unavailable
            continue
        runnable = candidate.runnables[pass_name]
        row.compile_s, row.peak_bytes = runnable.compile_s, runnable.peak_bytes
        status, error, why, call_s[candidate.name] = verify(candidate, pass_name, problem)
        row.max_scaled_error = error
        if status == "WRONG" and candidate.kind == "torch":
            # The baseline stays timed (every ratio needs it) but the row says it is off.
            row.note = f"{row.note}; WARNING: differs from float64 torch: {why}"
        elif status != "ok":
            row.status = "n/a" if candidate.kind == "status quo" else status
            if candidate.kind == "status quo":
                why = ("n/a: differs from torch, " if status == "WRONG" else "n/a: ") + why
            row.note = why
            continue
        calls[candidate.name] = runnable.call
    timings = harness.time_interleaved(
        calls,
        repeats=settings.repeats,
        warmup=settings.warmup,
        min_sample_s=settings.min_sample_ms / 1e3,
        budget_s=settings.budget_s,
        known_call_s=call_s,
    )
    flops = harness.useful_flops(shape.x_shape, shape.w_shape) * (1 if pass_name == "forward" else 3)
    torch_time = timings[TORCH].median_s if TORCH in timings else None
    for name, timing in timings.items():
        row = rows[name]
        row.median_s, row.spread = timing.median_s, timing.spread
        row.samples_s, row.calls_per_sample = timing.samples_s, timing.calls_per_sample
        row.gflops = flops / timing.median_s / 1e9
        if torch_time:
            row.ratio_to_torch = timing.median_s / torch_time
    return list(rows.values())


# --- summary -------------------------------------------------------------------


def summarize(rows: list[Row], jtconv_names: list[str], status_quo_names: list[str], shape_count: int) -> dict:
    """Per candidate and pass: geometric mean and worst ratio to torch over the
    shapes it ran; for jtconv also the slowest first-call forward compile and
    whether each target of issue 4 is met."""
    summary: dict[str, Any] = {"candidates": {}, "auto_vs_reference": {}}
    for name in jtconv_names + status_quo_names:
        entry: dict[str, Any] = {}
        for pass_name in PASSES:
            measured = [r for r in rows if r.candidate == name and r.pass_name == pass_name]
            ratios = [(r.ratio_to_torch, r.shape) for r in measured if r.ratio_to_torch is not None]
            worst = max(ratios, default=(math.nan, ""))
            compiles = [(r.compile_s, r.shape) for r in measured if r.compile_s is not None and r.status == "ok"]
            slowest_compile = max(compiles, default=(math.nan, ""))
            entry[pass_name] = {
                "geomean": harness.geometric_mean(r for r, _ in ratios),
                "worst": worst[0],
                "worst_shape": worst[1],
                "shapes": len(ratios),
                "failed": sorted({r.shape for r in measured if r.status in ("WRONG", "error")}),
                "compile_max_s": slowest_compile[0],
                "compile_max_shape": slowest_compile[1],
            }
        slowest = (entry["forward"]["compile_max_s"], entry["forward"]["compile_max_shape"])
        if name in jtconv_names:
            complete = all(entry[p]["shapes"] == shape_count for p in PASSES)
            targets = []
            for pass_name, statistic, limit in TARGETS:
                value = entry[pass_name][statistic]
                targets.append(_target(f"{pass_name} {statistic} ≤ {limit:g}", value, value <= limit, complete))
            targets.append(
                _target(f"compile < {COMPILE_TARGET_S:g} s", slowest[0], slowest[0] < COMPILE_TARGET_S, complete)
            )
            entry["targets"] = targets
        summary["candidates"][name] = entry
    if "jtconv[reference]" in jtconv_names and "jtconv[auto]" in jtconv_names:
        for pass_name in PASSES:
            summary["auto_vs_reference"][pass_name] = _auto_vs_reference(rows, pass_name)
    return summary


def _auto_vs_reference(rows: list[Row], pass_name: str) -> dict:
    """Worst time ratio auto/reference over the shapes where auto picked another
    lowering (where it picked the reference both run the same program)."""
    times = {(r.shape, r.candidate): r for r in rows if r.pass_name == pass_name and r.median_s is not None}
    pairs = []
    same = 0
    for (shape, name), row in times.items():
        reference = times.get((shape, "jtconv[reference]"))
        if name != "jtconv[auto]" or reference is None:
            continue
        if row.lowering == "reference":
            same += 1
        else:
            pairs.append((row.median_s / reference.median_s, shape))
    worst = max(pairs, default=(math.nan, ""))
    return {
        "worst": worst[0],
        "worst_shape": worst[1],
        "shapes_compared": len(pairs),
        "shapes_auto_is_reference": same,
        "met": not worst[0] > 1 + NOISE_ALLOWANCE,
    }


def _target(label: str, value: float, met: bool, complete: bool) -> dict:
    return {"target": label, "value": value, "met": bool(met) and complete, "complete": complete}


# --- output --------------------------------------------------------------------

COLUMNS = ("shape", "pass", "candidate", "ms", "±%", "n", "×torch", "GFLOP/s", "peak MiB", "compile s", "note")
NUMERIC_COLUMNS = COLUMNS[3:10]
SUMMARY_COLUMNS = ("candidate", "pass", "geomean ×torch", "worst ×torch (shape)", "max compile s", "shapes")


def row_cells(row: Row) -> list[str]:
    def fmt(value, spec):
        return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    note = row.note if row.status == "ok" or row.note.startswith(row.status) else f"{row.status}: {row.note}"
    return [
        row.shape,
        row.pass_name,
        row.candidate,
        fmt(None if row.median_s is None else row.median_s * 1e3, ".2f"),
        fmt(None if row.spread is None else row.spread * 100, ".0f"),
        fmt(len(row.samples_s) or None, "d"),
        fmt(row.ratio_to_torch, ".2f"),
        fmt(row.gflops, ".1f"),
        fmt(None if row.peak_bytes is None else row.peak_bytes / 2**20, ".1f"),
        fmt(row.compile_s, ".2f"),
        note,
    ]


def summary_lines(summary: dict) -> list[list[str]]:
    """Summary table rows: candidate, pass, geomean, worst (shape), slowest compile, shapes."""
    lines = []
    for name, entry in summary["candidates"].items():
        for pass_name in PASSES:
            stats = entry[pass_name]
            worst = "—" if math.isnan(stats["worst"]) else f"{stats['worst']:.2f} ({stats['worst_shape']})"
            failed = f" — failed on {', '.join(stats['failed'])}" if stats["failed"] else ""
            lines.append(
                [
                    name,
                    pass_name,
                    "—" if math.isnan(stats["geomean"]) else f"{stats['geomean']:.2f}",
                    worst,
                    "—" if math.isnan(stats["compile_max_s"]) else f"{stats['compile_max_s']:.2f}",
                    str(stats["shapes"]) + failed,
                ]
            )
    return lines


def target_lines(summary: dict) -> list[str]:
    lines = []
    for name, entry in summary["candidates"].items():
        if "targets" not in entry:
            continue
        parts = []
        for target in entry["targets"]:
            mark = "met" if target["met"] else ("NOT met" if target["complete"] else "incomplete")
            value = "—" if math.isnan(target["value"]) else f"{target['value']:.2f}"
            parts.append(f"{target['target']}: {value} {mark}")
        lines.append(f"{name}: " + "; ".join(parts))
    for pass_name, entry in summary["auto_vs_reference"].items():
        label = f"auto no slower than reference ({pass_name}, within {NOISE_ALLOWANCE:.0%} noise): "
        same = f"auto runs the reference itself on {entry['shapes_auto_is_reference']} shape(s)"
        if entry["shapes_compared"]:
            mark = "met" if entry["met"] else "NOT met"
            lines.append(label + f"worst auto/reference {entry['worst']:.2f} ({entry['worst_shape']}) {mark}; {same}")
        else:
            lines.append(label + same)
    return lines


def _busy_note(machine: dict) -> str:
    """A warning when the load average exceeded the usable cores during the run."""
    loads = [machine.get("load_average_start"), machine.get("load_average_end")]
    if any(load is not None and load > machine["usable_cores"] for load in loads):
        return " (above the core count: other processes shared the cores)"
    return ""


def machine_lines(machine: dict, matmul: dict[str, float], settings: argparse.Namespace) -> list[str]:
    devices = ", ".join(machine["jax_devices"])
    return [
        f"CPU: {machine['cpu']} ({machine['usable_cores']} usable of {machine['cpu_cores']} cores);"
        f" {machine['platform']}",
        f"load average (1 min): {machine['load_average_start']} at start, {machine.get('load_average_end')} at end"
        + _busy_note(machine),
        f"jax {machine['jax']}, jaxlib {machine['jaxlib']}, flax {machine['flax']}, torch {machine['torch']}, "
        f"numpy {machine['numpy']}, python {machine['python']}",
        f"JAX backend: {machine['jax_backend']} ({devices}); torch device: {machine['torch_device']}"
        + (f" ({machine['torch_device_name']})" if "torch_device_name" in machine else "")
        + f", {machine['torch_threads']} threads",
        f"fp32 {settings.matmul_size}³ matmul: jnp {matmul['jax']:.1f} GFLOP/s, torch {matmul['torch']:.1f} GFLOP/s",
        f"malloc: {machine.get('malloc', 'default')}",
        f"fwd+bwd loss: {'sum(y·c), c fixed and random' if settings.loss == 'dot' else 'sum(y²)/2'}",
        f"medians of up to {settings.repeats} A/B-interleaved repetitions "
        f"(at most {settings.budget_s:g} s of samples per candidate and pass); {machine['date_utc']}",
    ]


def print_report(rows, summary, machine, matmul, settings) -> None:
    header = machine_lines(machine, matmul, settings)
    sums = summary_lines(summary)
    targets = target_lines(summary)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(markdown_report(rows, summary, machine, matmul, settings))
        return
    width = shutil.get_terminal_size((170, 24)).columns if sys.stdout.isatty() else 170
    console = Console(width=max(width, 120), markup=False, highlight=False)
    for line in header:
        console.print(line, soft_wrap=True)
    table = Table(title="Time per call (median); ×torch < 1 is faster than torch")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in NUMERIC_COLUMNS else "left", overflow="fold")
    previous = None
    for row in rows:
        if previous is not None and (row.shape, row.pass_name) != previous:
            table.add_section()
        previous = (row.shape, row.pass_name)
        style = "bold red" if row.status in ("WRONG", "error") else ("dim" if row.status == "n/a" else None)
        table.add_row(*row_cells(row), style=style)
    console.print(table)
    summary_table = Table(title="Ratio to torch over the shapes (lower is better)")
    for column in SUMMARY_COLUMNS:
        summary_table.add_column(column)
    for line in sums:
        summary_table.add_row(*line)
    console.print(summary_table)
    for line in targets:
        console.print(line, soft_wrap=True)


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(cell(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


def markdown_report(rows, summary, machine, matmul, settings) -> str:
    parts = ["# jtconv benchmark", ""]
    parts += [f"- {line}" for line in machine_lines(machine, matmul, settings)]
    parts += ["", "## Time per call", "", markdown_table(COLUMNS, [row_cells(r) for r in rows]), ""]
    parts += ["## Ratio to torch over the shapes (lower is better)", ""]
    parts += [markdown_table(SUMMARY_COLUMNS, summary_lines(summary))]
    parts += ["", "## Targets (issue 4, CPU)", ""] + [f"- {line}" for line in target_lines(summary)] + [""]
    return "\n".join(parts)


def json_report(rows, summary, machine, matmul, settings, shapes) -> dict:
    return {
        "machine": machine,
        "settings": {k: v for k, v in vars(settings).items() if k not in ("json", "markdown", "shape_list")},
        "tolerance_float32_scaled": {
            s.name: dict(zip(("y", "dx", "dweight", "dbias"), sum((float32_tolerances(s, p) for p in PASSES), ())))
            for s in shapes
        },
        "matmul_gflops": matmul,
        "shapes": [
            {
                **dataclasses.asdict(s),
                "summary": s.summary(),
                "output_shape": s.output_shape,
                "useful_flops_forward": harness.useful_flops(s.x_shape, s.w_shape),
            }
            for s in shapes
        ],
        "results": [dataclasses.asdict(r) for r in rows],
        "summary": summary,
    }


def _json_safe(value):
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# --- command line --------------------------------------------------------------


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    algorithms = ("auto", *jtconv.ALGORITHMS, "measure")
    parser = argparse.ArgumentParser(
        description="Time jtconv, torch and the JAX status quo on the transposed-convolution suite."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short run (about 1–2 min on 2 cores): 3 repetitions, the verification call as the only warm-up, "
        "2 s per candidate and pass, no status quo",
    )
    parser.add_argument(
        "--suite",
        default="main",
        choices=[*SUITES, "random"],
        help="which layers to time: 'main' (the issue's nine), 'holdout' (layers the lowerings were not tuned on), "
        "'large' (large kernels), 'models' (layers of public models in the planner's target families) "
        "or 'random' (--random-count layers drawn with --layer-seed)",
    )
    parser.add_argument("--random-count", type=int, default=12, help="layers drawn for --suite random (default 12)")
    parser.add_argument("--layer-seed", type=int, default=2026, help="seed of the layers drawn for --suite random")
    parser.add_argument(
        "--shapes",
        type=_names,
        default=None,
        help=f"comma-separated subset of: {', '.join(s.name for suite in SUITES.values() for s in suite)}",
    )
    parser.add_argument(
        "--algorithms",
        type=_names,
        default=None,
        help=f"comma-separated jtconv algorithms (default all: {', '.join(algorithms)})",
    )
    parser.add_argument(
        "--status-quo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"time {LAX} and {FLAX} too (default: yes, no with --quick)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repetitions (default 15, --quick 3)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="warm-up calls per candidate after verification (default 1, --quick 0)"
    )
    parser.add_argument(
        "--min-sample-ms",
        type=float,
        default=None,
        help="repeat fast calls until a sample lasts this long (default 20, --quick 5)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds of samples per candidate and pass: slower candidates take part in fewer repetitions, "
        "at least 1 (default 20, --quick 2)",
    )
    parser.add_argument(
        "--retain-freed-memory",
        action="store_true",
        help="make glibc keep freed memory (no per-call page faults on >32 MiB temporaries; see the README)",
    )
    parser.add_argument(
        "--matmul-size", type=int, default=2048, help="n of the n³ fp32 matmul reference (default 2048)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random data")
    parser.add_argument(
        "--loss",
        choices=list(LOSSES),
        default="dot",
        help="fwd+bwd loss: 'dot' = sum(y·c) for a fixed random c (default), 'square' = sum(y²)/2, "
        "whose backward reads the forward's output",
    )
    parser.add_argument(
        "--planning",
        choices=("estimate", "measure"),
        default="estimate",
        help="'measure' adds jtconv[measure]: the plan measured planning picks (timed on this machine first, "
        "its tuning time in the note) beside auto (the estimate)",
    )
    parser.add_argument("--json", metavar="FILE", help="write every number to FILE as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="write the tables to FILE as markdown")
    parser.add_argument("--list", action="store_true", help="list the suite's shapes and exit")
    args = parser.parse_args(argv)
    defaults = (3, 0, 5.0, 2.0, False) if args.quick else (15, 1, 20.0, 20.0, True)
    for attr, default in zip(("repeats", "warmup", "min_sample_ms", "budget_s", "status_quo"), defaults):
        if getattr(args, attr) is None:
            setattr(args, attr, default)
    if args.repeats < 1 or args.matmul_size < 1:
        parser.error("--repeats and --matmul-size must be >= 1")
    if args.warmup < 0 or args.min_sample_ms < 0 or args.budget_s <= 0:
        parser.error("--warmup and --min-sample-ms must be >= 0 and --budget-s > 0")
    try:
        if args.suite == "random":
            drawn = random_layers(args.random_count, args.layer_seed)
            unknown = sorted(set(args.shapes or ()) - {s.name for s in drawn})
            if unknown:
                raise ValueError(f"--shapes: {unknown} not among the drawn layers {[s.name for s in drawn]}")
            args.shape_list = [s for s in drawn if not args.shapes or s.name in args.shapes]
        else:
            args.shape_list = select_shapes(args.shapes, args.suite)
    except ValueError as error:
        parser.error(str(error))
    chosen = args.algorithms or [a for a in algorithms if a != "measure"]
    if args.planning == "measure" and "measure" not in chosen:
        chosen = [*chosen, "measure"]
    unknown = [a for a in chosen if a not in algorithms]
    if unknown:
        parser.error(f"--algorithms: unknown {unknown}; choose from {list(algorithms)}")
    args.algorithm_list = [a for a in algorithms if a in chosen]
    return args


def setup_devices():
    """torch on CUDA when JAX runs on a GPU and torch sees one, else the CPU
    with one thread per usable core. Off the CPU both sides run true fp32
    (no TF32), so the comparison and the float32 tolerance stay meaningful."""
    import torch

    torch.set_num_threads(harness.usable_cores())
    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
    if jax.default_backend() != "cpu":
        jax.config.update("jax_default_matmul_precision", "highest")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    if settings.list:
        listed = dict(SUITES, random=random_layers(settings.random_count, settings.layer_seed))
        for suite, suite_shapes in listed.items():
            for shape in suite_shapes:
                print(f"{suite:8s} {shape.name:12s} {shape.description:36s} {shape.summary()}")
        return 0
    if settings.retain_freed_memory:
        retain_freed_memory()
    device = setup_devices()
    machine = harness.machine_info(device)
    machine["malloc"] = harness.malloc_setting(settings.retain_freed_memory)
    matmul = harness.matmul_gflops(
        settings.matmul_size, device, repeats=max(3, settings.repeats // 3), warmup=1, min_sample_s=0.0
    )
    jtconv_names = [f"jtconv[{a}]" for a in settings.algorithm_list]
    status_quo_names = [LAX, FLAX] if settings.status_quo else []
    rows: list[Row] = []
    for shape in settings.shape_list:
        print(f"… {shape.name}: {shape.summary()}", file=sys.stderr, flush=True)
        problem = make_problem(shape, settings.seed, settings.loss)
        candidates = [torch_candidate(problem, device)]
        candidates += jtconv_candidates(problem, settings.algorithm_list)
        if settings.status_quo:
            candidates += status_quo_candidates(problem)
        for pass_name in PASSES:
            rows += measure_pass(problem, candidates, pass_name, settings)
    machine["load_average_end"] = harness.load_average()
    summary = summarize(rows, jtconv_names, status_quo_names, len(settings.shape_list))
    print_report(rows, summary, machine, matmul, settings)
    if settings.markdown:
        with open(settings.markdown, "w") as f:
            f.write(markdown_report(rows, summary, machine, matmul, settings))
    if settings.json:
        with open(settings.json, "w") as f:
            report = json_report(rows, summary, machine, matmul, settings, settings.shape_list)
            json.dump(_json_safe(report), f, indent=1)
    failures = [r for r in rows if r.status in ("WRONG", "error")]
    for row in failures:
        print(f"FAILED: {row.candidate} on {row.shape} ({row.pass_name}): {row.note}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
