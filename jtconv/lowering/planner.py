"""Choosing a lowering per backend and shape.

``algorithm="auto"`` asks :func:`choose_algorithm`; any name in
:data:`ALGORITHMS` forces that lowering.
"""

from __future__ import annotations

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import Lowering, tap_product_bytes
from jtconv.lowering.primitive import conv_transpose_conv, conv_transpose_matmul
from jtconv.lowering.reference import conv_transpose_reference

LOWERINGS: dict[str, Lowering] = {
    "reference": conv_transpose_reference,
    "matmul": conv_transpose_matmul,
    "conv": conv_transpose_conv,
}

ALGORITHMS: tuple[str, ...] = tuple(LOWERINGS)

CONV_MAX_CIN = 32
"""Stride-1 layers with at most this many input channels and kernels of at
least :data:`CONV_MIN_KERNEL` taps per axis run ``"conv"`` on CPU."""

CONV_MIN_KERNEL = 5
"""With smaller kernels the tap products stay small and ``"matmul"`` wins even
with few channels (2d k3, 16 channels: 0.9 vs 1.2 ms forward, 3.1 vs 4.0 ms
forward + backward; 1d k3, 32 channels: 0.8 vs 1.1 ms / 2.8 vs 3.1 ms)."""

CONV_MIN_COLUMN_BYTES = 32 * 2**20
"""Stride-1 layers whose tap products ``N·S·T·Cout`` (float32) reach this size
run ``"conv"`` on CPU: XLA's blocked convolution never holds them all."""


def choose_algorithm(geom: ConvTransposeGeometry, backend: str, *, batch: int = 1) -> str:
    """Name of the lowering ``algorithm="auto"`` runs for ``geom`` on ``backend``.

    * GPU/TPU: ``"reference"`` — XLA hands lhs-dilated convolutions to the
      vendor's backward-data kernels (cuDNN on NVIDIA GPUs).
    * CPU, 1d or 2d, stride 1 in every dimension, one group, and either few
      input channels (≤ :data:`CONV_MAX_CIN`) with a kernel of at least
      :data:`CONV_MIN_KERNEL` taps per axis, or large tap products (≥
      :data:`CONV_MIN_COLUMN_BYTES` for ``batch`` examples): ``"conv"`` —
      with no zeros to insert, XLA's own convolution beats the GEMM + col2im
      whose intermediate is ``T`` times the output (k7, 32 channels: 6 vs 20 ms).
      Not in 3d, where XLA's CPU convolutions are slow even at stride 1
      (k3, 16 channels: 6.3 ms forward vs 1.4 ms for ``"matmul"``).
    * CPU otherwise: ``"matmul"`` — XLA's CPU convolutions multiply the
      inserted zeros, and their automatic gradients (weight gradient as a
      large-window convolution, grouped convolutions) are far slower than
      GEMMs.

    The thresholds come from ``benchmarks/`` on a two-core CPU
    (``benchmarks/RESULTS.md``).
    """
    if backend != "cpu":
        return "reference"
    if all(s == 1 for s in geom.stride) and geom.groups == 1 and geom.ndim <= 2:
        columns = tap_product_bytes(geom, batch, 4)
        few_channels = geom.in_channels <= CONV_MAX_CIN and min(geom.kernel_size) >= CONV_MIN_KERNEL
        if few_channels or columns >= CONV_MIN_COLUMN_BYTES:
            return "conv"
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
