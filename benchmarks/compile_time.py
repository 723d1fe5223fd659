"""First-call compile time of jtconv's layers, each measured in a fresh process.

    python benchmarks/compile_time.py                          # large kernels + main + holdout, auto
    python benchmarks/compile_time.py --algorithm auto,matmul,phase --suite large
    python benchmarks/compile_time.py --algorithm tiled --suite large
    python benchmarks/compile_time.py --shapes fcn32s,dcgan --json compile.json
    python benchmarks/compile_time.py --list

For every layer and candidate a child process (``python compile_time.py
--child …``) builds the layer's arrays and, for two programs — ``forward``
(``y = conv_transpose(x, w, b)``) and ``fwd+bwd`` (``value_and_grad`` of
``sum(y · cotangent)`` with respect to ``x``, the weight and the bias, as in
``run.py``) — times ``jax.jit(f).lower(…)`` (tracing and lowering),
``.compile()`` (XLA) and the first call of the compiled program. A fresh
process per measurement means no cache of JAX's or XLA's is warm (JAX's
persistent compilation cache is switched off in the child). The child also
counts the lowered program's StableHLO operations, the quantity that grows
with ``Πk`` when a lowering emits one piece per kernel tap.

Candidates: ``--algorithm NAME[,NAME…]``, ``jtconv.conv_transpose(…,
algorithm=NAME)`` (``auto`` or any name in ``jtconv.ALGORITHMS``).

The issue's targets (forward ≤ 2 s, forward + backward ≤ 5 s, counting
lowering and compiling) are marked in the table. Timings on a shared machine
are not meaningful: run this on a quiet one. Exit status 1 if a child fails
or times out.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from random_layers import random_layers
from shapes import SUITES, BenchShape

HERE = Path(__file__).resolve().parent
PASSES = ("forward", "fwd+bwd")
TARGET_S = {"forward": 2.0, "fwd+bwd": 5.0}
"""The issue's bounds on lowering + compiling, per program."""


def all_suites(random_count: int, layer_seed: int) -> dict[str, tuple[BenchShape, ...]]:
    return {**SUITES, "random": random_layers(random_count, layer_seed)}


def select(settings: argparse.Namespace) -> list[BenchShape]:
    """The layers named by ``--shapes`` (from any suite) or those of ``--suite``."""
    suites = all_suites(settings.random_count, settings.layer_seed)
    by_name = {shape.name: shape for suite in suites.values() for shape in suite}
    if settings.shapes:
        unknown = [n for n in settings.shapes if n not in by_name]
        if unknown:
            raise ValueError(f"--shapes: unknown shape(s) {unknown}; choose from {list(by_name)}")
        return [by_name[n] for n in settings.shapes]
    chosen: list[BenchShape] = []
    for suite in settings.suite:
        if suite not in suites:
            raise ValueError(f"--suite: unknown suite {suite!r}; choose from {list(suites)}")
        chosen += [s for s in suites[suite] if s not in chosen]
    return chosen


# --- the child: one layer, one candidate, fresh process -------------------------------------------


def _candidate_function(shape: BenchShape, candidate: str):
    """``f(x, w[, b]) → y`` for ``candidate`` (``algorithm:NAME``)."""
    import jtconv

    _, name = candidate.split(":", 1)
    kwargs = dict(
        stride=shape.stride,
        padding=shape.padding,
        output_padding=shape.output_padding,
        dilation=shape.dilation,
        groups=shape.groups,
    )
    return lambda x, w, *b: jtconv.conv_transpose(x, w, *b, **kwargs, algorithm=name)


def _hlo_ops(lowered) -> int:
    text = lowered.as_text()
    return sum(1 for line in text.splitlines() if "stablehlo." in line)


