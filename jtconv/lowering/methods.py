"""The registry of methods: one :class:`Method` record per way of computing
a part of a transposed convolution.

A :class:`~jtconv.lowering.plan.Plan` names three methods, one per role:

* ``forward``: ``y = f(x, w)``;
* ``input_transpose``: ``x̄ = f(·, w)ᵀ ȳ``;
* ``weight_transpose``: ``w̄ = f(x, ·)ᵀ ȳ``.

A method fills the roles it has code for. A transpose is either written out
(``transpose_input`` / ``transpose_weight``: GEMMs or convolutions) or
*derived* (``derived_from``: the transpose JAX derives from that forward,
``jax.vjp`` of a linear map). Adding a method is adding one record to
:data:`METHODS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering import matmul_transpose, phase, reference, split, tiled
from jtconv.lowering.matmul import matmul_forward
from jtconv.lowering.plan import Plan

__all__ = [
    "Method",
    "METHODS",
    "FORWARD_METHODS",
    "INPUT_TRANSPOSE_METHODS",
    "WEIGHT_TRANSPOSE_METHODS",
    "ROLES",
    "adapt",
    "method",
    "methods_for",
]

ROLES: tuple[str, ...] = ("forward", "input_transpose", "weight_transpose")


def _every_layer(geom: ConvTransposeGeometry) -> bool:
    return True


@dataclasses.dataclass(frozen=True)
class Method:
    """One way of computing some roles of a transposed convolution.

    Attributes:
      name: what ``Plan`` fields and ``str(plan)`` call it.
      summary: one line for users (``jtconv.lowering.methods.describe``, docs).
      supports: whether the method expresses a layer (a pure function of the
        geometry).
      forward: ``(x, w, geom, *, precision, preferred_element_type, layout,
        platform) → y``, or ``None`` (``platform``: the one being lowered for).
      transpose_input: ``(ȳ, w, geom, *, precision, acc_dtype, out_dtype,
        platform) → x̄``, or ``None``.
      transpose_weight: ``(x, ȳ, geom, *, precision, acc_dtype, out_dtype,
        platform) → w̄``, or ``None``.
      derived_from: for derived transposes, the name of the method whose
        forward JAX transposes (``None`` otherwise).
      fallback: the method used, in the same role, for a layer this one does
        not support, when that layer arises inside a transformation (``vmap``
        folding a batch of weights into groups); a plan named directly by the
        user must be supported.
    """

    name: str
    summary: str
    supports: Callable[[ConvTransposeGeometry], bool] = _every_layer
    forward: Callable | None = None
    transpose_input: Callable | None = None
    transpose_weight: Callable | None = None
    derived_from: str | None = None
    fallback: dict[str, str] = dataclasses.field(default_factory=dict)

    def fills(self, role: str) -> bool:
        """Whether this method can take ``role`` (one of :data:`ROLES`)."""
        if role == "forward":
            return self.forward is not None
        if self.derived_from is not None:
            return True
        return (self.transpose_input if role == "input_transpose" else self.transpose_weight) is not None


def _matmul_forward(x, w, geom, *, precision, preferred_element_type, layout, platform):
    del platform
    return matmul_forward(
        x, w, geom, precision=precision, preferred_element_type=preferred_element_type, layout=layout or "weight_copy"
    )


def _ignoring_layout(forward: Callable) -> Callable:
    def run(x, w, geom, *, precision, preferred_element_type, layout, platform):
        del layout, platform
        return forward(x, w, geom, precision=precision, preferred_element_type=preferred_element_type)

    run.__name__ = run.__qualname__ = forward.__name__
    return run


def _any_platform(transpose: Callable) -> Callable:
    def run(*args, platform, **kwargs):
        del platform
        return transpose(*args, **kwargs)

    run.__name__ = run.__qualname__ = transpose.__name__
    return run


def _reference_forward(x, w, geom, *, precision, preferred_element_type, layout, platform):
    del layout
    return reference.conv_transpose_reference(
        x, w, geom, precision=precision, preferred_element_type=preferred_element_type, platform=platform
    )


_records = (
    Method(
        "matmul",
        "one GEMM for every kernel tap, then a col2im that sums the shifted tap products per output phase",
        forward=_matmul_forward,
    ),
    Method(
        "split",
        "1d/2d stride-1 layers with one group: one GEMM between one-axis im2cols (input along W, output along H)",
        supports=split.supports,
        forward=_ignoring_layout(split.split_forward),
        transpose_input=_any_platform(split.transpose_input),
        transpose_weight=_any_platform(split.transpose_weight),
        fallback={"forward": "matmul", "input_transpose": "gemm", "weight_transpose": "gemm"},
    ),
    Method(
        "phase",
        "sub-pixel: one GEMM between the input's im2col over block shifts and every output phase",
        supports=phase.supports,
        forward=_ignoring_layout(phase.phase_forward),
        transpose_input=_any_platform(phase.transpose_input),
        transpose_weight=_any_platform(phase.transpose_weight),
        fallback={"forward": "matmul", "input_transpose": "matmul-ad", "weight_transpose": "matmul-ad"},
    ),
    Method(
        "phase-conv",
        "sub-pixel with the phase products from a stride-1 XLA convolution (no im2col in memory)",
        supports=phase.supports,
        forward=_ignoring_layout(phase.phase_conv_forward),
        transpose_input=_any_platform(phase.conv_transpose_input),
        transpose_weight=_any_platform(phase.batch_first_transpose_weight),
        fallback={"forward": "matmul", "input_transpose": "matmul-ad", "weight_transpose": "matmul-ad"},
    ),
    Method(
        "tiled",
        "kernels that tile their strides: one GEMM per group and a depth-to-space (plus an overlap-add of "
        "k/s blocks), a program of the same size for every kernel",
        supports=tiled.supports,
        forward=_ignoring_layout(tiled.tiled_forward),
        transpose_input=_any_platform(tiled.transpose_input),
        transpose_weight=_any_platform(tiled.transpose_weight),
        fallback={"forward": "matmul", "input_transpose": "gemm", "weight_transpose": "gemm"},
    ),
    Method(
        "xla",
        "XLA's convolutions: forward as the lhs-dilated convolution (backward-data pattern), "
        "transposes as JAX derives them (input: a strided convolution of the cotangent)",
        forward=_reference_forward,
        derived_from="xla",
    ),
    Method(
        "gemm",
        "transposes as the cotangent's im2col times the weight (input) or the input (weight): one GEMM each",
        transpose_input=_any_platform(matmul_transpose.transpose_input),
        transpose_weight=_any_platform(matmul_transpose.transpose_weight),
    ),
    Method(
        "matmul-ad",
        "the transposes JAX derives from the matmul forward (elementwise loops; suits depthwise layers)",
        derived_from="matmul",
    ),
    Method(
        "xla-wgrad",
        "weight transpose in torch's pattern: the backward-filter of the strided convolution of the cotangent",
        transpose_weight=reference.backward_filter_weight,
    ),
)

METHODS: dict[str, Method] = {m.name: m for m in _records}
"""Every method by name."""

FORWARD_METHODS: tuple[str, ...] = tuple(m.name for m in _records if m.fills("forward"))
INPUT_TRANSPOSE_METHODS: tuple[str, ...] = tuple(m.name for m in _records if m.fills("input_transpose"))
WEIGHT_TRANSPOSE_METHODS: tuple[str, ...] = tuple(m.name for m in _records if m.fills("weight_transpose"))


def method(name: str, role: str) -> Method:
    """The record ``name``, checked to fill ``role``; ``ValueError`` naming the role otherwise."""
    names = methods_for(role)
    if name not in names:
        raise ValueError(f"Plan.{role} must be one of {names}, got {name!r}")
    return METHODS[name]


def methods_for(role: str, geom: ConvTransposeGeometry | None = None) -> tuple[str, ...]:
    """Names of the methods that fill ``role`` (and support ``geom``, when given)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return tuple(m.name for m in METHODS.values() if m.fills(role) and (geom is None or m.supports(geom)))


def adapt(plan: Plan, geom: ConvTransposeGeometry) -> Plan:
    """``plan`` for a layer that a transformation derived from the planned one
    (``vmap`` folding stacked weights into groups): each part its method
    cannot express becomes that method's fallback."""
    changes = {}
    for role in ROLES:
        record = METHODS[getattr(plan, role)]
        if not record.supports(geom):
            changes[role] = record.fallback[role]
    if not changes:
        return plan
    if changes.get("forward") == "matmul" and plan.gemm_layout is None:
        changes["gemm_layout"] = "weight_copy"
    return plan.replace(**changes)
