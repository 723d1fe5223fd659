"""im2col and col2im over kernel taps with a program size independent of the tap count.

The matmul lowering's col2im and its transposes' im2col are written as one
slice (or pad) per kernel tap, so the XLA program has ``Πk`` pieces per layer
and its compile time grows with them (FCN-32s' ``k64 s32`` has 4,096 taps). The
functions here compute the same arrays with a fixed number of operations per
spatial axis: gathers with index arrays built by numpy at trace time, pads
and reshapes.

Per spatial axis with stride ``s``, dilation ``d`` and kernel size ``k``, tap
``t`` of input position ``i`` lands at full (uncropped) output position
``i·s + t·d``. Writing ``t·d = q·s + r`` (``0 ≤ r < s``), it lands at block
``i + q``, phase ``r``: ``q < Q = ⌊d·(k − 1) / s⌋ + 1`` (the block *shifts*).
Padding the tap axis with ``d − 1`` zeros between taps and zeros up to ``Q·s``
entries, then reshaping it to ``(Q, s)``, puts every tap at its ``(q, r)``
with no gather. The col2im is then, per axis, a sum of ``Q`` copies shifted
by whole blocks (an overlap-add): for few shift combinations one padded copy
each, otherwise :func:`skew_sum`, one pad, reshapes and one reduction for
any ``Q``.

Replacements for existing functions (same results; the tests compare them
exactly, on integer-valued data where sums are involved):

* :func:`shift_products` + :func:`col2im` (together :func:`conv_transpose_taps`):
  ``matmul.tap_products`` / ``matmul.depthwise_term`` with
  ``matmul.interleave_phases`` and the crop, i.e. ``matmul.matmul_forward``;
* :func:`cotangent_columns`: ``matmul_transpose.cotangent_columns``;
* :func:`shift_windows`: ``phase._shift_windows``;
* :func:`arithmetic_shifted_sum`: ``common.shifted_sum`` whenever its starts
  form an arithmetic progression (``split._scatter_rows``,
  ``split._scatter_columns``, the shift sums of ``phase.transpose_input``).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import accumulation_dtype, output_dtype

BOUNDED_MIN_TAPS = 256
"""From this many kernel taps (``Πk``) on, the matmul lowering's forward and its
transposes' im2col use this module's bounded forms (:func:`conv_transpose_taps`,
:func:`cotangent_columns`) instead of one slice per tap. The per-tap programs
compile in time growing with ``Πk`` (forward + backward about 5 s at 256 taps
and 18 s at 1,024 on a 2-core CPU), the bounded ones in a fraction of a second
for every kernel, but they run 2–10× slower, so below this the per-tap form
wins; the planner sends kernels that tile their stride to ``tiled`` before
either (``benchmarks/RESULTS_compile.md``)."""


def uses_bounded_taps(geom: ConvTransposeGeometry) -> bool:
    """Whether the matmul lowering runs ``geom`` through the bounded forms (:data:`BOUNDED_MIN_TAPS`)."""
    return math.prod(geom.kernel_size) >= BOUNDED_MIN_TAPS


def block_shifts(geom: ConvTransposeGeometry) -> tuple[int, ...]:
    """``Q = ⌊d·(k − 1) / s⌋ + 1`` per axis: how many output blocks one input position's taps reach."""
    return tuple(d * (k - 1) // s + 1 for k, s, d in zip(geom.kernel_size, geom.stride, geom.dilation))


def _tap_padding(geom: ConvTransposeGeometry) -> list[tuple[int, int, int]]:
    """Per axis, the ``lax.pad`` config taking a tap axis of ``k`` entries to ``Q·s``, tap ``t`` at ``t·d``."""
    return [
        (0, q * s - d * (k - 1) - 1, d - 1)
        for q, k, s, d in zip(block_shifts(geom), geom.kernel_size, geom.stride, geom.dilation)
    ]


def skew_sum(parts: jax.Array, axis: int, step: int = 1) -> jax.Array:
    """``out[…, j, …] = Σ_q parts[…, q, j − q·step, …]``: the ``Q`` slices along
    ``axis`` summed, slice ``q`` shifted by ``q·step`` along ``axis + 1``
    (length ``S``); ``j < S + (Q − 1)·step`` replaces both axes.

    The shifted copies come from one reshape ("skewing"): each slice is padded
    to ``S + Q·step`` positions and the whole ``(Q, S + Q·step)`` block is read
    as rows of ``S + (Q − 1)·step``, so that row ``q`` starts ``q·step``
    positions later. One pad, reshapes and a reduction, for any ``Q``.
    """
    shape = parts.shape
    count, length = shape[axis], shape[axis + 1]
    rest = shape[axis + 2 :]
    if count == 1:
        return parts.reshape(shape[:axis] + shape[axis + 1 :])
    lead, inner = shape[:axis], math.prod(rest)
    a = parts.reshape(lead + (count, length, inner))
    config = [(0, 0, 0)] * len(lead) + [(0, 0, 0), (0, count * step, 0), (0, 0, 0)]
    padded = lax.pad(a, jnp.zeros((), a.dtype), config)  # (…, Q, S + Q·step, R)
    row = length + (count - 1) * step
    flat = padded.reshape(lead + (count * (length + count * step) * inner,))
    skewed = flat[..., : count * row * inner].reshape(lead + (count, row, inner))
    return jnp.sum(skewed, axis=len(lead)).reshape(lead + (row,) + rest)


def arithmetic_shifted_sum(parts: jax.Array, axis: int, start: int, step: int, length: int) -> jax.Array:
    """``out[…, j, …] = Σ_t parts[t][…, j − start − t·step, …]`` along ``axis`` (of
    ``parts[t]``) for ``j < length``; positions outside ``parts[t]`` add nothing.

    ``common.shifted_sum(parts, axis, [start + t·step for t], length)`` with one
    :func:`skew_sum` instead of one pad per part.
    """
    moved = jnp.moveaxis(parts, 0, axis)  # the parts axis just before the shifted one
    total = skew_sum(moved, axis, step)
    config = [(0, 0, 0)] * total.ndim
    config[axis] = (start, length - total.shape[axis] - start, 0)  # negative amounts crop
    return lax.pad(total, jnp.zeros((), total.dtype), config)


def grouped_gemm(a: jax.Array, b: jax.Array, contract: tuple[int, int], **options) -> jax.Array:
    """Batched (over groups, axis 0) GEMM; with one group a plain one (a batch of one costs XLA a copy)."""
    if a.shape[0] == 1:
        return lax.dot_general(a[0], b[0], (((contract[0] - 1,), (contract[1] - 1,)), ((), ())), **options)[None]
    return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((0,), (0,))), **options)


