"""jtconv.layer: the layer check of feature_group_count, and the rules checked before any parameter exists."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jtconv import layer, linen
from jtconv.layer import validate_layer


@pytest.mark.parametrize("groups", [0, -2, 1.5, "2"])
def test_feature_group_count_must_be_a_positive_int(groups):
    with pytest.raises(ValueError, match=f"feature_group_count must be a positive int, got {groups!r}"):
        validate_layer(
            4, 4, (3,), strides=1, padding=0, output_padding=0, kernel_dilation=1, feature_group_count=groups
        )


def test_linen_layer_reports_feature_group_count():
    layer = linen.ConvTranspose(features=4, kernel_size=(3,), feature_group_count=0)
    with pytest.raises(ValueError, match="feature_group_count must be a positive int, got 0"):
        layer.init(jax.random.key(0), jnp.ones((1, 5, 4)))


def test_nd_layer_kernel_size_must_be_ints():
    layer = linen.ConvTranspose(features=2, kernel_size=(3, 2.5))
    with pytest.raises(ValueError, match=r"kernel_size must be a non-empty sequence of ints.*got \(3, 2.5\)"):
        layer.init(jax.random.key(0), jnp.ones((1, 5, 5, 2)))


def test_layer_rules_before_any_parameter_exists():
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        layer.validate_layer(
            0, 4, (3,), strides=1, padding=0, output_padding=0, kernel_dilation=1, feature_group_count=1
        )
    with pytest.raises(ValueError, match="output_size must have 2 .spatial. or 4 .full output shape. elements"):
        layer._spatial_output_size((9, 9, 9), 4, 2, channels_first=True)
    assert layer._spatial_output_size((1, 3, 9, 8), 4, 2, channels_first=True) == (9, 8)
    assert layer._spatial_output_size((1, 9, 8, 3), 4, 2, channels_first=False) == (9, 8)
