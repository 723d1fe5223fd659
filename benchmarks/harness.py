"""Measuring helpers for the benchmark: interleaved timing, compile time, peak
memory, useful FLOPs, the machine's matmul speed and a description of the machine.

Every timed callable takes no arguments, runs the work once and returns only
after the result exists (``jax.block_until_ready``, ``torch.cuda.synchronize``).
torch is imported lazily, only by the helpers that need it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

Call = Callable[[], Any]


# --- FLOPs and statistics ------------------------------------------------------


def useful_flops(x_shape: Sequence[int], w_shape: Sequence[int]) -> int:
    """Useful FLOPs of one transposed-convolution forward call.

    ``2 · (input elements) · (Cout / G) · (kernel taps)`` for input
    ``(N, Cin, *S)`` and weight ``(Cin, Cout / G, *K)``: every input value
    meets every tap of its group's ``Cout / G`` filters once (one multiply, one
    add). Multiplications by inserted zeros and the bias add do not count. The
    backward pass (input and weight gradients) costs twice this again, so
    forward + backward counts ``3 ·`` this.
    """
    return 2 * math.prod(x_shape) * w_shape[1] * math.prod(w_shape[2:])


def geometric_mean(values: Iterable[float]) -> float:
    """``exp(mean(log v))``; ``nan`` for no values."""
    logs = [math.log(v) for v in values]
    return math.exp(sum(logs) / len(logs)) if logs else math.nan


def scaled_max_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max |actual − expected| / max |expected|`` (``inf`` when shapes differ).

    The error relative to the scale of the expected tensor: the quantity the
    project's tolerances bound (float32: ``1e-5``).
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return math.inf
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    error = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    if not math.isfinite(error):
        return math.inf
    return error / scale if scale > 0 else error


# --- timing --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call of one candidate.

    Attributes:
      samples_s: one entry per repetition, each the mean over
        ``calls_per_sample`` back-to-back calls.
      calls_per_sample: calls per sample, chosen so a sample lasts at least
        the requested minimum (1 for calls of a few milliseconds or more).
    """

    samples_s: tuple[float, ...]
    calls_per_sample: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def spread(self) -> float:
        """Interquartile range over the median: the run's relative noise
        (``nan`` from fewer than 2 samples)."""
        if len(self.samples_s) < 2:
            return math.nan
        q1, _, q3 = statistics.quantiles(self.samples_s, n=4, method="inclusive")
        return (q3 - q1) / self.median_s


def calls_per_sample(call_s: float, min_sample_s: float, max_calls: int = 10_000) -> int:
    """How many back-to-back calls of ``call_s`` seconds make a sample of at
    least ``min_sample_s`` (1 for calls of a few milliseconds or more)."""
    if min_sample_s <= 0:
        return 1
    return max(1, min(max_calls, math.ceil(min_sample_s / max(call_s, 1e-9))))


def within_budget(samples_s: Sequence[float], calls_per_sample: int, budget_s: float | None) -> bool:
    """Whether a candidate takes another sample: always the first; then only
    while the time its samples took, plus one more like the last, stays within
    ``budget_s`` (``None``: no limit)."""
    if budget_s is None or not samples_s:
        return True
    spent = sum(samples_s) * calls_per_sample
    return spent + samples_s[-1] * calls_per_sample <= budget_s


def round_robin_order(names: Sequence[str], repetition: int) -> list[str]:
    """Candidates in the order repetition ``r`` runs them: the list rotated by ``r``.

    Every repetition runs every candidate once, so drift (thermal, other
    processes) hits all of them alike, and the rotation gives no candidate a
    fixed position after a particular other one.
    """
    shift = repetition % len(names) if names else 0
    return list(names[shift:]) + list(names[:shift])


