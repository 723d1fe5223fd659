"""The "split" lowering: 1d/2d stride-1 layers with one group as one GEMM between two one-axis im2cols.

Along the last spatial axis (``W``) the input is gathered the direct way, along the axis before it (``H``, 2d only)
the output is scattered::

    P[b, ci, n, h, ow] = x_pad[n, ci, h, ow + b·d_W]                          (im2col of x along W)
    Z[a, co, n, h, ow] = Σ_{b, ci} M[(a, co), (b, ci)] · P[b, ci, n, h, ow]   (one GEMM)
    y[n, co, oh, ow]   = Σ_a Z[a, co, n, oh + lo_H − a·d_H, ow]               (col2im along H)

with ``M[(a, co), (b, ci)] = w[ci, co, a, k_W − 1 − b]`` and ``x_pad`` padded along W as the direct convolution's
input (:attr:`~jtconv.geometry.ConvTransposeGeometry.conv_padding`). Per position this keeps ``k_W·Cin + k_H·Cout``
values instead of the matmul lowering's ``k_H·k_W·Cout``, and every step is a GEMM or a fused loop (XLA's stride-1
convolution runs on one core below 128 output channels). In 1d, ``y = M·P``. With the cotangent's im2col along H,
``G[a, co, n, h, ow] = ȳ[n, co, h + a·d_H − lo_H, ow]``::

    M̄ = G · Pᵀ,     P̄ = Mᵀ · G,     x̄[n, ci, h, w] = Σ_b P̄[b, ci, n, h, w + lo_W' − b·d_W]

(``lo_W'``: the low padding of ``x_pad``). With a stride the taps reaching a position depend on its phase, hence
:func:`supports`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import accumulation_dtype, output_dtype, pad, shifted_sum, windows


def supports(geom: ConvTransposeGeometry) -> bool:
    """Whether the split lowering expresses ``geom``: 1d or 2d, stride 1, one group."""
    return geom.ndim <= 2 and all(s == 1 for s in geom.stride) and geom.groups == 1


def input_columns(x: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``P`` as ``(k_W·Cin, N·H·O_W)``: the input's im2col along the last axis."""
    xp = pad(jnp.swapaxes(x, 0, 1), [geom.conv_padding[-1]], x.ndim - 1)  # (Cin, N, [H,] W_pad)
    p = windows(xp, geom.kernel_size[-1], geom.dilation[-1], geom.output_size[-1], axis=x.ndim - 1)
    return p.reshape(geom.kernel_size[-1] * geom.in_channels, -1)  # from (k_W, Cin, N, [H,] O_W)


def cotangent_columns(ct: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``G`` as ``(k_H·Cout, N·H·O_W)``: the cotangent's im2col along H (2d), or the cotangent as ``(Cout, N·O_W)``."""
    ctc = jnp.swapaxes(ct, 0, 1)  # (Cout, N, [O_H,] O_W)
    if geom.ndim == 1:
        return ctc.reshape(geom.out_channels, -1)
    k = geom.kernel_size[0]
    return windows(pad(ctc, [geom.crop[0]]), k, geom.dilation[0], geom.input_size[0], axis=2).reshape(
        k * geom.out_channels, -1
    )


def weight_matrix(weight: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``M[(a, co), (b, ci)] = w[ci, co, a, k_W − 1 − b]`` as ``(k_H·Cout, k_W·Cin)``."""
    w = jnp.flip(weight, axis=-1)
    if geom.ndim == 1:
        return jnp.transpose(w, (1, 2, 0)).reshape(geom.out_channels, -1)  # (co, b, ci)
    w = jnp.transpose(w, (2, 1, 3, 0))  # (a, co, b, ci)
    return w.reshape(geom.kernel_size[0] * geom.out_channels, geom.kernel_size[1] * geom.in_channels)


def split_forward(
    x: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, preferred_element_type=None
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout, *K) → (N, Cout, *O)``: im2col along W, GEMM, col2im along H."""
    acc_dtype = accumulation_dtype(x.dtype, preferred_element_type)
    n = x.shape[0]
    p = input_columns(x, geom)
    z = lax.dot(weight_matrix(weight, geom), p, precision=precision, preferred_element_type=acc_dtype)
    if geom.ndim == 1:
        y = z.reshape(geom.out_channels, n, geom.output_size[0])
    else:
        k, d, (lo, _) = geom.kernel_size[0], geom.dilation[0], geom.crop[0]
        z = z.reshape((k, geom.out_channels, n, geom.input_size[0], geom.output_size[1]))
        y = shifted_sum(z, 2, [a * d - lo for a in range(k)], geom.output_size[0])
    return jnp.swapaxes(y, 0, 1).astype(output_dtype(x.dtype, preferred_element_type))


def transpose_input(
    ct: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``x̄`` of shape ``(N, Cin, *S)``: ``P̄ = Mᵀ·G``, then col2im along W."""
    g = cotangent_columns(ct, geom)
    m = weight_matrix(weight, geom)
    dp = lax.dot_general(m, g, (((0,), (0,)), ((), ())), precision=precision, preferred_element_type=acc_dtype)
    k, d, (low, _) = geom.kernel_size[-1], geom.dilation[-1], geom.conv_padding[-1]
    dp = dp.reshape((k, geom.in_channels, ct.shape[0]) + geom.input_size[:-1] + (geom.output_size[-1],))
    dx = shifted_sum(dp, dp.ndim - 2, [b * d - low for b in range(k)], geom.input_size[-1])
    return jnp.swapaxes(dx, 0, 1).astype(out_dtype)


def transpose_weight(
    x: jax.Array, ct: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``w̄`` of shape ``(Cin, Cout, *K)``: ``M̄ = G·Pᵀ``, :func:`weight_matrix` inverted."""
    g = cotangent_columns(ct, geom)
    p = input_columns(x, geom)
    dm = lax.dot_general(g, p, (((1,), (1,)), ((), ())), precision=precision, preferred_element_type=acc_dtype)
    cin, cout, kw = geom.in_channels, geom.out_channels, geom.kernel_size[-1]
    if geom.ndim == 1:
        w = jnp.transpose(dm.reshape(cout, kw, cin), (2, 0, 1))
    else:
        w = jnp.transpose(dm.reshape(geom.kernel_size[0], cout, kw, cin), (3, 1, 0, 2))
    return jnp.flip(w, axis=-1).astype(out_dtype)
