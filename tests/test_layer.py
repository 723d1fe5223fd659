"""jtconv.layer: the rules a Flax layer checks before any parameter exists, and its output_size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jtconv import linen
from jtconv import nnx as jtconv_nnx


@pytest.mark.parametrize("groups", [0, -2, 1.5, "2"])
def test_feature_group_count_must_be_a_positive_int(groups):
    with pytest.raises(ValueError, match=f"feature_group_count must be a positive int, got {groups!r}"):
        jtconv_nnx.ConvTranspose(4, 4, (3,), feature_group_count=groups, rngs=nnx.Rngs(0))


def test_features_must_be_positive_ints():
    with pytest.raises(ValueError, match="in_features must be a positive int, got 0"):
        jtconv_nnx.ConvTranspose(0, 4, (3,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"out_features \(features\) must be a positive int, got 2.0"):
        linen.ConvTranspose(features=2.0, kernel_size=(3,)).init(jax.random.key(0), jnp.ones((1, 5, 2)))


def test_linen_layer_reports_feature_group_count():
    layer = linen.ConvTranspose(features=4, kernel_size=(3,), feature_group_count=0)
    with pytest.raises(ValueError, match="feature_group_count must be a positive int, got 0"):
        layer.init(jax.random.key(0), jnp.ones((1, 5, 4)))


def test_nd_layer_kernel_size_must_be_ints():
    layer = linen.ConvTranspose(features=2, kernel_size=(3, 2.5))
    with pytest.raises(ValueError, match=r"kernel_size must be a non-empty sequence of ints.*got \(3, 2.5\)"):
        layer.init(jax.random.key(0), jnp.ones((1, 5, 5, 2)))


@pytest.mark.parametrize("channels_first", [False, True])
def test_output_size_is_spatial_or_the_full_shape_with_every_batch_dimension(channels_first):
    layer = linen.ConvTranspose(features=3, kernel_size=(3, 3), strides=2, channels_first=channels_first)
    x = jnp.ones((2, 4, 2, 5, 5) if channels_first else (2, 4, 5, 5, 2))
    variables = layer.init(jax.random.key(0), x)
    expected = (2, 4, 3, 12, 11) if channels_first else (2, 4, 12, 11, 3)
    for output_size in [(12, 11), expected]:
        assert layer.apply(variables, x, output_size=output_size).shape == expected
    with pytest.raises(ValueError, match=r"output_size must have 2 \(spatial\) or 5 \(full output shape\) elements"):
        layer.apply(variables, x, output_size=(1, 12, 11, 3))