def time_interleaved(
    calls: Mapping[str, Call],
    *,
    repeats: int,
    warmup: int = 1,
    min_sample_s: float = 0.0,
    budget_s: float | None = None,
    known_call_s: Mapping[str, float] | None = None,
) -> dict[str, Timing]:
    """Time candidates A/B-interleaved and return each one's samples.

    Each candidate is first called ``warmup`` times; the last warm-up call (or,
    with ``warmup=0``, ``known_call_s[name]``, e.g. the time of a verification
    call just made, else one extra call) sets ``calls_per_sample``. Then
    ``repeats`` rounds follow, each sampling every candidate once in
    :func:`round_robin_order`. A candidate so slow that its samples would
    exceed ``budget_s`` drops out of the later rounds (:func:`within_budget`),
    judged from its own samples. The garbage collector is paused while
    timing, as ``timeit`` does.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(calls)
    call_s: dict[str, float] = {}
    for name in names:
        for _ in range(warmup):
            call_s[name] = _seconds(calls[name])
        if name not in call_s:
            known = (known_call_s or {}).get(name)
            call_s[name] = known if known is not None else _seconds(calls[name])
    numbers = {name: calls_per_sample(call_s[name], min_sample_s) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc.disable()
    try:
        for repetition in range(repeats):
            for name in round_robin_order(names, repetition):
                if not within_budget(samples[name], numbers[name], budget_s):
                    continue
                call, number = calls[name], numbers[name]
                time.sleep(SETTLE_S)
                start = time.perf_counter()
                for _ in range(number):
                    call()
                samples[name].append((time.perf_counter() - start) / number)
    finally:
        gc.enable()
    return {name: Timing(tuple(samples[name]), numbers[name]) for name in names}


# Pause before each sample so the previous candidate's worker threads (torch's
# OpenMP team, XLA's thread pool) stop spinning: without it, whichever candidate
# ran right after torch lost 20-30% (measured: the same jtconv program timed
# 1.56 ms after torch and 1.22 ms after another JAX call; with the pause,
# 1.24 and 1.21 ms).
SETTLE_S = 0.005


def _seconds(call: Call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


# --- JAX: compile time and memory ----------------------------------------------


def jax_compile(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """First-call compile of ``jax.jit(fn)`` for ``args``: ``(compiled, seconds)``.

    JAX's in-memory caches are cleared first, so the time is what a fresh
    process pays: tracing, lowering and XLA compilation (``lower`` + ``compile``
    wall time). ``compiled(*args)`` runs the executable.
    """
    jax.clear_caches()
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def jax_peak_bytes(compiled: Any) -> int | None:
    """XLA's static estimate of the memory one call needs beyond its
    arguments: temporary buffers plus outputs (``memory_analysis()``), or
    ``None`` where the backend does not report it."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)


# --- torch: device, synchronisation, memory ------------------------------------


def torch_synchronizer(device: Any) -> Call:
    """A function that waits for all queued work on ``device`` (a no-op on CPU)."""
    import torch

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def torch_peak_bytes(call: Call, device: Any) -> int | None:
    """Peak bytes allocated during one ``call()`` beyond what was allocated
    before it (outputs included), or ``None`` where it cannot be measured.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the running sum of the
    allocation and free events that the profiler records with
    ``profile_memory=True``.
    """
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = call()
        torch.cuda.synchronize(device)
        del result
        return int(torch.cuda.max_memory_allocated(device) - before)
    try:
        # The autograd profiler records the same events as torch.profiler
        # without importing torch's compiler stack (seconds at start-up).
        with _quiet_stderr(), torch.autograd.profiler.profile(use_cpu=True, profile_memory=True) as prof:
            result = call()
        del result
        events = prof.kineto_results.events()
        deltas = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    except Exception:  # noqa: BLE001 - private profiler API; report n/a if it changes
        return None
    if not deltas:
        return None
    live = peak = 0
    for _, nbytes in deltas:
        live += nbytes
        peak = max(peak, live)
    return int(peak)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --- the machine ---------------------------------------------------------------


def usable_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or ``None`` where unknown.
    Above the core count, other processes share the cores being measured."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_gflops(
    n: int, torch_device: Any, *, repeats: int, warmup: int = 1, min_sample_s: float = 0.0
) -> dict[str, float]:
    """fp32 ``n × n @ n × n`` matmul speed, ``2·n³ / seconds / 1e9``, of
    ``jnp`` (on JAX's default device) and ``torch`` (on ``torch_device``),
    timed interleaved: the machine's practical peak for this run."""
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    jax_matmul = jax.jit(jnp.matmul).lower(ja, jb).compile()
    ta, tb = torch.from_numpy(a).to(torch_device), torch.from_numpy(b).to(torch_device)
    sync = torch_synchronizer(torch_device)

    def torch_matmul():
        out = torch.mm(ta, tb)
        sync()
        return out

    timings = time_interleaved(
        {"jax": lambda: jax.block_until_ready(jax_matmul(ja, jb)), "torch": torch_matmul},
        repeats=repeats,
        warmup=warmup,
        min_sample_s=min_sample_s,
    )
    return {name: 2 * n**3 / t.median_s / 1e9 for name, t in timings.items()}


def malloc_setting(retained: bool) -> str:
    """How this process's malloc treats freed memory, for the report header."""
    env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"}
    text = "freed memory retained (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)" if retained else "default"
    if env:
        text += "; environment " + " ".join(f"{k}={v}" for k, v in sorted(env.items()))
    return text


def machine_info(torch_device: Any) -> dict[str, Any]:
    """CPU, cores, library versions, JAX backend and devices, torch device."""
    import flax
    import jaxlib
    import torch

    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "load_average_start": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
        "torch_device": str(torch_device),
        "torch_threads": torch.get_num_threads(),
    }
    if torch_device.type == "cuda":
        info["torch_device_name"] = torch.cuda.get_device_name(torch_device)
    return info
