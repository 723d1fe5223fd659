"""Measured planning: time every method that supports a layer, per role, and keep the fastest.

Like cuDNN's ``cudnnFind*`` (forward, backward-data and backward-filter
found separately) and FFTW's ``FFTW_MEASURE``, :func:`measured_plan` times,
for one layer signature (geometry, batch, dtype, precision, backend):

* every forward method (``y = f(x, w)``),
* every input-transpose method (``x̄`` from ``ȳ`` and ``w``),
* every weight-transpose method (``w̄`` from ``x`` and ``ȳ``),

each as its own small compiled program on random data of the layer's shapes
and dtype, on JAX's default device: one call to compile and warm up, then
the median of several calls. It picks the fastest method of each role; a
method within :data:`TIE_FRACTION` of the estimate's choice counts as a tie,
which the estimate's choice wins. A candidate whose compiled temporaries
exceed :data:`MEMORY_BUDGET_BYTES`, or whose compilation takes longer than
:data:`COMPILE_BUDGET_SECONDS`, is skipped.

This runs at trace time (when ``conv_transpose`` is called under ``jit``,
``grad``, ``vmap``, …): the shapes are static, and the timed programs run on
concrete arrays under :func:`jax.ensure_compile_time_eval`, so no tracer
leaks. A signature is measured once per process (under a lock, so two
threads tracing the same layer measure it once) and the result is kept as
wisdom (:mod:`jtconv.wisdom`) for later processes. A stored plan the layer
does not support is measured again.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jtconv import wisdom
from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.methods import ROLES, methods_for
from jtconv.lowering.plan import Plan
from jtconv.lowering.planner import describe_layer, estimate, scheduled_plan, validate

__all__ = ["Measurement", "layer_key", "measure", "measured_plan", "TIE_FRACTION"]

_log = logging.getLogger("jtconv")

TIE_FRACTION = 0.05
"""A method must be this much faster than the estimate's choice to replace it."""

MEMORY_BUDGET_BYTES = 2 * 2**30
"""Candidates whose compiled temporaries exceed this are not run."""

COMPILE_BUDGET_SECONDS = 20.0
"""Candidates that take longer than this to compile are not run."""

MIN_RUNS = 3
MAX_RUNS = 15
TARGET_SECONDS = 0.1
HOPELESS_FACTOR = 3.0
"""Each candidate runs at least :data:`MIN_RUNS` times and at most
:data:`MAX_RUNS`, stopping once its runs add up to :data:`TARGET_SECONDS`;
one whose warm-up call already took :data:`HOPELESS_FACTOR` times the best
median of its role keeps that call's time and is not run again."""

_lock = threading.RLock()
_plans: dict[str, Plan] = {}


