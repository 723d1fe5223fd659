"""jtconv.geometry: a weight without input channels, and a string where a tuple belongs."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import jtconv
from jtconv.geometry import normalize_tuple


def test_weight_with_no_input_channels_is_refused():
    with pytest.raises(
        ValueError, match=r"weight.shape\[0\] \(in_channels\) must be >= 1, got weight shape \(0, 2, 3\)"
    ):
        jtconv.conv_transpose(jnp.zeros((1, 0, 3)), jnp.zeros((0, 2, 3)))


def test_a_string_is_not_a_sequence_of_ints():
    with pytest.raises(ValueError, match=r"stride must be an int or a sequence of 2 ints .* got 'ab'"):
        normalize_tuple("ab", 2, "stride")
    assert normalize_tuple([3], 2, "stride") == (3, 3)
