"""The "phase" lowering: strided layers as one GEMM between the input's
im2col over block shifts and the output's phases (sub-pixel convolution).

Along one spatial axis with stride ``s`` and dilation ``d``, tap ``t`` of input
position ``i`` lands at full (uncropped) output position ``i·s + t·d``. Write
``t·d = q_t·s + r_t`` (``0 ≤ r_t < s``): the tap feeds *phase* ``r_t`` at
*block* ``i + q_t``. So output block ``b``, phase ``r`` is a stride-1
correlation of the input with the taps of that phase::

    full[b·s + r] = Σ_{t : r_t = r}  w[t]ᵀ · x[b − q_t]

with shifts ``q_t ∈ [0, D)``, ``D = ⌊d·(k − 1) / s⌋ + 1`` (about ``k / s``). Per
spatial axis, and for all axes at once (products of shifts and phases), one
GEMM computes every phase of every block::

    P[(u, ci), (n, b)]   = x[n, ci, b − (D − 1 − u)]                      (im2col of x over the D shifts)
    M[(co, r), (u, ci)]  = w[ci, co, t]  where r_t = r, q_t = D − 1 − u; 0 if no such tap
    Z = M · P,           full[n, co, b·s + r] = Z[(co, r), (n, b)]        (phases interleaved)

and the output is ``full`` cropped by PyTorch's padding (blocks before the
crop are never computed). Per block the intermediates hold ``D·Cin`` values
(``P``) and ``s·Cout`` (``Z``, the output itself), where the matmul
lowering's tap products hold ``k·Cout`` per input position: 1d k8 s4 16→8
channels keeps 32 + 32 values instead of 64. ``M`` has zeros where a phase has
no tap at some shift (``s·D > k``: k3 s2 computes 4 products for 3 taps;
``k`` a multiple of ``s`` with ``d = 1`` wastes none).

The transposes use the same ``P`` and ``Z̄`` (the cotangent, uncropped and
split into phases, a transposing copy of it)::

    M̄ = Z̄ · Pᵀ                                     (weight gradient: one GEMM, then the taps read out of M̄)
    P̄ = Mᵀ · Z̄,   x̄[n, ci, i] = Σ_u P̄[(u, ci), (n, i + D − 1 − u)]   (one GEMM, col2im over the shifts)

The ``"phase-conv"`` variant (:func:`phase_conv_forward`) computes ``Z`` with a
stride-1 XLA convolution of the input with ``M`` as a ``D``-tap kernel,
without materialising ``P``; its input transpose
(:func:`conv_transpose_input`) is that convolution's transpose, and its weight
transpose (:func:`batch_first_transpose_weight`) reads the same batch-major
``Z̄``. Which variant runs is the planner's choice
(:mod:`jtconv.plans.estimate`).

Groups are a batch axis of the GEMMs. Depthwise layers (one input channel per
group) are not expressed (:func:`supports`): their contraction would have
``D`` terms, and the ``"phase"`` algorithm runs the matmul lowering for them.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.axes import phase_axes, phase_counts
from jtconv.lowering.common import accumulation_dtype, conv_dimension_numbers, fusable_stack, output_dtype, shifted_sum


def supports(geom: ConvTransposeGeometry) -> bool:
    """Whether the phase lowering expresses ``geom``: more than one input channel per group."""
    return geom.in_per_group > 1


def input_columns(x: jax.Array, geom: ConvTransposeGeometry, axes) -> jax.Array:
    """``P`` as ``(G, ΠD·Cin/G, N·ΠB)``, rows ordered ``(u_1, …, u_n, ci)``."""
    n, g, cin_g = x.shape[0], geom.groups, geom.in_per_group
    xg = jnp.moveaxis(x.reshape((n, g, cin_g) + geom.input_size), 0, 2)  # (G, Cin/G, N, *S)
    _, shifts, blocks = phase_counts(axes)
    return _shift_windows(xg, axes, stack_axis=1).reshape(g, shifts * cin_g, n * blocks)


def _shift_windows(a: jax.Array, axes, stack_axis: int) -> jax.Array:
    """The ``ΠD`` shifted windows ``a_pad[…, b + u, …]`` of ``a`` (three leading
    axes, then the spatial ones, padded by ``input_low``/``input_high``),
    stacked at ``stack_axis``.

    A stack of slices (few: ``D`` is about ``k / s``), which XLA fuses into
    one loop; as a gather it ran slower (``python benchmarks/run.py --shapes dcgan
    --algorithms phase``).
    """
    config = [(0, 0, 0)] * 3 + [(ax.input_low, ax.input_high, 0) for ax in axes]
    padded = lax.pad(a, jnp.zeros((), a.dtype), config)
    lead = padded.shape[:3]
    slices = [
        lax.slice(padded, (0, 0, 0) + starts, lead + tuple(u + ax.blocks for u, ax in zip(starts, axes)))
        for starts in itertools.product(*(range(ax.shifts) for ax in axes))
    ]
    return fusable_stack(slices, axis=stack_axis)


def weight_matrix(weight: jax.Array, geom: ConvTransposeGeometry, axes) -> jax.Array:
    """``M`` as ``(G, Cg·Πs, ΠD·Cin/G)``, rows ``(co, r_1, …, r_n)``, columns ``(u_1, …, u_n, ci)``.

    The output channel leads its rows (and ``Z``'s), so that a weight sharded
    over output channels keeps that sharding through the reshapes (phases
    first cost an all-gather of the weight under channel parallelism).
    """
    g, cin_g, cg, ndim = geom.groups, geom.in_per_group, geom.out_per_group, geom.ndim
    padded = lax.pad(weight, jnp.zeros((), weight.dtype), [(0, 0, 0)] * 2 + [(0, 1, 0)] * ndim)  # tap k: zero
    index = []
    for axis, (a, k) in enumerate(zip(axes, geom.kernel_size)):
        shape = [1] * (2 * ndim)
        shape[2 * axis : 2 * axis + 2] = (a.stride, a.shifts)
        index.append(a.tap_table(k).reshape(shape))
    m = padded[(slice(None), slice(None)) + tuple(index)]  # (Cin, Cg, s_1, D_1, …, s_n, D_n)
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


def _gemm(a: jax.Array, b: jax.Array, contract: tuple[int, int], **options) -> jax.Array:
    """Batched (over groups, axis 0) GEMM; with one group a plain one (a batch of one costs XLA a copy)."""
    if a.shape[0] == 1:
        return lax.dot_general(a[0], b[0], (((contract[0] - 1,), (contract[1] - 1,)), ((), ())), **options)[None]
    return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((0,), (0,))), **options)


def phase_forward(
    x: jax.Array,
    weight: jax.Array,
    geom: ConvTransposeGeometry,
    *,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: ``Z = M·P`` from
    the im2col over block shifts and one GEMM, then the phases interleaved."""
    axes = phase_axes(geom)
    acc_dtype = accumulation_dtype(x.dtype, preferred_element_type)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    z = _gemm(weight_matrix(weight, geom, axes), input_columns(x, geom, axes), (2, 1), **options)
    y = _interleave(z, x.shape[0], geom, axes, batch_first=False)
    return y.astype(output_dtype(x.dtype, preferred_element_type))


def phase_conv_forward(
    x: jax.Array,
    weight: jax.Array,
    geom: ConvTransposeGeometry,
    *,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: ``Z`` from a
    stride-1 XLA convolution of the input with ``M`` as its kernel (which
    never materialises ``P``), then the phases interleaved."""
    axes = phase_axes(geom)
    acc_dtype = accumulation_dtype(x.dtype, preferred_element_type)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    z = _convolve(x, weight_matrix(weight, geom, axes), geom, axes, **options)
    y = _interleave(z, x.shape[0], geom, axes, batch_first=True)
    return y.astype(output_dtype(x.dtype, preferred_element_type))


def gemm_temporary_bytes(geom: ConvTransposeGeometry, batch: int, itemsize: int) -> int:
    """Size of ``P`` and ``Z`` together for ``batch`` examples (the GEMM forward's temporaries)."""
    axes = phase_axes(geom)
    phases, shifts, blocks = phase_counts(axes)
    per_block = shifts * geom.in_per_group + phases * geom.out_per_group
    return batch * blocks * geom.groups * per_block * itemsize


def _convolve(x: jax.Array, m: jax.Array, geom: ConvTransposeGeometry, axes, **options) -> jax.Array:
    """``Z`` as ``(N, G·Cg·Πs, *B)``: the input correlated with ``M`` as a ``ΠD``-tap kernel, stride 1.

    XLA's convolution blocks its own im2col, so ``P`` never exists.
    """
    g, ndim = geom.groups, geom.ndim
    phases, _, _ = phase_counts(axes)
    kernel = m.reshape((g * phases * geom.out_per_group,) + tuple(a.shifts for a in axes) + (geom.in_per_group,))
    kernel = jnp.moveaxis(kernel, -1, 1)  # (G·Cg·Πs, Cin/G, *D): (O, I, *K)
    return lax.conv_general_dilated(
        x,
        kernel,
        (1,) * ndim,
        [(a.input_low, a.input_high) for a in axes],  # negative amounts crop
        dimension_numbers=conv_dimension_numbers(ndim),
        feature_group_count=g,
        **options,
    )


def _interleave(z: jax.Array, n: int, geom: ConvTransposeGeometry, axes, *, batch_first: bool) -> jax.Array:
    """``Z`` as ``(G, Cg·Πs, N·ΠB)`` (or ``(N, G·Cg·Πs, *B)`` with ``batch_first``)
    → the cropped output ``(N, Cout, *O)``."""
    ndim = geom.ndim
    strides = tuple(a.stride for a in axes)
    blocks = tuple(a.blocks for a in axes)
    if batch_first:
        z = z.reshape((n, geom.groups, geom.out_per_group) + strides + blocks)
        # (N, G, Cg, s_1..s_n, B_1..B_n) → (N, G, Cg, B_1, s_1, …, B_n, s_n)
        order = (0, 1, 2) + sum(((ndim + 3 + i, 3 + i) for i in range(ndim)), ())
    else:
        z = z.reshape((geom.groups, geom.out_per_group) + strides + (n,) + blocks)
        # (G, Cg, s_1..s_n, N, B_1..B_n) → (N, G, Cg, B_1, s_1, …, B_n, s_n)
        order = (ndim + 2, 0, 1) + sum(((ndim + 3 + i, 2 + i) for i in range(ndim)), ())
    full = jnp.transpose(z, order).reshape((n, geom.out_channels) + tuple(b * s for b, s in zip(blocks, strides)))
    return full[
        (slice(None), slice(None)) + tuple(slice(a.offset, a.offset + o) for a, o in zip(axes, geom.output_size))
    ]


def cotangent_phases(ct: jax.Array, geom: ConvTransposeGeometry, axes) -> jax.Array:
    """``Z̄`` as ``(G, Cg·Πs, N·ΠB)``: the transpose of :func:`_interleave`."""
    n, ndim = ct.shape[0], geom.ndim
    order = (1, 2) + tuple(4 + 2 * i for i in range(ndim)) + (0,) + tuple(3 + 2 * i for i in range(ndim))
    phases, _, blocks = phase_counts(axes)
    return jnp.transpose(_cotangent_blocks(ct, geom, axes), order).reshape(
        geom.groups, geom.out_per_group * phases, n * blocks
    )


def cotangent_phases_batch_first(ct: jax.Array, geom: ConvTransposeGeometry, axes) -> jax.Array:
    """``Z̄`` as ``(N, G·Cg·Πs, *B)``: the transpose of :func:`_interleave` with ``batch_first``."""
    n, ndim = ct.shape[0], geom.ndim
    order = (0, 1, 2) + tuple(4 + 2 * i for i in range(ndim)) + tuple(3 + 2 * i for i in range(ndim))
    phases, _, _ = phase_counts(axes)
    shape = (n, geom.groups * geom.out_per_group * phases) + tuple(a.blocks for a in axes)
    return jnp.transpose(_cotangent_blocks(ct, geom, axes), order).reshape(shape)


def _cotangent_blocks(ct: jax.Array, geom: ConvTransposeGeometry, axes) -> jax.Array:
    """``ȳ`` uncropped to whole blocks and split into them: ``(N, G, Cg, B_1, s_1, …, B_n, s_n)``."""
    config = [(0, 0, 0)] * 2 + [
        (a.offset, a.blocks * a.stride - a.offset - o, 0) for a, o in zip(axes, geom.output_size)
    ]
    full = lax.pad(ct, jnp.zeros((), ct.dtype), config)
    return full.reshape((ct.shape[0], geom.groups, geom.out_per_group) + sum(((a.blocks, a.stride) for a in axes), ()))


def input_columns_batch_first(x: jax.Array, geom: ConvTransposeGeometry, axes) -> jax.Array:
    """``P`` as ``(N, G, ΠD·Cin/G, ΠB)``: :func:`input_columns` without moving the batch axis."""
    n, g, cin_g = x.shape[0], geom.groups, geom.in_per_group
    _, shifts, blocks = phase_counts(axes)
    windows = _shift_windows(x.reshape((n, g, cin_g) + geom.input_size), axes, stack_axis=2)
    return windows.reshape(n, g, shifts * cin_g, blocks)


def transpose_input(
    ct: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``x̄`` of shape ``(N, Cin, *S)``: ``P̄ = Mᵀ·Z̄``, then col2im over the shifts."""
    axes = phase_axes(geom)
    n, g, cin_g, ndim = ct.shape[0], geom.groups, geom.in_per_group, geom.ndim
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    m = weight_matrix(weight, geom, axes)
    dp = _gemm(m, cotangent_phases(ct, geom, axes), (1, 1), **options)
    dp = dp.reshape((g,) + tuple(a.shifts for a in axes) + (cin_g, n) + tuple(a.blocks for a in axes))
    for axis in reversed(range(ndim)):  # sum the shifts of the last remaining axis: x_pad[m] = Σ_u P̄[u][m − u]
        a = axes[axis]
        parts = jnp.moveaxis(dp, 1 + axis, 0)  # (D_axis, G, D_1..D_axis-1, Cin/G, N, …)
        position = 1 + axis + 2 + axis  # of B_axis in parts[u]
        dp = shifted_sum(parts, position, [u - a.input_low for u in range(a.shifts)], geom.input_size[axis])
    dx = jnp.moveaxis(dp, 2, 0)  # (N, G, Cin/G, *S)
    return dx.reshape((n, geom.in_channels) + geom.input_size).astype(out_dtype)


def conv_transpose_input(
    ct: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``x̄`` of shape ``(N, Cin, *S)``: the transpose of :func:`phase_conv_forward`'s
    convolution applied to the batch-major ``Z̄``, which never materialises ``P̄``."""
    axes = phase_axes(geom)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    m = weight_matrix(weight, geom, axes)
    return _convolve_transpose(ct, m, geom, axes, **options).astype(out_dtype)


def _convolve_transpose(ct: jax.Array, m: jax.Array, geom: ConvTransposeGeometry, axes, **options) -> jax.Array:
    """The transpose of :func:`_convolve` then :func:`_interleave`: ``x̄`` ``(N, Cin, *S)``.

    ``x̄[n, ci, i] = Σ_{c, u} K[c, ci, u] · Z̄[n, c, i + lo − u]`` (``lo``: the
    input's low padding), i.e. ``Z̄`` correlated with the kernel ``K`` flipped
    and its channel axes swapped, stride 1.
    """
    g, ndim = geom.groups, geom.ndim
    phases, _, _ = phase_counts(axes)
    z_bar = cotangent_phases_batch_first(ct, geom, axes)
    shifts = tuple(a.shifts for a in axes)
    kernel = m.reshape((g, phases * geom.out_per_group) + shifts + (geom.in_per_group,))
    kernel = jnp.moveaxis(kernel, -1, 1)  # (G, Cin/G, Cg·Πs, *D)
    kernel = jnp.flip(kernel, tuple(range(3, 3 + ndim))).reshape(
        (geom.in_channels, phases * geom.out_per_group) + shifts
    )
    padding = []
    for a, size in zip(axes, geom.input_size):
        low = a.shifts - 1 - a.input_low
        padding.append((low, size + a.shifts - 1 - a.blocks - low))
    return lax.conv_general_dilated(
        z_bar,
        kernel,
        (1,) * ndim,
        padding,
        dimension_numbers=conv_dimension_numbers(ndim),
        feature_group_count=g,
        **options,
    )


def transpose_weight(
    x: jax.Array, ct: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``w̄`` of shape ``(Cin, Cout/G, *K)``: ``M̄ = Z̄·Pᵀ``, its taps read out."""
    axes = phase_axes(geom)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    dm = _gemm(cotangent_phases(ct, geom, axes), input_columns(x, geom, axes), (2, 2), **options)
    return _weight_from_matrix(dm, geom, axes).astype(out_dtype)


def batch_first_transpose_weight(
    x: jax.Array, ct: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype
) -> jax.Array:
    """``w̄`` of shape ``(Cin, Cout/G, *K)``: ``M̄ = Σ_n Z̄_n·P_nᵀ`` with ``Z̄`` and
    ``P`` batch-major, so that ``Z̄`` is the one :func:`conv_transpose_input`
    reads (the GEMM runs per example and the ``N`` small products are summed)."""
    axes = phase_axes(geom)
    n = ct.shape[0]
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    phases, _, blocks = phase_counts(axes)
    z_bar = cotangent_phases_batch_first(ct, geom, axes).reshape(n, geom.groups, phases * geom.out_per_group, blocks)
    p = input_columns_batch_first(x, geom, axes)
    dm = lax.dot_general(z_bar, p, (((3,), (3,)), ((0, 1), (0, 1))), **options).sum(0)
    return _weight_from_matrix(dm, geom, axes).astype(out_dtype)
