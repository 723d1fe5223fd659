"""The transposes of the matmul lowering: the cotangent's im2col and two GEMMs.

With ``ȳ`` placed back into the uncropped result (zeros where the crop removed positions), per group ``g``::

    C[g, n, i, t, co] = ȳ_full[n, g·Cg + co, i·s + t·d]                        (the cotangent's im2col)
    x̄[n, g·Cin/G + ci, i] = Σ_{t, co} C[g, n, i, t, co] · w[g·Cin/G + ci, co, t]
    w̄[g·Cin/G + ci, co, t] = Σ_{n, i} x[n, g·Cin/G + ci, i] · C[g, n, i, t, co]

``C`` is built group-major and channels-last, ``(G, N·S, T·Cg)``, so that both GEMMs read it row-major. The im2col
is a tree of stacks of at most :data:`~jtconv.lowering.common.MAX_FUSED_OPERANDS` strided slices, which XLA's CPU
backend fuses into one parallel loop (``python benchmarks/run.py --shapes dcgan``). Ordinary JAX code, so
differentiable itself (second-order derivatives go through it).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering import taps as bounded
from jtconv.lowering.common import fusable_stack, group_columns, pad


def cotangent_columns(ct: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``C[g, n, *i, *t, co] = ȳ_full[n, g·Cg + co, *(i·s + t·d)]``, shape ``(G, N, *S, *K, Cg)`` (one gather,
    :func:`jtconv.lowering.taps.cotangent_columns`, from :data:`~jtconv.lowering.taps.BOUNDED_MIN_TAPS` taps on)."""
    if bounded.uses_bounded_taps(geom):
        return bounded.cotangent_columns(ct, geom)
    n, g, cg, ndim = ct.shape[0], geom.groups, geom.out_per_group, geom.ndim
    ct = jnp.transpose(ct.reshape((n, g, cg) + geom.output_size), (1, 0, *range(3, 3 + ndim), 2))  # (G, N, *O, Cg)
    full = pad(ct, geom.crop)  # (G, N, *F, Cg)

    def taps_from(axis: int, starts: tuple[int, ...]) -> jax.Array:
        if axis == ndim:
            limits = tuple(st + (i - 1) * s + 1 for st, i, s in zip(starts, geom.input_size, geom.stride))
            return lax.slice(full, (0, 0) + starts + (0,), (g, n) + limits + (cg,), (1, 1) + geom.stride + (1,))
        k, d = geom.kernel_size[axis], geom.dilation[axis]
        return fusable_stack([taps_from(axis + 1, starts + (t * d,)) for t in range(k)], axis=ndim + 2)

    return taps_from(0, ())


def _rows(ct: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """:func:`cotangent_columns` as ``(G, N·S, T·Cg)``."""
    rows = ct.shape[0] * math.prod(geom.input_size)
    return cotangent_columns(ct, geom).reshape(geom.groups, rows, math.prod(geom.kernel_size) * geom.out_per_group)


def _weight_order_columns(cols: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``(G, N·S, T·Cg)`` → ``(G, N·S, Cg·T)``: the weight's own ``(Cg, T)`` order."""
    g, rows = cols.shape[:2]
    return jnp.swapaxes(cols.reshape(g, rows, math.prod(geom.kernel_size), geom.out_per_group), 2, 3).reshape(
        cols.shape
    )


def _weight_is_larger(geom: ConvTransposeGeometry, cols: jax.Array) -> bool:
    """Whether to reorder the im2col rather than the weight: the larger one's transposing copy can cost more than
    the GEMM (``python benchmarks/run.py --suite random --layer-seed 2026``)."""
    return geom.in_channels * geom.out_per_group * math.prod(geom.kernel_size) > cols.size


def transpose_input(
    ct: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``x̄`` of shape ``(N, Cin, *S)`` from ``ȳ`` and ``w``."""
    n, g, cin_g, cg = ct.shape[0], geom.groups, geom.in_per_group, geom.out_per_group
    taps = math.prod(geom.kernel_size)
    cols = _rows(ct, geom)
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
    cin_g, cg = geom.in_per_group, geom.out_per_group
    cols = _rows(ct, geom)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    if _weight_is_larger(geom, cols):
        dw = lax.dot_general(
            group_columns(x, geom), _weight_order_columns(cols, geom), (((2,), (1,)), ((0,), (0,))), **options
        )
    else:
        dw = lax.dot_general(group_columns(x, geom), cols, (((2,), (1,)), ((0,), (0,))), **options)  # (G, Cin/G, T·Cg)
        dw = jnp.swapaxes(dw.reshape(geom.groups, cin_g, math.prod(geom.kernel_size), cg), 2, 3)  # (G, Cin/G, Cg, T)
    return dw.reshape((geom.in_channels, cg) + geom.kernel_size).astype(out_dtype)
