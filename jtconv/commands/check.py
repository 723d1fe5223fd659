"""``jtconv check``: prove on this machine that jtconv computes what PyTorch computes.

Every configuration of :func:`jtconv.testing.check_configs` goes through :func:`jtconv.testing.check_config` for
every algorithm and plan asked for (by default every lowering and ``auto``), JAX device, torch device and dtype:
forward values and the gradients of ``Σ y · cotangent`` must agree within :func:`jtconv.testing.relative_tolerance`
(TF32 off on both sides), the float64 :class:`jtconv.testing.Referee` judging what falls outside, and configurations
torch rejects must make jtconv raise ``ValueError``. A plan text is checked on the layers it supports. Exit status:
0 when everything passes, 1 when anything fails, 2 for bad arguments. torch and rich are imported only when the
command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from jtconv.commands import Console, missing_module_hint

HELP = "compare jtconv with PyTorch (values, gradients, rejected arguments) on this machine's devices"

DEFAULT_DTYPES = ("float32", "bfloat16", "float16")
KNOWN_DTYPES = ("float32", "bfloat16", "float16", "float64")
GRADIENT_NAMES = ("x", "weight", "bias")
# Measured with every lowering and the default dtypes: 1.6 min on an idle 2-core VM, 7 min on a busy one.
QUICK_DURATION = "about 2 to 7 minutes on a 2-core CPU"


def _name_list(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected one or more names separated by commas")
    return names


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--quick",
        action="store_true",
        help=f"a short sweep ({QUICK_DURATION}); default: the thorough sweep, about ten times as many checks",
    )
    add(
        "--configs",
        type=_positive,
        metavar="N",
        help="only the first N configurations of the sweep (the hand-picked ones come first); default: all",
    )
    add("--json", metavar="FILE", help="write the full report as JSON to FILE")
    for flag, help in (
        (
            "--device",
            "JAX devices to check: a platform (cpu, gpu, tpu) or one device (e.g. cpu:0, cuda:1); default: all",
        ),
        ("--torch-device", "torch devices used as the reference: cpu, cuda; default: cpu, and cuda when available"),
        ("--dtype", f"dtypes among {', '.join(KNOWN_DTYPES)}; default: {', '.join(DEFAULT_DTYPES)}"),
        ("--algorithm", "lowerings to check (names in jtconv.ALGORITHMS); default: all, and --plan auto"),
    ):
        add(flag, type=_name_list, metavar="NAME[,NAME]", help=help)
    add(
        "--plan",
        action="append",
        metavar="auto|measure|PLAN",
        help="a plan to check (repeatable): auto (the plan this device runs by default), measure (the plan "
        "measured planning picks; each layer is measured once) or a plan text as jtconv tune prints it "
        '("forward=xla  dx=xla  dw=xla-wgrad  waits=no  stores=no"), checked on the layers it supports',
    )
    add("--no-grads", action="store_true", help="compare forward values only")
    add(
        "--no-referee",
        action="store_true",
        help="fail every comparison outside its tolerance; default: rerun it in float64, and pass it when "
        "torch's rounding, not jtconv's, is off",
    )
    add("--seed", type=int, default=0, help="seed of the random part of the sweep (default 0)")
    add(
        "--verbose",
        action="store_true",
        help="print one table row per check; default: one row per algorithm and dtype, plus every failure "
        "(the JSON report always has every check)",
    )


@dataclasses.dataclass(frozen=True)
class CheckRun:
    """What one ``jtconv check`` run compares; ``not_applicable``: why a plan text cannot run a valid configuration,
    by (configuration index, plan text)."""

    configs: list
    rejected: list[bool]
    jax_devices: list
    torch_devices: list[str]
    dtypes: list[str]
    algorithms: list[str]
    grads: bool
    referee: bool = True
    not_applicable: dict[tuple[int, str], str] = dataclasses.field(default_factory=dict)

    @property
    def comparisons(self) -> int:
        """One per (valid configuration, applicable algorithm, JAX device, torch device, dtype)."""
        pairs = self.rejected.count(False) * len(self.algorithms) - len(self.not_applicable)
        return pairs * len(self.jax_devices) * len(self.torch_devices) * len(self.dtypes)

    @property
    def rejection_checks(self) -> int:
        """One per (invalid configuration, JAX device, algorithm): validation depends on neither the dtype nor the
        torch device."""
        return self.rejected.count(True) * len(self.jax_devices) * len(self.algorithms)

    def describe(self, mode: str) -> str:
        """Two lines: the number of checks and how it multiplies out."""
        valid, invalid = self.rejected.count(False), self.rejected.count(True)
        where = f"{_count(len(self.jax_devices), 'JAX device')} × {_count(len(self.algorithms), 'algorithm')}"
        skipped = len(self.not_applicable)
        return (
            f"jtconv check ({mode}): {self.comparisons + self.rejection_checks} checks = {self.comparisons} "
            f"comparisons with torch + {self.rejection_checks} rejection checks\n"
            f"  {_count(valid, 'valid configuration')} × {where} × {_count(len(self.torch_devices), 'torch device')}"
            f" × {_count(len(self.dtypes), 'dtype')}; {_count(invalid, 'invalid configuration')} × {where}"
            + (f"; {skipped} (configuration, plan) pairs not applicable" if skipped else "")
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def run(args: argparse.Namespace) -> int:
    hint = missing_module_hint("torch")
    if hint:
        print(f"jtconv check: error: compares against {hint}", file=sys.stderr)
        return 2
    try:
        checks = _check_run(args)
    except ValueError as error:
        print(f"jtconv check: error: {error}", file=sys.stderr)
        return 2
    console = Console()
    console.line(checks.describe("quick" if args.quick else "thorough"))
    start = time.perf_counter()
    with console.progress(checks.comparisons + checks.rejection_checks, "checking against torch") as advance:
        report = _run_checks(checks, advance)
    report["summary"]["seconds"] = round(time.perf_counter() - start, 2)
    report.update(_environment(args, checks))
    _print_report(console, report, args.verbose)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
        console.line(f"report written to {args.json}")
    summary = report["summary"]
    return 0 if summary["failed"] == 0 and summary["rejections_failed"] == 0 else 1


def _check_run(args: argparse.Namespace) -> CheckRun:
    """The run the arguments ask for; ``ValueError`` naming the argument that is wrong."""
    import jax
    import torch

    import jtconv
    from jtconv.testing import check_configs, torch_rejection

    algorithms, plans = list(args.algorithm or ()), list(args.plan or ())
    if not algorithms and not plans:
        algorithms, plans = list(jtconv.ALGORITHMS), ["auto"]
    unknown = [a for a in algorithms if a not in jtconv.ALGORITHMS]
    if unknown:
        raise ValueError(
            f"--algorithm must name lowerings in {tuple(jtconv.ALGORITHMS)}, got {unknown}"
            " (--plan auto checks the device's default plan)"
        )
    for plan in plans:
        _check_plan_argument(plan)
    dtypes = list(args.dtype or DEFAULT_DTYPES)
    unknown = [d for d in dtypes if d not in KNOWN_DTYPES]
    if unknown:
        raise ValueError(f"--dtype must be among {KNOWN_DTYPES}, got {unknown}")
    devices = jax.devices()
    if args.device:
        chosen = [d for d in devices if any(_device_matches(d, name) for name in args.device)]
        if not chosen:
            names = ", ".join(sorted({d.platform for d in devices} | {_device_name(d) for d in devices}))
            raise ValueError(f"--device {','.join(args.device)} matches no JAX device; available: {names}")
        devices = chosen
    available_torch = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    torch_devices = list(args.torch_device or available_torch)
    unknown = [d for d in torch_devices if d not in available_torch]
    if unknown:
        raise ValueError(f"--torch-device must be among the available {available_torch}, got {unknown}")
    configs = check_configs(quick=args.quick, seed=args.seed)[: args.configs]
    rejected = [torch_rejection(config) is not None for config in configs]
    not_applicable = {
        (i, text): why
        for i, config in enumerate(configs)
        if not rejected[i]
        for text in plans
        if "=" in text and (why := _unsupported(config, text)) is not None
    }
    return CheckRun(
        configs=configs,
        rejected=rejected,
        jax_devices=devices,
        torch_devices=torch_devices,
        dtypes=dtypes,
        algorithms=list(dict.fromkeys(algorithms + plans)),
        grads=not args.no_grads,
        referee=not args.no_referee,
        not_applicable=not_applicable,
    )


def _check_plan_argument(text: str) -> None:
    """``auto``, ``measure`` or a plan text naming a method for each role; ``ValueError`` naming --plan otherwise."""
    from jtconv.lowering.methods import ROLES, method
    from jtconv.lowering.plan import Plan

    if text in ("auto", "measure"):
        return
    try:
        parsed = Plan.parse(text)
        for role in ROLES:
            method(getattr(parsed, role), role)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"--plan must be auto, measure or a plan text as jtconv tune prints it "
            f"('forward=…  dx=…  dw=…  waits=…  stores=…'); {text!r}: {error}"
        ) from None


def _plan(config, algorithm: str, **kwargs) -> str:
    """The plan ``algorithm`` (as checked, see :func:`jtconv.testing.planned`) runs for ``config``'s layer, as text;
    ``ValueError`` when it cannot run it."""
    import jtconv
    from jtconv.testing import planned

    name, mode = planned(algorithm)
    with jtconv.planning(mode):
        plan = jtconv.plan_for(
            config.input_shape, config.weight_shape, **config.jtconv_kwargs(), algorithm=name, **kwargs
        )
    return str(plan)


def _unsupported(config, text: str) -> str | None:
    """Why the plan ``text`` cannot run ``config``'s layer, or ``None`` when it can."""
    try:
        _plan(config, text)
    except ValueError as error:
        return str(error).splitlines()[0]
    return None


