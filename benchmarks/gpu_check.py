"""The GPU check: jtconv on one GPU, offline, in at most 8 minutes.

    PYTHONPATH=$PWD python benchmarks/gpu_check.py [--out DIR]   # on a machine with a GPU
    PYTHONPATH=$PWD python benchmarks/gpu_check.py --dry-run     # every step, small, on the CPU

Nothing is installed and nothing is downloaded: the check uses the jax, torch
and flax it finds and records their versions, the device and the checkout's
commit. Its steps, each a subprocess with a time limit of its own:

1. ``tests``: the plan, gradient and transform tests (``pytest``) on the GPU;
2. ``check-float32`` and ``check-bfloat16``: ``jtconv check --quick --plan auto
   --plan measure`` against torch on CUDA (float32 with TF32 off on both sides);
3. ``bench-main`` and ``bench-models``: the benchmark suites (``run.py
   --quick``) for ``auto``, ``measure`` and the status quo
   (``lax.conv_transpose``, ``flax.linen.ConvTranspose``) against torch on CUDA.

Steps 1–2 only check values, so they run side by side (JAX allocating GPU
memory as it goes); the benchmarks then run one at a time, alone. Every step
sees ``JAX_DEFAULT_MATMUL_PRECISION=highest`` (``jtconv check`` and ``run.py``
also turn torch's TF32 off) and a fresh wisdom cache in ``DIR/cache``, so
measured planning measures. A step gets its own limit or what is left of
:data:`BUDGET_S`, whichever is less; past it, it is stopped and recorded as
``timeout``.

``DIR`` (default ``benchmarks/gpu_results/``) receives ``RESULTS_gpu.md`` and
``gpu_check.json`` (versions, device, each step's status, time and summary,
the check summaries, the benchmark tables), each step's log and the reports
of ``jtconv check`` and ``run.py``. Exit status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 480.0
TEST_FILES = ("tests/test_plans.py", "tests/test_gradients.py", "tests/test_transforms.py")
DRY_TESTS = "printable or lhs_dilated or named_gradients or bias_gradient_is or jit_matches"
DRY_SHAPES = {"main": "unet3d", "models": "dcgan-z"}
ENVIRONMENT = dict(os.environ)  # the steps' environment, before this process changes its own


@dataclasses.dataclass
class Step:
    """One command of the check, and what became of it."""

    name: str
    title: str
    argv: list[str]
    limit_s: float
    concurrent: bool = False
    report: Path | None = None  # the JSON file the command writes
    markdown: Path | None = None  # the markdown file it writes
    status: str = "not run"  # "passed" | "failed" | "timeout" | "not run"
    seconds: float | None = None
    returncode: int | None = None
    summary: str = ""


def make_steps(out: Path, dry_run: bool, torch_device: str) -> list[Step]:
    """The steps; ``dry_run``: each one small (a few tests, two configurations, one shape per suite)."""
    python = sys.executable
    tests = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TEST_FILES]
    check = [python, "-m", "jtconv", "check", "--quick", "--plan", "auto", "--plan", "measure"]
    check += ["--torch-device", torch_device]
    bench = [python, "benchmarks/run.py", "--quick", "--algorithms", "auto", "--planning", "measure", "--status-quo"]
    if dry_run:
        tests += ["-k", DRY_TESTS]
        check += ["--configs", "2"]
        bench += ["--matmul-size", "256"]
    steps = [Step("tests", "plan, gradient and transform tests", tests, 240, concurrent=True)]
    for dtype in ("float32", "bfloat16"):
        report = out / f"check_{dtype}.json"
        steps.append(
            Step(
                f"check-{dtype}",
                f"jtconv check --plan auto --plan measure, {dtype}",
                [*check, "--dtype", dtype, "--json", str(report)],
                240,
                concurrent=True,
                report=report,
            )
        )
    for suite, limit in (("main", 150), ("models", 180)):
        shapes = ["--shapes", DRY_SHAPES[suite]] if dry_run else []
        report, table = out / f"bench_{suite}.json", out / f"bench_{suite}.md"
        steps.append(
            Step(
                f"bench-{suite}",
                f"benchmark suite '{suite}': auto, measure, status quo vs torch",
                [*bench, "--suite", suite, *shapes, "--json", str(report), "--markdown", str(table)],
                limit,
                report=report,
                markdown=table,
            )
        )
    return steps


def step_environment(out: Path, dry_run: bool, concurrent: bool) -> dict[str, str]:
    env = dict(ENVIRONMENT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["JTCONV_CACHE_DIR"] = str(out / "cache")
    env["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
    env.pop("JTCONV_PLANNING", None)
    if dry_run:
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    if concurrent:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return env


def run_steps(steps: list[Step], out: Path, dry_run: bool, deadline: float) -> None:
    """Run the concurrent steps side by side, then the others one at a time;
    no step runs past its limit or past ``deadline`` (``time.monotonic``)."""
    side_by_side = [s for s in steps if s.concurrent]
    _run_together(side_by_side, out, dry_run, deadline)
    for step in steps:
        if not step.concurrent:
            _run_together([step], out, dry_run, deadline)


def _run_together(steps: list[Step], out: Path, dry_run: bool, deadline: float) -> None:
    running = []
    for step in steps:
        step.limit_s = round(min(step.limit_s, deadline - time.monotonic()), 1)
        if step.limit_s <= 0:
            step.summary = "no time left in the budget"
            continue
        print(f"== {step.name}: {' '.join(step.argv[1:])}", flush=True)
        log = open(out / f"{step.name}.log", "w", encoding="utf-8")  # noqa: SIM115 - closed when the step ends
        process = subprocess.Popen(
            step.argv,
            cwd=ROOT,
            env=step_environment(out, dry_run, step.concurrent),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout stops its children too
        )
        running.append((step, process, log, time.monotonic()))
    while running:
        time.sleep(0.2)
        for entry in list(running):
            step, process, log, started = entry
            elapsed = time.monotonic() - started
            if process.poll() is None and elapsed < step.limit_s:
                continue
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                step.status = "timeout"
            else:
                step.status = "passed" if process.returncode == 0 else "failed"
            step.returncode, step.seconds = process.returncode, round(elapsed, 1)
            log.close()
            step.summary = summarize_step(step, out)
            print(f"   {step.name}: {step.status} in {step.seconds:.0f} s  {step.summary}", flush=True)
            running.remove(entry)


def summarize_step(step: Step, out: Path) -> str:
    """The step's one-line result: pytest's last line, jtconv check's ``OK:``/``FAILED:``
    line, or each benchmark candidate's geometric-mean time ratio to torch."""
    if step.markdown is not None and step.report is not None and step.report.exists():
        return benchmark_summary(json.loads(step.report.read_text()))
    lines = (out / f"{step.name}.log").read_text(encoding="utf-8", errors="replace").splitlines()
    pattern = re.compile(r"\d+ (passed|failed|error)" if step.name == "tests" else r"^(OK|FAILED): ")
    found = [line.strip(" =") for line in lines if pattern.search(line)]
    return found[-1] if found else (lines[-1].strip() if lines else "")


