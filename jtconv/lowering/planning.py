"""Planning modes: how ``algorithm="auto"`` picks a layer's plan.

* ``"estimate"`` (the default): the planner's rules
  (:func:`jtconv.lowering.planner.estimate`); nothing is timed.
* ``"measure"``: the first time a layer signature is traced, every method
  that supports it is timed on the device, per role, and the fastest plan is
  kept (in memory and as wisdom on disk, :mod:`jtconv.wisdom`); see
  :mod:`jtconv.lowering.measure`.

The mode is set, innermost first, by :func:`planning` (a context manager),
:func:`set_planning` (process-wide) or the ``JTCONV_PLANNING`` environment
variable.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.plan import Plan
from jtconv.lowering.planner import estimate

__all__ = ["MODES", "auto_plan", "current_planning", "planning", "set_planning"]

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


def auto_plan(
    geom: ConvTransposeGeometry, batch: int, dtype, backend: str, preferred_element_type=None, precision=None
) -> Plan:
    """The plan ``algorithm="auto"`` runs in the current planning mode."""
    if current_planning() == "measure":
        from jtconv.lowering.measure import measured_plan  # timing machinery, loaded on first use

        return measured_plan(geom, batch, dtype, backend, preferred_element_type, precision)
    return estimate(geom, batch, dtype, backend, preferred_element_type)
