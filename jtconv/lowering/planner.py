"""Choosing a lowering per backend and shape.

``algorithm="auto"`` asks :func:`choose_algorithm`; any name in
:data:`ALGORITHMS` forces that lowering.
"""

from __future__ import annotations

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import MMAP_THRESHOLD_BYTES, Lowering, tap_product_bytes
from jtconv.lowering.primitive import (
    conv_transpose_conv,
    conv_transpose_matmul,
    conv_transpose_phase,
    conv_transpose_split,
    xla_convolutions_win,
)
from jtconv.lowering.reference import conv_transpose_reference
from jtconv.lowering.phase import supports as phase_supports
from jtconv.lowering.split import supports as split_supports

LOWERINGS: dict[str, Lowering] = {
    "reference": conv_transpose_reference,
    "matmul": conv_transpose_matmul,
    "conv": conv_transpose_conv,
    "split": conv_transpose_split,
    "phase": conv_transpose_phase,
}

ALGORITHMS: tuple[str, ...] = tuple(LOWERINGS)

SPLIT_MIN_KERNEL = 5
SPLIT_MAX_CIN = 128
"""2d stride-1 layers (one group) with kernels of at least
:data:`SPLIT_MIN_KERNEL` taps per axis, at most :data:`SPLIT_MAX_CIN` input
channels and at least half as many output channels run ``"split"`` on CPU.
Measured on two cores, forward + backward, ``split`` vs the best other
lowering: k7 16→16 channels 5.6 vs 18.7 ms (``conv``; torch 5.5), k5 32→32
10.4 vs 13.0 ms, k7 64→64 6.4 vs 7.7 ms (``matmul``). With k3 the tap
products are small and ``matmul`` is as fast or faster (16→16: 7.5 vs
10.0 ms); with Cout < Cin/2 the split GEMM is too short (k5 32→8: 11.2 vs 8.7 ms)."""

CONV_MAX_CIN = 32
"""Stride-1 layers with at most this many input channels and kernels of at
least :data:`CONV_MIN_KERNEL` taps per axis run ``"conv"`` on CPU."""

CONV_MIN_KERNEL = 5
"""With smaller kernels the tap products stay small and ``"matmul"`` wins even
with few channels (2d k3, 16 channels: 0.9 vs 1.2 ms forward, 3.1 vs 4.0 ms
forward + backward; 1d k3, 32 channels: 0.8 vs 1.1 ms / 2.8 vs 3.1 ms)."""

CONV_MIN_COLUMN_BYTES = MMAP_THRESHOLD_BYTES
"""Stride-1 layers whose tap products ``N·S·T·Cout`` (float32) reach this size
run ``"conv"`` on CPU: XLA's blocked convolution never holds them all."""

PHASE_MIN_COLUMN_BYTES = MMAP_THRESHOLD_BYTES
"""Strided layers whose kernels tile their strides (:func:`phase_tiles`) run
``"phase"`` on CPU once the matmul lowering's tap products reach this size
(glibc then serves them with fresh pages on every call). Measured on two
cores, forward, ``matmul`` vs ``phase`` (torch): 1d k8 s4 x(37, 16, 4096) → 8
channels (37 MiB) 23.0 vs 5.6 ms (13.2); 2d k8 s4 x(4, 32, 32, 32) → 32
(33.5 MiB) 7.3–17 vs 4.2–5.8 ms (8.3); 3d k4 s2 x(2, 32, 16, 16, 16) → 16
(32 MiB) 6.4–13.6 vs 4.2–4.6 ms (5.1; forward + backward 35.7 vs 19.2, torch
12.7); 2d k4 s2 x(64, 128, 16, 16) → 64 (67 MiB) 56.8 vs 34.4 ms (50.9).
Below the threshold ``matmul`` is as fast or faster (DCGAN x(16, 128, 16, 16):
5.6 vs 7.7 ms)."""


def phase_tiles(geom: ConvTransposeGeometry) -> bool:
    """Whether ``geom``'s kernels tile its strides: on every axis stride ≥ 2,
    no dilation and ``k`` a multiple of ``s``, on some axis ``k > s``.

    Then every phase has ``k / s`` taps and the phase GEMM multiplies no
    zeros (k3 s2 would compute 4 products for 3 taps per axis: 2d
    x(8, 64, 64, 64) → 64 took 63.6 ms as ``"phase"``, 51.4 ms as ``"matmul"``);
    with ``k = s`` the tap products are the output and there is nothing to
    save (2d k2 s2 x(16, 64, 64, 64) → 32: 66 vs 35 ms).
    """
    axes = list(zip(geom.kernel_size, geom.stride, geom.dilation))
    return (
        phase_supports(geom)
        and all(s >= 2 and d == 1 and k % s == 0 for k, s, d in axes)
        and any(k > s for k, s, _ in axes)
    )


