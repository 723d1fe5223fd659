"""The "phase" lowering (sub-pixel convolution): one GEMM between the input's im2col over block shifts and every
output phase.

Along one axis, write ``t·d = q_t·s + r_t`` (``0 ≤ r_t < s``): tap ``t`` of input position ``i`` feeds phase
``r_t`` of block ``i + q_t`` of the full (uncropped) result, ``q_t < D = ⌊d·(k − 1) / s⌋ + 1``
(:class:`~jtconv.lowering.axes.PhaseAxis`). For all axes at once (products of shifts and phases)::

    P[(u, ci), (n, b)]   = x[n, ci, b − (D − 1 − u)]                   (im2col of x over the D shifts)
    M[(co, r), (u, ci)]  = w[ci, co, t]  where r_t = r, q_t = D − 1 − u; 0 if no such tap
    Z = M · P,           full[n, co, b·s + r] = Z[(co, r), (n, b)]     (phases interleaved, then cropped)

Per block ``P`` holds ``D·Cin`` values and ``Z`` ``s·Cout``, where the matmul tap products hold ``k·Cout`` per
input position; ``M`` has zeros where ``s·D > k``. The transposes use the same ``P`` and the cotangent split into
phases ``Z̄``::

    M̄ = Z̄ · Pᵀ   (its taps read out: w̄),     P̄ = Mᵀ · Z̄,   x̄[n, ci, i] = Σ_u P̄[(u, ci), (n, i + D − 1 − u)]

``"phase-conv"`` (:func:`phase_conv_forward`) computes ``Z`` as a stride-1 XLA convolution of the input with ``M``
as a ``D``-tap kernel, never materialising ``P``; its input transpose is that convolution's transpose, its weight
transpose reads the same batch-major ``Z̄``. Groups are a batch axis of the GEMMs; depthwise layers are not
expressed (:func:`supports`).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.axes import phase_axes, phase_counts
from jtconv.lowering.common import (
    accumulation_dtype,
    conv_dimension_numbers,
    fusable_stack,
    grouped_gemm,
    output_dtype,
    pad,
    shifted_sum,
)


def supports(geom: ConvTransposeGeometry) -> bool:
    """Whether the phase lowering expresses ``geom``: more than one input channel per group."""
    return geom.in_per_group > 1


def input_columns(x: jax.Array, geom: ConvTransposeGeometry, axes, *, batch_first: bool = False) -> jax.Array:
    """``P`` as ``(G, ΠD·Cin/G, N·ΠB)``, rows ``(u₁, …, uₙ, ci)`` (``batch_first``: ``(N, G, ΠD·Cin/G, ΠB)``).

    A stack of the ``ΠD`` shifted windows (few: ``D`` is about ``k / s``), which XLA fuses into one loop; as a
    gather it ran slower (``python benchmarks/run.py --shapes dcgan --algorithms phase``).
    """
    n, g, cin_g = x.shape[0], geom.groups, geom.in_per_group
    _, shifts, blocks = phase_counts(axes)
    xg = x.reshape((n, g, cin_g) + geom.input_size)
    if not batch_first:
        xg = jnp.moveaxis(xg, 0, 2)  # (G, Cin/G, N, *S)
    padded = pad(xg, [(a.input_low, a.input_high) for a in axes], 3)
    lead = padded.shape[:3]
    slices = [
        lax.slice(padded, (0, 0, 0) + starts, lead + tuple(u + a.blocks for u, a in zip(starts, axes)))
        for starts in itertools.product(*(range(a.shifts) for a in axes))
    ]
    if batch_first:
        return fusable_stack(slices, axis=2).reshape(n, g, shifts * cin_g, blocks)
    return fusable_stack(slices, axis=1).reshape(g, shifts * cin_g, n * blocks)


def weight_matrix(weight: jax.Array, geom: ConvTransposeGeometry, axes) -> jax.Array:
    """``M`` as ``(G, Cg·Πs, ΠD·Cin/G)``, rows ``(co, r₁, …, rₙ)``, columns ``(u₁, …, uₙ, ci)``. The output
    channel leads, so that a weight sharded over output channels keeps that sharding through the reshapes."""
    g, cin_g, cg, ndim = geom.groups, geom.in_per_group, geom.out_per_group, geom.ndim
    padded = pad(weight, [(0, 1)] * ndim)  # tap k: zero
    index = []
    for axis, (a, k) in enumerate(zip(axes, geom.kernel_size)):
        shape = [1] * (2 * ndim)
        shape[2 * axis : 2 * axis + 2] = (a.stride, a.shifts)
        index.append(a.tap_table(k).reshape(shape))
    m = padded[(slice(None), slice(None)) + tuple(index)]  # (Cin, Cg, s₁, D₁, …, sₙ, Dₙ)
    m = m.reshape((g, cin_g, cg) + m.shape[2:])
    order = (0, 2) + tuple(3 + 2 * i for i in range(ndim)) + tuple(4 + 2 * i for i in range(ndim)) + (1,)
    phases, shifts, _ = phase_counts(axes)
    return jnp.transpose(m, order).reshape(g, cg * phases, shifts * cin_g)


def _weight_from_matrix(m: jax.Array, geom: ConvTransposeGeometry, axes) -> jax.Array:
    """``w̄[ci, co, t] = M̄[(co, r_t), (D − 1 − q_t, ci)]``: the taps of ``M̄`` (its zeros dropped)."""
    g, cin_g, cg, ndim = geom.groups, geom.in_per_group, geom.out_per_group, geom.ndim
    m = m.reshape((g, cg) + tuple(a.stride for a in axes) + tuple(a.shifts for a in axes) + (cin_g,))
    phase_index, shift_index = [], []
    for axis, a in enumerate(axes):
        shape = [1] * ndim
        shape[axis] = len(a.tap_phase)
        phase_index.append(np.asarray(a.tap_phase).reshape(shape))
        shift_index.append((a.shifts - 1 - np.asarray(a.tap_shift)).reshape(shape))
    taps = m[
        (slice(None), slice(None)) + tuple(phase_index) + tuple(shift_index) + (slice(None),)
    ]  # (G, Cg, *K, Cin/G)
    taps = jnp.transpose(taps, (0, ndim + 2, 1) + tuple(range(2, 2 + ndim)))  # (G, Cin/G, Cg, *K)
    return taps.reshape((geom.in_channels, cg) + geom.kernel_size)


def phase_forward(
    x: jax.Array,
    weight: jax.Array,
    geom: ConvTransposeGeometry,
    *,
    precision=None,
    preferred_element_type=None,
    convolve: bool = False,
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: ``Z = M·P``, then the phases interleaved; with
    ``convolve``, ``Z`` from a stride-1 XLA convolution of the input with ``M`` as a ``ΠD``-tap kernel."""
    axes = phase_axes(geom)
    g, ndim = geom.groups, geom.ndim
    acc_dtype = accumulation_dtype(x.dtype, preferred_element_type)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    m = weight_matrix(weight, geom, axes)
    if convolve:  # Z as (N, G·Cg·Πs, *B)
        phases, _, _ = phase_counts(axes)
        kernel = m.reshape((g * phases * geom.out_per_group,) + tuple(a.shifts for a in axes) + (geom.in_per_group,))
        kernel = jnp.moveaxis(kernel, -1, 1)  # (G·Cg·Πs, Cin/G, *D): (O, I, *K)
        padding = [(a.input_low, a.input_high) for a in axes]  # negative amounts crop
        dimension_numbers = conv_dimension_numbers(ndim)
        z = lax.conv_general_dilated(
            x, kernel, (1,) * ndim, padding, dimension_numbers=dimension_numbers, feature_group_count=g, **options
        )
    else:  # Z as (G, Cg·Πs, N·ΠB)
        z = grouped_gemm(m, input_columns(x, geom, axes), (2, 1), **options)
    y = _interleave(z, x.shape[0], geom, axes, batch_first=convolve)
    return y.astype(output_dtype(x.dtype, preferred_element_type))


