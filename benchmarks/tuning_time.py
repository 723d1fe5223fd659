"""How long measured planning takes per layer, and what it timed.

    python benchmarks/tuning_time.py                        # main, holdout and a random suite
    python benchmarks/tuning_time.py --suite main --shapes dcgan,vae
    python benchmarks/tuning_time.py --suite random --layer-seed 2041 --json tuning.json

For every layer, one in-process call of ``jtconv.plans.measure.measure``
with an empty wisdom cache (a temporary ``JTCONV_CACHE_DIR``): the seconds it
took (tracing, compiling and timing every candidate), how many programs it
compiled, the chosen plan and the estimate's, and each role's candidates as
ratios to that role's fastest (``-`` where not timed, with the reason in
``--json``). The summary gives the minimum, median and maximum per suite:
the figure the measure-mode budget is about. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from random_layers import random_layers
from shapes import SUITES, BenchShape


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--suite",
        action="append",
        choices=[*SUITES, "random"],
        help="suites to run (repeatable; default: main, holdout and random)",
    )
    parser.add_argument("--shapes", type=lambda s: s.split(","), help="only these layers of the chosen suites")
    parser.add_argument("--layer-seed", type=int, default=2041, help="seed of the random suite")
    parser.add_argument("--random-count", type=int, default=12, help="layers in the random suite")
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    settings = parser.parse_args(argv)
    settings.suite = settings.suite or ["main", "holdout", "random"]
    return settings


def chosen_layers(settings: argparse.Namespace) -> list[tuple[str, BenchShape]]:
    """``(suite, layer)`` pairs of the chosen suites (only ``--shapes`` where given)."""
    suites = {**SUITES, "random": random_layers(settings.random_count, settings.layer_seed)}
    layers = [(suite, shape) for suite in settings.suite for shape in suites[suite]]
    if settings.shapes:
        known = {shape.name for _, shape in layers}
        unknown = sorted(set(settings.shapes) - known)
        if unknown:
            raise SystemExit(f"--shapes: unknown shape(s) {unknown} in suites {settings.suite}")
        layers = [(suite, shape) for suite, shape in layers if shape.name in settings.shapes]
    return layers


def role_ratios(times: dict[str, float | None]) -> str:
    """``"gemm=1.00 tiled=1.12 xla=-"``: each candidate's time over the fastest."""
    timed = [t for t in times.values() if t is not None]
    best = min(timed) if timed else None
    return " ".join(f"{name}={'-' if t is None or best is None else f'{t / best:.2f}'}" for name, t in times.items())


def measure_layer(shape: BenchShape) -> dict:
    """One measurement of ``shape`` with nothing remembered; its record for the report."""
    import jax

    import jtconv
    from jtconv.plans import measure

    compiled = []
    original = measure._compile_all

    def counting(programs):
        results = original(programs)
        compiled.extend(results)
        return results

    geom = jtconv.make_geometry(
        shape.x_shape,
        shape.w_shape,
        stride=shape.stride,
        padding=shape.padding,
        output_padding=shape.output_padding,
        dilation=shape.dilation,
        groups=shape.groups,
    )
    measure._compile_all = counting
    try:
        found = measure.measure(geom, shape.x_shape[0], "float32", jax.default_backend())
    finally:
        measure._compile_all = original
    return {
        "name": shape.name,
        "seconds": found.seconds,
        "programs": len(compiled),
        "compile_seconds": sum(c.compile_seconds for c in compiled),
        "plan": str(found.plan),
        "estimate": str(found.estimate),
        "times": found.times,
        "training": found.training,
        "rematch": found.rematch,
        "forward_race": found.forward_race,
        "skipped": found.skipped,
    }


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    layers = chosen_layers(settings)
    os.environ["JTCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="jtconv-tuning-")
    import jax

    print(f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} cores; measure mode, empty wisdom")
    records: dict[str, list[dict]] = {}
    for suite, shape in layers:
        record = measure_layer(shape)
        records.setdefault(suite, []).append(record)
        print(
            f"{suite:8s} {shape.name:18s} {record['seconds']:5.2f} s  {record['programs']:2d} programs "
            f"({record['compile_seconds']:.1f} s compiling)  → {record['plan']}"
            + ("" if record["plan"] == record["estimate"] else f"  (estimate: {record['estimate']})"),
            flush=True,
        )
        for role, times in record["times"].items():
            print(f"{'':28s}{role}: {role_ratios(times)}")
    print()
    for suite, rows in records.items():
        seconds = [r["seconds"] for r in rows]
        print(
            f"{suite}: {len(rows)} layers, {min(seconds):.1f}–{max(seconds):.1f} s per layer, "
            f"median {statistics.median(seconds):.1f} s"
        )
    if settings.json:
        settings.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
