"""The "tiled" lowering: layers whose kernels tile their strides, as one GEMM and reshapes.

Along one spatial axis with stride ``s``, dilation ``d`` and kernel size ``k``,
tap ``t`` of input position ``i`` lands at full (uncropped) output position
``i·s + t·d``. When the kernel's span fits in the stride,
``d·(k − 1) + 1 ≤ s`` (``k = s``: U-Net's ``k2 s2``, PyTorch's 3d
``k16 s16``), every input position owns the disjoint block ``[i·s, i·s + s)``
of the full output, and the layer is a GEMM followed by a depth-to-space
reshape (as in sub-pixel convolution)::

    Z[g, n, i, co, t] = Σ_ci  x[n, g·Cin/G + ci, i] · w[g·Cin/G + ci, co, t]    (one GEMM per group)
    full[n, g·Cg + co, i·s + t·d] = Z[g, n, i, co, t]                         (depth-to-space; 0 between taps)
    y = full[lo : lo + out]

with ``lo`` PyTorch's ``padding`` (the low crop) and ``out`` the output
size; positions at or past ``ΠS·s`` (``output_padding`` beyond the crop) get
no contribution and are zero. When the kernel covers ``m`` whole strides
(``d = 1``, ``k = m·s``: FCN-32s' ``k64 s32``, FCN-8s' ``k16 s8``), tap
``t = q·s + r`` lands in block ``i + q`` at phase ``r``, and the
depth-to-space is followed by the overlap-add of ``m`` blocks per axis,
``full_blocks[b] = Σ_q Z[b − q, q]`` (:func:`jtconv.lowering.taps.skew_sum`:
one pad, reshapes and one reduction, for any ``m``). All spatial axes at once:
the GEMM is ``(N·ΠS, Cin/G) × (Cin/G, Cg·Πk)``, the depth-to-space one
transposing copy that keeps the minor kernel axis minor. The program has the
same few operations for every kernel size (:mod:`jtconv.lowering.taps`).

The transposes are one GEMM each over the cotangent's im2col in the tap
layout, ``C[g, n, i, co, t] = ȳ_full[n, g·Cg + co, i·s + t·d]``
(:func:`jtconv.lowering.taps.cotangent_taps`: for disjoint blocks a reshape
of the uncropped cotangent, otherwise one gather)::

    x̄[n, g·Cin/G + ci, i] = Σ_{co, t} w[g·Cin/G + ci, co, t] · C[g, n, i, co, t]
    w̄[g·Cin/G + ci, co, t] = Σ_{n, i} x[n, g·Cin/G + ci, i] · C[g, n, i, co, t]

``C`` is ordered ``(co, t)`` like the weight, so neither GEMM copies the
weight. Groups are a batch axis of the GEMMs. With one input channel per group
(depthwise) the contraction has length one: the forward is a broadcast
product, the transposes are products summed over the channel-and-tap or the
batch-and-position axes (fused loops, no GEMM).

For ``k = m·s`` the tap products hold ``m^D`` values per output value (``D``
spatial axes), so ``m = 1`` (or ``k < s``) is where this lowering is
cheapest. These functions are ordinary JAX code, so they are differentiable
themselves.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.taps import conv_transpose_taps, cotangent_taps, grouped_gemm


def supports(geom: ConvTransposeGeometry) -> bool:
    """Whether every axis's kernel tiles its stride: its span fits in one stride
    (``d·(k − 1) + 1 ≤ s``), or it covers a whole number of strides (``d = 1``,
    ``k = m·s``)."""
    return all(
        d * (k - 1) + 1 <= s or (d == 1 and k % s == 0) for k, s, d in zip(geom.kernel_size, geom.stride, geom.dilation)
    )


def _tap_shape(geom: ConvTransposeGeometry) -> tuple[int, ...]:
    """``(S₁, K₁, …, Sₙ, Kₙ)``."""
    return sum(((i, k) for i, k in zip(geom.input_size, geom.kernel_size)), ())


def _check(geom: ConvTransposeGeometry) -> None:
    if not supports(geom):
        raise ValueError(
            "the tiled lowering needs every kernel to tile its stride (d·(k − 1) + 1 ≤ s, or d = 1 and k a "
            f"multiple of s), got kernel_size={geom.kernel_size}, stride={geom.stride}, dilation={geom.dilation}"
        )


def tiled_forward(
    x: jax.Array,
    weight: jax.Array,
    geom: ConvTransposeGeometry,
    *,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: one GEMM, a depth-to-space
    (plus, for ``k = m·s``, the overlap-add of ``m`` blocks per axis) and the crop."""
    _check(geom)
    return conv_transpose_taps(x, weight, geom, precision=precision, preferred_element_type=preferred_element_type)


