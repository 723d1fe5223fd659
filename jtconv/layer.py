"""The computation shared by the Flax modules (:mod:`jtconv.linen`, :mod:`jtconv.nnx`).

A transposed-convolution *layer* is :func:`jtconv.functional.conv_transpose`
with Flax's conventions around it:

* parameters ``kernel`` ``(in_features, out_features // feature_group_count,
  *kernel_size)`` (PyTorch's layout) and ``bias`` ``(out_features,)``;
* inputs ``(*batch, *spatial, in_features)`` (channels last, the default) or
  ``(*batch, in_features, *spatial)`` (``channels_first=True``), with any
  number of leading batch dimensions, none included;
* the computation dtype follows :func:`flax.linen.dtypes.promote_dtype`:
  ``dtype`` if given, else the promotion of the input and parameter dtypes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from jtconv.functional import conv_transpose
from jtconv.geometry import IntOrTuple, PaddingLike, make_geometry, normalize_padding, normalize_tuple

__all__ = [
    "LAYER_SETTINGS",
    "layer_settings",
    "conv_transpose_layer",
    "kernel_shape",
    "normalize_kernel_size",
    "validate_layer",
]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def normalize_kernel_size(kernel_size: IntOrTuple, spatial_dims: int | None) -> tuple[int, ...]:
    """``kernel_size`` as a tuple; its length is the spatial rank.

    With ``spatial_dims=None`` (the N-d modules) ``kernel_size`` must be a
    sequence, because it is what fixes the rank; the 1d/2d/3d modules pass
    their rank and also accept an int.
    """
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
    in_features: int, out_features: int, kernel_size: Sequence[int], feature_group_count: int
) -> tuple[int, ...]:
    """``(in_features, out_features // feature_group_count, *kernel_size)``."""
    return (int(in_features), int(out_features) // int(feature_group_count), *kernel_size)


def validate_layer(
    in_features: int,
    out_features: int,
    kernel_size: tuple[int, ...],
    *,
    strides: IntOrTuple,
    padding: PaddingLike,
    output_padding: IntOrTuple,
    kernel_dilation: IntOrTuple,
    feature_group_count: int,
    input_shape: Sequence[int] | None = None,
    channels_first: bool = False,
) -> None:
    """Check a layer's hyperparameters against PyTorch's rules, before any parameter exists.

    With ``input_shape`` (batched or not, in the layer's layout) the input is
    checked too; without it, a spatial size large enough for any padding is
    assumed, so only the size-independent rules are checked.

    Raises:
      ValueError: naming the argument and the rule.
    """
    for name, value in (("in_features", in_features), ("out_features (features)", out_features)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not _is_int(feature_group_count) or feature_group_count < 1:
        raise ValueError(f"feature_group_count must be a positive int, got {feature_group_count!r}")
    for name, value in (("in_features", in_features), ("out_features (features)", out_features)):
        if value % feature_group_count:
            raise ValueError(f"{name} = {value} must be divisible by feature_group_count = {feature_group_count}")
    ndim = len(kernel_size)
    if any(k < 1 for k in kernel_size):
        raise ValueError(f"kernel_size must be >= 1 in every dimension, got {kernel_size}")
    strides_t = normalize_tuple(strides, ndim, "strides")
    if any(s < 1 for s in strides_t):
        raise ValueError(f"strides must be >= 1 in every dimension, got {strides_t}")
    dilation_t = normalize_tuple(kernel_dilation, ndim, "kernel_dilation")
    if any(d < 1 for d in dilation_t):
        raise ValueError(f"kernel_dilation must be >= 1 in every dimension, got {dilation_t}")

    if input_shape is None:
        crops = normalize_padding(padding, ndim, kernel_size, strides_t, dilation_t)
        spatial = tuple(1 + max(lo, 0) + max(hi, 0) for lo, hi in crops)
        input_shape = (1, in_features, *spatial)
        channels_first = True
    else:
        input_shape = tuple(input_shape)
        if len(input_shape) > ndim + 2:
            input_shape = (math.prod(input_shape[: len(input_shape) - ndim - 1]), *input_shape[-ndim - 1 :])
    make_geometry(
        input_shape,
        kernel_shape(in_features, out_features, kernel_size, feature_group_count),
        stride=strides_t,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation_t,
        groups=feature_group_count,
        channels_last=not channels_first,
    )


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


def _spatial_output_size(
    output_size: Sequence[int] | None, input_ndim: int, spatial_dims: int, channels_first: bool
) -> tuple[int, ...] | None:
    """Spatial part of ``output_size``: given spatially, or as the full output shape."""
    if output_size is None:
        return None
    target = tuple(output_size)
    if len(target) == spatial_dims:
        return target
    if len(target) == input_ndim:
        return target[-spatial_dims:] if channels_first else target[-spatial_dims - 1 : -1]
    raise ValueError(
        f"output_size must have {spatial_dims} (spatial) or {input_ndim} (full output shape) elements, got {target}"
    )


# The module attributes (same names in linen and nnx) that configure the forward pass.
LAYER_SETTINGS = (
    "strides",
    "padding",
    "output_padding",
    "kernel_dilation",
    "feature_group_count",
    "channels_first",
    "dtype",
    "precision",
    "preferred_element_type",
    "algorithm",
)


def layer_settings(module: Any) -> dict[str, Any]:
    """``{name: module.name}`` for :data:`LAYER_SETTINGS`: the keyword
    arguments of :func:`conv_transpose_layer` that a module fixes."""
    return {name: getattr(module, name) for name in LAYER_SETTINGS}


def conv_transpose_layer(
    inputs: jax.typing.ArrayLike,
    kernel: jax.Array,
    bias: jax.Array | None,
    *,
    strides: IntOrTuple,
    padding: PaddingLike,
    output_padding: IntOrTuple,
    kernel_dilation: IntOrTuple,
    feature_group_count: int,
    channels_first: bool,
    output_size: Sequence[int] | None,
    dtype: Any,
    precision: jax.lax.PrecisionLike,
    preferred_element_type: Any,
    algorithm: str,
) -> jax.Array:
    """The layer's forward pass: ``y = conv_transpose(x, kernel) + bias``, PyTorch semantics.

    Per spatial dimension ``out = (i − 1)·s − 2p + d·(k − 1) + op + 1``
    (see :mod:`jtconv.geometry`). As in ``torch.nn.ConvTransposeNd.forward``,
    an ``output_size`` replaces the layer's ``output_padding`` by the one
    that reaches that size. Leading batch dimensions beyond one are
    flattened for the call and restored after it.
    """
    spatial_dims = kernel.ndim - 2
    x = jnp.asarray(inputs)
    in_features_of(x.shape, spatial_dims, channels_first)
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=dtype)
    batch_shape = x.shape[: x.ndim - spatial_dims - 1]
    flat = x.reshape((math.prod(batch_shape), *x.shape[len(batch_shape) :])) if len(batch_shape) > 1 else x
    y = conv_transpose(
        flat,
        kernel,
        bias,
        stride=strides,
        padding=padding,
        output_padding=output_padding if output_size is None else 0,
        groups=feature_group_count,
        dilation=kernel_dilation,
        output_size=_spatial_output_size(output_size, x.ndim, spatial_dims, channels_first),
        channels_last=not channels_first,
        precision=precision,
        preferred_element_type=preferred_element_type,
        algorithm=algorithm,
    )
    if len(batch_shape) > 1:
        y = y.reshape((*batch_shape, *y.shape[1:]))
    return y
