"""jtconv.bilinear_upsampling_init against torch's interpolate and FCN's ``get_upsampling_weight``.

With stride ``s``, ``k = 2s − s mod 2`` and ``p = (k − s) / 2``, output ``o`` of
an axis reads the source coordinate ``(o + 0.5) / s − 0.5``. Where that lies in
``[0, n − 1]`` (``s // 2 ≤ o < s·n − s // 2``) the layer equals
``interpolate(align_corners=False)``; outside it ``interpolate`` clamps to the edge
pixel while the layer misses the tap beyond the edge, so every border output differs.
Tolerance (float32): ``rtol = atol = 1e-6`` on inputs in ``[1, 2)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jtconv
from jtconv import initializers, linen
from jtconv import nnx as jtconv_nnx

MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}
SIZES = (5, 4, 3)


def get_upsampling_weight(in_channels, out_channels, kernel_size):
    """FCN's bilinear kernel (wkentaro/pytorch-fcn, torchfcn/models/fcn32s.py), returned as numpy."""
    factor = (kernel_size + 1) // 2
    if kernel_size % 2 == 1:
        center = factor - 1
    else:
        center = factor - 0.5
    og = np.ogrid[:kernel_size, :kernel_size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    weight = np.zeros((in_channels, out_channels, kernel_size, kernel_size), dtype=np.float64)
    weight[range(in_channels), range(out_channels), :, :] = filt
    return weight.astype(np.float32)


def kernel_and_padding(scales):
    kernel = tuple(2 * s - s % 2 for s in scales)
    return kernel, tuple((k - s) // 2 for k, s in zip(kernel, scales))


def interpolate(x, scales):
    mode = MODES[len(scales)]
    return torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=scales, mode=mode, align_corners=False)


def assert_interior_equal_and_border_different(y, x, scales):
    """``y`` (N, C, *spatial) equals interpolate on the interior and differs on every border output."""
    expected = interpolate(x, scales).numpy()
    assert y.shape == expected.shape == x.shape[:2] + tuple(n * s for n, s in zip(x.shape[2:], scales))
    interior = np.zeros(y.shape, bool)
    interior[(...,) + tuple(slice(s // 2, n * s - s // 2) for n, s in zip(x.shape[2:], scales))] = True
    np.testing.assert_allclose(y[interior], expected[interior], rtol=1e-6, atol=1e-6)
    assert np.all(np.abs(y - expected)[~interior] > 1e-3)


def inputs(channels, sizes, seed=0):
    return np.random.default_rng(seed).uniform(1, 2, (2, channels, *sizes)).astype(np.float32)


@pytest.mark.parametrize("scales", [(s,) * n for n in (1, 2, 3) for s in (2, 3, 4)] + [(3, 2), (4, 2, 3)], ids=str)
def test_depthwise_layer_is_interpolate_on_the_interior(scales):
    channels = 3
    kernel, padding = kernel_and_padding(scales)
    weight = jtconv.bilinear_upsampling_init()(jax.random.key(0), (channels, 1, *kernel))
    x = inputs(channels, SIZES[: len(scales)])
    y = jtconv.conv_transpose(x, weight, stride=scales, padding=padding, groups=channels)
    assert_interior_equal_and_border_different(np.asarray(y), x, scales)


@pytest.mark.parametrize("scales", [(2,), (3, 4)], ids=str)
def test_edge_padded_input_with_s_more_padding_is_interpolate_everywhere(scales):
    kernel, padding = kernel_and_padding(scales)
    weight = jtconv.bilinear_upsampling_init()(jax.random.key(0), (3, 1, *kernel))
    x = inputs(3, SIZES[: len(scales)])
    padded = np.pad(x, ((0, 0), (0, 0)) + ((1, 1),) * len(scales), mode="edge")
    y = jtconv.conv_transpose(padded, weight, stride=scales, padding=[p + s for p, s in zip(padding, scales)], groups=3)
    np.testing.assert_allclose(np.asarray(y), interpolate(x, scales).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel_size", [64, 16, 4, 5])
def test_diagonal_form_is_fcns_get_upsampling_weight(kernel_size):
    weight = jtconv.bilinear_upsampling_init(diagonal=True)(jax.random.key(0), (21, 21, kernel_size, kernel_size))
    assert weight.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(weight), get_upsampling_weight(21, 21, kernel_size))


@pytest.mark.parametrize("scale", [2, 3])
def test_diagonal_form_with_one_group_upsamples_every_channel(scale):
    (k,), (p,) = kernel_and_padding((scale,))
    weight = jtconv.bilinear_upsampling_init(diagonal=True)(jax.random.key(0), (4, 4, k, k))
    x = inputs(4, (5, 4))
    y = jtconv.conv_transpose(x, weight, stride=scale, padding=p)
    assert_interior_equal_and_border_different(np.asarray(y), x, (scale, scale))


def test_depthwise_form_fills_every_slice():
    weight = jtconv.bilinear_upsampling_init()(jax.random.key(0), (3, 2, 4, 3), jnp.bfloat16)
    taps_4, taps_3 = np.array([0.25, 0.75, 0.75, 0.25]), np.array([0.5, 1.0, 0.5])
    assert weight.dtype == jnp.bfloat16
    for i in range(3):
        for j in range(2):
            np.testing.assert_array_equal(np.asarray(weight[i, j], np.float32), np.outer(taps_4, taps_3))


def test_linen_module_with_the_initializer_is_bilinear_upsampling():
    layer = linen.ConvTranspose2d(
        features=3,
        kernel_size=5,
        strides=3,
        padding=1,
        feature_group_count=3,
        use_bias=False,
        kernel_init=jtconv.bilinear_upsampling_init(),
    )
    x = inputs(3, (5, 4))
    variables = layer.init(jax.random.key(0), x.transpose(0, 2, 3, 1))
    y = layer.apply(variables, x.transpose(0, 2, 3, 1))
    assert variables["params"]["kernel"].shape == (3, 1, 5, 5)
    assert_interior_equal_and_border_different(np.asarray(y).transpose(0, 3, 1, 2), x, (3, 3))


def test_nnx_module_with_the_initializer_is_trilinear_upsampling():
    layer = jtconv_nnx.ConvTranspose3d(
        2,
        2,
        4,
        strides=2,
        padding=1,
        use_bias=False,
        channels_first=True,
        kernel_init=jtconv.bilinear_upsampling_init(diagonal=True),
        rngs=nnx.Rngs(0),
    )
    x = inputs(2, (4, 3, 2))
    assert_interior_equal_and_border_different(np.asarray(layer(x)), x, (2, 2, 2))


@pytest.mark.parametrize(
    "diagonal, shape, dtype, match",
    [
        (False, (4, 1), jnp.float32, "shape must be"),
        (False, (4, 1, 0, 3), jnp.float32, "shape must be"),
        (True, (4, 1, 4, 4), jnp.float32, "diagonal=True needs shape"),
        (False, (4, 1, 4, 4), jnp.int32, "dtype must be"),
    ],
)
def test_bad_arguments_name_the_argument(diagonal, shape, dtype, match):
    init = jtconv.bilinear_upsampling_init(diagonal=diagonal)
    with pytest.raises(ValueError, match=match):
        init(jax.random.key(0), shape, dtype)


def test_diagonal_form_in_a_depthwise_module_is_rejected_at_init():
    layer = linen.ConvTranspose1d(
        features=4, kernel_size=4, strides=2, feature_group_count=4, kernel_init=jtconv.bilinear_upsampling_init(True)
    )
    with pytest.raises(ValueError, match=r"diagonal=True needs shape\[0\] == shape\[1\].*\(4, 1, 4\)"):
        layer.init(jax.random.key(0), jnp.ones((1, 6, 4)))


def test_torch_initializer_shapes_and_bounds():
    with pytest.raises(ValueError, match="at least one spatial dimension"):
        initializers.torch_fan_in((4, 2))
    with pytest.raises(ValueError, match="fan_in"):
        initializers.torch_fan_in((4, 0, 3))
    with pytest.raises(ValueError, match="fan_in must be >= 1"):
        initializers.torch_uniform_bound(0)
    assert initializers.torch_fan_in((4, 2, 3, 3)) == 18
    assert initializers.torch_uniform_bound(16) == 0.25