forward = tiled_forward


def _input_columns(x: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``(N, Cin, *S)`` → ``(G, Cin/G, N·ΠS)``."""
    n, g, cin_g = x.shape[0], geom.groups, geom.in_per_group
    xg = x.reshape(n, g, cin_g, math.prod(geom.input_size))
    return jnp.transpose(xg, (1, 2, 0, 3)).reshape(g, cin_g, n * math.prod(geom.input_size))


def _depthwise_input(x: jax.Array, geom: ConvTransposeGeometry, dtype) -> jax.Array:
    """``(N, Cin, *S)`` → ``(N, G, 1, S₁, 1, …, Sₙ, 1)`` in ``dtype``: broadcasts against the tap layout."""
    return x.astype(dtype).reshape((x.shape[0], geom.groups, 1) + sum(((i, 1) for i in geom.input_size), ()))


def _depthwise_weight(weight: jax.Array, geom: ConvTransposeGeometry, dtype) -> jax.Array:
    """``(G, Cg, *K)`` → ``(1, G, Cg, 1, K₁, …, 1, Kₙ)`` in ``dtype``: broadcasts against the tap layout."""
    shape = (1, geom.groups, geom.out_per_group) + sum(((1, k) for k in geom.kernel_size), ())
    return weight.astype(dtype).reshape(shape)


def _cotangent_rows(ct: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``C`` as ``(G, N·ΠS, Cg·ΠK)``: the tap layout transposed, keeping the minor kernel axis in place."""
    n, g, cg, ndim = ct.shape[0], geom.groups, geom.out_per_group, geom.ndim
    c = cotangent_taps(ct, geom).reshape((n, g, cg) + _tap_shape(geom))
    order = (1, 0) + tuple(3 + 2 * a for a in range(ndim)) + (2,) + tuple(4 + 2 * a for a in range(ndim))
    rows = n * math.prod(geom.input_size)
    return jnp.transpose(c, order).reshape(g, rows, cg * math.prod(geom.kernel_size))


def transpose_input(
    ct: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``x̄`` of shape ``(N, Cin, *S)``: ``x̄ = w · C`` per group (depthwise: a product
    summed over the output channels and the taps)."""
    _check(geom)
    n, g, cin_g, cg, ndim = ct.shape[0], geom.groups, geom.in_per_group, geom.out_per_group, geom.ndim
    if cin_g == 1:
        c = cotangent_taps(ct, geom).astype(acc_dtype).reshape((n, g, cg) + _tap_shape(geom))
        channels_and_taps = (2,) + tuple(4 + 2 * a for a in range(ndim))
        dx = jnp.sum(c * _depthwise_weight(weight, geom, acc_dtype), axis=channels_and_taps)  # (N, G, *S)
        return dx.reshape((n, geom.in_channels) + geom.input_size).astype(out_dtype)
    w = weight.reshape(g, cin_g, cg * math.prod(geom.kernel_size))
    dx = grouped_gemm(w, _cotangent_rows(ct, geom), (2, 2), precision=precision, preferred_element_type=acc_dtype)
    dx = dx.reshape((g, cin_g, n) + geom.input_size)  # from (G, Cin/G, N·S)
    dx = jnp.transpose(dx, (2, 0, 1) + tuple(range(3, 3 + ndim)))
    return dx.reshape((n, geom.in_channels) + geom.input_size).astype(out_dtype)


def transpose_weight(
    x: jax.Array, ct: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``w̄`` of shape ``(Cin, Cout/G, *K)``: ``w̄ = x · C`` per group (depthwise: a product
    summed over the batch and the positions)."""
    _check(geom)
    n, g, cin_g, cg, ndim = x.shape[0], geom.groups, geom.in_per_group, geom.out_per_group, geom.ndim
    if cin_g == 1:
        c = cotangent_taps(ct, geom).astype(acc_dtype).reshape((n, g, cg) + _tap_shape(geom))
        batch_and_positions = (0,) + tuple(3 + 2 * a for a in range(ndim))
        dw = jnp.sum(c * _depthwise_input(x, geom, acc_dtype), axis=batch_and_positions)  # (G, Cg, *K)
        return dw.reshape((geom.in_channels, cg) + geom.kernel_size).astype(out_dtype)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    dw = grouped_gemm(_input_columns(x, geom), _cotangent_rows(ct, geom), (2, 1), **options)
    return dw.reshape((geom.in_channels, cg) + geom.kernel_size).astype(out_dtype)
