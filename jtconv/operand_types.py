"""Operand dtype rules of a transposed convolution, torch's CPU ``conv_transpose{1,2,3}d``'s, checked before tracing:

* floating-point (and complex) ``input`` and ``weight``, promoted as JAX promotes them; an inexact ``bias``;
* ``int64`` ``input`` and ``weight`` together, computed exactly in ``int64`` (JAX needs
  ``jax.config.update("jax_enable_x64", True)``: without it an ``int64`` array becomes ``int32``), with an ``int64``
  ``bias`` (torch's 1d/2d kernels also cast a narrower integer bias, its 3d kernel refuses one);
* any other integer or boolean ``input`` or ``weight``, and ``int64`` mixed with a floating dtype, are a
  ``TypeError`` naming the argument and its dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["check_operand_dtypes"]

_RULE = "torch's conv_transpose computes floating-point dtypes, and int64 input and weight together"
_X64_HINT = "; int64 needs jax.config.update('jax_enable_x64', True) (without it JAX turns int64 arrays into int32)"


def _exact(value: jax.Array) -> bool:
    return not jnp.issubdtype(value.dtype, jnp.inexact)


def check_operand_dtypes(x: jax.Array, weight: jax.Array, bias: jax.Array | None = None) -> None:
    """Raise ``TypeError`` unless the operands' dtypes are ones torch computes (module docstring).

    Raises:
      TypeError: naming ``input``, ``weight`` or ``bias`` and its dtype.
    """
    operands = (("input", x), ("weight", weight))
    if not any(_exact(value) for _, value in operands):
        if bias is not None and _exact(bias):
            raise TypeError(
                f"bias must have a floating-point dtype like the input and weight ({x.dtype}), got {bias.dtype}"
            )
        return
    # An integer operand other than int64 is named first, else the floating one beside an int64.
    for name, value in sorted(operands, key=lambda operand: not _exact(operand[1])):
        if value.dtype != jnp.int64:
            hint = _X64_HINT if value.dtype == jnp.int32 else ""
            raise TypeError(f"{name} has dtype {value.dtype} (input {x.dtype}, weight {weight.dtype}): {_RULE}{hint}")
    if bias is not None and bias.dtype != jnp.int64:
        raise TypeError(f"bias must be int64 like the int64 input and weight, got {bias.dtype}")
