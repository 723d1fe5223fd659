"""im2col and col2im over kernel taps in programs whose size does not depend on the kernel.

Per spatial axis with stride ``s``, dilation ``d`` and kernel size ``k``, tap ``t`` of input position ``i`` lands at
full (uncropped) output position ``i·s + t·d``. Writing ``t·d = q·s + r`` (``0 ≤ r < s``), it lands at block
``i + q``, phase ``r``, with ``q < Q = ⌊d·(k − 1) / s⌋ + 1``. Padding the tap axis with ``d − 1`` zeros between taps
and zeros up to ``Q·s`` entries, then reshaping it to ``(Q, s)``, puts every tap at its ``(q, r)`` with no gather;
the col2im is then, per axis, an overlap-add of ``Q`` copies shifted by whole blocks. Each function has a fixed
number of operations per spatial axis (pads, reshapes, gathers with index arrays built at trace time), where the
per-tap forms of :mod:`~jtconv.lowering.matmul` and :mod:`~jtconv.lowering.matmul_transpose` have ``Πk`` pieces.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.axes import block_shifts
from jtconv.lowering.common import accumulation_dtype, grouped_gemm, output_dtype, pad

BOUNDED_MIN_TAPS = 256
"""From this many kernel taps (``Πk``) on, the matmul forward and its transposes' im2col use
:func:`conv_transpose_taps` and :func:`cotangent_columns`. The per-tap programs compile in time growing with ``Πk``
(forward + backward about 5 s at 256 taps, 18 s at 1,024 on a 2-core CPU), the bounded ones in a fraction of a
second, but run 2–10× slower (``benchmarks/RESULTS_compile.md``)."""

MAX_SHIFT_TERMS = 16
""":func:`col2im` sums up to this many shifted copies (``ΠQ``) as pads in one fused loop; beyond, it runs one
:func:`skew_sum` per axis, whose reductions XLA's CPU backend runs several times slower but whose program stays the
same size (``python benchmarks/compile_time.py``)."""


def uses_bounded_taps(geom: ConvTransposeGeometry) -> bool:
    """Whether the matmul lowering runs ``geom`` through this module (:data:`BOUNDED_MIN_TAPS`)."""
    return math.prod(geom.kernel_size) >= BOUNDED_MIN_TAPS


def _tap_padding(geom: ConvTransposeGeometry) -> list[tuple[int, int, int]]:
    """Per axis, the ``lax.pad`` config taking a tap axis of ``k`` entries to ``Q·s``, tap ``t`` at ``t·d``."""
    return [
        (0, q * s - d * (k - 1) - 1, d - 1)
        for q, k, s, d in zip(block_shifts(geom), geom.kernel_size, geom.stride, geom.dilation)
    ]


def skew_sum(parts: jax.Array, axis: int, step: int = 1) -> jax.Array:
    """``out[…, j, …] = Σ_q parts[…, q, j − q·step, …]``: the ``Q`` slices along ``axis`` summed, slice ``q``
    shifted by ``q·step`` along ``axis + 1`` (length ``S``); ``j < S + (Q − 1)·step`` replaces both axes.

    Each slice is padded to ``S + Q·step`` positions and the ``(Q, S + Q·step)`` block read as rows of
    ``S + (Q − 1)·step``, so that row ``q`` starts ``q·step`` later: one pad, reshapes and a reduction, for any ``Q``.
    """
    shape = parts.shape
    count, length = shape[axis], shape[axis + 1]
    rest = shape[axis + 2 :]
    if count == 1:
        return parts.reshape(shape[:axis] + shape[axis + 1 :])
    lead, inner = shape[:axis], math.prod(rest)
    padded = pad(parts.reshape(lead + (count, length, inner)), [(0, count * step)], len(lead) + 1)
    row = length + (count - 1) * step
    flat = padded.reshape(lead + (count * (length + count * step) * inner,))
    skewed = flat[..., : count * row * inner].reshape(lead + (count, row, inner))
    return jnp.sum(skewed, axis=len(lead)).reshape(lead + (row,) + rest)


def shift_products(x: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, precision, acc_dtype) -> jax.Array:
    """The tap products in the shift layout ``(N, Cout, Q₁, S₁, s₁, …, Qₙ, Sₙ, sₙ)``, per axis::

        Z[n, g·Cg + co, q, i, r] = Σ_ci x[n, g·Cin/G + ci, i] · w[g·Cin/G + ci, co, t]   where t·d = q·s + r

    (zero where no tap has that ``(q, r)``): one GEMM ``(N·ΠS, Cin/G) × (Cin/G, Cg·Πk)`` per group, the tap axes
    padded to ``Q·s`` and one transposing copy; with one input channel per group a broadcast product.
    """
    n, g, cin_g, cg, ndim = x.shape[0], geom.groups, geom.in_per_group, geom.out_per_group, geom.ndim
    shifts = block_shifts(geom)
    layout = sum(((q, i, s) for q, i, s in zip(shifts, geom.input_size, geom.stride)), ())
    if cin_g == 1:
        wp = pad(weight.astype(acc_dtype), _tap_padding(geom))
        wp = wp.reshape((1, g, cg) + sum(((q, 1, s) for q, s in zip(shifts, geom.stride)), ()))
        xs = x.astype(acc_dtype).reshape((n, g, 1) + sum(((1, i, 1) for i in geom.input_size), ()))
        return (xs * wp).reshape((n, geom.out_channels) + layout)
    positions = math.prod(geom.input_size)
    xt = jnp.transpose(x.reshape(n, g, cin_g, positions), (1, 0, 3, 2)).reshape(g, n * positions, cin_g)
    w = weight.reshape(g, cin_g, cg * math.prod(geom.kernel_size))
    z = grouped_gemm(xt, w, (2, 1), precision=precision, preferred_element_type=acc_dtype)
    z = z.reshape((g, n) + geom.input_size + (cg,) + geom.kernel_size)  # from (G, N·S, Cg·K)
    if any(c != (0, 0, 0) for c in _tap_padding(geom)):
        z = pad(z, _tap_padding(geom), 3 + ndim)
    z = z.reshape((g, n) + geom.input_size + (cg,) + sum(((q, s) for q, s in zip(shifts, geom.stride)), ()))
    # (G, N, S₁..Sₙ, Cg, Q₁, s₁, …, Qₙ, sₙ) → (N, G, Cg, Q₁, S₁, s₁, …, Qₙ, Sₙ, sₙ)
    order = (1, 0, 2 + ndim) + sum(((3 + ndim + 2 * a, 2 + a, 4 + ndim + 2 * a) for a in range(ndim)), ())
    return jnp.transpose(z, order).reshape((n, geom.out_channels) + layout)


def col2im(z: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``y[n, c, o] = Σ_{i, t : i·s + t·d − lo = o} Z[n, c, i, t]`` from ``Z`` in the shift layout of
    :func:`shift_products`; returns ``(N, C, *O)``.

    Per axis, block ``b`` collects ``Σ_q Z[…, q, b − q, r, …]`` (one padded copy per shift combination while there
    are at most :data:`MAX_SHIFT_TERMS`, else one :func:`skew_sum` per axis), blocks and phases merge into
    ``(S + Q − 1)·s`` positions, and the crop keeps ``[lo, lo + out)`` (zeros past the end: ``output_padding``).
    """
    n, c, ndim = z.shape[0], z.shape[1], geom.ndim
    shifts = block_shifts(geom)
    if math.prod(shifts) <= MAX_SHIFT_TERMS:  # (N, C, Q₁, S₁, s₁, …) → (N, C, S₁ + Q₁ − 1, s₁, …)
        copies = (
            pad(
                z[(slice(None), slice(None)) + sum(((q, slice(None), slice(None)) for q in qs), ())],
                sum((((q, count - 1 - q), (0, 0)) for q, count in zip(qs, shifts)), ()),
            )
            for qs in itertools.product(*(range(count) for count in shifts))
        )
        z = functools.reduce(operator.add, copies)
    else:
        for a in range(ndim):  # z: (N, C, L₁, s₁, …, L_a−1, s_a−1, Q_a, S_a, s_a, …)
            z = skew_sum(z, 2 + 2 * a)
    blocks = z.shape[2:]
    full = z.reshape((n, c) + tuple(blocks[2 * a] * blocks[2 * a + 1] for a in range(ndim)))
    return pad(
        full, [(-lo, lo + out - length) for length, (lo, _), out in zip(full.shape[2:], geom.crop, geom.output_size)]
    )


