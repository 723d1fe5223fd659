"""Resolving ``algorithm=``: planning modes, and plans per platform.

``algorithm=`` names a plan in one of five ways: ``"auto"`` (the planner),
an algorithm name (:data:`~jtconv.plans.estimate.ALGORITHMS`), a
:class:`~jtconv.lowering.plan.Plan`, its text (``str(plan)``), or a dict of
Plan fields overriding parts of the ``"auto"`` plan. All but a fixed plan
depend on the platform, and the platform is known only when a program is
lowered: ``conv_transpose`` therefore passes a :class:`PlanRequest` to the
primitive, which asks it for the plan of each platform it lowers for
(:func:`resolve`).

``"auto"`` follows the planning mode:

* ``"estimate"`` (the default): the planner's rules
  (:func:`jtconv.plans.estimate.estimate`); nothing is timed.
* ``"measure"``: every method that supports the layer is timed, per role, on
  a device of the platform being compiled for, and the fastest plan is kept
  (in memory and as wisdom on disk, :mod:`jtconv.plans.wisdom`); see
  :mod:`jtconv.plans.measure`. For a platform this process has no devices
  of (``jax.export`` for ``cuda`` on a CPU host), wisdom recorded on that
  platform is used, else the estimate.

The mode is set, innermost first, by :func:`planning` (a context manager),
:func:`set_planning` (process-wide) or the ``JTCONV_PLANNING`` environment
variable, and is read when ``conv_transpose`` is called.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.plan import Plan
from jtconv.plans import measure
from jtconv.plans.estimate import algorithm_plan, backend_of, estimate, with_changes

__all__ = ["MODES", "PlanRequest", "current_planning", "planning", "request", "resolve", "set_planning"]

MODES: tuple[str, ...] = ("estimate", "measure")
ENVIRONMENT_VARIABLE = "JTCONV_PLANNING"

_process_mode: str | None = None
_context_mode: contextvars.ContextVar[str | None] = contextvars.ContextVar("jtconv_planning", default=None)


def _checked(mode: str, source: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{source} must be one of {MODES}, got {mode!r}")
    return mode


def current_planning() -> str:
    """The planning mode in force: the innermost :func:`planning` block, else
    :func:`set_planning`'s, else ``$JTCONV_PLANNING``, else ``"estimate"``."""
    mode = _context_mode.get()
    if mode is not None:
        return mode
    if _process_mode is not None:
        return _process_mode
    env = os.environ.get(ENVIRONMENT_VARIABLE)
    if env:
        return _checked(env.strip().lower(), ENVIRONMENT_VARIABLE)
    return "estimate"


def set_planning(mode: str | None) -> None:
    """Set the process-wide planning mode (``None``: back to ``$JTCONV_PLANNING`` / ``"estimate"``)."""
    global _process_mode
    _process_mode = None if mode is None else _checked(mode, "planning mode")


@contextlib.contextmanager
def planning(mode: str) -> Iterator[None]:
    """``with jtconv.planning("measure"):`` — the planning mode inside the block (this thread/context)."""
    token = _context_mode.set(_checked(mode, "planning mode"))
    try:
        yield
    finally:
        _context_mode.reset(token)


def local_devices(platform: str) -> list:
    """This process's devices of ``platform`` (none if JAX has no such backend here)."""
    try:
        return list(jax.local_devices(backend=platform))
    except RuntimeError:
        return []


def resolve(
    algorithm,
    geom: ConvTransposeGeometry,
    batch: int,
    dtype="float32",
    backend: str = "cpu",
    preferred_element_type=None,
    precision=None,
    mode: str | None = None,
) -> Plan:
    """The plan ``algorithm=`` names for a layer on ``backend`` (a platform:
    ``"cpu"``, ``"gpu"``/``"cuda"``/``"rocm"``, ``"tpu"``): ``"auto"`` (the
    estimate, or a measurement with ``mode="measure"``; ``mode`` defaults to
    the current planning mode), an algorithm name, a :class:`Plan`, its text
    or a dict of Plan fields overriding parts of the ``"auto"`` plan.

    Raises ``ValueError``/``TypeError`` naming what is wrong with ``algorithm``.
    """
    if isinstance(algorithm, Plan):
        return with_changes(algorithm, {}, geom, batch, dtype, preferred_element_type)
    if isinstance(algorithm, Mapping):
        base = resolve("auto", geom, batch, dtype, backend, preferred_element_type, precision, mode)
        return with_changes(base, algorithm, geom, batch, dtype, preferred_element_type)
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a str, a Plan or a dict of Plan fields, got {type(algorithm).__name__}")
    if "=" in algorithm:
        return with_changes(Plan.parse(algorithm), {}, geom, batch, dtype, preferred_element_type)
    if algorithm != "auto":
        return algorithm_plan(algorithm, geom, batch, dtype, preferred_element_type, backend_of(backend))
    if (current_planning() if mode is None else mode) == "measure":
        devices = local_devices(backend)
        plan = measure.measured_plan(
            geom, batch, dtype, backend_of(backend), preferred_element_type, precision, devices[0] if devices else None
        )
        if plan is not None:
            return plan
    return estimate(geom, batch, dtype, backend_of(backend), preferred_element_type)


@dataclasses.dataclass(frozen=True)
class PlanRequest:
    """What ``algorithm=`` asked for one layer, resolved per platform when the
    program is lowered (:meth:`plan_on`): the primitive's ``plan`` parameter.

    Attributes:
      algorithm: ``"auto"``, an algorithm name, or a dict's items (sorted).
      geom, batch, dtype, preferred_element_type, precision: the layer.
      mode: the planning mode when ``conv_transpose`` was called.
    """

    algorithm: str | tuple[tuple[str, Any], ...]
    geom: ConvTransposeGeometry
    batch: int
    dtype: str
    preferred_element_type: Any
    precision: Any
    mode: str

    def plan_on(self, platform: str) -> Plan:
        """The plan for a program lowered for ``platform`` (``"cpu"``, ``"cuda"``, ``"tpu"``, …)."""
        algorithm = dict(self.algorithm) if isinstance(self.algorithm, tuple) else self.algorithm
        return resolve(
            algorithm,
            self.geom,
            self.batch,
            self.dtype,
            platform,
            self.preferred_element_type,
            self.precision,
            self.mode,
        )

    def __repr__(self) -> str:
        return f"PlanRequest({self.algorithm!r}, planning={self.mode})"


def request(
    algorithm, geom: ConvTransposeGeometry, batch: int, dtype, preferred_element_type=None, precision=None
) -> Plan | PlanRequest:
    """What ``conv_transpose`` passes to the primitive for ``algorithm=``: a
    fixed :class:`Plan` (a Plan or its text), else a :class:`PlanRequest`.

    ``algorithm`` is checked now, so that a bad one raises before anything
    is traced: a request is resolved once, by the estimate on CPU, and the
    result thrown away.
    """
    if isinstance(algorithm, Plan) or (isinstance(algorithm, str) and "=" in algorithm):
        return resolve(algorithm, geom, batch, dtype, "cpu", preferred_element_type, precision, "estimate")
    resolve(algorithm, geom, batch, dtype, "cpu", preferred_element_type, precision, "estimate")
    if isinstance(algorithm, Mapping):
        algorithm = tuple(sorted(algorithm.items()))
    if isinstance(precision, list):  # primitive parameters must be hashable
        precision = tuple(precision)
    if preferred_element_type is not None:
        preferred_element_type = jnp.dtype(preferred_element_type)
    dtype_name = jnp.dtype(dtype).name
    return PlanRequest(algorithm, geom, batch, dtype_name, preferred_element_type, precision, current_planning())