def _device_name(device) -> str:
    return f"{device.platform}:{device.id}"


def _device_matches(device, name: str) -> bool:
    name = name.lower()
    kind = getattr(device, "device_kind", "").lower()
    return name in (device.platform, _device_name(device), str(device).lower(), kind)


def _run_checks(checks: CheckRun, advance: Callable[[int], None]) -> dict[str, Any]:
    """Every check of ``checks``, calling ``advance(1)`` after each: the report's ``results``, ``rejections``,
    ``not_applicable`` and ``summary``."""
    import jax

    from jtconv.testing import check_config

    results: list[dict[str, Any]] = []
    rejections: list[dict[str, Any]] = []
    for (index, config), device, algorithm in itertools.product(
        enumerate(checks.configs), checks.jax_devices, checks.algorithms
    ):
        if (index, algorithm) in checks.not_applicable:
            continue
        check = functools.partial(check_config, config, algorithm=algorithm, jax_device=device)
        if checks.rejected[index]:
            outcome = check()
            rejections.append(
                {
                    **_where(config, device),
                    "algorithm": algorithm,
                    "torch_error": outcome.torch_error,
                    "jtconv_error": outcome.jtconv_error,
                    "passed": outcome.passed,
                }
            )
            advance(1)
            continue
        for torch_device, dtype in itertools.product(checks.torch_devices, checks.dtypes):
            with jax.enable_x64(dtype == "float64"):
                outcome = check(dtype=dtype, grads=checks.grads, torch_device=torch_device, referee=checks.referee)
            results.append(_result_row(outcome, device, torch_device, dtype, algorithm, checks.grads))
            advance(1)
    failed = sum(not r["passed"] for r in results)
    rejections_failed = sum(not r["passed"] for r in rejections)
    not_applicable = [
        {"config": checks.configs[i].to_json(), "label": checks.configs[i].label(), "algorithm": text, "reason": why}
        for (i, text), why in checks.not_applicable.items()
    ]
    summary = {
        "results": len(results),
        "passed": len(results) - failed,
        "failed": failed,
        "refereed": sum(r["passed"] and bool(r["referee"]) for r in results),
        "rejections": len(rejections),
        "rejections_passed": len(rejections) - rejections_failed,
        "rejections_failed": rejections_failed,
        "not_applicable": len(not_applicable),
        "configs": len(checks.configs),
    }
    return {"results": results, "rejections": rejections, "not_applicable": not_applicable, "summary": summary}


