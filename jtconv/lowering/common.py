"""Pieces shared by the lowerings: layouts and the common signature."""

from __future__ import annotations

from typing import Protocol

import jax
from jax import lax

from jtconv.geometry import ConvTransposeGeometry

def conv_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    """Channels-first dimension numbers: ``(N, C, *S)``, ``(O, I, *K)``, ``(N, C, *S)``."""
    spec = tuple(range(ndim + 2))
    return lax.ConvDimensionNumbers(lhs_spec=spec, rhs_spec=spec, out_spec=spec)


class Lowering(Protocol):
    """Signature every lowering implements.

    ``x``: ``(N, Cin, *S)`` (batched, channels first); ``weight``:
    ``(Cin, Cout/G, *K)`` (PyTorch layout); ``geom``: validated geometry.
    Returns ``(N, Cout, *O)`` without bias, dtype as ``lax.conv_general_dilated``
    would give for ``(x, weight, preferred_element_type)``.
    """

    def __call__(
        self,
        x: jax.Array,
        weight: jax.Array,
        geom: ConvTransposeGeometry,
        *,
        precision=None,
        preferred_element_type=None,
    ) -> jax.Array: ...