def conv_transpose_taps(
    x: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, preferred_element_type=None
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: :func:`shift_products` then :func:`col2im`."""
    acc_dtype = accumulation_dtype(x.dtype, preferred_element_type)
    y = col2im(shift_products(x, weight, geom, precision, acc_dtype), geom)
    return y.astype(output_dtype(x.dtype, preferred_element_type))


def _tap_positions(geom: ConvTransposeGeometry, order: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Per axis ``a``, the index array ``i_a·s_a + t_a·d_a`` over the ``2n`` axes ``(S₁..Sₙ, K₁..Kₙ)`` permuted by
    ``order`` (``order[j]`` names the axis at place ``j``)."""
    ndim = geom.ndim
    index = []
    for a, (size, k, s, d) in enumerate(zip(geom.input_size, geom.kernel_size, geom.stride, geom.dilation)):
        i_shape, t_shape = [1] * (2 * ndim), [1] * (2 * ndim)
        i_shape[order.index(a)], t_shape[order.index(ndim + a)] = size, k
        index.append(np.arange(size).reshape(i_shape) * s + np.arange(k).reshape(t_shape) * d)
    return tuple(index)


def cotangent_columns(ct: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``C[g, n, *i, *t, co] = ȳ_full[n, g·Cg + co, *(i·s + t·d)]``, shape ``(G, N, *S, *K, Cg)``: one gather."""
    n, g, cg, ndim = ct.shape[0], geom.groups, geom.out_per_group, geom.ndim
    ctg = jnp.transpose(ct.reshape((n, g, cg) + geom.output_size), (1, 0, *range(3, 3 + ndim), 2))  # (G, N, *O, Cg)
    index = _tap_positions(geom, tuple(range(2 * ndim)))
    return pad(ctg, geom.crop).at[(slice(None), slice(None)) + index].get(mode="promise_in_bounds")


def cotangent_taps(ct: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``C[n, c, i₁, t₁, …, iₙ, tₙ] = ȳ_full[n, c, *(i·s + t·d)]``, shape ``(N, Cout, S₁, K₁, …, Sₙ, Kₙ)``.

    The cotangent, uncropped to ``(S + Q − 1)·s`` positions per axis, is reshaped into blocks of ``s``; input
    position ``i`` reads blocks ``i … i + Q − 1`` (for ``Q = 1`` the reshape itself), and the taps are every
    ``d``-th of their ``Q·s`` positions. The ``ΠQ`` block windows are slices while there are at most
    :data:`MAX_SHIFT_TERMS`, otherwise the whole array is one gather.
    """
    n, c, ndim = ct.shape[0], ct.shape[1], geom.ndim
    shifts, sizes, strides = block_shifts(geom), geom.input_size, geom.stride
    if math.prod(shifts) > MAX_SHIFT_TERMS:
        index = _tap_positions(geom, sum(((a, ndim + a) for a in range(ndim)), ()))
        return pad(ct, geom.crop).at[(slice(None), slice(None)) + index].get(mode="promise_in_bounds")
    full = pad(
        ct,
        [
            (lo, (size + q - 1) * s - lo - out)
            for size, q, s, (lo, _), out in zip(sizes, shifts, strides, geom.crop, geom.output_size)
        ],
    )
    blocks = full.reshape((n, c) + sum(((i + q - 1, s) for i, q, s in zip(sizes, shifts, strides)), ()))
    if math.prod(shifts) > 1:
        windows = []
        for qs in itertools.product(*(range(count) for count in shifts)):
            starts = (0, 0) + sum(((q, 0) for q in qs), ())
            limits = (n, c) + sum(((q + i, s) for q, i, s in zip(qs, sizes, strides)), ())
            windows.append(lax.slice(blocks, starts, limits))
        stacked = jnp.stack(windows, axis=2).reshape((n, c) + shifts + sum(zip(sizes, strides), ()))
        # (N, C, Q₁..Qₙ, S₁, s₁, …, Sₙ, sₙ) → (N, C, S₁, Q₁, s₁, …, Sₙ, Qₙ, sₙ)
        order = (0, 1) + sum(((2 + ndim + 2 * a, 2 + a, 3 + ndim + 2 * a) for a in range(ndim)), ())
        blocks = jnp.transpose(stacked, order)
    blocks = blocks.reshape((n, c) + sum(((i, q * s) for i, q, s in zip(sizes, shifts, strides)), ()))
    if all(q * s == k for q, s, k in zip(shifts, strides, geom.kernel_size)):  # then d = 1: every position a tap
        return blocks
    spans = (d * (k - 1) + 1 for k, d in zip(geom.kernel_size, geom.dilation))
    limits = (n, c) + sum(zip(sizes, spans), ())
    return lax.slice(blocks, (0,) * blocks.ndim, limits, (1, 1) + sum(((1, d) for d in geom.dilation), ()))
