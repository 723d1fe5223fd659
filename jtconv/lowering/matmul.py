"""The "matmul" lowering: one GEMM, then a phase-wise col2im.

The scatter view computed directly. For every kernel tap ``t`` (all spatial
dimensions flattened), one matrix product gives that tap's contribution at
every input position::

    Z[g, t, co, n, i] = Σ_ci  w[g·Cin/G + ci, co, t] · x[n, g·Cin/G + ci, i]

and the tap's contribution lands at full-output position ``f = i·s + t·d``
(before cropping). Split ``f`` into a phase ``r = f mod s`` and a block
``q = f div s``: tap ``t`` feeds phase ``r_t = (t·d) mod s`` at block
``q = i + m_t`` with ``m_t = (t·d) div s``. So each phase is a sum of
*shifted* (never strided) copies of the ``Z[t]`` that belong to it::

    Y_r[q] = Σ_{t : r_t = r}  Z[t][q − m_t]

and the full output interleaves the phases, ``y[q·s + r] = Y_r[q]``, before
the crop ``[lo, lo + out)``. No multiplication ever touches an inserted zero.

Everything is ``dot_general``, ``split``, ``pad``, ``add``, ``reshape`` and
``transpose``, whose transposes are the efficient backward pass: automatic
differentiation turns the pads into slices (an im2col of the cotangent) and
the GEMM into two GEMMs (input gradient and weight gradient), so no
``custom_vjp`` is needed and jvp, vmap and higher-order derivatives work.

With one input channel per group (depthwise), the "GEMM" is an outer
product; it is written as a broadcast multiply so XLA fuses it with the
col2im into one loop.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jtconv.geometry import ConvTransposeGeometry


@dataclasses.dataclass(frozen=True)
class AxisPlan:
    """How the taps of one spatial axis map to output phases.

    Attributes:
      stride: ``s``.
      tap_phase: ``r_t = (t·d) mod s`` per tap ``t``.
      tap_shift: ``m_t = (t·d) div s`` per tap ``t``.
      blocks: number of blocks ``Q`` per phase, enough to cover the full
        output and the crop window.
    """

    stride: int
    tap_phase: tuple[int, ...]
    tap_shift: tuple[int, ...]
    blocks: int

    def taps_of_phase(self, phase: int) -> list[int]:
        return [t for t, r in enumerate(self.tap_phase) if r == phase]


def axis_plans(geom: ConvTransposeGeometry) -> tuple[AxisPlan, ...]:
    """One :class:`AxisPlan` per spatial axis of ``geom``."""
    plans = []
    for i, k, s, d, (lo, _), out in zip(
        geom.input_size, geom.kernel_size, geom.stride, geom.dilation, geom.crop, geom.output_size
    ):
        phase = tuple((t * d) % s for t in range(k))
        shift = tuple((t * d) // s for t in range(k))
        blocks = max(i + max(shift), -(-(lo + out) // s))
        plans.append(AxisPlan(s, phase, shift, blocks))
    return tuple(plans)


def accumulation_dtype(dtype, preferred_element_type) -> jnp.dtype:
    """fp16/bf16 products are summed in float32 (as XLA's convolutions do)."""
    if preferred_element_type is not None:
        return jnp.dtype(preferred_element_type)
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
        return jnp.dtype(jnp.float32)
    return dtype


def tap_products(x: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, precision, acc_dtype) -> list[jax.Array]:
    """``Z[t]`` of shape ``(G, Cout/G, N, *S)`` for every flattened tap ``t``."""
    n = x.shape[0]
    g, cin_g, cg = geom.groups, geom.in_per_group, geom.out_per_group
    taps = math.prod(geom.kernel_size)
    spatial = tuple(x.shape[2:])
    xg = x.reshape((n, g, cin_g) + spatial)
    w = weight.reshape(g, cin_g, cg, taps)
    if cin_g == 1:
        xs = jnp.moveaxis(xg, 0, 2).astype(acc_dtype)  # (G, 1, N, *S)
        expand = (slice(None), slice(None)) + (None,) * (1 + len(spatial))
        return [w[:, 0, :, t].astype(acc_dtype)[expand] * xs for t in range(taps)]
    z = lax.dot_general(
        w.transpose(0, 3, 2, 1),  # (G, T, Cg, Cin/G)
        xg,
        dimension_numbers=(((3,), (2,)), ((0,), (1,))),
        precision=precision,
        preferred_element_type=acc_dtype,
    )  # (G, T, Cg, N, *S)
    pieces = lax.split(z, (1,) * taps, axis=1)
    return [p.reshape((g, cg, n) + spatial) for p in pieces]


def scatter_phases(pieces: list[jax.Array], geom: ConvTransposeGeometry, plans: tuple[AxisPlan, ...]) -> jax.Array:
    """Sum the shifted tap products per phase and interleave the phases.

    Returns the uncropped output ``(N, Cout, *(Q·s))``.
    """
    g, cg, n = pieces[0].shape[:3]
    spatial = tuple(pieces[0].shape[3:])
    blocks = tuple(p.blocks for p in plans)
    zero = jnp.zeros((), pieces[0].dtype)
    phases = []
    for phase in itertools.product(*(range(p.stride) for p in plans)):
        total = None
        for taps in itertools.product(*(p.taps_of_phase(r) for p, r in zip(plans, phase))):
            flat = int(np.ravel_multi_index(taps, geom.kernel_size))
            config = [(0, 0, 0)] * 3 + [
                (p.tap_shift[t], q - i - p.tap_shift[t], 0) for p, t, q, i in zip(plans, taps, blocks, spatial)
            ]
            shifted = lax.pad(pieces[flat], zero, config)
            total = shifted if total is None else total + shifted
        if total is None:  # no tap reaches this phase (e.g. stride > kernel span)
            total = jnp.zeros((g, cg, n) + blocks, pieces[0].dtype)
        phases.append(total)
    ndim = len(plans)
    strides = tuple(p.stride for p in plans)
    y = jnp.stack(phases).reshape(strides + (g, cg, n) + blocks)
    # (s1.., G, Cg, N, Q1..) -> (N, G, Cg, Q1, s1, Q2, s2, ...)
    order = [ndim + 2, ndim, ndim + 1]
    for axis in range(ndim):
        order += [ndim + 3 + axis, axis]
    y = y.transpose(order)
    return y.reshape((n, g * cg) + tuple(q * s for q, s in zip(blocks, strides)))


def conv_transpose_matmul(
    x: jax.Array,
    weight: jax.Array,
    geom: ConvTransposeGeometry,
    *,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: GEMM + phase-wise col2im."""
    acc_dtype = accumulation_dtype(x.dtype, preferred_element_type)
    plans = axis_plans(geom)
    pieces = tap_products(x, weight, geom, precision, acc_dtype)
    y = scatter_phases(pieces, geom, plans)
    window = tuple(slice(lo, lo + out) for (lo, _), out in zip(geom.crop, geom.output_size))
    y = y[(slice(None), slice(None)) + window]
    out_dtype = preferred_element_type if preferred_element_type is not None else x.dtype
    return y.astype(out_dtype)
