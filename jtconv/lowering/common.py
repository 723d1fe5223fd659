"""Pieces the lowerings share: layouts, dtypes, padding, fusable stacks, grouped GEMMs, one-axis im2col/col2im."""

from __future__ import annotations

import functools
import math
import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jtconv.geometry import ConvTransposeGeometry


def conv_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    """Channels-first dimension numbers: ``(N, C, *S)``, ``(O, I, *K)``, ``(N, C, *S)``."""
    spec = tuple(range(ndim + 2))
    return lax.ConvDimensionNumbers(lhs_spec=spec, rhs_spec=spec, out_spec=spec)


def accumulation_dtype(dtype, preferred_element_type) -> jnp.dtype:
    """``preferred_element_type`` if given; else fp16/bf16 products are summed in float32 (as XLA's convolutions do)."""
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
    """Size of ``N·S·T·Cout`` values: the matmul forward's tap products, and the cotangent's im2col."""
    return batch * math.prod(geom.input_size) * math.prod(geom.kernel_size) * geom.out_channels * itemsize


MMAP_THRESHOLD_BYTES = 32 * 2**20
"""glibc's largest dynamic mmap threshold (64-bit): XLA's CPU runtime allocates a program's temporaries as one
block per call, and a block above this size is fresh pages, a page fault per 4 KiB, on every call
(:mod:`jtconv.cpu_memory`)."""

MAX_FUSED_OPERANDS = 8
"""Most operands of a concatenate that XLA's CPU backend still fuses with the ops producing them (jaxlib 0.10.2)."""


def pad(a: jax.Array, pairs, first: int = 2) -> jax.Array:
    """``a`` padded with zeros by ``pairs[j] = (low, high[, interior])`` along axis ``first + j`` (negative amounts
    crop); the other axes unchanged."""
    config = [(0, 0, 0)] * a.ndim
    for j, pair in enumerate(pairs):
        config[first + j] = tuple(pair) + (0,) * (3 - len(pair))
    return lax.pad(a, jnp.zeros((), a.dtype), config)


def fusable_stack(arrays: list[jax.Array], axis: int) -> jax.Array:
    """``jnp.stack(arrays, axis)`` as a tree of stacks/concatenates of at most :data:`MAX_FUSED_OPERANDS` operands."""
    if len(arrays) <= MAX_FUSED_OPERANDS:
        return jnp.stack(arrays, axis)
    size = MAX_FUSED_OPERANDS
    while math.ceil(len(arrays) / size) > MAX_FUSED_OPERANDS:
        size *= MAX_FUSED_OPERANDS
    return jnp.concatenate([fusable_stack(arrays[i : i + size], axis) for i in range(0, len(arrays), size)], axis)


def grouped_gemm(a: jax.Array, b: jax.Array, contract: tuple[int, int], **options) -> jax.Array:
    """GEMM batched over groups (axis 0); with one group a plain one (a batch of one costs XLA a copy)."""
    if a.shape[0] == 1:
        return lax.dot_general(a[0], b[0], (((contract[0] - 1,), (contract[1] - 1,)), ((), ())), **options)[None]
    return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((0,), (0,))), **options)


def group_columns(x: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``(N, Cin, *S)`` → ``(G, Cin/G, N·ΠS)``."""
    n, positions = x.shape[0], math.prod(geom.input_size)
    xg = jnp.transpose(x.reshape(n, geom.groups, geom.in_per_group, positions), (1, 2, 0, 3))
    return xg.reshape(geom.groups, geom.in_per_group, n * positions)


def windows(a: jax.Array, k: int, d: int, length: int, axis: int) -> jax.Array:
    """``out[t, …, j, …] = a[…, j + t·d, …]`` for ``t < k``, ``j < length`` along ``axis``.

    One gather: XLA's CPU compiler takes 0.3–1.3 s over a stack of ``k`` shifted slices along the minor axis and
    0.06 s over the gather (2d k7, 16 channels), for the same loop at run time.
    """
    index = np.arange(k)[:, None] * d + np.arange(length)[None, :]  # (k, length)
    gathered = a.at[(slice(None),) * axis + (index,)].get(mode="promise_in_bounds")  # (…, k, length, …)
    return jnp.moveaxis(gathered, axis, 0)


def shifted_sum(parts: jax.Array, axis: int, starts: list[int], length: int) -> jax.Array:
    """``out[…, j, …] = Σ_t parts[t][…, j − starts[t], …]`` along ``axis`` (of ``parts[t]``) for ``j < length``;
    positions outside ``parts[t]`` add nothing. A sum of padded copies, which XLA fuses into one loop."""
    return functools.reduce(
        operator.add,
        (pad(part, [(start, length - part.shape[axis] - start)], axis) for part, start in zip(parts, starts)),
    )
