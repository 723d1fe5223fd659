"""What will run for a layer: :func:`plan_for` and :func:`candidate_plans`.

>>> import jtconv
>>> print(jtconv.plan_for((16, 128, 16, 16), (128, 64, 4, 4), stride=2, padding=1))
forward=matmul  dx=gemm  dw=gemm  waits=yes  stores=yes  layout=weight_copy

Both take the layer as ``conv_transpose`` does (shapes instead of arrays)
and return :class:`~jtconv.lowering.plan.Plan` values, which
``conv_transpose(..., algorithm=plan)`` runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jtconv.geometry import ConvTransposeGeometry, IntOrTuple, PaddingLike, make_geometry
from jtconv.lowering.plan import Plan
from jtconv.plans.estimate import backend_of, candidates
from jtconv.plans.resolve import resolve

__all__ = ["candidate_plans", "plan_for"]


def _layer(
    x_shape, w_shape, stride, padding, output_padding, groups, dilation, output_size, channels_last
) -> tuple[ConvTransposeGeometry, int]:
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    geom = make_geometry(
        x_shape,
        w_shape,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        output_size=output_size,
        channels_last=channels_last,
    )
    batch = x_shape[0] if len(x_shape) == geom.ndim + 2 else 1
    return geom, batch


def plan_for(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    output_size: Sequence[int] | None = None,
    channels_last: bool = False,
    dtype: jax.typing.DTypeLike = "float32",
    preferred_element_type: jax.typing.DTypeLike | None = None,
    backend: str | None = None,
    precision: jax.lax.PrecisionLike = None,
    algorithm="auto",
) -> Plan:
    """The plan ``conv_transpose(x, w, ..., algorithm=algorithm)`` runs for
    ``x`` of shape ``x_shape`` and ``w`` of shape ``w_shape`` (``dtype``:
    their common dtype) in a program compiled for ``backend`` (``"cpu"``,
    ``"gpu"``, ``"cuda"``, ``"rocm"``, ``"tpu"``; default: JAX's default
    backend), in the current planning mode (:func:`jtconv.planning`).
    ``jax.export`` for that platform, from any host, runs this plan.

    Raises ``ValueError`` for a layer torch rejects, or for an ``algorithm``
    that names an unknown or unsupported method.
    """
    geom, batch = _layer(
        x_shape, w_shape, stride, padding, output_padding, groups, dilation, output_size, channels_last
    )
    return resolve(
        algorithm, geom, batch, jnp.dtype(dtype), backend or jax.default_backend(), preferred_element_type, precision
    )


def candidate_plans(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    output_size: Sequence[int] | None = None,
    channels_last: bool = False,
    dtype: jax.typing.DTypeLike = "float32",
    preferred_element_type: jax.typing.DTypeLike | None = None,
    backend: str | None = None,
) -> tuple[Plan, ...]:
    """Every valid plan for the layer (arguments as :func:`plan_for`): the
    cross product of the forward, input-transpose and weight-transpose
    methods that support it, each with the estimate's scheduling."""
    geom, batch = _layer(
        x_shape, w_shape, stride, padding, output_padding, groups, dilation, output_size, channels_last
    )
    return candidates(
        geom, batch, jnp.dtype(dtype), backend_of(backend or jax.default_backend()), preferred_element_type
    )