def phase_conv_forward(
    x: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, preferred_element_type=None
) -> jax.Array:
    """:func:`phase_forward` with ``Z`` from an XLA convolution (which never materialises ``P``)."""
    return phase_forward(
        x, weight, geom, precision=precision, preferred_element_type=preferred_element_type, convolve=True
    )


def gemm_temporary_bytes(geom: ConvTransposeGeometry, batch: int, itemsize: int) -> int:
    """Size of ``P`` and ``Z`` together for ``batch`` examples (the GEMM forward's temporaries)."""
    phases, shifts, blocks = phase_counts(phase_axes(geom))
    per_block = shifts * geom.in_per_group + phases * geom.out_per_group
    return batch * blocks * geom.groups * per_block * itemsize


def _interleave(z: jax.Array, n: int, geom: ConvTransposeGeometry, axes, *, batch_first: bool) -> jax.Array:
    """``Z`` as ``(G, Cg·Πs, N·ΠB)`` (``batch_first``: ``(N, G·Cg·Πs, *B)``) → the cropped output ``(N, Cout, *O)``."""
    ndim = geom.ndim
    strides = tuple(a.stride for a in axes)
    blocks = tuple(a.blocks for a in axes)
    if batch_first:  # (N, G, Cg, s₁..sₙ, B₁..Bₙ) → (N, G, Cg, B₁, s₁, …, Bₙ, sₙ)
        z = z.reshape((n, geom.groups, geom.out_per_group) + strides + blocks)
        order = (0, 1, 2) + sum(((ndim + 3 + i, 3 + i) for i in range(ndim)), ())
    else:  # (G, Cg, s₁..sₙ, N, B₁..Bₙ) → (N, G, Cg, B₁, s₁, …, Bₙ, sₙ)
        z = z.reshape((geom.groups, geom.out_per_group) + strides + (n,) + blocks)
        order = (ndim + 2, 0, 1) + sum(((ndim + 3 + i, 2 + i) for i in range(ndim)), ())
    full = jnp.transpose(z, order).reshape((n, geom.out_channels) + tuple(b * s for b, s in zip(blocks, strides)))
    return full[
        (slice(None), slice(None)) + tuple(slice(a.offset, a.offset + o) for a, o in zip(axes, geom.output_size))
    ]