def choose_algorithm(geom: ConvTransposeGeometry, backend: str, *, batch: int = 1) -> str:
    """Name of the lowering ``algorithm="auto"`` runs for ``geom`` on ``backend``.

    * GPU/TPU: ``"reference"`` — XLA hands lhs-dilated convolutions to the
      vendor's backward-data kernels (cuDNN on NVIDIA GPUs).
    * CPU, 2d, stride 1, one group, kernels of at least
      :data:`SPLIT_MIN_KERNEL` taps, at most :data:`SPLIT_MAX_CIN` input
      channels and ``2·Cout ≥ Cin``: ``"split"`` — one GEMM between one-axis
      im2cols, whose intermediates hold ``k·(Cin + Cout)`` values per position
      instead of ``k²·Cout``, forward and backward on both cores.
    * CPU, 1d or 2d, stride 1, one group, at most 32 input channels,
      ``2·Cout ≥ Cin``, kernels below 5 taps and an im2col of at least 8 MiB
      (:func:`~jtconv.lowering.primitive.xla_convolutions_win`): ``"conv"``
      with XLA's convolutions for both transposes, run concurrently. 2d k3 d2
      x(12, 16, 64, 64) → 16, forward + backward (``value_and_grad``):
      ``matmul`` 22.4 ms, the reference 14.0 ms, torch 7.1 ms; the forward
      alone is faster as ``matmul`` (3.3 vs 4.8 ms, torch 1.9).
    * CPU, 1d or 2d, stride 1 in every dimension, one group, and either few
      input channels (≤ :data:`CONV_MAX_CIN`) with a kernel of at least
      :data:`CONV_MIN_KERNEL` taps per axis (in 1d only with ``Cout ≥ Cin``:
      x(23, 32, 4096) k7 → 8 channels takes 8.2 ms forward and 38 ms forward +
      backward as ``conv``, 5.2 and 19 ms as ``matmul``), or large tap products (≥
      :data:`CONV_MIN_COLUMN_BYTES` for ``batch`` examples): ``"conv"`` —
      with no zeros to insert, XLA's own convolution beats the GEMM + col2im
      whose intermediate is ``T`` times the output (k7, 32 channels: 6 vs 20 ms).
      Not in 3d, where XLA's CPU convolutions are slow even at stride 1
      (k3, 16 channels: 6.3 ms forward vs 1.4 ms for ``"matmul"``).
    * CPU, strided layers whose kernels tile their strides
      (:func:`phase_tiles`: k4 s2, k8 s4, k16 s8, …) with tap products
      ``N·S·T·Cout`` of at least :data:`PHASE_MIN_COLUMN_BYTES`: ``"phase"``
      — one GEMM per block of ``s`` outputs, whose intermediates hold
      ``(k/s)·Cin + s·Cout`` values per block (per axis) instead of ``k·Cout``
      per input position.
    * CPU otherwise: ``"matmul"`` — XLA's CPU convolutions multiply the
      inserted zeros, and their automatic gradients (weight gradient as a
      large-window convolution, grouped convolutions) are far slower than
      GEMMs.

    The thresholds come from ``benchmarks/`` on a two-core CPU
    (``benchmarks/RESULTS.md``).
    """
    if backend != "cpu":
        return "reference"
    if split_supports(geom):  # 1d/2d, stride 1, one group
        if (
            geom.ndim == 2
            and min(geom.kernel_size) >= SPLIT_MIN_KERNEL
            and geom.in_channels <= SPLIT_MAX_CIN
            and 2 * geom.out_channels >= geom.in_channels
        ):
            return "split"
        if xla_convolutions_win(geom, batch, 4):
            return "conv"
        columns = tap_product_bytes(geom, batch, 4)
        few_channels = geom.in_channels <= CONV_MAX_CIN and min(geom.kernel_size) >= CONV_MIN_KERNEL
        if geom.ndim == 1:
            few_channels = few_channels and geom.out_channels >= geom.in_channels
        if few_channels or columns >= CONV_MIN_COLUMN_BYTES:
            return "conv"
    elif phase_tiles(geom) and tap_product_bytes(geom, batch, 4) >= PHASE_MIN_COLUMN_BYTES:
        return "phase"
    return "matmul"


def get_lowering(algorithm: str, geom: ConvTransposeGeometry, backend: str, *, batch: int = 1) -> Lowering:
    """Resolve ``algorithm`` (``"auto"`` or a name in :data:`ALGORITHMS`)."""
    if algorithm == "auto":
        algorithm = choose_algorithm(geom, backend, batch=batch)
    try:
        return LOWERINGS[algorithm]
    except (KeyError, TypeError):
        raise ValueError(
            f"algorithm must be 'auto' or one of {ALGORITHMS}, got {algorithm!r}"
        ) from None
