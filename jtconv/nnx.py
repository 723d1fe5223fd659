"""Flax NNX transposed convolution with PyTorch's ``ConvTranspose{1,2,3}d`` semantics.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from jtconv.nnx import ConvTranspose
>>> layer = ConvTranspose(3, 8, (4, 4), strides=2, padding=1, rngs=nnx.Rngs(0))
>>> layer(jnp.ones((1, 16, 16, 3))).shape         # (16 − 1)·2 − 2·1 + 4 = 32
(1, 32, 32, 8)

Parameters (PyTorch's layout, so weights copy across unchanged):
``kernel`` ``(in_features, out_features // feature_group_count, *kernel_size)``
(exactly ``torch.nn.ConvTransposeNd.weight``) and ``bias`` ``(out_features,)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jtconv.geometry import IntOrTuple, PaddingLike
from jtconv.initializers import Initializer, torch_bias_init, torch_fan_in, torch_kernel_init
from jtconv.layer import conv_transpose_layer, kernel_shape, layer_settings, normalize_kernel_size, validate_layer

__all__ = ["ConvTranspose", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]

_TORCH_KERNEL_INIT = torch_kernel_init()


class ConvTranspose(nnx.Module):
    """N-d transposed convolution, ``torch.nn.ConvTransposeNd`` semantics, Flax NNX conventions.

    For input position ``i``, kernel tap ``t`` and output position
    ``o = i·s − p + t·d`` (per spatial dimension)::

        y[..., o, g·Cg + co] += x[..., i, ci] · kernel[ci, co, t]     (ci in group g, Cg = out_features / G)

    plus ``bias`` on every output position; per dimension
    ``out = (i − 1)·s − 2p + d·(k − 1) + op + 1``.

    Args:
      in_features: input channels ``Cin``.
      out_features: output channels ``Cout``.
      kernel_size: one int per spatial dimension; its length is the spatial rank.
      strides: ``s ≥ 1`` (int or one per dimension).
      padding: anything :func:`jtconv.conv_transpose` accepts: ``p`` cropped
        from both ends (torch), per-side crops ``((lo, hi), …)``, ``"SAME"``
        (``out = i·s``) or ``"VALID"``.
      output_padding: ``0 ≤ op < max(s, d)`` extra positions at the high end.
      kernel_dilation: ``d ≥ 1``.
      feature_group_count: ``G``; both feature counts divisible by it.
      use_bias: add a ``(out_features,)`` bias.
      channels_first: inputs/outputs are ``(*batch, C, *spatial)`` (torch's
        layout) instead of ``(*batch, *spatial, C)``.
      dtype: computation dtype (``None``: promote input and parameter dtypes).
      param_dtype: dtype of ``kernel`` and ``bias``.
      precision: XLA precision of the convolution.
      preferred_element_type: accumulation/result dtype passed to XLA.
      kernel_init: Flax initializer for ``kernel``; default torch's
        ``U(±1/√fan_in)`` with ``fan_in = (out_features/G)·prod(kernel_size)``.
      bias_init: Flax initializer for ``bias``; ``None`` (default) is torch's
        ``U(±1/√fan_in)`` with the kernel's fan-in.
      algorithm: ``"auto"`` or a name in :data:`jtconv.ALGORITHMS`.
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
        kernel_size = normalize_kernel_size(kernel_size, self.spatial_dims)
        validate_layer(
            in_features,
            out_features,
            kernel_size,
            strides=strides,
            padding=padding,
            output_padding=output_padding,
            kernel_dilation=kernel_dilation,
            feature_group_count=feature_group_count,
        )
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = kernel_size
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

        shape = kernel_shape(in_features, out_features, kernel_size, feature_group_count)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        self.bias: nnx.Param | None
        if use_bias:
            bias_init = bias_init or torch_bias_init(torch_fan_in(shape))
            self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
        else:
            self.bias = nnx.data(None)

    def __call__(self, inputs: jax.typing.ArrayLike, output_size: Sequence[int] | None = None) -> jax.Array:
        return conv_transpose_layer(
            inputs,
            self.kernel[...],
            None if self.bias is None else self.bias[...],
            output_size=output_size,
            **layer_settings(self),
        )


class ConvTranspose1d(ConvTranspose):
    """:class:`ConvTranspose` with one spatial dimension; ``kernel_size`` may be an int."""

    spatial_dims: ClassVar[int | None] = 1


class ConvTranspose2d(ConvTranspose):
    """:class:`ConvTranspose` with two spatial dimensions; ``kernel_size`` may be an int."""

    spatial_dims: ClassVar[int | None] = 2


class ConvTranspose3d(ConvTranspose):
    """:class:`ConvTranspose` with three spatial dimensions; ``kernel_size`` may be an int."""

    spatial_dims: ClassVar[int | None] = 3