def shift_layout(geom: ConvTransposeGeometry) -> tuple[int, ...]:
    """``(Q₁, S₁, s₁, …, Qₙ, Sₙ, sₙ)``: the spatial part of :func:`shift_products`' shape."""
    return sum(((q, i, s) for q, i, s in zip(block_shifts(geom), geom.input_size, geom.stride)), ())


def shift_products(x: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, precision, acc_dtype) -> jax.Array:
    """The tap products in the shift layout ``(N, Cout, Q₁, S₁, s₁, …, Qₙ, Sₙ, sₙ)``::

        Z[n, g·Cg + co, q, i, r] = Σ_ci x[n, g·Cin/G + ci, i] · w[g·Cin/G + ci, co, t]   where t·d = q·s + r

    (zero where no tap has that ``(q, r)``), per axis. One GEMM
    ``(N·ΠS, Cin/G) × (Cin/G, Cg·Πk)`` per group, the tap axes padded to
    ``Q·s`` and one transposing copy; with one input channel per group
    (depthwise) a broadcast product of the input with the padded weight.
    Replaces ``matmul.tap_products`` (and ``matmul.depthwise_term``), whose
    ``Πk`` pieces :func:`col2im` does not need.
    """
    n, g, cin_g, cg, ndim = x.shape[0], geom.groups, geom.in_per_group, geom.out_per_group, geom.ndim
    shifts = block_shifts(geom)
    if cin_g == 1:
        wp = lax.pad(weight.astype(acc_dtype), jnp.zeros((), acc_dtype), [(0, 0, 0)] * 2 + _tap_padding(geom))
        wp = wp.reshape((1, g, cg) + sum(((q, 1, s) for q, s in zip(shifts, geom.stride)), ()))
        xs = x.astype(acc_dtype).reshape((n, g, 1) + sum(((1, i, 1) for i in geom.input_size), ()))
        return (xs * wp).reshape((n, geom.out_channels) + shift_layout(geom))
    positions = math.prod(geom.input_size)
    xt = jnp.transpose(x.reshape(n, g, cin_g, positions), (1, 0, 3, 2)).reshape(g, n * positions, cin_g)
    w = weight.reshape(g, cin_g, cg * math.prod(geom.kernel_size))
    z = grouped_gemm(xt, w, (2, 1), precision=precision, preferred_element_type=acc_dtype)  # (G, N·S, Cg·K)
    z = z.reshape((g, n) + geom.input_size + (cg,) + geom.kernel_size)
    if any(c != (0, 0, 0) for c in _tap_padding(geom)):
        z = lax.pad(z, jnp.zeros((), z.dtype), [(0, 0, 0)] * (3 + ndim) + _tap_padding(geom))
    z = z.reshape((g, n) + geom.input_size + (cg,) + sum(((q, s) for q, s in zip(shifts, geom.stride)), ()))
    # (G, N, S₁..Sₙ, Cg, Q₁, s₁, …, Qₙ, sₙ) → (N, G, Cg, Q₁, S₁, s₁, …, Qₙ, Sₙ, sₙ)
    order = (1, 0, 2 + ndim) + sum(((3 + ndim + 2 * a, 2 + a, 4 + ndim + 2 * a) for a in range(ndim)), ())
    return jnp.transpose(z, order).reshape((n, geom.out_channels) + shift_layout(geom))


