"""Choosing a lowering per backend and shape.

``algorithm="auto"`` asks :func:`choose_algorithm`; any name in
:data:`ALGORITHMS` forces that lowering.
"""

from __future__ import annotations

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import Lowering
from jtconv.lowering.matmul_primitive import conv_transpose_matmul
from jtconv.lowering.reference import conv_transpose_reference

LOWERINGS: dict[str, Lowering] = {
    "reference": conv_transpose_reference,
    "matmul": conv_transpose_matmul,
}

ALGORITHMS: tuple[str, ...] = tuple(LOWERINGS)


def choose_algorithm(geom: ConvTransposeGeometry, backend: str) -> str:
    """Name of the lowering ``algorithm="auto"`` runs for ``geom`` on ``backend``.

    * GPU/TPU: ``"reference"`` — XLA hands lhs-dilated convolutions to the
      vendor's backward-data kernels (cuDNN on NVIDIA GPUs).
    * CPU: ``"matmul"`` — XLA's CPU convolutions multiply the inserted zeros,
      and their automatic gradients (weight gradient as a large-window
      convolution, grouped convolutions) are far slower than GEMMs. Measured
      on every shape of the benchmark suite, stride 1 included, matmul was
      faster than or as fast as the reference (``benchmarks/RESULTS.md``).
    """
    del geom
    return "matmul" if backend == "cpu" else "reference"


def get_lowering(algorithm: str, geom: ConvTransposeGeometry, backend: str) -> Lowering:
    """Resolve ``algorithm`` (``"auto"`` or a name in :data:`ALGORITHMS`)."""
    if algorithm == "auto":
        algorithm = choose_algorithm(geom, backend)
    try:
        return LOWERINGS[algorithm]
    except (KeyError, TypeError):
        raise ValueError(
            f"algorithm must be 'auto' or one of {ALGORITHMS}, got {algorithm!r}"
        ) from None
