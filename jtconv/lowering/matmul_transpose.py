"""The transposes of the matmul lowering: im2col of the cotangent + two GEMMs.

For ``y = conv_transpose(x, w)`` with output cotangent ``ȳ`` (``N, Cout, *O``),
place ``ȳ`` back into the uncropped result (zeros where the crop removed
positions) and read, for every input position ``i`` and tap ``t``, the value
the forward pass wrote there::

    C[n, i, t, c] = ȳ_full[n, c, i·s + t·d]            (the cotangent's im2col)

Then, per group ``g`` (``Cin/G`` input and ``Cg = Cout/G`` output channels)::

    x̄[n, g·Cin/G + ci, i] = Σ_{t, co} C[n, i, t, g·Cg + co] · w[g·Cin/G + ci, co, t]
    w̄[g·Cin/G + ci, co, t] = Σ_{n, i} x[n, g·Cin/G + ci, i] · C[n, i, t, g·Cg + co]

Both are GEMMs over the same ``(N·S, T·Cout)`` matrix ``C``, which is built
channels-last so that each GEMM reads it row-major without a transposing copy.
The im2col is a tree of ``stack`` ops of at most
:data:`MAX_FUSED_OPERANDS` strided slices each: XLA's CPU backend fuses such a
tree into one parallel loop, while a single 16-operand concatenate stays an
unfused copy after 16 separate slice loops (measured 2 ms vs 10 ms for the
DCGAN cotangent).

These functions are ordinary JAX code, so they are differentiable themselves
(second-order derivatives of the lowering go through them).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import MAX_FUSED_OPERANDS, fusable_stack

def cotangent_columns(ct: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``C[n, *i, *t, c] = ȳ_full[n, c, *(i·s + t·d)]`` of shape ``(N, *S, *K, Cout)``."""
    n, c = ct.shape[:2]
    ndim = geom.ndim
    ct = jnp.moveaxis(ct, 1, -1)  # (N, *O, C)
    config = [(0, 0, 0)]
    for full, (lo, _), out in zip(geom.full_size, geom.crop, geom.output_size):
        config.append((lo, full - lo - out, 0))  # negative amounts crop (output_padding past the full size)
    config.append((0, 0, 0))
    full = lax.pad(ct, jnp.zeros((), ct.dtype), config)  # (N, *F, C)

    def taps_from(axis: int, starts: tuple[int, ...]) -> jax.Array:
        if axis == ndim:
            limits = tuple(st + (i - 1) * s + 1 for st, i, s in zip(starts, geom.input_size, geom.stride))
            return lax.slice(full, (0,) + starts + (0,), (n,) + limits + (c,), (1,) + geom.stride + (1,))
        k, d = geom.kernel_size[axis], geom.dilation[axis]
        return fusable_stack([taps_from(axis + 1, starts + (t * d,)) for t in range(k)], axis=ndim + 1)

    return taps_from(0, ())


def _rows(cols: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``(N, *S, *K, Cout)`` → ``(N·S, T, G, Cg)``."""
    rows = cols.shape[0] * math.prod(geom.input_size)
    return cols.reshape(rows, math.prod(geom.kernel_size), geom.groups, geom.out_per_group)


def transpose_input(
    ct: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``x̄`` of shape ``(N, Cin, *S)`` from ``ȳ`` and ``w``."""
    n = ct.shape[0]
    g, cin_g, cg = geom.groups, geom.in_per_group, geom.out_per_group
    taps = math.prod(geom.kernel_size)
    cols = _rows(cotangent_columns(ct, geom), geom)  # (NS, T, G, Cg)
    w = weight.reshape(g, cin_g, cg, taps)
    if cin_g == 1:  # depthwise: a multiply-reduce, no GEMM to speak of
        wm = jnp.transpose(w[:, 0], (2, 0, 1))  # (T, G, Cg)
        dx = jnp.sum(cols.astype(acc_dtype) * wm.astype(acc_dtype), axis=(1, 3))  # (NS, G)
    elif g == 1:
        dx = lax.dot_general(
            cols.reshape(cols.shape[0], taps * cg),
            jnp.transpose(w[0], (2, 1, 0)).reshape(taps * cg, cin_g),  # (T·Cg, Cin)
            (((1,), (0,)), ((), ())),
            precision=precision,
            preferred_element_type=acc_dtype,
        )  # (NS, Cin)
    else:
        dx = lax.dot_general(
            cols,
            jnp.transpose(w, (0, 3, 2, 1)),  # (G, T, Cg, Cin/G)
            (((1, 3), (1, 2)), ((2,), (0,))),
            precision=precision,
            preferred_element_type=acc_dtype,
        )  # (G, NS, Cin/G)
        dx = jnp.transpose(dx, (1, 0, 2))
    dx = dx.reshape((n,) + geom.input_size + (geom.in_channels,))
    return jnp.moveaxis(dx, -1, 1).astype(out_dtype)


def transpose_weight(
    x: jax.Array, ct: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``w̄`` of shape ``(Cin, Cout/G, *K)`` from ``x`` and ``ȳ``."""
    n = x.shape[0]
    g, cin_g, cg = geom.groups, geom.in_per_group, geom.out_per_group
    taps = math.prod(geom.kernel_size)
    cols = _rows(cotangent_columns(ct, geom), geom)  # (NS, T, G, Cg)
    rows = cols.shape[0]
    if cin_g == 1:
        xs = jnp.moveaxis(x.reshape(n, g, math.prod(geom.input_size)), 1, -1).reshape(rows, 1, g, 1)  # (NS, 1, G, 1)
        dw = jnp.sum(xs.astype(acc_dtype) * cols.astype(acc_dtype), axis=0)  # (T, G, Cg)
        dw = jnp.transpose(dw, (1, 2, 0))  # (G, Cg, T)
    elif g == 1:
        xm = jnp.swapaxes(x.reshape(n, cin_g, math.prod(geom.input_size)), 0, 1).reshape(cin_g, rows)  # (Cin, NS)
        dw = lax.dot_general(
            xm,
            cols.reshape(rows, taps * cg),
            (((1,), (0,)), ((), ())),
            precision=precision,
            preferred_element_type=acc_dtype,
        )  # (Cin, T·Cg)
        dw = jnp.swapaxes(dw.reshape(cin_g, taps, cg), 1, 2)  # (Cin, Cg, T)
    else:
        xm = jnp.transpose(x.reshape(n, g, cin_g, math.prod(geom.input_size)), (1, 2, 0, 3)).reshape(g, cin_g, rows)  # (G, Cin/G, NS)
        dw = lax.dot_general(
            xm,
            cols,
            (((2,), (0,)), ((0,), (2,))),
            precision=precision,
            preferred_element_type=acc_dtype,
        )  # (G, Cin/G, T, Cg)
        dw = jnp.swapaxes(dw, 2, 3)  # (G, Cin/G, Cg, T)
    return dw.reshape((geom.in_channels, cg) + geom.kernel_size).astype(out_dtype)
