"""Flax NNX transposed convolution with PyTorch's ``ConvTranspose{1,2,3}d`` semantics.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from jtconv.nnx import ConvTranspose
>>> layer = ConvTranspose(3, 8, (4, 4), strides=2, padding=1, rngs=nnx.Rngs(0))
>>> layer(jnp.ones((1, 16, 16, 3))).shape         # (16 − 1)·2 − 2·1 + 4 = 32
(1, 32, 32, 8)

The parameters are those of :mod:`jtconv.linen`, in PyTorch's layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jtconv.geometry import IntOrTuple, PaddingLike
from jtconv.initializers import Initializer, torch_bias_init, torch_kernel_init
from jtconv.layer import conv_transpose_layer, kernel_shape, normalize_kernel_size

__all__ = ["ConvTranspose", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]

_TORCH_KERNEL_INIT = torch_kernel_init()


class ConvTranspose(nnx.Module):
    """N-d transposed convolution, ``torch.nn.ConvTransposeNd`` semantics, Flax NNX conventions.

    The computation, parameters and keyword arguments (``strides`` to
    ``algorithm``) are those of :class:`jtconv.linen.ConvTranspose`'s
    attributes; here the module holds its parameters.

    Args:
      in_features: input channels ``Cin``.
      out_features: output channels ``Cout`` (linen's ``features``).
      kernel_size: one int per spatial dimension; its length is the spatial rank.
      rngs: ``nnx.Rngs`` supplying the ``params`` stream.

    Raises:
      ValueError: at construction, for any hyperparameter PyTorch rejects.

    ``__call__(inputs, output_size=None)``: inputs may be unbatched or have
    several leading batch dimensions; ``output_size`` (spatial, or the full
    output shape) picks ``output_padding`` like torch's ``forward``.
    """

    spatial_dims: ClassVar[int | None] = None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: IntOrTuple,
        *,
        strides: IntOrTuple = 1,
        padding: PaddingLike = 0,
        output_padding: IntOrTuple = 0,
        kernel_dilation: IntOrTuple = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        channels_first: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: jax.lax.PrecisionLike = None,
        preferred_element_type: Any = None,
        kernel_init: Initializer = _TORCH_KERNEL_INIT,
        bias_init: Initializer | None = None,
        algorithm: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = normalize_kernel_size(kernel_size, self.spatial_dims)
        self.strides = strides
        self.padding = padding
        self.output_padding = output_padding
        self.kernel_dilation = kernel_dilation
        self.feature_group_count = feature_group_count
        self.use_bias = use_bias
        self.channels_first = channels_first
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.preferred_element_type = preferred_element_type
        self.algorithm = algorithm
        shape = kernel_shape(self, in_features, out_features, self.kernel_size, output_padding)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        self.bias: nnx.Param | None
        if use_bias:
            bias_init = bias_init or torch_bias_init(shape)
            self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
        else:
            self.bias = nnx.data(None)

    def __call__(self, inputs: jax.typing.ArrayLike, output_size: Sequence[int] | None = None) -> jax.Array:
        bias = None if self.bias is None else self.bias[...]
        return conv_transpose_layer(self, inputs, self.kernel[...], bias, output_size)


class ConvTranspose1d(ConvTranspose):
    """:class:`ConvTranspose` with one spatial dimension; ``kernel_size`` may be an int."""

    spatial_dims: ClassVar[int | None] = 1


class ConvTranspose2d(ConvTranspose):
    """:class:`ConvTranspose` with two spatial dimensions; ``kernel_size`` may be an int."""

    spatial_dims: ClassVar[int | None] = 2


class ConvTranspose3d(ConvTranspose):
    """:class:`ConvTranspose` with three spatial dimensions; ``kernel_size`` may be an int."""

    spatial_dims: ClassVar[int | None] = 3
