"""``Plan``: everything that runs for one layer, as one value.

A transposed convolution ``y = f(x, w)`` is bilinear, so its forward pass and
its two transposes (the input gradient ``x̄ = ∂⟨f(x, w), ȳ⟩/∂x`` and the weight
gradient ``w̄ = ∂⟨f(x, w), ȳ⟩/∂w``) are three separate computations. Like
cuDNN's separate forward / backward-data / backward-filter algorithms, a plan
names one method for each, plus the scheduling choices that go with them.
Any valid combination computes the same values (up to rounding); they differ
only in speed and memory.

``str(plan)`` is one line, ``forward=phase  dx=gemm  dw=xla-wgrad  waits=yes``,
and :meth:`Plan.parse` reads it back.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Plan", "GEMM_LAYOUTS"]

GEMM_LAYOUTS: tuple[str, ...] = ("weight_copy", "weight_rhs", "weight_lhs_in_place")
"""Operand layouts of the ``matmul`` forward's GEMM ``Z = Wᵀ·x`` (see
:func:`jtconv.lowering.matmul.tap_products`)."""

_SHORT = {"forward": "forward", "input_transpose": "dx", "weight_transpose": "dw"}
_FLAGS = {"waits": "waits", "stores_output": "stores"}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What runs for one layer: a forward method, an input-transpose method, a
    weight-transpose method and the scheduling choices between them.

    Attributes:
      forward: method computing ``y = f(x, w)`` (a name in
        :data:`jtconv.lowering.methods.FORWARD_METHODS`).
      input_transpose: method computing ``x̄`` from ``ȳ`` and ``w`` (a name in
        :data:`jtconv.lowering.methods.INPUT_TRANSPOSE_METHODS`).
      weight_transpose: method computing ``w̄`` from ``x`` and ``ȳ`` (a name
        in :data:`jtconv.lowering.methods.WEIGHT_TRANSPOSE_METHODS`).
      waits: the transposes start only once the forward's output exists. XLA
        may otherwise run the backward GEMMs concurrently with the forward
        GEMM (when the loss's cotangent does not depend on ``y``), and two
        GEMMs sharing the cores can be slower than the two in turn.
      stores_output: under differentiation the forward's output is written
        to memory once, so that XLA does not recompute a col2im inside every
        backward fusion that reads ``y``.
      gemm_layout: operand layout of the ``matmul`` forward's GEMM (one of
        :data:`GEMM_LAYOUTS`; ``None`` where the forward has no such GEMM).
    """

    forward: str
    input_transpose: str
    weight_transpose: str
    waits: bool = False
    stores_output: bool = False
    gemm_layout: str | None = None

    def __post_init__(self) -> None:
        for field in ("forward", "input_transpose", "weight_transpose"):
            if not isinstance(getattr(self, field), str):
                raise TypeError(f"Plan.{field} must be a method name (str), got {getattr(self, field)!r}")
        for field in ("waits", "stores_output"):
            if not isinstance(getattr(self, field), bool):
                raise TypeError(f"Plan.{field} must be a bool, got {getattr(self, field)!r}")
        if self.gemm_layout is not None and self.gemm_layout not in GEMM_LAYOUTS:
            raise ValueError(f"Plan.gemm_layout must be None or one of {GEMM_LAYOUTS}, got {self.gemm_layout!r}")

    def __str__(self) -> str:
        parts = [f"{_SHORT[f]}={getattr(self, f)}" for f in _SHORT]
        parts += [f"{_FLAGS[f]}={'yes' if getattr(self, f) else 'no'}" for f in _FLAGS]
        if self.gemm_layout is not None:
            parts.append(f"layout={self.gemm_layout}")
        return "  ".join(parts)

    def replace(self, **changes) -> Plan:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as a JSON-serialisable dict (:meth:`from_dict` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> Plan:
        """The plan with these fields; ``TypeError``/``ValueError`` for unknown or ill-typed ones."""
        if not isinstance(fields, dict):
            raise TypeError(f"a plan's fields must be a dict, got {type(fields).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown Plan fields {unknown}; fields are {sorted(known)}")
        return cls(**fields)

    @classmethod
    def parse(cls, text: str) -> Plan:
        """Read ``str(plan)`` back: ``"forward=phase  dx=gemm  dw=gemm  waits=yes  stores=no"``."""
        by_short = {v: k for k, v in {**_SHORT, **_FLAGS, "gemm_layout": "layout"}.items()}
        fields: dict = {}
        for item in text.split():
            key, sep, value = item.partition("=")
            if not sep or key not in by_short:
                raise ValueError(
                    f"cannot read plan item {item!r}: expected one of {', '.join(k + '=…' for k in by_short)}"
                )
            field = by_short[key]
            if field in _FLAGS:
                if value not in ("yes", "no"):
                    raise ValueError(f"plan item {item!r}: {key} must be yes or no")
                fields[field] = value == "yes"
            else:
                fields[field] = value
        missing = [s for f, s in _SHORT.items() if f not in fields]
        if missing:
            raise ValueError(f"plan text {text!r} lacks {', '.join(missing)}")
        return cls(**fields)