def layer_key(
    geom: ConvTransposeGeometry, batch: int, dtype, backend: str, preferred_element_type=None, precision=None
) -> str:
    """The layer signature measured plans are stored under: compact JSON of
    everything about the layer that can change which plan is fastest."""
    fields = {
        "ndim": geom.ndim,
        "in": geom.in_channels,
        "out": geom.out_channels,
        "groups": geom.groups,
        "input": list(geom.input_size),
        "kernel": list(geom.kernel_size),
        "stride": list(geom.stride),
        "dilation": list(geom.dilation),
        "crop": [list(c) for c in geom.crop],
        "output": list(geom.output_size),
        "batch": batch,
        "dtype": jnp.dtype(dtype).name,
        "accumulate": None if preferred_element_type is None else jnp.dtype(preferred_element_type).name,
        "precision": None if precision is None else str(precision),
        "backend": backend,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


class Measurement:
    """What one measurement found: per role, each method's median time in
    seconds (``None`` where skipped, with the reason in ``skipped``), the
    chosen plan, the estimate's plan and how long measuring took."""

    def __init__(
        self,
        key: str,
        times: dict[str, dict[str, float | None]],
        skipped: dict[str, str],
        plan: Plan,
        estimate: Plan,
        seconds: float,
    ) -> None:
        self.key, self.times, self.skipped = key, times, skipped
        self.plan, self.estimate, self.seconds = plan, estimate, seconds

    def to_entry(self) -> dict:
        return {
            "plan": self.plan.to_dict(),
            "estimate": self.estimate.to_dict(),
            "times": self.times,
            "seconds": self.seconds,
        }


_listeners: list[Callable[[Measurement], None]] = []
"""Called with every new :class:`Measurement` (``jtconv tune`` listens)."""


def measured_plan(
    geom: ConvTransposeGeometry, batch: int, dtype, backend: str, preferred_element_type=None, precision=None
) -> Plan:
    """The measured plan for this layer signature: from this process's
    memory, else from wisdom (if the layer supports it), else measured now."""
    key = layer_key(geom, batch, dtype, backend, preferred_element_type, precision)
    with _lock:
        plan = _plans.get(key)
        if plan is not None:
            return plan
        plan = _stored_plan(key, geom)
        if plan is None:
            found = measure(geom, batch, dtype, backend, preferred_element_type, precision)
            plan = found.plan
            wisdom.record(key, found.to_entry())
        _plans[key] = plan
        return plan


def _stored_plan(key: str, geom: ConvTransposeGeometry) -> Plan | None:
    entry = wisdom.lookup(key)
    if entry is None:
        return None
    try:
        return validate(Plan.from_dict(entry["plan"]), geom)
    except (KeyError, TypeError, ValueError) as error:
        _log.warning("jtconv: ignoring the stored plan for %s (%s); measuring it again", describe_layer(geom), error)
        return None


def forget_measurements() -> None:
    """Forget this process's measured plans (wisdom on disk stays)."""
    with _lock:
        _plans.clear()


def measure(
    geom: ConvTransposeGeometry, batch: int, dtype, backend: str, preferred_element_type=None, precision=None
) -> Measurement:
    """Time every supporting method of each role for this layer (see the module docstring)."""
    start = time.perf_counter()
    key = layer_key(geom, batch, dtype, backend, preferred_element_type, precision)
    guess = estimate(geom, batch, dtype, backend, preferred_element_type)
    dtype = jnp.dtype(dtype)
    times: dict[str, dict[str, float | None]] = {}
    skipped: dict[str, str] = {}
    with jax.ensure_compile_time_eval():
        x, w, ct = _random_operands(geom, batch, dtype, preferred_element_type)
        for role in ROLES:
            times[role] = {}
            for name in methods_for(role, geom):
                plan = _isolated(guess, role, name, geom, batch, dtype, preferred_element_type, backend)
                program, args = _program(role, plan, geom, x, w, ct, precision, preferred_element_type)
                best = min((t for t in times[role].values() if t is not None), default=None)
                seconds, reason = _time(program, args, best)
                times[role][name] = seconds
                if reason:
                    skipped[f"{role}:{name}"] = reason
    chosen = {role: _fastest(times[role], getattr(guess, role)) for role in ROLES}
    plan = scheduled_plan(
        chosen["forward"],
        chosen["input_transpose"],
        chosen["weight_transpose"],
        geom,
        batch,
        dtype,
        preferred_element_type,
        backend,
    )
    found = Measurement(key, times, skipped, plan, guess, time.perf_counter() - start)
    _log.info(
        "jtconv: measured %s, batch %d, %s in %.2f s: %s (estimate: %s)",
        describe_layer(geom),
        batch,
        dtype.name,
        found.seconds,
        plan,
        guess,
    )
    for listener in list(_listeners):
        listener(found)
    return found


def _fastest(role_times: dict[str, float | None], preferred: str) -> str:
    timed = {name: t for name, t in role_times.items() if t is not None}
    if not timed:
        return preferred
    best = min(timed, key=timed.__getitem__)
    if preferred in timed and timed[preferred] <= timed[best] * (1 + TIE_FRACTION):
        return preferred
    return best


def _isolated(guess: Plan, role: str, name: str, geom, batch, dtype, preferred_element_type, backend) -> Plan:
    """A plan that runs ``name`` in ``role`` with nothing ordering it after another part."""
    parts = {r: getattr(guess, r) for r in ROLES}
    parts[role] = name
    plan = scheduled_plan(
        parts["forward"],
        parts["input_transpose"],
        parts["weight_transpose"],
        geom,
        batch,
        dtype,
        preferred_element_type,
        backend,
    )
    return plan.replace(waits=False, stores_output=False)


def _random_operands(geom: ConvTransposeGeometry, batch: int, dtype, preferred_element_type):
    rng = np.random.default_rng(0)
    out_dtype = dtype if preferred_element_type is None else jnp.dtype(preferred_element_type)
    shapes = (
        ((batch, geom.in_channels) + geom.input_size, dtype),
        ((geom.in_channels, geom.out_per_group) + geom.kernel_size, dtype),
        ((batch, geom.out_channels) + geom.output_size, out_dtype),
    )
    return tuple(jnp.asarray(rng.standard_normal(shape, dtype=np.float32)).astype(dt) for shape, dt in shapes)


def _program(role: str, plan: Plan, geom, x, w, ct, precision, preferred_element_type):
    """A jitted function computing only ``role`` of ``plan``, and its arguments."""
    from jtconv.lowering.primitive import conv_transpose_planned  # the primitive imports the planner

    def f(x, w):
        return conv_transpose_planned(
            x, w, geom, plan, precision=precision, preferred_element_type=preferred_element_type
        )

    if role == "forward":
        return jax.jit(f), (x, w)
    if role == "input_transpose":
        return jax.jit(lambda x, w, ct: jax.vjp(lambda x: f(x, w), x)[1](ct)[0]), (x, w, ct)
    return jax.jit(lambda x, w, ct: jax.vjp(lambda w: f(x, w), w)[1](ct)[0]), (x, w, ct)


def _time(program, args, best: float | None = None) -> tuple[float | None, str | None]:
    """Median seconds per call of ``program(*args)``, or ``None`` and why it was skipped
    (``best``: the best median of the role so far)."""
    start = time.perf_counter()
    compiled = program.lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    if compile_seconds > COMPILE_BUDGET_SECONDS:
        return None, f"compiling took {compile_seconds:.1f} s (budget {COMPILE_BUDGET_SECONDS:.0f} s)"
    memory = _temporary_bytes(compiled)
    if memory is not None and memory > MEMORY_BUDGET_BYTES:
        return None, f"needs {memory / 2**20:.0f} MiB of temporaries (budget {MEMORY_BUDGET_BYTES / 2**20:.0f} MiB)"
    begin = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    first = time.perf_counter() - begin
    if best is not None and first > HOPELESS_FACTOR * best:
        return first, None
    samples: list[float] = []
    while len(samples) < MIN_RUNS or (len(samples) < MAX_RUNS and sum(samples) < TARGET_SECONDS):
        begin = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        samples.append(time.perf_counter() - begin)
    return statistics.median(samples), None


def _temporary_bytes(compiled) -> int | None:
    try:
        analysis = compiled.memory_analysis()
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    return getattr(analysis, "temp_size_in_bytes", None)
