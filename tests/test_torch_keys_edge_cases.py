"""jtconv.torch_keys: writing a plain weight (the form nothing needs converting)."""

from __future__ import annotations

import jax.numpy as jnp

from jtconv import torch_keys


def test_write_weight_in_plain_form_is_the_weight_itself():
    weight = jnp.arange(6.0).reshape(1, 2, 3)
    written = torch_keys.write_weight("plain", weight, {"weight": (1, 2, 3)})
    assert list(written) == ["weight"] and written["weight"] is weight