def _where(config, device) -> dict[str, Any]:
    """The fields a report row starts with."""
    return {
        "config": config.to_json(),
        "label": config.label(),
        "platform": device.platform,
        "jax_device": _device_name(device),
    }


def _result_row(outcome, device, torch_device: str, dtype: str, algorithm: str, grads: bool) -> dict[str, Any]:
    """A comparison's report row; ``plan``: the plan that ran (``None`` where none could)."""
    import jax

    from jtconv.testing import relative_tolerance

    config = outcome.config
    row: dict[str, Any] = {
        **_where(config, device),
        "torch_device": torch_device,
        "dtype": dtype,
        "algorithm": algorithm,
        "max_abs_err": None,
        "max_rel_err": None,
        "tolerance": relative_tolerance(dtype, config.reduction_lengths()["output"]),
        "grads": grads,
        "gradients": {},
        "referee": {},
        "passed": outcome.passed,
        "error": outcome.jtconv_error,
        "plan": None,
    }
    with contextlib.suppress(ValueError), jax.enable_x64(dtype == "float64"):
        row["plan"] = _plan(
            config, algorithm, dtype=dtype, backend=device.platform, precision=jax.lax.Precision.HIGHEST
        )
    comparison = outcome.comparison
    if comparison is None:
        return row
    output = comparison.leaf("output[0]")
    if not output.shape_matches:
        row["error"] = f"shape mismatch: jtconv {output.jax_shape} vs torch {output.torch_shape}"
        return row
    row["max_abs_err"] = output.max_abs_err
    row["max_rel_err"] = _finite(output.relative_error)
    for leaf in comparison.leaves:
        if leaf.name.startswith("grad"):
            row["gradients"][GRADIENT_NAMES[int(leaf.name[5:-1])]] = {
                "max_abs_err": _finite(leaf.max_abs_err),
                "max_rel_err": _finite(leaf.relative_error),
                "tolerance": leaf.rtol,
                "passed": leaf.passed,
            }
        if leaf.referee is not None:
            row["referee"][leaf.name] = {
                "jtconv_error": leaf.referee.jtconv_error,
                "torch_error": leaf.referee.torch_error,
                "float64_error": _finite(leaf.referee.float64_error),
                "verdict": leaf.referee.verdict,
            }
    if not outcome.passed:
        row["error"] = comparison.report()
    return row


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _environment(args: argparse.Namespace, checks: CheckRun) -> dict[str, Any]:
    import jax
    import torch

    import jtconv
    from jtconv.testing import REFEREE_FACTOR, relative_tolerance

    return {
        "mode": "quick" if args.quick else "thorough",
        "seed": args.seed,
        "versions": dict(
            jtconv=jtconv.__version__, jax=jax.__version__, torch=torch.__version__, python=platform.python_version()
        ),
        "jax_devices": [_device_name(d) for d in checks.jax_devices],
        "torch_devices": checks.torch_devices,
        "dtypes": checks.dtypes,
        "algorithms": checks.algorithms,
        "tolerances": {
            dtype: {"rule": _TOLERANCE_RULES[dtype], "example_reduction_length_64": relative_tolerance(dtype, 64)}
            for dtype in checks.dtypes
        },
        "referee": {"enabled": checks.referee, "factor": REFEREE_FACTOR},
        "tf32": "disabled on both sides: torch allow_tf32 = False (matmul and cuDNN), JAX precision HIGHEST",
    }