MAX_SHIFT_TERMS = 16
""":func:`col2im` sums up to this many shifted copies (``ΠQ``) as pads in one
fused loop; beyond, it runs one :func:`skew_sum` per axis, whose reductions
XLA's CPU backend runs several times slower but whose program stays the same
size (``python benchmarks/compile_time.py`` measures both sides)."""


def col2im(z: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``y[n, c, o] = Σ_{i, t : i·s + t·d − lo = o} Z[n, c, i, t]`` (all axes at once) from
    ``Z`` in the shift layout of :func:`shift_products`; returns ``(N, C, *O)``.

    Per axis the blocks ``b = i + q`` collect ``Σ_q Z[…, q, b − q, r, …]``,
    blocks and phases merge into ``(S + Q − 1)·s`` full positions, and the
    crop keeps ``[lo, lo + out)`` (zeros past the end: PyTorch's
    ``output_padding``). With at most :data:`MAX_SHIFT_TERMS` shift
    combinations ``(q₁, …, qₙ)`` the sum is one padded copy per combination
    (one fused loop); with more, one :func:`skew_sum` per axis. Either way the
    program does not grow with the kernel. Replaces ``matmul.interleave_phases``
    and its ``term`` functions plus the crop of ``matmul.matmul_forward``.
    """
    n, c, ndim = z.shape[0], z.shape[1], geom.ndim
    shifts = block_shifts(geom)
    if math.prod(shifts) <= MAX_SHIFT_TERMS:
        z = _shifted_copies_sum(z, shifts)
    else:
        for a in range(ndim):  # z: (N, C, L₁, s₁, …, L_a−1, s_a−1, Q_a, S_a, s_a, …)
            z = skew_sum(z, 2 + 2 * a)
    blocks = z.shape[2:]
    full = z.reshape((n, c) + tuple(blocks[2 * a] * blocks[2 * a + 1] for a in range(ndim)))
    config = [(0, 0, 0)] * 2
    for length, (lo, _), out in zip(full.shape[2:], geom.crop, geom.output_size):
        config.append((-lo, lo + out - length, 0))  # negative amounts crop
    return lax.pad(full, jnp.zeros((), full.dtype), config)


def _shifted_copies_sum(z: jax.Array, shifts: tuple[int, ...]) -> jax.Array:
    """``(N, C, Q₁, S₁, s₁, …)`` → ``(N, C, S₁ + Q₁ − 1, s₁, …)``: ``Σ_q Z[…, q, b − q, …]``
    as one padded copy per shift combination ``q``."""
    zero = jnp.zeros((), z.dtype)
    total = None
    for qs in itertools.product(*(range(count) for count in shifts)):
        part = z[(slice(None), slice(None)) + sum(((q, slice(None), slice(None)) for q in qs), ())]
        config = [(0, 0, 0)] * 2
        for q, count in zip(qs, shifts):
            config += [(q, count - 1 - q, 0), (0, 0, 0)]
        shifted = lax.pad(part, zero, config)
        total = shifted if total is None else total + shifted
    assert total is not None  # product() of non-empty ranges yields at least one combination
    return total


def conv_transpose_taps(
    x: jax.Array,
    weight: jax.Array,
    geom: ConvTransposeGeometry,
    *,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: :func:`shift_products`
    then :func:`col2im`, the matmul lowering's forward (``matmul.matmul_forward``)
    with a program of the same size for every kernel."""
    acc_dtype = accumulation_dtype(x.dtype, preferred_element_type)
    y = col2im(shift_products(x, weight, geom, precision, acc_dtype), geom)
    return y.astype(output_dtype(x.dtype, preferred_element_type))


def _uncropped(ct: jax.Array, geom: ConvTransposeGeometry, spatial_start: int) -> jax.Array:
    """``ȳ`` placed back into the full (uncropped) result, zeros where the crop removed positions
    (spatial axes from ``spatial_start`` on)."""
    config = [(0, 0, 0)] * ct.ndim
    for a, (full, (lo, _), out) in enumerate(zip(geom.full_size, geom.crop, geom.output_size)):
        config[spatial_start + a] = (lo, full - lo - out, 0)  # negative amounts crop (output_padding past full)
    return lax.pad(ct, jnp.zeros((), ct.dtype), config)


def _tap_positions(geom: ConvTransposeGeometry, order: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Per axis ``a``, the index array ``i_a·s_a + t_a·d_a`` over the ``2n`` axes
    ``(S₁..Sₙ, K₁..Kₙ)`` permuted by ``order`` (``order[j]`` names the axis at place ``j``)."""
    ndim = geom.ndim
    index = []
    for a, (size, k, s, d) in enumerate(zip(geom.input_size, geom.kernel_size, geom.stride, geom.dilation)):
        shape = [1] * (2 * ndim)
        shape[order.index(a)] = size
        i = np.arange(size).reshape(shape)
        shape = [1] * (2 * ndim)
        shape[order.index(ndim + a)] = k
        t = np.arange(k).reshape(shape)
        index.append(i * s + t * d)
    return tuple(index)


def cotangent_columns(ct: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``C[g, n, *i, *t, co] = ȳ_full[n, g·Cg + co, *(i·s + t·d)]``, shape ``(G, N, *S, *K, Cg)``:
    one gather, in place of ``matmul_transpose.cotangent_columns``' stacks of ``Πk`` strided slices."""
    n, g, cg, ndim = ct.shape[0], geom.groups, geom.out_per_group, geom.ndim
    ctg = jnp.transpose(ct.reshape((n, g, cg) + geom.output_size), (1, 0, *range(3, 3 + ndim), 2))  # (G, N, *O, Cg)
    full = _uncropped(ctg, geom, 2)
    index = _tap_positions(geom, tuple(range(2 * ndim)))
    return full.at[(slice(None), slice(None)) + index].get(mode="promise_in_bounds")


def cotangent_taps(ct: jax.Array, geom: ConvTransposeGeometry) -> jax.Array:
    """``C[n, c, i₁, t₁, …, iₙ, tₙ] = ȳ_full[n, c, *(i·s + t·d)]``, shape ``(N, Cout, S₁, K₁, …, Sₙ, Kₙ)``.

    The cotangent, uncropped to ``(S + Q − 1)·s`` positions per axis, is
    reshaped into blocks of ``s``; input position ``i`` reads blocks
    ``i … i + Q − 1`` (for ``Q = 1``, where the blocks are disjoint, that is
    the reshape itself), and the taps are every ``d``-th of their ``Q·s``
    positions. The ``ΠQ`` block windows are slices while there are at most
    :data:`MAX_SHIFT_TERMS`, otherwise the whole array is one gather.
    """
    n, c, ndim = ct.shape[0], ct.shape[1], geom.ndim
    shifts, sizes, strides = block_shifts(geom), geom.input_size, geom.stride
    if math.prod(shifts) > MAX_SHIFT_TERMS:
        index = _tap_positions(geom, sum(((a, ndim + a) for a in range(ndim)), ()))
        return _uncropped(ct, geom, 2).at[(slice(None), slice(None)) + index].get(mode="promise_in_bounds")
    config = [(0, 0, 0)] * 2
    for size, q, s, (lo, _), out in zip(sizes, shifts, strides, geom.crop, geom.output_size):
        config.append((lo, (size + q - 1) * s - lo - out, 0))  # negative amounts crop
    full = lax.pad(ct, jnp.zeros((), ct.dtype), config)
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


def shift_windows(a: jax.Array, axes, stack_axis: int) -> jax.Array:
    """``out[…, (u₁, …, uₙ), …] = a_pad[l₀, l₁, l₂, *(b + u)]`` for every block shift
    ``u`` (``u_j < D_j``) and block ``b < B``, the shifts flattened at ``stack_axis``;
    ``a`` has three leading axes, then the spatial ones, padded by each
    ``PhaseAxis``' ``input_low`` / ``input_high`` (``axes``: :func:`phase.phase_axes`).

    One gather in place of ``phase._shift_windows``' ``ΠD`` slices.
    """
    ndim = len(axes)
    config = [(0, 0, 0)] * 3 + [(ax.input_low, ax.input_high, 0) for ax in axes]
    padded = lax.pad(a, jnp.zeros((), a.dtype), config)
    index = []
    for j, ax in enumerate(axes):
        shape = [1] * (2 * ndim)
        shape[j] = ax.shifts
        u = np.arange(ax.shifts).reshape(shape)
        shape = [1] * (2 * ndim)
        shape[ndim + j] = ax.blocks
        index.append(u + np.arange(ax.blocks).reshape(shape))
    windows = padded.at[(slice(None),) * 3 + tuple(index)].get(mode="promise_in_bounds")  # (l₀, l₁, l₂, *D, *B)
    shifts = math.prod(ax.shifts for ax in axes)
    windows = windows.reshape(windows.shape[:3] + (shifts,) + windows.shape[3 + ndim :])
    return jnp.moveaxis(windows, 3, stack_axis)
