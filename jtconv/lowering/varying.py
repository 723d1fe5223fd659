"""``shard_map``'s varying manual axes: read them and cast values to vary over them.

Inside ``jax.shard_map`` a value's type records the mesh axes it varies over; a primitive's operands must agree,
and a cotangent must vary as its primal does (a ``jax.vjp`` at a ``jnp.zeros`` point, which varies over nothing,
would return a gradient summed over devices: ``pcast``'s transpose is a ``psum``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def aval_varying_axes(aval) -> frozenset:
    """The manual mesh axes an abstract value varies over (empty outside ``shard_map``)."""
    return frozenset(aval.mat.varying)


def varying_axes(value) -> frozenset:
    """The manual mesh axes ``value`` varies over (empty outside ``shard_map``)."""
    return aval_varying_axes(jax.typeof(value))


def vary_over(value: jax.Array, axes: frozenset) -> jax.Array:
    """``value`` cast to vary over ``axes`` as well (unchanged if it already does)."""
    missing = axes - varying_axes(value)
    return lax.pcast(value, tuple(sorted(missing)), to="varying") if missing else value


def zeros_varying(shape, dtype, axes: frozenset) -> jax.Array:
    """Zeros of ``shape`` and ``dtype`` that vary over ``axes``: a zero point for ``jax.vjp``."""
    return vary_over(jnp.zeros(shape, dtype), axes)
