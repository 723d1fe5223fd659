"""Measured planning: time the methods that support a layer on a device, and keep the fastest plan.

For one layer signature (:func:`layer_key`), on a device of the platform being compiled for, like
cuDNN's ``cudnnFind*`` and FFTW's ``FFTW_MEASURE``:

1. every method of each role (forward, input transpose, weight transpose) is timed alone, as its own
   compiled program on random data (one warm-up call, then the median of several);
2. a forward faster than the estimate's must beat it again, the two timed interleaved;
3. whole forward + backward programs race, interleaved: the measured forward with the estimate's
   transposes, with the fastest transposes, and with a method among the fastest of both roles filling
   both (and the estimate's whole plan when the forward differs), since the two transposes share work
   and cores in one program;
4. the winner races itself with :attr:`~jtconv.lowering.plan.Plan.waits` flipped.

Ties within :data:`TIE_FRACTION` go to the estimate's choice (in 4, to the leader). Candidates over
:data:`MEMORY_BUDGET_BYTES` or :data:`COMPILE_BUDGET_SECONDS`, and those :func:`untimed` names, are not
run. A signature is measured once per process and device kind (under a lock) and kept as wisdom
(:mod:`jtconv.plans.wisdom`). The evidence behind each stage and constant is in the docs' Planning page.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.methods import ROLES, methods_for
from jtconv.lowering.plan import Plan
from jtconv.lowering.primitive import conv_transpose_planned
from jtconv.plans import wisdom
from jtconv.plans.estimate import describe_layer, estimate, scheduled_plan, validate

__all__ = ["Measurement", "layer_key", "measure", "measured_plan", "untimed", "TIE_FRACTION"]

_log = logging.getLogger("jtconv")

TIE_FRACTION = 0.10
"""A method must be this much faster than the estimate's choice to replace it."""

MEMORY_BUDGET_BYTES = 2 * 2**30
"""Candidates whose compiled temporaries exceed this are not run."""

COMPILE_BUDGET_SECONDS = 20.0
"""Candidates that take longer than this to compile are not run."""

MIN_RUNS = 3
MAX_RUNS = 15
TARGET_SECONDS = 0.05
HOPELESS_FACTOR = 2.0
SHORTLIST_FACTOR = 1.5
"""A candidate runs :data:`MIN_RUNS` to :data:`MAX_RUNS` times, until its runs add up to
:data:`TARGET_SECONDS`; against its role's best median so far, it stops after the warm-up at
:data:`HOPELESS_FACTOR` times as long, after one run when both took :data:`SHORTLIST_FACTOR`
times as long, and after :data:`MIN_RUNS` runs at :data:`HOPELESS_FACTOR` times as long."""

TRAINING_ROUNDS = 7
TRAINING_MIN_ROUNDS = 3
TRAINING_SECONDS = 0.5
"""Races run :data:`TRAINING_ROUNDS` interleaved rounds, or :data:`TRAINING_MIN_ROUNDS` once they took
:data:`TRAINING_SECONDS`, and more while a round is shorter than :data:`TARGET_SECONDS` per program."""
TRAINING_FINALISTS = 2
"""A method among the fastest this many of both transposes is also timed filling both."""

_lock = threading.RLock()
_plans: dict[tuple[str, str | None], Plan] = {}


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


