"""jtconv.interop: argument errors of from_torch / to_torch and the state-dict helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jtconv import interop
from jtconv import linen as jtconv_linen
from jtconv import nnx as jtconv_nnx


def test_from_torch_refuses_a_module_whose_padding_mode_was_changed():
    module = torch.nn.ConvTranspose1d(2, 3, 3)
    module.padding_mode = "reflect"  # torch's constructor refuses it; an edited module can still carry it
    with pytest.raises(ValueError, match=r"module must use padding_mode='zeros' and integer padding, got "):
        interop.from_torch(module)


def test_constant_init_checks_the_shape_and_casts():
    value = jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)
    init = interop._constant_init(value)
    key = jax.random.key(0)
    assert init(key, (2, 3)) is value
    cast = init(key, (2, 3), jnp.bfloat16)
    assert cast.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(cast, np.float32), np.asarray(value))
    with pytest.raises(ValueError, match=r"shape \(3, 2\) does not match the copied parameter's shape \(2, 3\)"):
        init(key, (3, 2))


def test_to_torch_checks_the_variables_of_a_linen_module():
    with_bias = jtconv_linen.ConvTranspose(features=2, kernel_size=(3,))
    kernel = jnp.ones((3, 2, 3))  # (in, out, k)
    with pytest.raises(ValueError, match=r"variables must be \{'params': \{'kernel'"):
        interop.to_torch(with_bias, {"params": {"bias": jnp.zeros(2)}})
    with pytest.raises(ValueError, match=r"variables must be \{'params'"):
        interop.to_torch(with_bias, [kernel])
    with pytest.raises(ValueError, match=r"variables must hold a bias \(use_bias=True\)"):
        interop.to_torch(with_bias, {"params": {"kernel": kernel}})
    without_bias = jtconv_linen.ConvTranspose(features=2, kernel_size=(3,), use_bias=False)
    with pytest.raises(ValueError, match=r"variables must not hold a bias \(use_bias=False\)"):
        interop.to_torch(without_bias, {"params": {"kernel": kernel, "bias": jnp.zeros(2)}})
    torch_module = interop.to_torch(without_bias, {"kernel": kernel})  # the params dict alone
    assert torch_module.bias is None
    np.testing.assert_array_equal(torch_module.weight.detach().numpy(), np.ones((3, 2, 3), np.float32))


def test_to_torch_of_an_nnx_module_takes_no_variables():
    module = jtconv_nnx.ConvTranspose(3, 2, (3,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="variables must be None with an nnx module"):
        interop.to_torch(module, {"params": {"kernel": module.kernel[...]}})


def test_state_dict_helpers_name_the_broken_layer():
    state_dict = {"up.weight": np.zeros((2, 3, 4), np.float32), "up.weight_g": np.ones((2, 1, 1), np.float32)}
    with pytest.raises(ValueError, match=r"state_dict layer 'up': weight keys \['weight', 'weight_g'\] are no"):
        interop.state_dict_to_params(state_dict, ["up"])
    params = {"up": {"kernel": np.zeros((2, 3, 4), np.float32)}, "other": {"bias": np.zeros(3, np.float32)}}
    with pytest.raises(ValueError, match=r"params has no 'down' layer with a 'kernel'"):
        interop.params_to_state_dict(params, ["down"])
    with pytest.raises(ValueError, match=r"params has no 'other' layer with a 'kernel'"):
        interop.params_to_state_dict(params, {"o": "other"})
    assert set(interop.params_to_state_dict(params, {"u": "up"})) == {"u.weight"}