def benchmark_summary(report: dict[str, Any]) -> str:
    """``×torch geomean forward / fwd+bwd: jtconv[auto] 0.81 / 0.93, …``, and the failed rows."""

    def ratio(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    parts = [
        f"{name} {ratio(entry['forward']['geomean'])} / {ratio(entry['fwd+bwd']['geomean'])}"
        for name, entry in report["summary"]["candidates"].items()
    ]
    failed = sum(row["status"] in ("WRONG", "error") for row in report["results"])
    failures = f"; {failed} rows WRONG or error" if failed else ""
    return "×torch geomean forward / fwd+bwd: " + ", ".join(parts) + failures


def versions() -> dict[str, Any]:
    """Python, jax, jaxlib, the JAX CUDA/ROCm plugins, torch (with its CUDA and cuDNN), flax, numpy."""
    found: dict[str, Any] = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "torch", "numpy"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    plugins = sorted(
        f"{dist.metadata['Name']} {dist.version}"
        for dist in importlib.metadata.distributions()
        if (dist.metadata["Name"] or "").lower().replace("_", "-").startswith(("jax-cuda", "jax-rocm"))
    )
    found["jax_plugins"] = plugins
    try:
        import torch
    except ImportError:
        return found
    found["torch_cuda"] = torch.version.cuda
    found["torch_cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return found


def devices() -> dict[str, Any]:
    """JAX's backend and devices, and the GPU torch sees."""
    import jax

    jax_devices = jax.devices()
    found: dict[str, Any] = {
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax_devices],
        "device_kind": jax_devices[0].device_kind,
    }
    try:
        import torch
    except ImportError:
        found["torch_gpu"] = None
        return found
    found["torch_gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return found


def commit() -> str | None:
    """The checkout's commit, ``+ local changes`` when its tree differs from it; ``None`` without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + (" + local changes" if status.stdout.strip() else "")


def check_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (algorithm, dtype) of a ``jtconv check`` report: comparisons and
    rejections passed, and the plans that ran."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for result in report["results"]:
        row = rows.setdefault(
            (result["algorithm"], result["dtype"]),
            {"algorithm": result["algorithm"], "dtype": result["dtype"], "passed": 0, "results": 0, "plans": {}},
        )
        row["results"] += 1
        row["passed"] += result["passed"]
        row["plans"][result["plan"]] = row["plans"].get(result["plan"], 0) + 1
    for row in rows.values():
        rejections = [r for r in report["rejections"] if r["algorithm"] == row["algorithm"]]
        row["rejections"] = f"{sum(r['passed'] for r in rejections)}/{len(rejections)}"
    return list(rows.values())


def collect(steps: list[Step]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The check reports' summaries (by step) and the benchmark reports (by step), where the step wrote one."""
    checks, benchmarks = {}, {}
    for step in steps:
        if step.report is None or not step.report.exists():
            continue
        report = json.loads(step.report.read_text())
        if step.name.startswith("check"):
            checks[step.name] = {"summary": report["summary"], "rows": check_rows(report)}
        else:
            benchmarks[step.name] = report
    return checks, benchmarks


def markdown(record: dict[str, Any], steps: list[Step]) -> str:
    v, d = record["versions"], record["device"]
    torch_text = f"torch {v['torch']} (CUDA {v.get('torch_cuda')}, cuDNN {v.get('torch_cudnn')})"
    plugins = ", ".join(v["jax_plugins"]) or "none"
    lines = [
        "# jtconv GPU check" + (" (dry run on the CPU)" if record["dry_run"] else ""),
        "",
        f"- {record['date_utc']}, commit {record['commit']}, {record['seconds']:.0f} s in all"
        f" (budget {BUDGET_S:.0f} s): **{'passed' if record['passed'] else 'FAILED'}**",
        f"- python {v['python']}, jax {v['jax']}, jaxlib {v['jaxlib']}, JAX plugins: {plugins},"
        f" {torch_text}, flax {v['flax']}, numpy {v['numpy']}",
        f"- JAX backend {d['jax_backend']}: {', '.join(d['jax_devices'])} ({d['device_kind']}); "
        f"torch GPU: {d['torch_gpu']}; torch device of the checks: {record['torch_device']}",
        "- float32 with TF32 off: JAX_DEFAULT_MATMUL_PRECISION=highest, torch allow_tf32 = False (matmul and cuDNN)",
        "",
        "## Steps",
        "",
        "| step | what | status | s | limit s | summary |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for step in steps:
        seconds = "—" if step.seconds is None else f"{step.seconds:.0f}"
        cells = [step.name, step.title, step.status, seconds, f"{step.limit_s:.0f}", step.summary.replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    for name, check in record["checks"].items():
        lines += ["", f"## {name}", "", "| algorithm | dtype | passed | rejections passed | plans that ran |"]
        lines.append("| --- | --- | --- | --- | --- |")
        for row in check["rows"]:
            plans = "; ".join(f"`{plan}` ×{n}" for plan, n in row["plans"].items())
            lines.append(
                f"| {row['algorithm']} | {row['dtype']} | {row['passed']}/{row['results']} | {row['rejections']} "
                f"| {plans} |"
            )
    for step in steps:
        if step.markdown and step.markdown.exists():
            table = step.markdown.read_text(encoding="utf-8")
            lines += ["", f"## {step.name}", "", re.sub(r"^(#+) ", r"#\1# ", table, flags=re.MULTILINE)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_results", help="the output folder")
    parser.add_argument("--dry-run", action="store_true", help="run every step, small, on the CPU")
    args = parser.parse_args(argv)
    start = time.monotonic()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "cache", ignore_errors=True)  # measured planning must measure, not read old wisdom
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # this process only looks at the devices
    if args.dry_run:
        os.environ.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    device = devices()
    if device["jax_backend"] == "cpu" and not args.dry_run:
        print("gpu_check: JAX sees no GPU; --dry-run runs the steps small on the CPU", file=sys.stderr)
        return 2
    record: dict[str, Any] = {
        "dry_run": args.dry_run,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "versions": versions(),
        "device": device,
        "torch_device": "cuda" if device["torch_gpu"] else "cpu",
    }
    for key in ("commit", "versions", "device", "torch_device"):
        print(f"{key}: {record[key]}", flush=True)
    steps = make_steps(out, args.dry_run, record["torch_device"])
    run_steps(steps, out, args.dry_run, start + BUDGET_S)
    record["checks"], record["benchmarks"] = collect(steps)
    record.update(
        seconds=round(time.monotonic() - start, 1),
        passed=all(step.status == "passed" for step in steps),
        steps=[
            {
                **dataclasses.asdict(step),
                "report": step.report and step.report.name,
                "markdown": step.markdown and step.markdown.name,
            }
            for step in steps
        ],
    )
    (out / "gpu_check.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    (out / "RESULTS_gpu.md").write_text(markdown(record, steps), encoding="utf-8")
    print(f"{'passed' if record['passed'] else 'FAILED'} in {record['seconds']:.0f} s; record in {out}/RESULTS_gpu.md")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
