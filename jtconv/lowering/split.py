"""The "split" lowering: stride-1 layers as one GEMM between two one-axis im2cols.

For a stride-1 layer the matmul lowering's tap products ``Z`` hold ``T·Cout``
values per input position (``T`` kernel taps), and its backward's cotangent
im2col as many again: for 2d k7 that is 49 times the output. The split
lowering factors the kernel window instead. Along the *last* spatial axis
(``W``, gathered) it reads the input the direct way, along the axis before it
(``H``, scattered, 2d only) it writes the output the scatter way::

    P[b, ci, n, h, ow] = x_pad[n, ci, h, ow + b·d_W]                   (im2col of x along W)
    Z[a, co, n, h, ow] = Σ_{b, ci} M[(a, co), (b, ci)] · P[b, ci, n, h, ow]   (one GEMM)
    y[n, co, oh, ow]   = Σ_a Z[a, co, n, oh + lo_H − a·d_H, ow]        (col2im along H)

with ``M[(a, co), (b, ci)] = w[ci, co, a, k_W − 1 − b]`` (the W taps flipped,
because gathering reads the input in the opposite order to scattering) and
``x_pad`` the input padded along W by ``d_W·(k_W − 1) − lo_W`` at the low
end. Per position this keeps ``k_W·Cin + k_H·Cout`` values instead of
``k_H·k_W·Cout``, and every step is a GEMM or a fused loop that both cores
run (XLA's stride-1 convolution runs on one core below 128 output channels).
In 1d there is no H axis: ``y = M·P`` directly.

The transposes reuse the same two one-axis im2cols. With ``G`` the cotangent's
im2col along H, ``G[a, co, n, h, ow] = ȳ[n, co, h + a·d_H − lo_H, ow]``::

    M̄  = G · Pᵀ                                   (weight gradient, one GEMM)
    P̄  = Mᵀ · G                                   (one GEMM)
    x̄[n, ci, h, w] = Σ_b P̄[b, ci, n, h, w + lo_W' − b·d_W]   (col2im of P̄ along W)

where ``lo_W' = d_W·(k_W − 1) − lo_W``. Only 1d/2d stride-1 layers with one group
are expressed this way (:func:`supports`): with a stride, the taps that reach
an output position along the gathered axis depend on its phase. The
``"split"`` algorithm runs the matmul lowering for every other layer.

The one-axis im2cols are gathers (:func:`jtconv.lowering.common.windows`), not stacks of slices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import accumulation_dtype, output_dtype, shifted_sum, windows


def supports(geom: ConvTransposeGeometry) -> bool:
    """Whether the split lowering expresses ``geom``: 1d or 2d, stride 1, one group."""
    return geom.ndim <= 2 and all(s == 1 for s in geom.stride) and geom.groups == 1


def _w_padding(geom: ConvTransposeGeometry) -> tuple[int, int]:
    """Low and high padding of the input along W so that ``P`` reads ``ow + b·d``."""
    k, d, (lo, _) = geom.kernel_size[-1], geom.dilation[-1], geom.crop[-1]
    low = d * (k - 1) - lo
    high = geom.output_size[-1] + d * (k - 1) - low - geom.input_size[-1]
    return low, high


def _channels_major(a: jax.Array) -> jax.Array:
    """``(N, C, *S)`` → ``(C, N, *S)``."""
    return jnp.swapaxes(a, 0, 1)


def input_columns(x: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``P`` as ``(k_W·Cin, N·H·O_W)``: the input's im2col along the last axis."""
    k, d = geom.kernel_size[-1], geom.dilation[-1]
    out_w = geom.output_size[-1]
    low, high = _w_padding(geom)
    config = [(0, 0, 0)] * (x.ndim - 1) + [(low, high, 0)]
    xp = lax.pad(_channels_major(x), jnp.zeros((), x.dtype), config)  # (Cin, N, [H,] W_pad)
    p = windows(xp, k, d, out_w, axis=x.ndim - 1)  # (k_W, Cin, N, [H,] O_W)
    return p.reshape(k * geom.in_channels, -1)