def measure_child(shape: BenchShape, candidate: str, passes: Sequence[str]) -> dict:
    """Lower, compile and run each program once; seconds and op counts."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    import jax.numpy as jnp
    import numpy as np

    fn = _candidate_function(shape, candidate)
    rng = np.random.default_rng(0)
    args = [
        jnp.asarray(rng.standard_normal(shape.x_shape), jnp.float32),
        jnp.asarray(rng.standard_normal(shape.w_shape) / math.sqrt(math.prod(shape.w_shape[2:])), jnp.float32),
    ]
    if shape.bias:
        args.append(jnp.asarray(rng.standard_normal(shape.out_channels), jnp.float32))
    ct = jnp.asarray(rng.standard_normal(shape.output_shape), jnp.float32)

    def loss(ct, *a):
        return jnp.sum(fn(*a) * ct)

    programs = {
        "forward": (fn, tuple(args)),
        "fwd+bwd": (jax.value_and_grad(loss, argnums=tuple(range(1, len(args) + 1))), (ct, *args)),
    }
    result: dict = {"status": "ok", "backend": jax.default_backend(), "passes": {}}
    for pass_name in passes:
        program, program_args = programs[pass_name]
        start = time.perf_counter()
        lowered = jax.jit(program).lower(*program_args)
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        compiled_at = time.perf_counter()
        jax.block_until_ready(compiled(*program_args))
        ran_at = time.perf_counter()
        result["passes"][pass_name] = {
            "lower_s": lowered_at - start,
            "compile_s": compiled_at - lowered_at,
            "first_call_s": ran_at - compiled_at,
            "hlo_ops": _hlo_ops(lowered),
        }
    return result


def run_child(shape: BenchShape, candidate: str, settings: argparse.Namespace) -> dict:
    """:func:`measure_child` in a fresh ``python`` process (``--timeout`` seconds at most)."""
    command = [
        sys.executable,
        str(HERE / "compile_time.py"),
        "--child",
        json.dumps({"shape": shape.__dict__, "candidate": candidate, "passes": list(settings.passes)}),
    ]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=settings.timeout, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "note": f"over {settings.timeout:.0f} s", "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "note": tail[:200], "wall_s": wall}
    result = json.loads(lines[-1])
    result["wall_s"] = wall
    return result


# --- the parent: table and JSON ------------------------------------------------------------------


def _cell(result: dict, pass_name: str) -> str:
    if result["status"] != "ok":
        return result["status"]
    p = result["passes"].get(pass_name)
    if p is None:
        return "—"
    total = p["lower_s"] + p["compile_s"]
    mark = "" if total <= TARGET_S[pass_name] else " !"
    return f"{p['lower_s']:.2f}+{p['compile_s']:.2f}={total:.2f}s{mark} run {p['first_call_s']:.3f}s ops {p['hlo_ops']}"


def print_table(rows: list[dict], passes: Sequence[str]) -> None:
    header = ["layer", "candidate"] + [f"{p}: lower+compile, first call, HLO ops" for p in passes]
    lines = [[r["shape"], r["candidate"]] + [_cell(r["result"], p) for p in passes] for r in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    for line in [header, ["-" * w for w in widths]] + lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)))
    print(f"('!': over the target of {TARGET_S['forward']:.0f} s forward, {TARGET_S['fwd+bwd']:.0f} s fwd+bwd)")
    for r in rows:
        if r["result"]["status"] in ("error", "timeout") and r["result"].get("note"):
            print(f"{r['shape']} / {r['candidate']}: {r['result']['status']}: {r['result']['note']}")


def _names(text: str) -> list[str]:
    return [n for n in text.split(",") if n]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--suite",
        type=_names,
        default=["large", "main", "holdout"],
        help="comma-separated suites: large, main, holdout, random (default: large,main,holdout)",
    )
    parser.add_argument("--shapes", type=_names, default=None, help="comma-separated layer names from any suite")
    parser.add_argument(
        "--algorithm",
        type=_names,
        default=None,
        help="comma-separated algorithm= values for jtconv.conv_transpose (default: auto)",
    )
    parser.add_argument("--passes", type=_names, default=list(PASSES), help="forward, fwd+bwd (default: both)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child process (default 600)")
    parser.add_argument("--random-count", type=int, default=12, help="layers of the random suite (default 12)")
    parser.add_argument("--layer-seed", type=int, default=2026, help="seed of the random suite (default 2026)")
    parser.add_argument("--json", default=None, help="write every measurement to this file")
    parser.add_argument("--list", action="store_true", help="list the layers and exit")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    settings = parser.parse_args(argv)
    unknown = [p for p in settings.passes if p not in PASSES]
    if unknown:
        parser.error(f"--passes: unknown pass(es) {unknown}; choose from {list(PASSES)}")
    if settings.algorithm is None:
        settings.algorithm = ["auto"]
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    if settings.child is not None:
        spec = json.loads(settings.child)
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["shape"].items()}
        print(json.dumps(measure_child(BenchShape(**fields), spec["candidate"], spec["passes"])))
        return 0
    try:
        layers = select(settings)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    if settings.list:
        for shape in layers:
            print(f"{shape.name:14s} {shape.description:44s} {shape.summary()}")
        return 0
    candidates = [f"algorithm:{a}" for a in settings.algorithm]
    rows = []
    for shape in layers:
        for candidate in candidates:
            print(f"… {shape.name} ({shape.summary()}) {candidate}", file=sys.stderr, flush=True)
            rows.append(
                {
                    "shape": shape.name,
                    "summary": shape.summary(),
                    "candidate": candidate,
                    "result": run_child(shape, candidate, settings),
                }
            )
    print_table(rows, settings.passes)
    if settings.json:
        with open(settings.json, "w") as f:
            json.dump({"passes": list(settings.passes), "targets_s": TARGET_S, "rows": rows}, f, indent=1)
    return 1 if any(r["result"]["status"] in ("error", "timeout") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