def cotangent_phases(ct: jax.Array, geom: ConvTransposeGeometry, axes, *, batch_first: bool = False) -> jax.Array:
    """``Z̄`` as ``(G, Cg·Πs, N·ΠB)`` (``batch_first``: ``(N, G·Cg·Πs, *B)``): the transpose of :func:`_interleave`."""
    n, ndim = ct.shape[0], geom.ndim
    phases, _, blocks = phase_counts(axes)
    full = pad(ct, [(a.offset, a.blocks * a.stride - a.offset - o) for a, o in zip(axes, geom.output_size)])
    split = full.reshape((n, geom.groups, geom.out_per_group) + sum(((a.blocks, a.stride) for a in axes), ()))
    block_axes, phase_axes_ = tuple(3 + 2 * i for i in range(ndim)), tuple(4 + 2 * i for i in range(ndim))
    if batch_first:
        shape = (n, geom.groups * geom.out_per_group * phases) + tuple(a.blocks for a in axes)
        return jnp.transpose(split, (0, 1, 2) + phase_axes_ + block_axes).reshape(shape)
    order = (1, 2) + phase_axes_ + (0,) + block_axes
    return jnp.transpose(split, order).reshape(geom.groups, geom.out_per_group * phases, n * blocks)


def transpose_input(
    ct: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``x̄`` of shape ``(N, Cin, *S)``: ``P̄ = Mᵀ·Z̄``, then col2im over the shifts."""
    axes = phase_axes(geom)
    n, g, cin_g, ndim = ct.shape[0], geom.groups, geom.in_per_group, geom.ndim
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    dp = grouped_gemm(weight_matrix(weight, geom, axes), cotangent_phases(ct, geom, axes), (1, 1), **options)
    dp = dp.reshape((g,) + tuple(a.shifts for a in axes) + (cin_g, n) + tuple(a.blocks for a in axes))
    for axis in reversed(range(ndim)):  # sum the shifts of the last remaining axis: x_pad[m] = Σ_u P̄[u][m − u]
        a = axes[axis]
        parts = jnp.moveaxis(dp, 1 + axis, 0)  # (D_axis, G, D₁..D_axis−1, Cin/G, N, …)
        position = 1 + axis + 2 + axis  # of B_axis in parts[u]
        dp = shifted_sum(parts, position, [u - a.input_low for u in range(a.shifts)], geom.input_size[axis])
    dx = jnp.moveaxis(dp, 2, 0)  # (N, G, Cin/G, *S)
    return dx.reshape((n, geom.in_channels) + geom.input_size).astype(out_dtype)


def conv_transpose_input(
    ct: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``x̄`` of shape ``(N, Cin, *S)``: the transpose of :func:`phase_conv_forward`'s convolution applied to the
    batch-major ``Z̄``, ``x̄[n, ci, i] = Σ_{c, u} K[c, ci, u] · Z̄[n, c, i + lo − u]``: ``Z̄`` correlated with the
    kernel flipped and its channel axes swapped, stride 1 (never materialising ``P̄``)."""
    axes = phase_axes(geom)
    g, ndim = geom.groups, geom.ndim
    phases, _, _ = phase_counts(axes)
    m = weight_matrix(weight, geom, axes)
    z_bar = cotangent_phases(ct, geom, axes, batch_first=True)
    shifts = tuple(a.shifts for a in axes)
    kernel = jnp.moveaxis(m.reshape((g, phases * geom.out_per_group) + shifts + (geom.in_per_group,)), -1, 1)
    kernel = jnp.flip(kernel, tuple(range(3, 3 + ndim))).reshape(
        (geom.in_channels, phases * geom.out_per_group) + shifts
    )
    padding = []
    for a, size in zip(axes, geom.input_size):
        low = a.shifts - 1 - a.input_low
        padding.append((low, size + a.shifts - 1 - a.blocks - low))
    dx = lax.conv_general_dilated(
        z_bar,
        kernel,
        (1,) * ndim,
        padding,
        dimension_numbers=conv_dimension_numbers(ndim),
        feature_group_count=g,
        precision=precision,
        preferred_element_type=acc_dtype,
    )
    return dx.astype(out_dtype)


def transpose_weight(
    x: jax.Array, ct: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``w̄`` of shape ``(Cin, Cout/G, *K)``: ``M̄ = Z̄·Pᵀ``, its taps read out."""
    axes = phase_axes(geom)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    dm = grouped_gemm(cotangent_phases(ct, geom, axes), input_columns(x, geom, axes), (2, 2), **options)
    return _weight_from_matrix(dm, geom, axes).astype(out_dtype)


def batch_first_transpose_weight(
    x: jax.Array, ct: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``w̄`` of shape ``(Cin, Cout/G, *K)``: ``M̄ = Σ_n Z̄_n·P_nᵀ`` with ``Z̄`` and ``P`` batch-major, the ``Z̄`` that
    :func:`conv_transpose_input` reads (one GEMM per example, the ``N`` small products summed)."""
    axes = phase_axes(geom)
    n = ct.shape[0]
    phases, _, blocks = phase_counts(axes)
    z_bar = cotangent_phases(ct, geom, axes, batch_first=True)
    z_bar = z_bar.reshape(n, geom.groups, phases * geom.out_per_group, blocks)
    p = input_columns(x, geom, axes, batch_first=True)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    dm = lax.dot_general(z_bar, p, (((3,), (3,)), ((0, 1), (0, 1))), **options).sum(0)
    return _weight_from_matrix(dm, geom, axes).astype(out_dtype)