def cotangent_columns(ct: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``G`` as ``(k_H·Cout, N·H·O_W)``: the cotangent's im2col along H (2d),
    or the cotangent itself as ``(Cout, N·O_W)`` (1d)."""
    ctc = _channels_major(ct)  # (Cout, N, [O_H,] O_W)
    if geom.ndim == 1:
        return ctc.reshape(geom.out_channels, -1)
    k, d, (lo, _) = geom.kernel_size[0], geom.dilation[0], geom.crop[0]
    rows = geom.input_size[0]
    high = rows + d * (k - 1) - lo - geom.output_size[0]
    ctp = lax.pad(ctc, jnp.zeros((), ct.dtype), [(0, 0, 0), (0, 0, 0), (lo, high, 0), (0, 0, 0)])
    return windows(ctp, k, d, rows, axis=2).reshape(k * geom.out_channels, -1)


def weight_matrix(weight: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``M[(a, co), (b, ci)] = w[ci, co, a, k_W − 1 − b]`` as ``(k_H·Cout, k_W·Cin)``."""
    w = jnp.flip(weight, axis=-1)
    if geom.ndim == 1:
        return jnp.transpose(w, (1, 2, 0)).reshape(geom.out_channels, -1)  # (co, b, ci)
    w = jnp.transpose(w, (2, 1, 3, 0))  # (a, co, b, ci)
    return w.reshape(geom.kernel_size[0] * geom.out_channels, geom.kernel_size[1] * geom.in_channels)


def _weight_from_matrix(m: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """Inverse of :func:`weight_matrix`."""
    cin, cout = geom.in_channels, geom.out_channels
    kw = geom.kernel_size[-1]
    if geom.ndim == 1:
        w = jnp.transpose(m.reshape(cout, kw, cin), (2, 0, 1))
    else:
        w = jnp.transpose(m.reshape(geom.kernel_size[0], cout, kw, cin), (3, 1, 0, 2))
    return jnp.flip(w, axis=-1)


def _scatter_rows(z: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``y[co, n, oh, ow] = Σ_a Z[a, co, n, oh + lo_H − a·d_H, ow]`` from ``Z`` as ``(k_H, Cout, N, H, O_W)``."""
    k, d, (lo, _) = geom.kernel_size[0], geom.dilation[0], geom.crop[0]
    return shifted_sum(z, 2, [a * d - lo for a in range(k)], geom.output_size[0])


def _scatter_columns(dp: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``x̄[ci, n, h, w] = Σ_b P̄[b, ci, n, h, w + low − b·d_W]`` (the transpose of
    :func:`input_columns`) from ``P̄`` as ``(k_W, Cin, N, [H,] O_W)``."""
    k, d = geom.kernel_size[-1], geom.dilation[-1]
    low, _ = _w_padding(geom)
    return shifted_sum(dp, dp.ndim - 2, [b * d - low for b in range(k)], geom.input_size[-1])


def split_forward(
    x: jax.Array,
    weight: jax.Array,
    geom: ConvTransposeGeometry,
    *,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout, *K) → (N, Cout, *O)``: im2col along W, GEMM, col2im along H."""
    acc_dtype = accumulation_dtype(x.dtype, preferred_element_type)
    n = x.shape[0]
    p = input_columns(x, geom)
    z = lax.dot(weight_matrix(weight, geom), p, precision=precision, preferred_element_type=acc_dtype)
    if geom.ndim == 1:
        y = z.reshape(geom.out_channels, n, geom.output_size[0])
    else:
        z = z.reshape((geom.kernel_size[0], geom.out_channels, n, geom.input_size[0], geom.output_size[1]))
        y = _scatter_rows(z, geom)
    return _channels_major(y).astype(output_dtype(x.dtype, preferred_element_type))


def transpose_input(
    ct: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``x̄`` of shape ``(N, Cin, *S)``: ``P̄ = Mᵀ·G``, then col2im along W."""
    n = ct.shape[0]
    g = cotangent_columns(ct, geom)
    m = weight_matrix(weight, geom)
    dp = lax.dot_general(m, g, (((0,), (0,)), ((), ())), precision=precision, preferred_element_type=acc_dtype)
    rows = geom.input_size[:-1]  # () in 1d, (H,) in 2d
    dp = dp.reshape((geom.kernel_size[-1], geom.in_channels, n) + rows + (geom.output_size[-1],))
    return _channels_major(_scatter_columns(dp, geom)).astype(out_dtype)


def transpose_weight(
    x: jax.Array, ct: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``w̄`` of shape ``(Cin, Cout, *K)``: ``M̄ = G·Pᵀ``."""
    g = cotangent_columns(ct, geom)
    p = input_columns(x, geom)
    dm = lax.dot_general(g, p, (((1,), (1,)), ((), ())), precision=precision, preferred_element_type=acc_dtype)
    return _weight_from_matrix(dm, geom).astype(out_dtype)
