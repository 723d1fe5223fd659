"""Choosing a lowering per backend and shape.

``algorithm="auto"`` asks :func:`choose_algorithm`; any name in
:data:`ALGORITHMS` forces that lowering.
"""

from __future__ import annotations

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import Lowering
from jtconv.lowering.matmul import conv_transpose_matmul
from jtconv.lowering.reference import conv_transpose_reference

LOWERINGS: dict[str, Lowering] = {
    "reference": conv_transpose_reference,
    "matmul": conv_transpose_matmul,
}

ALGORITHMS: tuple[str, ...] = tuple(LOWERINGS)


def choose_algorithm(geom: ConvTransposeGeometry, backend: str) -> str:
    """Name of the lowering ``algorithm="auto"`` runs for ``geom`` on ``backend``."""
    del geom
    if backend == "cpu":
        return "matmul"
    return "reference"


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
