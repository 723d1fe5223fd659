"""Flax linen transposed convolution with PyTorch's ``ConvTranspose{1,2,3}d`` semantics.

>>> import jax, jax.numpy as jnp
>>> from jtconv.linen import ConvTranspose
>>> layer = ConvTranspose(features=8, kernel_size=(4, 4), strides=2, padding=1)
>>> x = jnp.ones((1, 16, 16, 3))                  # (N, H, W, C): channels last
>>> variables = layer.init(jax.random.key(0), x)
>>> layer.apply(variables, x).shape               # (16 − 1)·2 − 2·1 + 4 = 32
(1, 32, 32, 8)

The parameters have PyTorch's layout, whatever the data's: ``kernel``
``(in_features, features // feature_group_count, *kernel_size)`` is exactly
``torch.nn.ConvTransposeNd.weight``, and ``bias`` is ``(features,)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtconv.geometry import IntOrTuple, PaddingLike
from jtconv.initializers import Initializer, torch_bias_init, torch_kernel_init
from jtconv.layer import conv_transpose_layer, in_features_of, kernel_shape, normalize_kernel_size

__all__ = ["ConvTranspose", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]


class ConvTranspose(nn.Module):
    """N-d transposed convolution, ``torch.nn.ConvTransposeNd`` semantics, Flax conventions.

    For input position ``i``, kernel tap ``t`` and output position ``o = i·s − p + t·d``
    (per spatial dimension), ``y[..., o, g·Cg + co] += x[..., i, ci] · kernel[ci, co, t]``
    (``ci`` in group ``g``, ``Cg = features / G``), plus ``bias``; per dimension
    ``out = (i − 1)·s − 2p + d·(k − 1) + op + 1``.

    Attributes:
      features: output channels ``Cout``. ``in_features`` is read from the input.
      kernel_size: one int per spatial dimension; its length is the spatial rank.
      strides: ``s ≥ 1`` (int or one per dimension).
      padding: anything :func:`jtconv.conv_transpose` accepts: ``p`` cropped
        from both ends (torch), per-side crops ``((lo, hi), …)`` of the output
        (``flax.linen.ConvTranspose``'s pairs pad the dilated input instead),
        ``"SAME"`` (``out = i·s``) or ``"VALID"``.
      output_padding: ``0 ≤ op < max(s, d)`` extra positions at the high end.
      kernel_dilation: ``d ≥ 1``.
      feature_group_count: ``G``; ``in_features`` and ``features`` divisible by it.
      use_bias: add a ``(features,)`` bias.
      channels_first: inputs/outputs are ``(*batch, C, *spatial)`` (torch's
        layout) instead of ``(*batch, *spatial, C)``.
      dtype: computation dtype (``None``: promote input and parameter dtypes).
      param_dtype: dtype of ``kernel`` and ``bias``.
      precision: XLA precision of the convolution.
      preferred_element_type: accumulation/result dtype passed to XLA.
      kernel_init: Flax initializer for ``kernel`` (shape as above); default
        torch's ``U(±1/√fan_in)`` with ``fan_in = (features/G)·prod(kernel_size)``.
      bias_init: Flax initializer for ``bias``; ``None`` (default) is torch's
        ``U(±1/√fan_in)`` with the kernel's fan-in.
      algorithm: ``"auto"`` or a name in :data:`jtconv.ALGORITHMS`.

    ``__call__(inputs, output_size=None)``: inputs may be unbatched or have several
    leading batch dimensions; ``output_size`` (spatial, or the full output shape)
    picks ``output_padding`` like torch's ``forward``.
    """

    features: int
    kernel_size: IntOrTuple
    strides: IntOrTuple = 1
    padding: PaddingLike = 0
    output_padding: IntOrTuple = 0
    kernel_dilation: IntOrTuple = 1
    feature_group_count: int = 1
    use_bias: bool = True
    channels_first: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: jax.lax.PrecisionLike = None
    preferred_element_type: Any = None
    kernel_init: Initializer = torch_kernel_init()
    bias_init: Initializer | None = None
    algorithm: str = "auto"

    spatial_dims: ClassVar[int | None] = None

    @nn.compact
    def __call__(self, inputs: jax.typing.ArrayLike, output_size: Sequence[int] | None = None) -> jax.Array:
        inputs = jnp.asarray(inputs)
        kernel_size = normalize_kernel_size(self.kernel_size, self.spatial_dims)
        in_features = in_features_of(inputs.shape, len(kernel_size), self.channels_first)
        output_padding = self.output_padding if output_size is None else 0  # output_size picks its own
        shape = kernel_shape(self, in_features, self.features, kernel_size, output_padding)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init or torch_bias_init(shape), (self.features,), self.param_dtype)
        return conv_transpose_layer(self, inputs, kernel, bias, output_size)


class ConvTranspose1d(ConvTranspose):
    """:class:`ConvTranspose` with one spatial dimension; ``kernel_size`` may be an int."""

    spatial_dims: ClassVar[int | None] = 1


class ConvTranspose2d(ConvTranspose):
    """:class:`ConvTranspose` with two spatial dimensions; ``kernel_size`` may be an int."""

    spatial_dims: ClassVar[int | None] = 2


class ConvTranspose3d(ConvTranspose):
    """:class:`ConvTranspose` with three spatial dimensions; ``kernel_size`` may be an int."""

    spatial_dims: ClassVar[int | None] = 3
