"""The "matmul" lowering's forward: one GEMM, then a phase-wise col2im.

For every kernel tap ``t`` (spatial dimensions flattened), one matrix product gives that tap's contribution at every
input position, which lands at output position ``o = i·s + t·d − lo``::

    Z[g, t, co, n, i] = Σ_ci  w[g·Cin/G + ci, co, t] · x[n, g·Cin/G + ci, i]

With ``o = b·s + ρ``, tap ``t`` feeds phase ``ρ_t = (t·d − lo) mod s`` at block ``b = i + m_t``,
``m_t = ⌊(t·d − lo) / s⌋`` (:class:`~jtconv.lowering.axes.AxisPlan`), so each phase is a sum of shifted (never
strided) copies, and the output interleaves the phases::

    Y_ρ[b] = Σ_{t : ρ_t = ρ}  Z[t][b − m_t]   for b < ⌈out / s⌉,        y[b·s + ρ] = Y_ρ[b]

No product touches an inserted zero. Phases are relative to the cropped output, so the interleave is a tree of
stacks already in ``(N, C, B₁, s₁, …)`` order, which XLA's CPU backend emits as one vectorised loop. With one input
channel per group the GEMM is an outer product (:func:`depthwise_term`). The transposes are
:mod:`jtconv.lowering.matmul_transpose`'s.
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
from jtconv.lowering.common import accumulation_dtype, fusable_stack, output_dtype, pad


def tap_products(
    x: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, precision, acc_dtype, layout: str = "weight_copy"
) -> list[jax.Array]:
    """``Z[t]`` of shape ``(N, Cout, *S)`` for every flattened tap ``t``.

    ``layout`` lays out the GEMM ``Z = Wᵀ·x`` per group (``N·S`` positions, ``Cin/G`` inner, ``Cg·T`` columns):

    * ``"weight_copy"``: ``Z`` as ``(T·Cg, N·S)``, from a transposed copy of the weight;
    * ``"weight_rhs"``: the weight in place as the right-hand side and the input transposed, ``Z`` as
      ``(N·S, Cg·T)`` (pays off when the weight is the larger operand);
    * ``"weight_lhs_in_place"``: the weight's leading axis contracted where it lies (XLA CPU runs that dot in Eigen,
      which has none for fp16/bf16 inputs with a float32 result).
    """
    n, g, cin_g, cg = x.shape[0], geom.groups, geom.in_per_group, geom.out_per_group
    taps = math.prod(geom.kernel_size)
    spatial = tuple(x.shape[2:])
    w = weight.reshape(g, cin_g, cg, taps)
    xg = x.reshape((n, g, cin_g) + spatial)
    options = dict(precision=precision, preferred_element_type=acc_dtype)
    if layout == "weight_rhs":
        positions = math.prod(spatial)
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
    return [jnp.moveaxis(p.reshape((g * cg, n) + spatial), 1, 0) for p in lax.split(z, (1,) * taps, axis=1)]


def interleave_phases(
    term: Callable[[int, tuple[int, ...]], jax.Array],
    lead: tuple[int, int],
    dtype,
    plans: tuple[AxisPlan, ...],
    geom: ConvTransposeGeometry,
) -> jax.Array:
    """``(N, C, *(B·s))`` (``lead = (N, C)``): per phase the sum of ``term(t, m_t)`` (tap ``t``'s contribution
    ``Z[t][b − m_t]`` as ``(N, C, *B)``) over its taps, the phases interleaved; the first ``out`` positions per axis
    are the output."""
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
        return fusable_stack(parts, axis=3 + axis)  # the phase axis after B_axis

    y = interleave(0, ())
    return y.reshape(lead + tuple(b * p.stride for b, p in zip(blocks, plans)))


def depthwise_term(x: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, plans, acc_dtype) -> Callable:
    """:func:`interleave_phases` ``term`` for one input channel per group: ``Z[t][b − m_t] = x_pad[b − m_t + L]·w[t]``,
    slices of the once-padded input (padding every product puts a bounds test on every element, which XLA's CPU
    loop does not vectorise: ``python benchmarks/run.py --shapes depthwise``)."""
    n, g, cg = x.shape[0], geom.groups, geom.out_per_group
    spatial = tuple(x.shape[2:])
    low = [max(0, *p.tap_shift) for p in plans]
    high = [max(0, p.blocks - min(p.tap_shift) - i) for p, i in zip(plans, spatial)]
    xp = pad(x.astype(acc_dtype), list(zip(low, high)))
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
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: GEMM (``layout``: :func:`tap_products`) and phase-wise
    col2im; from :data:`~jtconv.lowering.taps.BOUNDED_MIN_TAPS` taps on, the same in a program whose size does not
    depend on the kernel (:func:`~jtconv.lowering.taps.conv_transpose_taps`, ``layout`` unused)."""
    if bounded.uses_bounded_taps(geom):
        return bounded.conv_transpose_taps(
            x, weight, geom, precision=precision, preferred_element_type=preferred_element_type
        )
    acc_dtype = accumulation_dtype(x.dtype, preferred_element_type)
    plans = axis_plans(geom)
    if geom.in_per_group == 1:
        term = depthwise_term(x, weight, geom, plans, acc_dtype)
    else:
        pieces = tap_products(x, weight, geom, precision, acc_dtype, layout)

        def term(flat: int, shifts: tuple[int, ...]) -> jax.Array:
            spatial = pieces[flat].shape[2:]
            return pad(pieces[flat], [(m, p.blocks - i - m) for p, m, i in zip(plans, shifts, spatial)])

    y = interleave_phases(term, (x.shape[0], geom.out_channels), acc_dtype, plans, geom)
    y = y[(slice(None), slice(None)) + tuple(slice(0, out) for out in geom.output_size)]
    return y.astype(output_dtype(x.dtype, preferred_element_type))
