"""Flax initializers for transposed-conv kernels in torch's layout ``(Cin, Cout/G, *K)``.

PyTorch's ``_ConvNd.reset_parameters`` draws the weight with
``kaiming_uniform_(a=√5)`` and the bias from ``U(±1/√fan_in)``, where for a
transposed weight torch reads dimension 1 as the input one:
``fan_in = weight.shape[1] · prod(kernel_size) = (Cout/G) · prod(K)``. The kaiming
bound is ``√(2/(1 + a²)) · √(3/fan_in) = 1/√fan_in``, so both are
``U(±1/√fan_in)``: variance ``1/(3·fan_in)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Initializer", "bilinear_upsampling_init", "torch_bias_init", "torch_kernel_init"]

Initializer = Callable[[jax.Array, Sequence[int], Any], jax.Array]
"""Flax's initializer signature: ``(key, shape, dtype) -> array``."""


def torch_kernel_init() -> Initializer:
    """torch's default kernel initializer, ``U(±1/√fan_in)`` with ``fan_in = shape[1] · prod(shape[2:])``."""
    return jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform", in_axis=1, out_axis=0)


def torch_bias_init(kernel_shape: Sequence[int]) -> Initializer:
    """torch's default bias initializer, ``U(±1/√fan_in)`` with the fan-in of ``kernel_shape``."""
    bound = 1 / math.sqrt(kernel_shape[1] * math.prod(kernel_shape[2:]))

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, tuple(shape), dtype, minval=-bound, maxval=bound)

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
        taps = []
        for k in shape[2:]:
            factor = (k + 1) // 2
            centre = factor - 1 if k % 2 else factor - 0.5
            taps.append(1 - np.abs(np.arange(k) - centre) / factor)
        kernel = functools.reduce(np.multiply.outer, taps)
        if diagonal:
            weight = np.eye(shape[0]).reshape(shape[:2] + (1,) * (len(shape) - 2)) * kernel
        else:
            weight = np.broadcast_to(kernel, shape)
        return jnp.asarray(weight, dtype)

    return init
