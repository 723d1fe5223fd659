"""The "tiled" lowering: layers whose kernels tile their strides, as one GEMM and reshapes.

Along one axis, tap ``t`` of input position ``i`` lands at full output position ``i·s + t·d``. When the kernel's
span fits in the stride, ``d·(k − 1) + 1 ≤ s`` (U-Net's ``k2 s2``), every input position owns the disjoint block
``[i·s, i·s + s)`` and the layer is a GEMM and a depth-to-space::

    Z[g, n, i, co, t] = Σ_ci  x[n, g·Cin/G + ci, i] · w[g·Cin/G + ci, co, t]    (one GEMM per group)
    full[n, g·Cg + co, i·s + t·d] = Z[g, n, i, co, t],     y = full[lo : lo + out]

(zeros between taps, and past ``ΠS·s`` where ``output_padding`` reaches beyond the crop). When the kernel covers
``m`` whole strides (``d = 1``, ``k = m·s``: FCN-32s' ``k64 s32``), tap ``t = q·s + r`` lands in block ``i + q``
and an overlap-add of ``m`` blocks per axis follows (:func:`jtconv.lowering.taps.skew_sum`). The transposes are
one GEMM each over the cotangent's im2col in the tap layout, ``C[g, n, i, co, t] = ȳ_full[n, g·Cg + co, i·s + t·d]``
(:func:`jtconv.lowering.taps.cotangent_taps`)::

    x̄[n, g·Cin/G + ci, i] = Σ_{co, t} w[g·Cin/G + ci, co, t] · C[g, n, i, co, t]
    w̄[g·Cin/G + ci, co, t] = Σ_{n, i} x[n, g·Cin/G + ci, i] · C[g, n, i, co, t]

``C`` is ordered ``(co, t)`` like the weight, so neither GEMM copies the weight; depthwise layers (one input channel
per group) use broadcast products summed instead of GEMMs. The program has the same few operations for every kernel
size; ``k ≤ s`` (``m = 1``) is where the lowering is cheapest.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import group_columns, grouped_gemm
from jtconv.lowering.taps import conv_transpose_taps, cotangent_taps


def supports(geom: ConvTransposeGeometry) -> bool:
    """Whether every axis's kernel tiles its stride: its span fits in one stride (``d·(k − 1) + 1 ≤ s``), or it
    covers a whole number of strides (``d = 1``, ``k = m·s``)."""
    return all(
        d * (k - 1) + 1 <= s or (d == 1 and k % s == 0) for k, s, d in zip(geom.kernel_size, geom.stride, geom.dilation)
    )


def _tap_shape(geom: ConvTransposeGeometry) -> tuple[int, ...]:
    """``(S₁, K₁, …, Sₙ, Kₙ)``."""
    return sum(((i, k) for i, k in zip(geom.input_size, geom.kernel_size)), ())


def tiled_forward(
    x: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, preferred_element_type=None
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: one GEMM, a depth-to-space (for ``k = m·s``, with the
    overlap-add of ``m`` blocks per axis) and the crop."""
    return conv_transpose_taps(x, weight, geom, precision=precision, preferred_element_type=preferred_element_type)


def _cotangent_rows(ct: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``C`` as ``(G, N·ΠS, Cg·ΠK)``: the tap layout transposed, keeping the minor kernel axis in place."""
    n, g, cg, ndim = ct.shape[0], geom.groups, geom.out_per_group, geom.ndim
    c = cotangent_taps(ct, geom).reshape((n, g, cg) + _tap_shape(geom))
    order = (1, 0) + tuple(3 + 2 * a for a in range(ndim)) + (2,) + tuple(4 + 2 * a for a in range(ndim))
    return jnp.transpose(c, order).reshape(g, n * math.prod(geom.input_size), cg * math.prod(geom.kernel_size))


def transpose_input(
    ct: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``x̄`` of shape ``(N, Cin, *S)``: ``x̄ = w · C`` per group (depthwise: a product summed over the output
    channels and the taps)."""
    n, g, cin_g, cg, ndim = ct.shape[0], geom.groups, geom.in_per_group, geom.out_per_group, geom.ndim
    if cin_g == 1:
        c = cotangent_taps(ct, geom).astype(acc_dtype).reshape((n, g, cg) + _tap_shape(geom))
        w = weight.astype(acc_dtype).reshape((1, g, cg) + sum(((1, k) for k in geom.kernel_size), ()))
        dx = jnp.sum(c * w, axis=(2,) + tuple(4 + 2 * a for a in range(ndim)))  # (N, G, *S)
        return dx.reshape((n, geom.in_channels) + geom.input_size).astype(out_dtype)
    w = weight.reshape(g, cin_g, cg * math.prod(geom.kernel_size))
    dx = grouped_gemm(w, _cotangent_rows(ct, geom), (2, 2), precision=precision, preferred_element_type=acc_dtype)
    dx = jnp.transpose(dx.reshape((g, cin_g, n) + geom.input_size), (2, 0, 1) + tuple(range(3, 3 + ndim)))
    return dx.reshape((n, geom.in_channels) + geom.input_size).astype(out_dtype)


def transpose_weight(
    x: jax.Array, ct: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``w̄`` of shape ``(Cin, Cout/G, *K)``: ``w̄ = x · C`` per group (depthwise: a product summed over the batch
    and the positions)."""
    n, g, cin_g, cg, ndim = x.shape[0], geom.groups, geom.in_per_group, geom.out_per_group, geom.ndim
    if cin_g == 1:
        c = cotangent_taps(ct, geom).astype(acc_dtype).reshape((n, g, cg) + _tap_shape(geom))
        xs = x.astype(acc_dtype).reshape((n, g, 1) + sum(((i, 1) for i in geom.input_size), ()))
        dw = jnp.sum(c * xs, axis=(0,) + tuple(3 + 2 * a for a in range(ndim)))  # (G, Cg, *K)
        return dw.reshape((geom.in_channels, cg) + geom.kernel_size).astype(out_dtype)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    dw = grouped_gemm(group_columns(x, geom), _cotangent_rows(ct, geom), (2, 1), **options)
    return dw.reshape((geom.in_channels, cg) + geom.kernel_size).astype(out_dtype)