@dataclasses.dataclass
class Measurement:
    """What one measurement found.

    Attributes:
      key: the layer signature (:func:`layer_key`).
      times: per role, each method's median seconds alone (``None`` where skipped).
      skipped: why each skipped candidate (``"role:method"``) was not timed.
      plan, estimate: the chosen plan and the estimate's.
      seconds: how long measuring took.
      training: median seconds of each finalist's forward + backward program, by ``str(plan)``.
      rematch: the same for the winner against itself with ``waits`` flipped.
      forward_race: the fastest forward and the estimate's, raced (empty if they are one).
      from_wisdom: read from wisdom rather than measured in this process.
    """

    key: str
    times: dict[str, dict[str, float | None]]
    skipped: dict[str, str]
    plan: Plan
    estimate: Plan
    seconds: float
    training: dict[str, float | None] = dataclasses.field(default_factory=dict)
    rematch: dict[str, float | None] = dataclasses.field(default_factory=dict)
    forward_race: dict[str, float] = dataclasses.field(default_factory=dict)
    from_wisdom: bool = False

    _RACES = ("training", "rematch", "forward_race")

    def __post_init__(self) -> None:
        for name in self._RACES:  # ``None``: no such race
            setattr(self, name, getattr(self, name) or {})

    @classmethod
    def from_entry(cls, key: str, entry: Mapping) -> Measurement:
        """The measurement a wisdom entry (:meth:`to_entry`) holds."""
        plan, estimate = Plan.from_dict(entry["plan"]), Plan.from_dict(entry["estimate"])
        races: dict[str, Any] = {name: entry.get(name) for name in cls._RACES}
        return cls(key, entry["times"], {}, plan, estimate, entry["seconds"], **races, from_wisdom=True)

    def to_entry(self) -> dict:
        races = {name: getattr(self, name) for name in self._RACES}
        return dict(
            plan=self.plan.to_dict(), estimate=self.estimate.to_dict(), times=self.times, **races, seconds=self.seconds
        )


_listeners: list[Callable[[Measurement], None]] = []
"""Called with every :class:`Measurement` made, or read from wisdom (``jtconv tune`` listens)."""


def measured_plan(
    geom: ConvTransposeGeometry,
    batch: int,
    dtype,
    backend: str,
    preferred_element_type=None,
    precision=None,
    device=None,
) -> Plan | None:
    """The measured plan for this layer signature on ``backend``: from this
    process's memory, else from wisdom (if the layer supports it), else
    measured now on ``device`` (a device of ``backend``). Without a device,
    wisdom recorded on any device of ``backend``, else ``None``."""
    key = layer_key(geom, batch, dtype, backend, preferred_element_type, precision)
    with _lock:
        memory_key = (key, None if device is None else str(device.device_kind))
        plan = _plans.get(memory_key)
        if plan is not None:
            return plan
        entry = wisdom.lookup(key, device) if device is not None else wisdom.lookup_backend(key, backend)
        plan = _stored_plan(key, entry, geom)
        if plan is None:
            if device is None:
                return None
            with jax.default_device(device):
                found = measure(geom, batch, dtype, backend, preferred_element_type, precision)
            plan = found.plan
            wisdom.record(key, found.to_entry(), device)
        _plans[memory_key] = plan
        return plan


