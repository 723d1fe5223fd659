"""Per-axis arithmetic the methods (and ``jtconv explain``) share: how the taps of one spatial axis map to output
phases and block shifts.

Along one axis with stride ``s``, dilation ``d``, kernel ``k`` and low crop ``lo``, tap ``t`` of input position
``i`` lands at output position ``o = i·s + t·d − lo``; ``o = b·s + ρ`` splits it into a *block* ``b`` and a *phase*
``ρ``. :class:`AxisPlan` takes phases relative to the cropped output (the ``matmul`` col2im), :class:`PhaseAxis`
relative to the uncropped result with whole blocks (the ``phase`` GEMM).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jtconv.geometry import ConvTransposeGeometry


def ceil_div(a: int, b: int) -> int:
    """``⌈a / b⌉`` for integers (``b > 0``)."""
    return -(-a // b)


def block_shifts(geom: ConvTransposeGeometry) -> tuple[int, ...]:
    """``D = ⌊d·(k − 1) / s⌋ + 1`` per axis: how many output blocks one input position's taps reach."""
    return tuple(d * (k - 1) // s + 1 for k, s, d in zip(geom.kernel_size, geom.stride, geom.dilation))


@dataclasses.dataclass(frozen=True)
class AxisPlan:
    """How the taps of one spatial axis map to phases of the cropped output.

    Attributes:
      stride: ``s``.
      tap_phase: ``ρ_t = (t·d − lo) mod s`` per tap ``t``.
      tap_shift: ``m_t = ⌊(t·d − lo) / s⌋`` per tap (negative when the crop removes the tap's first positions).
      blocks: ``B = ⌈out / s⌉`` per phase.
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
    for k, s, d, (lo, _), out in zip(geom.kernel_size, geom.stride, geom.dilation, geom.crop, geom.output_size):
        phase = tuple((t * d - lo) % s for t in range(k))
        shift = tuple((t * d - lo) // s for t in range(k))
        plans.append(AxisPlan(s, phase, shift, ceil_div(out, s)))
    return tuple(plans)


@dataclasses.dataclass(frozen=True)
class PhaseAxis:
    """How one spatial axis of the uncropped result splits into blocks, phases and shifts (``t·d = q_t·s + r_t``).

    Attributes:
      stride: ``s``, the number of phases.
      shifts: ``D``, the number of block shifts ``q_t``.
      first_block: the first block computed, ``⌊lo / s⌋``.
      blocks: ``B``, the blocks computed from ``first_block`` on, enough to cover the cropped output.
      offset: where the output starts in the computed blocks, ``lo − first_block·s``.
      tap_phase, tap_shift: ``r_t`` and ``q_t`` per tap.
      input_low, input_high: padding of the input (negative: a crop) so that ``P[u][b] = x_pad[b + u]``.
    """

    stride: int
    shifts: int
    first_block: int
    blocks: int
    offset: int
    tap_phase: tuple[int, ...]
    tap_shift: tuple[int, ...]
    input_low: int
    input_high: int

    def tap_table(self, kernel: int) -> np.ndarray:
        """``(s, D)`` array of the tap at phase ``r`` and column ``u`` (``q = D − 1 − u``), ``kernel`` if none."""
        table = np.full((self.stride, self.shifts), kernel, dtype=np.int32)
        for t, (r, q) in enumerate(zip(self.tap_phase, self.tap_shift)):
            table[r, self.shifts - 1 - q] = t
        return table


def phase_axes(geom: ConvTransposeGeometry) -> tuple[PhaseAxis, ...]:
    """One :class:`PhaseAxis` per spatial axis of ``geom``."""
    axes = []
    for k, s, d, shifts, (lo, _), out, size in zip(
        geom.kernel_size, geom.stride, geom.dilation, block_shifts(geom), geom.crop, geom.output_size, geom.input_size
    ):
        first = lo // s
        offset = lo - first * s
        blocks = ceil_div(offset + out, s)
        low = shifts - 1 - first  # P[u][b] = x[first + b − (D − 1 − u)] = x_pad[b + u]
        high = blocks + shifts - 1 - low - size
        tap_phase = tuple(t * d % s for t in range(k))
        tap_shift = tuple(t * d // s for t in range(k))
        axes.append(PhaseAxis(s, shifts, first, blocks, offset, tap_phase, tap_shift, low, high))
    return tuple(axes)


def phase_counts(axes) -> tuple[int, int, int]:
    """``(Π s, Π D, Π B)``."""
    return math.prod(a.stride for a in axes), math.prod(a.shifts for a in axes), math.prod(a.blocks for a in axes)


def overlap_phase_counts(kernel_size: int, stride: int, dilation: int) -> tuple[int, ...]:
    """Taps reaching an interior output position of each phase ``0 … s − 1``: tap ``t`` reaches ``t·d mod s``, so
    the counts are equal exactly when ``s`` divides ``k`` and ``gcd(d, s) = 1``."""
    counts = [0] * stride
    for t in range(kernel_size):
        counts[t * dilation % stride] += 1
    return tuple(counts)
