"""Operand dtype rules of a transposed convolution, checked before anything is traced.

torch computes transposed convolutions for floating-point (and complex)
tensors only: its GPU and oneDNN kernels reject every integer and boolean
input, weight and bias, while its native CPU kernel (batch 1, for example)
accepts ``int64`` input and weight together and casts an integer bias.
jtconv applies the strict form of that rule whatever the shapes: an integer
or boolean ``input``, ``weight`` or ``bias`` is a ``TypeError`` that names
the argument and its dtype. Floating dtypes that differ are promoted as JAX
promotes them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["check_operand_dtypes"]


def check_operand_dtypes(x: jax.Array, weight: jax.Array, bias: jax.Array | None = None) -> None:
    """Raise ``TypeError`` unless every operand has an inexact (floating or complex) dtype.

    Raises:
      TypeError: naming ``input``, ``weight`` or ``bias`` and its dtype.
    """
    for name, value in (("input", x), ("weight", weight), ("bias", bias)):
        if value is not None and not jnp.issubdtype(value.dtype, jnp.inexact):
            raise TypeError(
                f"{name} must have a floating-point dtype (float32, bfloat16, float16, float64) like torch's "
                f"conv_transpose, got {value.dtype}; convert it first, e.g. {name}.astype(jnp.float32)"
            )