def _stored_plan(key: str, entry, geom: ConvTransposeGeometry) -> Plan | None:
    if entry is None:
        return None
    try:
        stored = Measurement.from_entry(key, entry)
        validate(stored.plan, geom)
    except (KeyError, TypeError, ValueError) as error:
        _log.warning("jtconv: ignoring the stored plan for %s (%s); measuring it again", describe_layer(geom), error)
        return None
    for listener in list(_listeners):
        listener(stored)
    return stored.plan


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
        timed: list[tuple[str, str]] = []
        for role in ROLES:
            times[role] = {}
            for name in _timing_order(role, guess, geom):
                reason = untimed(role, name, geom, backend)
                if reason:
                    times[role][name] = None
                    skipped[f"{role}:{name}"] = reason
                else:
                    timed.append((role, name))
        programs = [
            _program(
                role,
                _isolated(guess, role, name, geom, batch, dtype, preferred_element_type, backend),
                geom,
                x,
                w,
                ct,
                precision,
                preferred_element_type,
            )
            for role, name in timed
        ]
        forwards: dict[str, _Compiled] = {}
        for (role, name), compiled in zip(timed, _compile_all(programs)):
            best = min((t for t in times[role].values() if t is not None), default=None)
            seconds, reason = _time(compiled, best)
            times[role][name] = seconds
            if reason:
                skipped[f"{role}:{name}"] = reason
            elif role == "forward":
                forwards[name] = compiled
        forward, forward_race = _confirmed_forward(times["forward"], forwards, guess.forward)
        schedule = functools.partial(
            scheduled_plan,
            geom=geom,
            batch=batch,
            dtype=dtype,
            preferred_element_type=preferred_element_type,
            backend=backend,
        )
        finalists = _training_finalists(times, guess, forward, schedule, geom)
        race = functools.partial(
            _race,
            compiled={},
            geom=geom,
            operands=(x, w, ct),
            precision=precision,
            preferred_element_type=preferred_element_type,
            skipped=skipped,
        )
        first = race(finalists) if len(finalists) > 1 else {}
        leader = _fastest_plan(first, finalists, preferred=finalists[0])
        flipped = leader.replace(waits=not leader.waits)
        rematch = race([leader, flipped])
        plan = _fastest_plan(rematch, [leader, flipped], preferred=leader)
    found = Measurement(key, times, skipped, plan, guess, time.perf_counter() - start, first, rematch, forward_race)
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


def _timing_order(role: str, guess: Plan, geom: ConvTransposeGeometry) -> list[str]:
    """The methods supporting ``role`` for the layer, the estimate's first: its
    time is then the bar that hopeless candidates are stopped against."""
    names = list(methods_for(role, geom))
    preferred = getattr(guess, role)
    return sorted(names, key=lambda name: name != preferred)


def untimed(role: str, name: str, geom: ConvTransposeGeometry, backend: str) -> str | None:
    """Why measure mode does not time method ``name`` in ``role`` for this layer
    on ``backend`` (``None``: it is timed).

    XLA's CPU backend has no fast kernel for two of the convolutions JAX
    derives from the lhs-dilated forward (``xla``), and runs them in its
    generic loop emitter, whose one warm-up call alone can take longer than
    timing every other candidate:

    * the weight transpose of a strided layer, a convolution whose window is
      dilated by the stride;
    * every role of a strided depthwise layer (one group per channel).

    ``xla-wgrad`` computes the first in torch's pattern, and ``matmul``,
    ``matmul-ad`` and ``gemm`` cover depthwise layers.
    ``python benchmarks/run.py --planning measure`` records every timed
    candidate (``benchmarks/RESULTS_measure.md``: these ran 22–2400× the
    fastest candidate on every strided benchmark layer).
    """
    if backend != "cpu" or name != "xla" or all(s == 1 for s in geom.stride):
        return None
    if geom.in_per_group == 1 and geom.groups > 1:
        return "not timed: XLA:CPU runs strided depthwise convolutions in its generic loop"
    if role == "weight_transpose":
        return "not timed: XLA:CPU runs a strided layer's window-dilated weight gradient in its generic loop"
    return None


def _fastest(role_times: Mapping[str, float | None], preferred: str) -> str:
    timed = {name: t for name, t in role_times.items() if t is not None}
    if not timed:
        return preferred
    best = min(timed, key=timed.__getitem__)
    if preferred in timed and timed[preferred] <= timed[best] * (1 + TIE_FRACTION):
        return preferred
    return best


def _confirmed_forward(
    role_times: dict[str, float | None], compiled: dict[str, _Compiled], preferred: str
) -> tuple[str, dict[str, float]]:
    """The fastest forward, and the race that confirmed it: a forward other than
    ``preferred`` (the estimate's) that was faster one after the other must be
    faster again when the two run interleaved, so that the machine's drift
    between their timings cannot pick it."""
    fastest = _fastest(role_times, preferred)
    if fastest == preferred or preferred not in compiled:
        return fastest, {}
    race = _time_interleaved({preferred: compiled[preferred], fastest: compiled[fastest]})
    return _fastest(race, preferred), race


