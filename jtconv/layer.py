"""What :mod:`jtconv.linen` and :mod:`jtconv.nnx` share: :func:`jtconv.conv_transpose` with Flax's conventions
(inputs with any number of leading batch dimensions, Flax's dtype promotion)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from jtconv.functional import conv_transpose
from jtconv.geometry import IntOrTuple, make_geometry, normalize_padding, normalize_tuple

__all__ = ["conv_transpose_layer", "in_features_of", "kernel_shape", "normalize_kernel_size"]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def normalize_kernel_size(kernel_size: IntOrTuple, spatial_dims: int | None) -> tuple[int, ...]:
    """``kernel_size`` as a tuple, whose length is the spatial rank: a sequence for the
    N-d modules (``spatial_dims=None``), also an int for the 1d/2d/3d ones."""
    if spatial_dims is not None:
        return normalize_tuple(kernel_size, spatial_dims, "kernel_size")
    if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str) and len(kernel_size) > 0:
        if all(_is_int(k) for k in kernel_size):
            return tuple(int(k) for k in kernel_size)
    raise ValueError(
        "kernel_size must be a non-empty sequence of ints, one per spatial dimension "
        f"(its length sets the spatial rank; ConvTranspose1d/2d/3d also accept an int), got {kernel_size!r}"
    )


def kernel_shape(
    module: Any, in_features: int, out_features: int, kernel_size: tuple[int, ...], output_padding: IntOrTuple
) -> tuple[int, ...]:
    """The kernel's shape ``(in_features, out_features // feature_group_count, *kernel_size)``,
    once the hyperparameters (the ones given and the module's ``strides``, ``padding``,
    ``kernel_dilation`` and ``feature_group_count``) pass PyTorch's rules that do not
    depend on the input's size.

    Raises:
      ValueError: naming the argument and the rule.
    """
    padding, feature_group_count = module.padding, module.feature_group_count
    for name, value in (("in_features", in_features), ("out_features (features)", out_features)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not _is_int(feature_group_count) or feature_group_count < 1:
        raise ValueError(f"feature_group_count must be a positive int, got {feature_group_count!r}")
    for name, value in (("in_features", in_features), ("out_features (features)", out_features)):
        if value % feature_group_count:
            raise ValueError(f"{name} = {value} must be divisible by feature_group_count = {feature_group_count}")
    ndim = len(kernel_size)
    strides_t = normalize_tuple(module.strides, ndim, "strides")
    dilation_t = normalize_tuple(module.kernel_dilation, ndim, "kernel_dilation")
    for name, values in (("kernel_size", kernel_size), ("strides", strides_t), ("kernel_dilation", dilation_t)):
        if any(v < 1 for v in values):
            raise ValueError(f"{name} must be >= 1 in every dimension, got {values}")
    crops = normalize_padding(padding, ndim, kernel_size, strides_t, dilation_t)
    shape = (int(in_features), int(out_features) // int(feature_group_count), *kernel_size)
    make_geometry(  # an input large enough for any padding
        (1, in_features, *(1 + max(lo, 0) + max(hi, 0) for lo, hi in crops)),
        shape,
        stride=strides_t,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation_t,
        groups=feature_group_count,
    )
    return shape


def in_features_of(inputs_shape: Sequence[int], spatial_dims: int, channels_first: bool) -> int:
    """The feature (channel) dimension of an input in the layer's layout.

    Raises:
      ValueError: naming ``inputs`` when it has fewer than ``spatial_dims + 1`` dimensions.
    """
    if len(inputs_shape) < spatial_dims + 1:
        layout = "(*batch, features, *spatial)" if channels_first else "(*batch, *spatial, features)"
        raise ValueError(
            f"inputs must have at least {spatial_dims + 1} dimensions {layout} for a "
            f"{spatial_dims}-d kernel, got shape {tuple(inputs_shape)}"
        )
    return int(inputs_shape[-spatial_dims - 1] if channels_first else inputs_shape[-1])


def conv_transpose_layer(
    module: Any,
    inputs: jax.typing.ArrayLike,
    kernel: jax.Array,
    bias: jax.Array | None,
    output_size: Sequence[int] | None,
) -> jax.Array:
    """A linen or nnx module's forward pass: ``y = conv_transpose(x, kernel) + bias`` with the
    module's ``strides``, ``padding``, ``output_padding``, ``kernel_dilation``,
    ``feature_group_count``, ``channels_first``, ``dtype``, ``precision``,
    ``preferred_element_type`` and ``algorithm``.

    Per spatial dimension ``out = (i − 1)·s − 2p + d·(k − 1) + op + 1``. As in
    ``torch.nn.ConvTransposeNd.forward``, an ``output_size`` (spatial, or the
    full output shape) replaces ``output_padding`` by the one that reaches it.
    """
    spatial_dims, channels_first = kernel.ndim - 2, module.channels_first
    x = jnp.asarray(inputs)
    in_features_of(x.shape, spatial_dims, channels_first)
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=module.dtype)
    if output_size is not None:
        output_size = tuple(output_size)
        if len(output_size) not in (spatial_dims, x.ndim):
            raise ValueError(
                f"output_size must have {spatial_dims} (spatial) or {x.ndim} (full output shape) elements, "
                f"got {output_size}"
            )
        if len(output_size) == x.ndim:
            output_size = output_size[-spatial_dims:] if channels_first else output_size[-spatial_dims - 1 : -1]
    batch_shape = x.shape[: x.ndim - spatial_dims - 1]
    flat = x.reshape((math.prod(batch_shape), *x.shape[len(batch_shape) :])) if len(batch_shape) > 1 else x
    y = conv_transpose(
        flat,
        kernel,
        bias,
        stride=module.strides,
        padding=module.padding,
        output_padding=module.output_padding if output_size is None else 0,
        groups=module.feature_group_count,
        dilation=module.kernel_dilation,
        output_size=output_size,
        channels_last=not channels_first,
        precision=module.precision,
        preferred_element_type=module.preferred_element_type,
        algorithm=module.algorithm,
    )
    return y.reshape((*batch_shape, *y.shape[1:])) if len(batch_shape) > 1 else y
