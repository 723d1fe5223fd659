"""Flax initializers for transposed-conv kernels in torch's layout ``(Cin, Cout/G, *K)``.

PyTorch's default initialisation (:func:`torch_kernel_init`, :func:`torch_bias_init`) and
bilinear upsampling (:func:`bilinear_upsampling_init`).

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

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Initializer",
    "bilinear_upsampling_init",
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


def bilinear_upsampling_init(diagonal: bool = False) -> Initializer:
    """Kernel initializer that makes a transposed convolution linear, bilinear or trilinear upsampling.

    Per spatial axis of size ``k`` (FCN's ``get_upsampling_weight``), with
    factor ``f = (k + 1) // 2`` and centre ``c = f − 1`` for odd ``k``,
    ``c = f − 0.5`` for even ``k``, the tap ``t = (t_1, …, t_n)`` weighs::

        w[t] = Π over axes (1 − |t_a − c_a| / f_a)

    With stride ``s``, kernel ``k = 2s − s mod 2``, padding ``p = (k − s) / 2``
    and dilation 1, the layer maps ``n`` inputs to ``s·n`` outputs and equals
    ``torch.nn.functional.interpolate(mode="linear"/"bilinear"/"trilinear",
    align_corners=False)`` except within ``s // 2`` outputs of each border,
    where ``interpolate`` repeats the edge value and the layer fades to zero.
    Each axis has its own ``k``, so the scales may differ per axis.

    Args:
      diagonal: ``False``: the interpolation kernel in every ``(i, j)`` slice.
        That is upsampling for ``shape[1] == 1``, i.e. ``groups = in_channels =
        out_channels`` (MXNet's depthwise ``Conv2DTranspose`` with ``Bilinear``);
        with ``shape[1] > 1`` each output channel upsamples the sum of its group's
        inputs. ``True``: the kernel on ``[i, i]`` and zeros elsewhere, FCN's form
        for ``groups = 1``; it needs ``shape[0] == shape[1]``.

    Returns:
      ``init(key, shape, dtype=jnp.float32)``; ``key`` is unused.

    Raises:
      ValueError: naming ``shape`` if it is not ``(in_channels, out_channels //
        groups, *kernel_size)`` with kernel sizes ≥ 1, ``diagonal`` if
        ``shape[0] != shape[1]``, ``dtype`` if it is not floating or complex.
    """

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        shape = tuple(int(d) for d in shape)
        if len(shape) < 3 or min(shape[2:]) < 1:
            raise ValueError(
                "shape must be (in_channels, out_channels // groups, *kernel_size) with at least one "
                f"spatial dimension and kernel sizes >= 1, got {shape}"
            )
        if diagonal and shape[0] != shape[1]:
            raise ValueError(f"diagonal=True needs shape[0] == shape[1] (groups = 1, Cin == Cout), got {shape}")
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise ValueError(f"dtype must be a floating or complex dtype, got {jnp.dtype(dtype)}")
        kernel = functools.reduce(np.multiply.outer, [_linear_taps(k) for k in shape[2:]])
        if diagonal:
            weight = np.eye(shape[0]).reshape(shape[:2] + (1,) * (len(shape) - 2)) * kernel
        else:
            weight = np.broadcast_to(kernel, shape)
        return jnp.asarray(weight, dtype)

    return init


def _linear_taps(k: int) -> np.ndarray:
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 else factor - 0.5
    return 1 - np.abs(np.arange(k) - centre) / factor
