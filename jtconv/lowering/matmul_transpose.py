"""The transposes of the matmul lowering: im2col of the cotangent + two GEMMs.

For ``y = conv_transpose(x, w)`` with output cotangent ``ȳ`` (``N, Cout, *O``),
place ``ȳ`` back into the uncropped result (zeros where the crop removed
positions) and read, for every input position ``i`` and tap ``t``, the value
the forward pass wrote there::

    C[g, n, i, t, co] = ȳ_full[n, g·Cg + co, i·s + t·d]      (the cotangent's im2col)

Then, per group ``g`` (``Cin/G`` input and ``Cg = Cout/G`` output channels)::

    x̄[n, g·Cin/G + ci, i] = Σ_{t, co} C[g, n, i, t, co] · w[g·Cin/G + ci, co, t]
    w̄[g·Cin/G + ci, co, t] = Σ_{n, i} x[n, g·Cin/G + ci, i] · C[g, n, i, t, co]

Both are batched (over groups) GEMMs over the same ``(G, N·S, T·Cg)`` array
``C``, which is built group-major and channels-last so that each GEMM reads it
row-major without a transposing copy.
The im2col is a tree of ``stack`` ops of at most
:data:`jtconv.lowering.common.MAX_FUSED_OPERANDS` strided slices each: XLA's CPU backend fuses such a
tree into one parallel loop, while a single 16-operand concatenate stays an
unfused copy after 16 separate slice loops (``python benchmarks/run.py
--shapes dcgan`` times the DCGAN cotangent's im2col inside its backward).

These functions are ordinary JAX code, so they are differentiable themselves
(second-order derivatives of the lowering go through them).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering import taps as bounded
from jtconv.lowering.common import fusable_stack


def cotangent_columns(ct: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``C[g, n, *i, *t, co] = ȳ_full[n, g·Cg + co, *(i·s + t·d)]``, shape ``(G, N, *S, *K, Cg)``
    (one gather, :func:`jtconv.lowering.taps.cotangent_columns`, for kernels of
    :data:`~jtconv.lowering.taps.BOUNDED_MIN_TAPS` taps or more)."""
    if bounded.uses_bounded_taps(geom):
        return bounded.cotangent_columns(ct, geom)
    n = ct.shape[0]
    g, cg, ndim = geom.groups, geom.out_per_group, geom.ndim
    ct = ct.reshape((n, g, cg) + geom.output_size)
    ct = jnp.transpose(ct, (1, 0, *range(3, 3 + ndim), 2))  # (G, N, *O, Cg)
    config = [(0, 0, 0)] * 2
    for full_length, (lo, _), out in zip(geom.full_size, geom.crop, geom.output_size):
        config.append((lo, full_length - lo - out, 0))  # negative amounts crop (output_padding past the full size)
    config.append((0, 0, 0))
    full = lax.pad(ct, jnp.zeros((), ct.dtype), config)  # (G, N, *F, Cg)

    def taps_from(axis: int, starts: tuple[int, ...]) -> jax.Array:
        if axis == ndim:
            limits = tuple(st + (i - 1) * s + 1 for st, i, s in zip(starts, geom.input_size, geom.stride))
            return lax.slice(full, (0, 0) + starts + (0,), (g, n) + limits + (cg,), (1, 1) + geom.stride + (1,))
        k, d = geom.kernel_size[axis], geom.dilation[axis]
        return fusable_stack([taps_from(axis + 1, starts + (t * d,)) for t in range(k)], axis=ndim + 2)

    return taps_from(0, ())


def _rows(cols: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``(G, N, *S, *K, Cg)`` → ``(G, N·S, T·Cg)``."""
    rows = cols.shape[1] * math.prod(geom.input_size)
    return cols.reshape(geom.groups, rows, math.prod(geom.kernel_size) * geom.out_per_group)


def _weight_order_columns(cols: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``(G, NS, T·Cg)`` → ``(G, NS, Cg·T)``: the weight's own ``(Cg, T)`` order."""
    g, rows = cols.shape[:2]
    taps = math.prod(geom.kernel_size)
    return jnp.swapaxes(cols.reshape(g, rows, taps, geom.out_per_group), 2, 3).reshape(cols.shape)


def _weight_is_larger(geom: ConvTransposeGeometry, cols: jax.Array) -> bool:
    """Whether to reorder the im2col rather than the weight (a transposing copy
    of either is needed, and the larger one's copy can cost more than the
    GEMM: ``python benchmarks/run.py --suite random --layer-seed 2026``)."""
    return geom.in_channels * geom.out_per_group * math.prod(geom.kernel_size) > cols.size


def transpose_input(
    ct: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``x̄`` of shape ``(N, Cin, *S)`` from ``ȳ`` and ``w``."""
    n = ct.shape[0]
    g, cin_g, cg = geom.groups, geom.in_per_group, geom.out_per_group
    taps = math.prod(geom.kernel_size)
    cols = _rows(cotangent_columns(ct, geom), geom)  # (G, NS, T·Cg)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    if _weight_is_larger(geom, cols):
        w = weight.reshape(g, cin_g, cg * taps)
        dx = lax.dot_general(_weight_order_columns(cols, geom), w, (((2,), (2,)), ((0,), (0,))), **options)
    else:
        w = jnp.transpose(weight.reshape(g, cin_g, cg, taps), (0, 3, 2, 1)).reshape(g, taps * cg, cin_g)
        dx = lax.dot_general(cols, w, (((2,), (1,)), ((0,), (0,))), **options)  # (G, NS, Cin/G)
    dx = dx.reshape((g, n) + geom.input_size + (cin_g,))
    dx = jnp.transpose(dx, (1, 0, 2 + geom.ndim, *range(2, 2 + geom.ndim)))  # (N, G, Cin/G, *S)
    return dx.reshape((n, geom.in_channels) + geom.input_size).astype(out_dtype)


def transpose_weight(
    x: jax.Array, ct: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``w̄`` of shape ``(Cin, Cout/G, *K)`` from ``x`` and ``ȳ``."""
    n = x.shape[0]
    g, cin_g, cg = geom.groups, geom.in_per_group, geom.out_per_group
    taps = math.prod(geom.kernel_size)
    cols = _rows(cotangent_columns(ct, geom), geom)  # (G, NS, T·Cg)
    xm = jnp.transpose(x.reshape(n, g, cin_g, math.prod(geom.input_size)), (1, 2, 0, 3))
    xm = xm.reshape(g, cin_g, cols.shape[1])  # (G, Cin/G, NS)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    if _weight_is_larger(geom, cols):
        dw = lax.dot_general(xm, _weight_order_columns(cols, geom), (((2,), (1,)), ((0,), (0,))), **options)
    else:
        dw = lax.dot_general(xm, cols, (((2,), (1,)), ((0,), (0,))), **options)  # (G, Cin/G, T·Cg)
        dw = jnp.swapaxes(dw.reshape(g, cin_g, taps, cg), 2, 3)  # (G, Cin/G, Cg, T)
    return dw.reshape((geom.in_channels, cg) + geom.kernel_size).astype(out_dtype)