_TOLERANCE_RULES = {
    "float64": "max|jax - torch| <= 1e-12 * max|torch|",
    "float32": "max|jax - torch| <= 1e-5 * max|torch|",
    "bfloat16": "max|jax - torch| <= eps * (2 + sqrt(R)) * max|torch|, eps = 2^-7, R = terms summed per element",
    "float16": "max|jax - torch| <= eps * (2 + sqrt(R)) * max|torch|, eps = 2^-10, R = terms summed per element",
}


def _print_report(console: Console, report: dict[str, Any], verbose: bool) -> None:
    """Without ``verbose``: one table row per (JAX device, torch device, algorithm, dtype), one per (JAX device,
    algorithm) for the rejections, the configurations a plan does not apply to, then the failed checks; with it,
    one row per check. Then every failure in full and the summary line."""
    results, rejections = report["results"], report["rejections"]
    if verbose:
        _check_tables(console, results, rejections, "")
    else:
        groups = _groups(results, "jax_device", "torch_device", "algorithm", "dtype")
        rows = [
            [*key, _passed(rows), _worst(_ratios(rows)), _worst(_gradient_ratios(rows)), _result(rows)]
            for key, rows in groups
        ]
        console.table("comparisons with torch", _SUMMARY_COLUMNS, rows)
        if rejections:
            rows = [
                [*key, _passed(rows), _result(rows)] for key, rows in _groups(rejections, "jax_device", "algorithm")
            ]
            console.table("invalid arguments", ("device", "algorithm", "raised ValueError like torch", "result"), rows)
        if report["not_applicable"]:
            rows = [[r["algorithm"], r["label"], _short(r["reason"])] for r in report["not_applicable"]]
            console.table(
                "not applicable (the plan does not support the layer)", ("algorithm", "configuration", "why"), rows
            )
        failed = [r for r in results if not r["passed"]]
        _check_tables(console, failed, [r for r in rejections if not r["passed"]], "failed ")
    for row in results:
        if not row["passed"] and row["error"]:
            console.line(
                f"FAIL {row['label']} [{row['jax_device']} {row['torch_device']} {row['dtype']} {row['algorithm']}]:"
            )
            console.line("  " + row["error"].replace("\n", "\n  "))
    s = report["summary"]
    status = "OK" if s["failed"] == 0 and s["rejections_failed"] == 0 else "FAILED"
    refereed = f" ({s['refereed']} by the float64 referee: torch's rounding is off)" if s["refereed"] else ""
    skipped = f", {s['not_applicable']} (configuration, plan) pairs not applicable" if s["not_applicable"] else ""
    console.line(
        f"{status}: {s['passed']}/{s['results']} comparisons passed{refereed}, "
        f"{s['rejections_passed']}/{s['rejections']} rejection checks passed (invalid arguments raise like torch); "
        f"{s['configs']} configurations{skipped}, worst forward error {max(_ratios(results), default=0.0):.3f} of "
        f"its tolerance, {s['seconds']:.1f} s"
    )