def _fastest_plan(training: dict[str, float | None], plans: list[Plan], preferred: Plan) -> Plan:
    """The plan of ``plans`` whose training program was fastest (ties within noise: ``preferred``)."""
    by_text = {str(p): p for p in plans}
    name = _fastest({text: training.get(text) for text in by_text}, str(preferred))
    return by_text[name]


def _training_finalists(times, guess: Plan, forward: str, schedule, geom) -> list[Plan]:
    """The plans whose whole training programs are timed: the measured ``forward``
    with the estimate's transposes first (it wins ties), the estimate's own plan
    last, so that a faster forward is kept only if training is no slower for it."""

    def ranked(role: str) -> list[str]:
        timed = {name: t for name, t in times[role].items() if t is not None}
        return sorted(timed, key=timed.__getitem__)

    dx_ranked, dw_ranked = ranked("input_transpose"), ranked("weight_transpose")
    pairs = [(guess.input_transpose, guess.weight_transpose)]
    if dx_ranked and dw_ranked:
        pairs.append((dx_ranked[0], dw_ranked[0]))
    top_dx, top_dw = dx_ranked[:TRAINING_FINALISTS], dw_ranked[:TRAINING_FINALISTS]
    pairs += [(name, name) for name in top_dx if name in top_dw]
    plans: list[Plan] = []
    for dx, dw in pairs:  # every name was timed or is the estimate's, so the layer supports it
        plan = schedule(forward, dx, dw)
        if plan not in plans:
            plans.append(plan)
    if guess not in plans:  # the measured forward differs: the estimate's whole plan races too
        plans.append(guess)
    return plans


def _race(plans, *, compiled, geom, operands, precision, preferred_element_type, skipped) -> dict[str, float | None]:
    """Median seconds of the training programs of ``plans``, timed interleaved
    (``None`` where skipped, with the reason in ``skipped``); ``compiled``
    keeps the programs by ``str(plan)`` for a later race."""
    x, w, ct = operands
    new = [p for p in plans if str(p) not in compiled]
    programs = [_program("training", p, geom, x, w, ct, precision, preferred_element_type) for p in new]
    compiled.update(zip(map(str, new), _compile_all(programs)))
    results: dict[str, float | None] = {}
    runnable = {}
    for plan in plans:
        reason = _over_budget(compiled[str(plan)])
        if reason:
            results[str(plan)] = None
            skipped[f"training:{plan}"] = reason
        else:
            runnable[str(plan)] = compiled[str(plan)]
    results.update(_time_interleaved(runnable))
    return results


def _time_interleaved(programs: dict[str, _Compiled]) -> dict[str, float]:
    """Median seconds per call of each program, sampled in rounds (each program once per
    round, as A/B-interleaved benchmarks do, so that drifting machine state affects all
    alike), as many rounds as :data:`TRAINING_SECONDS` says. A program whose first call
    takes :data:`HOPELESS_FACTOR` times the fastest first call keeps that time and leaves
    the rounds."""
    first = {}
    for name, program in programs.items():
        begin = time.perf_counter()
        jax.block_until_ready(program.call())
        first[name] = time.perf_counter() - begin
    fastest = min(first.values(), default=0.0)
    results = {name: t for name, t in first.items() if t > HOPELESS_FACTOR * fastest}
    racing = [name for name in programs if name not in results]
    samples: dict[str, list[float]] = {name: [] for name in racing}
    spent = 0.0

    def another_round(rounds: int) -> bool:
        if rounds < min(TRAINING_MIN_ROUNDS, TRAINING_ROUNDS):
            return True
        if rounds < TRAINING_ROUNDS and spent < TRAINING_SECONDS:
            return True
        return spent < TARGET_SECONDS * len(racing) and rounds < MAX_RUNS

    while racing and another_round(len(samples[racing[0]])):
        for name in racing:
            begin = time.perf_counter()
            jax.block_until_ready(programs[name].call())
            elapsed = time.perf_counter() - begin
            samples[name].append(elapsed)
            spent += elapsed
    results.update({name: statistics.median(values) for name, values in samples.items()})
    return results


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

    def f(x, w):
        return conv_transpose_planned(
            x, w, geom, plan, precision=precision, preferred_element_type=preferred_element_type
        )

    if role == "forward":
        return jax.jit(f), (x, w)
    if role == "input_transpose":
        return jax.jit(lambda x, w, ct: jax.vjp(lambda x: f(x, w), x)[1](ct)[0]), (x, w, ct)
    if role == "training":
        # The loss value is returned, as in training, so the forward is not dead code.
        return jax.jit(jax.value_and_grad(lambda x, w, ct: jnp.vdot(f(x, w), ct).real, argnums=(0, 1))), (x, w, ct)
    return jax.jit(lambda x, w, ct: jax.vjp(lambda w: f(x, w), w)[1](ct)[0]), (x, w, ct)


