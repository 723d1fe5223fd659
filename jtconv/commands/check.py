"""``jtconv check``: prove on this machine that jtconv computes what PyTorch computes.

Runs the configurations of :func:`jtconv.testing.check_configs` for every
algorithm checked (``--algorithm``: names in :data:`jtconv.ALGORITHMS`;
``--plan``: ``auto``, the device's default plan, ``measure``, the measured
plan, or a plan text; by default every algorithm and ``auto``), every JAX
device, every dtype and every torch device (CPU, and CUDA when available),
and compares forward values and gradients (of ``Σ y · cotangent`` w.r.t. input, weight and bias)
with :func:`jtconv.testing.check_config`. Configurations torch rejects must
make jtconv raise ``ValueError``. A comparison outside its tolerance goes to
the float64 referee (:class:`jtconv.testing.Referee`; ``--no-referee`` turns
it off): it passes when torch's rounding, not jtconv's, is off.

Tolerances are :func:`jtconv.testing.relative_tolerance` of the dtype (errors
are measured relative to ``max|torch result|``); TF32 is disabled on both
sides (torch ``allow_tf32 = False``, JAX precision ``HIGHEST``), so the same
tolerances hold on GPUs.

A plan text is checked on the configurations whose layer it supports; the
others are listed as not applicable. It prints how the checks multiply out,
a progress bar over all of them, one table row per algorithm and dtype (every check with ``--verbose``; the
``--json`` report always has every check) and every failure in full.

Exit status: 0 when everything passes, 1 when anything fails, 2 for bad
arguments. torch and rich are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from jtconv.commands import missing_module_hint

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
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a short sweep ({QUICK_DURATION}); default: the thorough sweep, about ten times as many checks",
    )
    parser.add_argument(
        "--configs",
        type=_positive,
        default=None,
        metavar="N",
        help="only the first N configurations of the sweep (the hand-picked ones come first); default: all",
    )
    parser.add_argument("--json", metavar="FILE", default=None, help="write the full report as JSON to FILE")
    parser.add_argument(
        "--device",
        type=_name_list,
        default=None,
        metavar="NAME[,NAME]",
        help="JAX devices to check: a platform (cpu, gpu, tpu) or one device (e.g. cpu:0, cuda:1); default: all",
    )
    parser.add_argument(
        "--torch-device",
        type=_name_list,
        default=None,
        metavar="NAME[,NAME]",
        help="torch devices used as the reference: cpu, cuda; default: cpu, and cuda when available",
    )
    parser.add_argument(
        "--dtype",
        type=_name_list,
        default=None,
        metavar="NAME[,NAME]",
        help=f"dtypes among {', '.join(KNOWN_DTYPES)}; default: {', '.join(DEFAULT_DTYPES)}",
    )
    parser.add_argument(
        "--algorithm",
        type=_name_list,
        default=None,
        metavar="NAME[,NAME]",
        help="lowerings to check (names in jtconv.ALGORITHMS); default: all, and --plan auto",
    )
    parser.add_argument(
        "--plan",
        action="append",
        default=None,
        metavar="auto|measure|PLAN",
        help="a plan to check (repeatable): auto (the plan this device runs by default), measure (the plan "
        "measured planning picks; each layer is measured once) or a plan text as jtconv tune prints it "
        '("forward=xla  dx=xla  dw=xla-wgrad  waits=no  stores=no"), checked on the layers it supports',
    )
    parser.add_argument("--no-grads", action="store_true", help="compare forward values only")
    parser.add_argument(
        "--no-referee",
        action="store_true",
        help="fail every comparison outside its tolerance; default: rerun it in float64, and pass it when "
        "torch's rounding, not jtconv's, is off",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random part of the sweep (default 0)")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print one table row per check; default: one row per algorithm and dtype, plus every failure "
        "(the JSON report always has every check)",
    )


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one ``jtconv check`` run compares."""

    configs: list
    rejected: list[bool]
    jax_devices: list
    torch_devices: list[str]
    dtypes: list[str]
    algorithms: list[str]
    grads: bool
    referee: bool = True
    not_applicable: dict[tuple[int, str], str] = dataclasses.field(default_factory=dict)
    """Why a plan text does not support a valid configuration, by (config index, algorithm)."""

    @property
    def comparisons(self) -> int:
        """One comparison with torch per (valid config, JAX device, algorithm, torch device, dtype),
        but none where the algorithm is not applicable."""
        pairs = self.rejected.count(False) * len(self.algorithms) - len(self.not_applicable)
        return pairs * len(self.jax_devices) * len(self.torch_devices) * len(self.dtypes)

    @property
    def rejection_checks(self) -> int:
        """One check per (invalid config, JAX device, algorithm): validation
        depends on neither the dtype nor the torch device."""
        return self.rejected.count(True) * len(self.jax_devices) * len(self.algorithms)

    @property
    def size(self) -> int:
        """Number of checks, the progress bar's total."""
        return self.comparisons + self.rejection_checks

    def describe(self, mode: str) -> str:
        """Two lines: the number of checks and how it multiplies out."""
        valid, invalid = self.rejected.count(False), self.rejected.count(True)
        where = f"{_count(len(self.jax_devices), 'JAX device')} × {_count(len(self.algorithms), 'algorithm')}"
        skipped = len(self.not_applicable)
        return (
            f"jtconv check ({mode}): {self.size} checks = {self.comparisons} comparisons with torch"
            f" + {self.rejection_checks} rejection checks\n"
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
        plan = _make_plan(args)
    except ValueError as error:
        print(f"jtconv check: error: {error}", file=sys.stderr)
        return 2
    console = _Console()
    console.line(plan.describe("quick" if args.quick else "thorough"))
    start = time.perf_counter()
    report = _run_plan(plan, console.progress(plan.size, "checking against torch"))
    report["summary"]["seconds"] = round(time.perf_counter() - start, 2)
    report.update(_environment(args, plan))
    if args.verbose:
        console.results_table(report)
    else:
        console.summary_table(report)
    console.failures(report)
    console.summary(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
        console.line(f"report written to {args.json}")
    summary = report["summary"]
    return 0 if summary["failed"] == 0 and summary["rejections_failed"] == 0 else 1


def _make_plan(args: argparse.Namespace) -> Plan:
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
    texts = [plan for plan in plans if "=" in plan]
    not_applicable = {
        (i, text): why
        for i, config in enumerate(configs)
        if not rejected[i]
        for text in texts
        if (why := _unsupported(config, text)) is not None
    }
    return Plan(
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
    from jtconv.lowering.plan import Plan as MethodPlan

    if text in ("auto", "measure"):
        return
    try:
        parsed = MethodPlan.parse(text)
        for role in ROLES:
            method(getattr(parsed, role), role)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"--plan must be auto, measure or a plan text as jtconv tune prints it "
            f"('forward=…  dx=…  dw=…  waits=…  stores=…'); {text!r}: {error}"
        ) from None


def _unsupported(config, text: str) -> str | None:
    """Why the plan ``text`` cannot run ``config``'s layer, or ``None`` when it can."""
    import jtconv

    try:
        jtconv.plan_for(config.input_shape, config.weight_shape, **config.jtconv_kwargs(), algorithm=text)
    except ValueError as error:
        return str(error).splitlines()[0]
    return None


def _device_name(device) -> str:
    return f"{device.platform}:{device.id}"


def _device_matches(device, name: str) -> bool:
    name = name.lower()
    kind = getattr(device, "device_kind", "").lower()
    return name in (device.platform, _device_name(device), str(device).lower(), kind)


def _run_plan(plan: Plan, advance: Callable[[int], None]) -> dict[str, Any]:
    """Run every check of ``plan``; returns the report (``results``,
    ``rejections``, ``summary``) and calls ``advance(n)`` as checks finish."""
    import jax

    from jtconv.testing import check_config

    results: list[dict[str, Any]] = []
    rejections: list[dict[str, Any]] = []
    for index, (config, rejected) in enumerate(zip(plan.configs, plan.rejected)):
        for device in plan.jax_devices:
            for algorithm in plan.algorithms:
                if (index, algorithm) in plan.not_applicable:
                    continue
                if rejected:
                    outcome = check_config(config, algorithm=algorithm, jax_device=device)
                    rejections.append(_rejection_row(outcome, device, algorithm))
                    advance(1)
                    continue
                for torch_device in plan.torch_devices:
                    for dtype in plan.dtypes:
                        with jax.enable_x64(dtype == "float64"):
                            outcome = check_config(
                                config,
                                algorithm=algorithm,
                                dtype=dtype,
                                grads=plan.grads,
                                jax_device=device,
                                torch_device=torch_device,
                                referee=plan.referee,
                            )
                        row = _result_row(outcome, device, torch_device, dtype, algorithm, plan.grads)
                        row["plan"] = _plan_that_ran(config, algorithm, dtype, device.platform)
                        results.append(row)
                        advance(1)
    failed = sum(not r["passed"] for r in results)
    refereed = sum(r["passed"] and bool(r["referee"]) for r in results)
    rejections_failed = sum(not r["passed"] for r in rejections)
    not_applicable = [
        {"config": plan.configs[i].to_json(), "label": plan.configs[i].label(), "algorithm": text, "reason": why}
        for (i, text), why in plan.not_applicable.items()
    ]
    return {
        "results": results,
        "rejections": rejections,
        "not_applicable": not_applicable,
        "summary": {
            "results": len(results),
            "passed": len(results) - failed,
            "failed": failed,
            "refereed": refereed,
            "rejections": len(rejections),
            "rejections_passed": len(rejections) - rejections_failed,
            "rejections_failed": rejections_failed,
            "not_applicable": len(not_applicable),
            "configs": len(plan.configs),
        },
    }


def _plan_that_ran(config, algorithm: str, dtype: str, platform: str) -> str | None:
    """The plan ``algorithm`` runs for ``config`` in ``dtype`` on ``platform``
    (:func:`jtconv.plan_for` in the planning mode the check used), as text."""
    import jax

    import jtconv
    from jtconv.testing import planned

    name, mode = planned(algorithm)
    try:
        with jtconv.planning(mode), jax.enable_x64(dtype == "float64"):
            plan = jtconv.plan_for(
                config.input_shape,
                config.weight_shape,
                **config.jtconv_kwargs(),
                dtype=dtype,
                backend=platform,
                precision=jax.lax.Precision.HIGHEST,
                algorithm=name,
            )
    except ValueError:
        return None
    return str(plan)


def _result_row(outcome, device, torch_device: str, dtype: str, algorithm: str, grads: bool) -> dict[str, Any]:
    from jtconv.testing import relative_tolerance

    config = outcome.config
    row: dict[str, Any] = {
        "config": config.to_json(),
        "label": config.label(),
        "platform": device.platform,
        "jax_device": _device_name(device),
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
    }
    comparison = outcome.comparison
    if comparison is None:
        return row
    output = comparison.leaf("output[0]")
    if not output.shape_matches:
        row["error"] = f"shape mismatch: jtconv {output.jax_shape} vs torch {output.torch_shape}"
        return row
    row["max_abs_err"] = output.max_abs_err
    row["max_rel_err"] = _finite(output.relative_error)
    for j, name in enumerate(GRADIENT_NAMES):
        leaf = next((leaf for leaf in comparison.leaves if leaf.name == f"grad[{j}]"), None)
        if leaf is not None:
            row["gradients"][name] = {
                "max_abs_err": _finite(leaf.max_abs_err),
                "max_rel_err": _finite(leaf.relative_error),
                "tolerance": leaf.rtol,
                "passed": leaf.passed,
            }
    for leaf in comparison.leaves:
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


def _rejection_row(outcome, device, algorithm: str) -> dict[str, Any]:
    return {
        "config": outcome.config.to_json(),
        "label": outcome.config.label(),
        "platform": device.platform,
        "jax_device": _device_name(device),
        "algorithm": algorithm,
        "torch_error": outcome.torch_error,
        "jtconv_error": outcome.jtconv_error,
        "passed": outcome.passed,
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _environment(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    import jax
    import torch

    import jtconv
    from jtconv.testing import REFEREE_FACTOR, relative_tolerance

    return {
        "mode": "quick" if args.quick else "thorough",
        "seed": args.seed,
        "versions": {
            "jtconv": jtconv.__version__,
            "jax": jax.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "jax_devices": [_device_name(d) for d in plan.jax_devices],
        "torch_devices": plan.torch_devices,
        "dtypes": plan.dtypes,
        "algorithms": plan.algorithms,
        "tolerances": {
            dtype: {
                "rule": _TOLERANCE_RULES[dtype],
                "example_reduction_length_64": relative_tolerance(dtype, 64),
            }
            for dtype in plan.dtypes
        },
        "referee": {"enabled": plan.referee, "factor": REFEREE_FACTOR},
        "tf32": "disabled on both sides: torch allow_tf32 = False (matmul and cuDNN), JAX precision HIGHEST",
    }


_TOLERANCE_RULES = {
    "float64": "max|jax - torch| <= 1e-12 * max|torch|",
    "float32": "max|jax - torch| <= 1e-5 * max|torch|",
    "bfloat16": "max|jax - torch| <= eps * (2 + sqrt(R)) * max|torch|, eps = 2^-7, R = terms summed per element",
    "float16": "max|jax - torch| <= eps * (2 + sqrt(R)) * max|torch|, eps = 2^-10, R = terms summed per element",
}


# ---------------------------------------------------------------------------
# Output: rich when installed, plain text otherwise
# ---------------------------------------------------------------------------

_COLUMNS = (
    "configuration",
    "device",
    "torch",
    "dtype",
    "algorithm",
    "max abs err",
    "rel err",
    "tol",
    "grad rel/tol",
    "result",
)


def _table_cells(row: dict[str, Any]) -> list[str]:
    def number(value):
        return "-" if value is None else f"{value:.2e}"

    gradient_ratio = [
        g["max_rel_err"] / g["tolerance"] for g in row["gradients"].values() if g["max_rel_err"] is not None
    ]
    return [
        row["label"],
        row["jax_device"],
        row["torch_device"],
        row["dtype"],
        row["algorithm"],
        number(row["max_abs_err"]),
        number(row["max_rel_err"]),
        number(row["tolerance"]),
        f"{max(gradient_ratio):.3f}" if gradient_ratio else "-",
        "pass" if row["passed"] else "FAIL",
    ]


_SUMMARY_COLUMNS = ("device", "torch", "algorithm", "dtype", "passed", "worst err/tol", "worst grad err/tol", "result")


def _summary_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """Comparisons grouped by (JAX device, torch device, algorithm, dtype), in run order."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in results:
        groups.setdefault((row["jax_device"], row["torch_device"], row["algorithm"], row["dtype"]), []).append(row)
    cells = []
    for key, rows in groups.items():
        forward = [r["max_rel_err"] / r["tolerance"] for r in rows if r["max_rel_err"] is not None]
        gradients = [
            g["max_rel_err"] / g["tolerance"]
            for r in rows
            for g in r["gradients"].values()
            if g["max_rel_err"] is not None
        ]
        passed = sum(r["passed"] for r in rows)
        cells.append(
            [
                *key,
                f"{passed}/{len(rows)}",
                f"{max(forward):.3f}" if forward else "-",
                f"{max(gradients):.3f}" if gradients else "-",
                "pass" if passed == len(rows) else "FAIL",
            ]
        )
    return cells


def _rejection_summary_rows(rejections: list[dict[str, Any]]) -> list[list[str]]:
    groups: dict[tuple[str, str], list[bool]] = {}
    for row in rejections:
        groups.setdefault((row["jax_device"], row["algorithm"]), []).append(row["passed"])
    return [[*key, f"{sum(passed)}/{len(passed)}", "pass" if all(passed) else "FAIL"] for key, passed in groups.items()]


def _short(text: str | None, limit: int = 60) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Console:
    """Progress bar, tables and lines, through rich when it is installed."""

    def __init__(self) -> None:
        try:
            import rich.console
        except ImportError:
            self._rich = None
        else:
            self._rich = rich.console.Console()
            if not self._rich.is_terminal:
                self._rich = rich.console.Console(width=160)

    def line(self, text: str) -> None:
        if self._rich is not None:
            self._rich.print(text, highlight=False, markup=False, soft_wrap=True)
        else:
            print(text)

    def progress(self, total: int, description: str) -> Callable[[int], None]:
        if self._rich is None:
            return _PlainProgress(total, description)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=self._rich
        )
        task = progress.add_task(description, total=total)
        progress.start()

        def advance(n: int) -> None:
            progress.advance(task, n)
            if progress.tasks[task].completed >= total:
                progress.stop()

        if total == 0:
            progress.stop()
        return advance

    def results_table(self, report: dict[str, Any], failures_only: bool = False) -> None:
        """One row per check (``failures_only``: per failed check)."""
        rows = [r for r in report["results"] if not (failures_only and r["passed"])]
        rejections = [r for r in report["rejections"] if not (failures_only and r["passed"])]
        prefix = "failed " if failures_only else ""
        if rows:
            self._table(f"{prefix}comparisons with torch", _COLUMNS, [_table_cells(r) for r in rows])
        if rejections:
            self._table(
                f"{prefix}invalid arguments (jtconv must raise ValueError)",
                ("configuration", "device", "algorithm", "torch says", "jtconv says", "result"),
                [
                    [
                        r["label"],
                        r["jax_device"],
                        r["algorithm"],
                        _short(r["torch_error"]),
                        _short(r["jtconv_error"]),
                        "pass" if r["passed"] else "FAIL",
                    ]
                    for r in rejections
                ],
            )

    def summary_table(self, report: dict[str, Any]) -> None:
        """One row per (JAX device, torch device, algorithm, dtype) and one per
        (JAX device, algorithm) for the rejections, the configurations a plan
        does not apply to, then the failed checks."""
        self._table("comparisons with torch", _SUMMARY_COLUMNS, _summary_rows(report["results"]))
        if report["rejections"]:
            self._table(
                "invalid arguments",
                ("device", "algorithm", "raised ValueError like torch", "result"),
                _rejection_summary_rows(report["rejections"]),
            )
        if report["not_applicable"]:
            self._table(
                "not applicable (the plan does not support the layer)",
                ("algorithm", "configuration", "why"),
                [[r["algorithm"], r["label"], _short(r["reason"])] for r in report["not_applicable"]],
            )
        if any(not r["passed"] for r in report["results"] + report["rejections"]):
            self.results_table(report, failures_only=True)

    def failures(self, report: dict[str, Any]) -> None:
        """The full error text of every failed comparison."""
        for row in report["results"]:
            if not row["passed"] and row["error"]:
                where = f"{row['jax_device']} {row['torch_device']} {row['dtype']} {row['algorithm']}"
                self.line(f"FAIL {row['label']} [{where}]:")
                self.line("  " + row["error"].replace("\n", "\n  "))

    def summary(self, report: dict[str, Any]) -> None:
        s = report["summary"]
        ratios = [r["max_rel_err"] / r["tolerance"] for r in report["results"] if r["max_rel_err"] is not None]
        worst = max(ratios, default=0.0)
        status = "OK" if s["failed"] == 0 and s["rejections_failed"] == 0 else "FAILED"
        refereed = f" ({s['refereed']} by the float64 referee: torch's rounding is off)" if s["refereed"] else ""
        skipped = f", {s['not_applicable']} (configuration, plan) pairs not applicable" if s["not_applicable"] else ""
        self.line(
            f"{status}: {s['passed']}/{s['results']} comparisons passed{refereed}, "
            f"{s['rejections_passed']}/{s['rejections']} rejection checks passed (invalid arguments raise like torch); "
            f"{s['configs']} configurations{skipped}, worst forward error {worst:.3f} of its tolerance, "
            f"{s['seconds']:.1f} s"
        )

    def _table(self, title: str, columns: Sequence[str], rows: list[list[str]]) -> None:
        if self._rich is not None:
            from rich.table import Table

            table = Table(title=title, title_justify="left")
            for column in columns:
                table.add_column(column, overflow="fold")
            for cells in rows:
                style = "red" if cells[-1] == "FAIL" else None
                table.add_row(*cells, style=style)
            self._rich.print(table)
            return
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        print(title)
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
        for cells in rows:
            print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))


class _PlainProgress:
    """Progress as a line every 10% when rich is not installed."""

    def __init__(self, total: int, description: str) -> None:
        self.total, self.done, self.description, self.reported = total, 0, description, -1

    def __call__(self, n: int) -> None:
        self.done += n
        tenth = 10 * self.done // max(self.total, 1)
        if tenth != self.reported:
            self.reported = tenth
            print(f"{self.description}: {self.done}/{self.total}", file=sys.stderr)