_COLUMNS = tuple(
    "configuration, device, torch, dtype, algorithm, max abs err, rel err, tol, grad rel/tol, result".split(", ")
)
_SUMMARY_COLUMNS = ("device", "torch", "algorithm", "dtype", "passed", "worst err/tol", "worst grad err/tol", "result")


def _check_tables(console: Console, results: list, rejections: list, prefix: str) -> None:
    """One row per comparison and per rejection check (tables of none are left out)."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.2e}"

    if results:
        rows = [
            [*(r[k] for k in ("label", "jax_device", "torch_device", "dtype", "algorithm"))]
            + [number(r["max_abs_err"]), number(r["max_rel_err"]), number(r["tolerance"])]
            + [_worst(_gradient_ratios([r])), _result([r])]
            for r in results
        ]
        console.table(f"{prefix}comparisons with torch", _COLUMNS, rows)
    if rejections:
        columns = ("configuration", "device", "algorithm", "torch says", "jtconv says", "result")
        rows = [
            [r["label"], r["jax_device"], r["algorithm"], *(_short(r[k]) for k in ("torch_error", "jtconv_error"))]
            + [_result([r])]
            for r in rejections
        ]
        console.table(f"{prefix}invalid arguments (jtconv must raise ValueError)", columns, rows)


def _groups(rows: list[dict[str, Any]], *keys: str) -> list[tuple[tuple, list[dict[str, Any]]]]:
    """``rows`` grouped by the values of ``keys``, in run order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return list(groups.items())


def _ratios(rows: list[dict[str, Any]]) -> list[float]:
    return [r["max_rel_err"] / r["tolerance"] for r in rows if r["max_rel_err"] is not None]


def _gradient_ratios(rows: list[dict[str, Any]]) -> list[float]:
    return _ratios([g for r in rows for g in r["gradients"].values()])


def _worst(ratios: list[float]) -> str:
    return f"{max(ratios):.3f}" if ratios else "-"


def _passed(rows: list[dict[str, Any]]) -> str:
    return f"{sum(r['passed'] for r in rows)}/{len(rows)}"


def _result(rows: list[dict[str, Any]]) -> str:
    return "pass" if all(r["passed"] for r in rows) else "FAIL"


def _short(text: str | None, limit: int = 60) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"
