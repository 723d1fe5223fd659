"""Pieces shared by the lowerings: layouts, the common signature, fusable stacks."""

from __future__ import annotations

import math
from typing import Protocol

import jax
import jax.numpy as jnp
from jax import lax

from jtconv.geometry import ConvTransposeGeometry


def conv_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    """Channels-first dimension numbers: ``(N, C, *S)``, ``(O, I, *K)``, ``(N, C, *S)``."""
    spec = tuple(range(ndim + 2))
    return lax.ConvDimensionNumbers(lhs_spec=spec, rhs_spec=spec, out_spec=spec)


class Lowering(Protocol):
    """Signature every lowering implements.

    ``x``: ``(N, Cin, *S)`` (batched, channels first); ``weight``:
    ``(Cin, Cout/G, *K)`` (PyTorch layout); ``geom``: validated geometry.
    Returns ``(N, Cout, *O)`` without bias, dtype as ``lax.conv_general_dilated``
    would give for ``(x, weight, preferred_element_type)``.
    """

    def __call__(
        self,
        x: jax.Array,
        weight: jax.Array,
        geom: ConvTransposeGeometry,
        *,
        precision=None,
        preferred_element_type=None,
    ) -> jax.Array: ...


def tap_product_bytes(geom: ConvTransposeGeometry, batch: int, itemsize: int) -> int:
    """Size of ``N·S·T·Cout`` values: the matmul forward's tap products ``Z``,
    and equally the cotangent's im2col of its transposes."""
    return batch * math.prod(geom.input_size) * math.prod(geom.kernel_size) * geom.out_channels * itemsize


MAX_FUSED_OPERANDS = 8
"""Most operands of a concatenate that XLA's CPU backend still fuses with the
ops producing them (jaxlib 0.10.2)."""


def fusable_stack(arrays: list[jax.Array], axis: int) -> jax.Array:
    """``jnp.stack(arrays, axis)`` as a tree of stacks/concatenates of at most
    :data:`MAX_FUSED_OPERANDS` operands each."""
    if len(arrays) <= MAX_FUSED_OPERANDS:
        return jnp.stack(arrays, axis)
    size = MAX_FUSED_OPERANDS
    while math.ceil(len(arrays) / size) > MAX_FUSED_OPERANDS:
        size *= MAX_FUSED_OPERANDS
    return jnp.concatenate([fusable_stack(arrays[i : i + size], axis) for i in range(0, len(arrays), size)], axis)