class _Compiled(NamedTuple):
    call: Callable[[], object]
    compile_seconds: float
    temporary_bytes: int | None


def _compile_all(programs) -> list[_Compiled]:
    """Compile ``(jitted, args)`` programs, several at once.

    Lowering (tracing, which holds the GIL) runs here, one program after
    another, while XLA compiles the ones already lowered on a thread pool, one
    per core (each compilation is single-threaded and releases the GIL).
    Timing then runs one program at a time.
    """

    def compile_one(low, args) -> _Compiled:
        start = time.perf_counter()
        compiled = low.compile()
        seconds = time.perf_counter() - start
        return _Compiled(lambda: compiled(*args), seconds, _temporary_bytes(compiled))

    if len(programs) <= 1:
        return [compile_one(program.lower(*args), args) for program, args in programs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(programs), os.cpu_count() or 1)) as pool:
        futures = [pool.submit(compile_one, program.lower(*args), args) for program, args in programs]
        return [future.result() for future in futures]


def _over_budget(compiled: _Compiled) -> str | None:
    """Why a compiled program is not run (compile time or temporaries over budget), or ``None``."""
    if compiled.compile_seconds > COMPILE_BUDGET_SECONDS:
        return f"compiling took {compiled.compile_seconds:.1f} s (budget {COMPILE_BUDGET_SECONDS:.0f} s)"
    memory = compiled.temporary_bytes
    if memory is not None and memory > MEMORY_BUDGET_BYTES:
        return f"needs {memory / 2**20:.0f} MiB of temporaries (budget {MEMORY_BUDGET_BYTES / 2**20:.0f} MiB)"
    return None


def _time(compiled: _Compiled, best: float | None = None) -> tuple[float | None, str | None]:
    """Median seconds per call of a compiled program, or ``None`` and why it was skipped
    (``best``: the best median of the role so far)."""
    reason = _over_budget(compiled)
    if reason:
        return None, reason
    begin = time.perf_counter()
    jax.block_until_ready(compiled.call())
    first = time.perf_counter() - begin
    if best is not None and first > HOPELESS_FACTOR * best:
        return first, None
    samples: list[float] = []
    while len(samples) < MIN_RUNS or (len(samples) < MAX_RUNS and sum(samples) < TARGET_SECONDS):
        begin = time.perf_counter()
        jax.block_until_ready(compiled.call())
        samples.append(time.perf_counter() - begin)
        if best is None:
            continue
        if len(samples) == 1 and min(first, samples[0]) > SHORTLIST_FACTOR * best:
            break
        if len(samples) == MIN_RUNS and statistics.median(samples) > HOPELESS_FACTOR * best:
            break
    return statistics.median(samples), None


def _temporary_bytes(compiled) -> int | None:
    try:
        analysis = compiled.memory_analysis()
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    return getattr(analysis, "temp_size_in_bytes", None)
