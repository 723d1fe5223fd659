"""The "matmul" lowering's forward: one GEMM, then a phase-wise col2im.

The scatter view computed directly. For every kernel tap ``t`` (all spatial
dimensions flattened), one matrix product gives that tap's contribution at
every input position::

    Z[g, t, co, n, i] = Σ_ci  w[g·Cin/G + ci, co, t] · x[n, g·Cin/G + ci, i]

and the tap's contribution lands at output position ``o = i·s + t·d − lo``
(``lo``: the crop at the low end, PyTorch's ``padding``). Split ``o`` into a
phase ``ρ = o mod s`` and a block ``b = o div s``: tap ``t`` feeds phase
``ρ_t = (t·d − lo) mod s`` at block ``b = i + m_t`` with
``m_t = ⌊(t·d − lo) / s⌋``. So each phase is a sum of *shifted* (never
strided) copies of the ``Z[t]`` that belong to it::

    Y_ρ[b] = Σ_{t : ρ_t = ρ}  Z[t][b − m_t]        for b in [0, ⌈out / s⌉)

and the output interleaves the phases, ``y[b·s + ρ] = Y_ρ[b]``, then drops
the tail beyond ``out``. No multiplication ever touches an inserted zero.
Phases are taken relative to the *cropped* output, so the interleave is a
tree of ``stack`` ops whose result is already in ``(N, C, B₁, s₁, B₂, s₂, …)``
order: XLA's CPU backend emits it as one vectorised loop (an uncropped
interleave followed by an odd crop cost up to 1.8× more, measured on the 3d
layer).

With one input channel per group (depthwise), the "GEMM" is an outer
product: :func:`depthwise_term` multiplies shifted slices of the once-padded
input by each tap's weights inside the col2im loop.

The gradients are not derived from this code: the primitive in
:mod:`jtconv.lowering.primitive` supplies its own transposes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering import taps as bounded
from jtconv.lowering.axes import AxisPlan, axis_plans
from jtconv.lowering.common import accumulation_dtype, fusable_stack, output_dtype


def tap_products(
    x: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, precision, acc_dtype, layout: str = "weight_copy"
) -> list[jax.Array]:
    """``Z[t]`` of shape ``(N, Cout, *S)`` for every flattened tap ``t``.

    ``layout`` lays out the GEMM ``Z = Wᵀ·x`` (per group; ``rows = N·S``
    input positions, ``inner = Cin/G``, ``cols = Cg·T``):

    * ``"weight_copy"``: ``Z`` as ``(T·Cg, N·S)``, from a transposed copy of
      the weight; the col2im then reads ``Z`` along the positions.
    * ``"weight_rhs"``: the weight stays in place as the GEMM's right-hand
      side and the input is transposed, giving ``Z`` as ``(N·S, Cg·T)``,
      which the col2im reads across the positions (pays off when the weight
      is the larger operand).
    * ``"weight_lhs_in_place"``: the weight's leading axis contracted where it
      lies, keeping the col2im's order; XLA CPU runs that dot in Eigen and has
      none for fp16/bf16 inputs with a float32 result.
    """
    n = x.shape[0]
    g, cin_g, cg = geom.groups, geom.in_per_group, geom.out_per_group
    taps = math.prod(geom.kernel_size)
    spatial = tuple(x.shape[2:])
    w = weight.reshape(g, cin_g, cg, taps)
    xg = x.reshape((n, g, cin_g) + spatial)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    positions = math.prod(spatial)
    if layout == "weight_rhs":
        xt = xg.reshape(n, g, cin_g, positions).transpose(1, 0, 3, 2).reshape(g, n * positions, cin_g)
        wg = weight.reshape(g, cin_g, cg * taps)
        if g == 1:  # a batch axis of size 1 costs XLA a copy
            z = lax.dot_general(xt[0], wg[0], (((1,), (0,)), ((), ())), **options)
        else:
            z = lax.dot_general(xt, wg, (((2,), (1,)), ((0,), (0,))), **options)
        z = z.reshape((g, n, positions, cg, taps))  # from (G, N·S, Cg·T)
        return [z[..., t].transpose(1, 0, 3, 2).reshape((n, g * cg) + spatial) for t in range(taps)]
    if layout == "weight_lhs_in_place":
        if g == 1:
            z = lax.dot_general(weight.reshape(cin_g, cg * taps), x, (((0,), (1,)), ((), ())), **options)
        else:
            z = lax.dot_general(weight.reshape(g, cin_g, cg * taps), xg, (((1,), (2,)), ((0,), (1,))), **options)
        z = z.reshape((g, cg, taps, n) + spatial)  # from (G, Cg·T, N, *S)
        return [jnp.moveaxis(z[:, :, t].reshape((g * cg, n) + spatial), 1, 0) for t in range(taps)]
    z = lax.dot_general(w.transpose(0, 3, 2, 1), xg, (((3,), (2,)), ((0,), (1,))), **options)  # (G, T, Cg, N, *S)
    pieces = lax.split(z, (1,) * taps, axis=1)
    return [jnp.moveaxis(p.reshape((g * cg, n) + spatial), 1, 0) for p in pieces]


def interleave_phases(
    term: Callable[[int, tuple[int, ...]], jax.Array],
    lead: tuple[int, int],
    dtype,
    plans: tuple[AxisPlan, ...],
    geom: ConvTransposeGeometry,
) -> jax.Array:
    """Sum the shifted tap contributions per phase and interleave the phases.

    ``term(t, shifts)``: tap ``t``'s contribution to its phase, ``Z[t][b − m_t]``
    for every block ``b``, as ``(N, C, *B)`` (``shifts``: the ``m_t`` per axis).
    ``lead``: ``(N, C)``. Returns ``(N, C, *(B·s))``, whose first ``out``
    positions per axis are the output.
    """
    blocks = tuple(p.blocks for p in plans)

    def phase_sum(phase: tuple[int, ...]) -> jax.Array:
        total = None
        for taps in itertools.product(*(p.taps_of_phase(r) for p, r in zip(plans, phase))):
            flat = int(np.ravel_multi_index(taps, geom.kernel_size))
            shifted = term(flat, tuple(p.tap_shift[t] for p, t in zip(plans, taps)))
            total = shifted if total is None else total + shifted
        if total is None:  # no tap reaches this phase (e.g. stride > kernel span)
            total = jnp.zeros(lead + blocks, dtype)
        return total

    def interleave(axis: int, phase: tuple[int, ...]) -> jax.Array:
        if axis == len(plans):
            return phase_sum(phase)
        parts = [interleave(axis + 1, phase + (r,)) for r in range(plans[axis].stride)]
        # parts: (N, C, B_0, …, B_axis, B_axis+1, s_axis+1, …): the phase axis goes after B_axis
        return fusable_stack(parts, axis=3 + axis)

    y = interleave(0, ())
    return y.reshape(lead + tuple(b * p.stride for b, p in zip(blocks, plans)))


def padded_pieces_term(pieces: list[jax.Array], plans: tuple[AxisPlan, ...]) -> Callable:
    """:func:`interleave_phases` ``term`` from the tap products ``Z[t]`` (``(N, C, *S)``): each padded into place."""
    spatial = tuple(pieces[0].shape[2:])
    zero = jnp.zeros((), pieces[0].dtype)

    def term(flat: int, shifts: tuple[int, ...]) -> jax.Array:
        config = [(0, 0, 0)] * 2 + [(m, p.blocks - i - m, 0) for p, m, i in zip(plans, shifts, spatial)]
        return lax.pad(pieces[flat], zero, config)  # negative amounts crop

    return term


def depthwise_term(x: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, plans, acc_dtype) -> Callable:
    """:func:`interleave_phases` ``term`` for one input channel per group.

    The input is padded once and each tap reads a shifted slice of it, times
    that tap's weights: ``Z[t][b − m_t] = x_pad[b − m_t + L] · w[t]``. Padding
    every product instead (as the GEMM path must) puts a bounds test on every
    element, which XLA's CPU loop does not vectorise (``python
    benchmarks/run.py --shapes depthwise`` measures the difference).
    """
    n, g, cg = x.shape[0], geom.groups, geom.out_per_group
    spatial = tuple(x.shape[2:])
    low = [max(0, *p.tap_shift) for p in plans]
    high = [max(0, p.blocks - min(p.tap_shift) - i) for p, i in zip(plans, spatial)]
    xp = lax.pad(
        x.astype(acc_dtype), jnp.zeros((), acc_dtype), [(0, 0, 0)] * 2 + [(lo, hi, 0) for lo, hi in zip(low, high)]
    )
    xp = xp.reshape((n, g, 1) + xp.shape[2:])
    w = weight.reshape(g, cg, math.prod(geom.kernel_size)).astype(acc_dtype)
    expand = (None, slice(None), slice(None)) + (None,) * len(spatial)

    def term(flat: int, shifts: tuple[int, ...]) -> jax.Array:
        starts = [lo - m for lo, m in zip(low, shifts)]
        window = lax.slice(xp, (0, 0, 0, *starts), (n, g, 1, *(st + p.blocks for st, p in zip(starts, plans))))
        return (window * w[:, :, flat][expand]).reshape((n, g * cg) + tuple(p.blocks for p in plans))

    return term


def matmul_forward(
    x: jax.Array,
    weight: jax.Array,
    geom: ConvTransposeGeometry,
    *,
    precision=None,
    preferred_element_type=None,
    layout: str = "weight_copy",
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: GEMM + phase-wise
    col2im (``layout``: see :func:`tap_products`). Kernels of
    :data:`~jtconv.lowering.taps.BOUNDED_MIN_TAPS` taps or more run
    :func:`~jtconv.lowering.taps.conv_transpose_taps`, the same GEMM and col2im
    in a program whose size does not depend on the kernel (``layout`` is then
    unused)."""
    if bounded.uses_bounded_taps(geom):
        return bounded.conv_transpose_taps(
            x, weight, geom, precision=precision, preferred_element_type=preferred_element_type
        )
    acc_dtype = accumulation_dtype(x.dtype, preferred_element_type)
    plans = axis_plans(geom)
    if geom.in_per_group == 1:
        term = depthwise_term(x, weight, geom, plans, acc_dtype)
    else:
        term = padded_pieces_term(tap_products(x, weight, geom, precision, acc_dtype, layout), plans)
    y = interleave_phases(term, (x.shape[0], geom.out_channels), acc_dtype, plans, geom)
    y = y[(slice(None), slice(None)) + tuple(slice(0, out) for out in geom.output_size)]
    return y.astype(output_dtype(x.dtype, preferred_element_type))
