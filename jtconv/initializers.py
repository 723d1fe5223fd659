"""PyTorch's default initialisation of ``ConvTranspose{1,2,3}d``, as Flax initializers.

PyTorch's ``_ConvNd.reset_parameters`` runs ``kaiming_uniform_(weight, a=√5)``
and then draws the bias from ``U(−1/√fan_in, 1/√fan_in)``. For the transposed
weight ``(in_channels, out_channels // groups, *kernel_size)`` torch computes

    fan_in = weight.shape[1] · prod(kernel_size) = (out_channels / groups) · prod(kernel_size)

(it reads dimension 1 as the "input" dimension, whatever the layer is). The
kaiming bound is ``gain · √(3 / fan_in)`` with ``gain = √(2 / (1 + a²)) = √(1/3)``,
so both the weight and the bias are ``U(−1/√fan_in, 1/√fan_in)``, standard
deviation ``1/√(3·fan_in)``.

jtconv stores the kernel in torch's layout, so :func:`torch_fan_in` reads the
same dimensions torch reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "Initializer",
    "torch_bias_init",
    "torch_fan_in",
    "torch_kernel_init",
    "torch_uniform_bound",
]

Initializer = Callable[[jax.Array, Sequence[int], Any], jax.Array]
"""Flax's initializer signature: ``(key, shape, dtype) -> array``."""


def torch_fan_in(kernel_shape: Sequence[int]) -> int:
    """torch's fan-in of a transposed-conv weight ``(Cin, Cout/G, *K)``: ``(Cout/G)·prod(K)``.

    Raises:
      ValueError: naming ``kernel_shape`` if it has fewer than 3 dimensions or
        a fan-in below 1.
    """
    shape = tuple(int(d) for d in kernel_shape)
    if len(shape) < 3:
        raise ValueError(
            "kernel_shape must be (in_features, out_features // groups, *kernel_size) with at "
            f"least one spatial dimension, got {shape}"
        )
    fan_in = shape[1] * math.prod(shape[2:])
    if fan_in < 1:
        raise ValueError(f"kernel_shape must give fan_in = shape[1]·prod(shape[2:]) >= 1, got {shape}")
    return fan_in


def torch_uniform_bound(fan_in: int) -> float:
    """``1/√fan_in``: the half-width of torch's default weight and bias distributions."""
    if fan_in < 1:
        raise ValueError(f"fan_in must be >= 1, got {fan_in}")
    return 1.0 / math.sqrt(fan_in)


def _uniform(key: jax.Array, shape: Sequence[int], dtype: Any, bound: float) -> jax.Array:
    return jax.random.uniform(key, tuple(shape), dtype, minval=-bound, maxval=bound)


def torch_kernel_init() -> Initializer:
    """Kernel initializer: ``U(−1/√fan_in, 1/√fan_in)`` with :func:`torch_fan_in` of ``shape``.

    This is ``torch.nn.init.kaiming_uniform_(w, a=√5)`` on a transposed-conv
    weight in torch's layout ``(Cin, Cout/G, *K)``.
    """

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return _uniform(key, shape, dtype, torch_uniform_bound(torch_fan_in(shape)))

    return init


def torch_bias_init(fan_in: int) -> Initializer:
    """Bias initializer: ``U(−1/√fan_in, 1/√fan_in)``.

    The bias alone does not know the layer's fan-in, so it is passed in
    (the modules pass :func:`torch_fan_in` of their kernel shape).
    """
    bound = torch_uniform_bound(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return _uniform(key, shape, dtype, bound)

    return init
