"""Pieces shared by the lowerings: layouts, the common signature, fusable stacks, one-axis im2col/col2im."""

from __future__ import annotations

import math
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
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


def accumulation_dtype(dtype, preferred_element_type) -> jnp.dtype:
    """fp16/bf16 products are summed in float32 (as XLA's convolutions do)."""
    if preferred_element_type is not None:
        return jnp.dtype(preferred_element_type)
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
        return jnp.dtype(jnp.float32)
    return dtype


def output_dtype(x_dtype, preferred_element_type) -> jnp.dtype:
    """The result dtype ``lax.conv_general_dilated`` gives: ``preferred_element_type`` or ``x``'s."""
    return jnp.dtype(preferred_element_type if preferred_element_type is not None else x_dtype)


def tap_product_bytes(geom: ConvTransposeGeometry, batch: int, itemsize: int) -> int:
    """Size of ``N·S·T·Cout`` values: the matmul forward's tap products ``Z``,
    and equally the cotangent's im2col of its transposes."""
    return batch * math.prod(geom.input_size) * math.prod(geom.kernel_size) * geom.out_channels * itemsize


MMAP_THRESHOLD_BYTES = 32 * 2**20
"""glibc's largest dynamic mmap threshold (64-bit): XLA's CPU runtime allocates
a program's temporaries as one block per call, and a block above this size
is fresh pages on every call, a page fault per 4 KiB (about 1 µs each on the
project's 2-core VM; see :mod:`jtconv.cpu_memory`)."""


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


def windows(a: jax.Array, k: int, d: int, length: int, axis: int) -> jax.Array:
    """``out[t, …, j, …] = a[…, j + t·d, …]`` for ``t < k``, ``j < length`` along ``axis``.

    One gather rather than a stack of ``k`` slices: the same loop at run time,
    but XLA's CPU compiler takes 0.3–1.3 s over a stack of shifted slices
    along the minor axis and 0.06 s over the gather (2d k7, 16 channels).
    """
    index = np.arange(k)[:, None] * d + np.arange(length)[None, :]  # (k, length)
    windows = a.at[(slice(None),) * axis + (index,)].get(mode="promise_in_bounds")  # (…, k, length, …)
    return jnp.moveaxis(windows, axis, 0)


def shifted_sum(parts: jax.Array, axis: int, starts: list[int], length: int) -> jax.Array:
    """``out[…, j, …] = Σ_t parts[t][…, j − starts[t], …]`` along ``axis`` (of
    ``parts[t]``) for ``j < length``; positions outside ``parts[t]`` add nothing.

    A sum of padded (negative amounts crop) copies, which XLA fuses into one loop.
    """
    zero = jnp.zeros((), parts.dtype)
    total = None
    for part, start in zip(parts, starts):
        config = [(0, 0, 0)] * part.ndim
        config[axis] = (start, length - part.shape[axis] - start, 0)
        shifted = lax.pad(part, zero, config)
        total = shifted if total is None else total + shifted
    if total is None:
        raise ValueError("shifted_sum needs at least one part")
    return total
