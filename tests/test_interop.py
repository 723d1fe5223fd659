"""torch ⇄ jtconv interop: from_torch / to_torch, checkpoints, Flax layouts.

Tolerance (float32): ``atol = 1e-5 · max|y_torch|``, ``rtol = 0``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jtconv
from jtconv import linen as jtconv_linen
from jtconv import nnx as jtconv_nnx
from jtconv.interop import from_torch, kernel_from_flax_layout, kernel_to_flax_layout, load_state_dict, to_torch
from jtconv.state_dict import torch_to_flax

TORCH_CLASSES = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}

# (in, out, kernel, stride, padding, output_padding, dilation, groups, bias, input spatial size)
CONFIGS = {
    "1d-dilated-op": (2, 4, 3, 2, 1, 2, 3, 1, True, (6,)),
    "2d-groups-nonsquare": (6, 4, (3, 2), (2, 3), (1, 0), (1, 2), 1, 2, True, (4, 5)),
    "2d-op-ge-stride-lt-dilation-no-bias": (3, 3, 2, 1, 0, 1, 2, 3, False, (5, 4)),
    "3d-groups-dilated": (4, 2, (2, 2, 3), (1, 2, 2), (0, 1, 2), (0, 1, 1), (2, 1, 2), 2, True, (3, 3, 2)),
    "3d-no-bias": (2, 3, 3, 2, 1, 1, 1, 1, False, (2, 3, 2)),
}


def torch_module(name: str) -> torch.nn.Module:
    cin, cout, k, s, p, op, d, g, bias, size = CONFIGS[name]
    torch.manual_seed(sorted(CONFIGS).index(name))
    return TORCH_CLASSES[len(size)](
        cin, cout, k, stride=s, padding=p, output_padding=op, groups=g, bias=bias, dilation=d
    )


def torch_input(name: str) -> torch.Tensor:
    torch.manual_seed(100 + sorted(CONFIGS).index(name))
    return torch.randn(2, CONFIGS[name][0], *CONFIGS[name][-1])


def assert_close(actual, expected) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))


def apply(converted, x, api):
    if api == "linen":
        module, variables = converted
        return jax.jit(module.apply)(variables, x)
    return nnx.jit(lambda m, x: m(x))(converted, x)


def same_torch_modules(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert type(a) is type(b)
    for attribute in (
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "output_padding",
        "dilation",
        "groups",
    ):
        assert getattr(a, attribute) == getattr(b, attribute), attribute
    assert a.weight.dtype == b.weight.dtype
    assert torch.equal(a.weight, b.weight)
    assert (a.bias is None) == (b.bias is None)
    if a.bias is not None:
        assert torch.equal(a.bias, b.bias)


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_from_torch_reproduces_torch_on_channels_first_input(name, api):
    t, x = torch_module(name), torch_input(name)
    assert_close(apply(from_torch(t, api=api), x.numpy(), api), t(x).detach())


@pytest.mark.parametrize("algorithm", jtconv.ALGORITHMS)
def test_from_torch_with_each_algorithm(algorithm):
    name = "2d-groups-nonsquare"
    t, x = torch_module(name), torch_input(name)
    assert_close(apply(from_torch(t, api="nnx", algorithm=algorithm), x.numpy(), "nnx"), t(x).detach())


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_from_torch_channels_last_has_same_params(api):
    name = "3d-groups-dilated"
    t, x = torch_module(name), torch_input(name)
    converted = from_torch(t, api=api, channels_first=False)
    y = apply(converted, np.moveaxis(x.numpy(), 1, -1), api)
    assert_close(y, np.moveaxis(t(x).detach().numpy(), 1, -1))


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_gives_identical_torch_module(name, api):
    t = torch_module(name)
    converted = from_torch(t, api=api)
    back = to_torch(*converted) if api == "linen" else to_torch(converted)
    same_torch_modules(back, t)


def test_round_trip_keeps_bfloat16_weights_exactly():
    t = torch.nn.ConvTranspose2d(3, 4, 3, stride=2).to(torch.bfloat16)
    module, variables = from_torch(t)
    assert variables["params"]["kernel"].dtype == jnp.bfloat16
    assert module.param_dtype == jnp.bfloat16
    same_torch_modules(to_torch(module, variables), t)


@pytest.mark.parametrize(
    "options, torch_padding, torch_output_padding",
    [
        (dict(padding="SAME", strides=2, kernel_size=(4, 1)), (1, 0), (0, 1)),
        (dict(padding="VALID", strides=(3, 1), kernel_size=(2, 3)), (0, 0), (1, 0)),
        (dict(padding=((2, 1), (1, 1)), strides=2, kernel_size=(5, 3), output_padding=(0, 1)), (2, 1), (1, 1)),
    ],
)
def test_to_torch_translates_string_and_per_side_padding(options, torch_padding, torch_output_padding):
    module = jtconv_linen.ConvTranspose(features=4, **options)
    x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
    variables = jax.jit(module.init)(jax.random.key(1), x)
    t = to_torch(module, variables)
    assert (t.padding, t.output_padding) == (torch_padding, torch_output_padding)
    expected = t(torch.tensor(np.moveaxis(np.asarray(x), -1, 1))).detach().numpy()
    assert_close(jax.jit(module.apply)(variables, x), np.moveaxis(expected, 1, -1))


def test_to_torch_from_native_nnx_module():
    module = jtconv_nnx.ConvTranspose(
        4, 6, (3,), strides=2, padding=1, feature_group_count=2, use_bias=False, rngs=nnx.Rngs(0)
    )
    t = to_torch(module)
    assert isinstance(t, torch.nn.ConvTranspose1d) and t.bias is None and t.groups == 2
    np.testing.assert_array_equal(t.weight.detach().numpy(), np.asarray(module.kernel[...]))
    x = torch.randn(2, 4, 7)
    assert_close(module(np.moveaxis(x.numpy(), 1, -1)), np.moveaxis(t(x).detach().numpy(), 1, -1))


@pytest.mark.parametrize("padding, strides", [(((0, 2),), 1), ("SAME", 2)])
def test_to_torch_rejects_padding_without_torch_equivalent(padding, strides):
    # Both crop more at the high end than at the low end, which torch cannot express.
    module = jtconv_linen.ConvTranspose(features=2, kernel_size=(3,), padding=padding, strides=strides)
    variables = jax.eval_shape(module.init, jax.random.key(0), jnp.ones((1, 5, 2)))
    with pytest.raises(ValueError, match="padding"):
        to_torch(module, variables)


def test_interop_argument_errors():
    with pytest.raises(ValueError, match="module"):
        from_torch(torch.nn.Conv2d(2, 2, 3))
    with pytest.raises(ValueError, match="api"):
        from_torch(torch.nn.ConvTranspose2d(2, 2, 3), api="haiku")
    module = jtconv_linen.ConvTranspose(features=2, kernel_size=(3,))
    with pytest.raises(ValueError, match="variables"):
        to_torch(module)
    with pytest.raises(ValueError, match="module"):
        to_torch(nn.Dense(3), {"params": {}})
    edited = torch.nn.ConvTranspose1d(2, 3, 3)
    edited.padding_mode = "reflect"  # torch's constructor refuses it; an edited module can still carry it
    with pytest.raises(ValueError, match=r"module must use padding_mode='zeros' and integer padding, got "):
        from_torch(edited)


def test_to_torch_checks_the_variables_of_a_linen_module():
    with_bias = jtconv_linen.ConvTranspose(features=2, kernel_size=(3,))
    kernel = jnp.ones((3, 2, 3))  # (in, out, k)
    with pytest.raises(ValueError, match=r"variables must be \{'params': \{'kernel'"):
        to_torch(with_bias, {"params": {"bias": jnp.zeros(2)}})
    with pytest.raises(ValueError, match=r"variables must be \{'params'"):
        to_torch(with_bias, [kernel])
    with pytest.raises(ValueError, match=r"variables must hold a bias \(use_bias=True\)"):
        to_torch(with_bias, {"params": {"kernel": kernel}})
    without_bias = jtconv_linen.ConvTranspose(features=2, kernel_size=(3,), use_bias=False)
    with pytest.raises(ValueError, match=r"variables must not hold a bias \(use_bias=False\)"):
        to_torch(without_bias, {"params": {"kernel": kernel, "bias": jnp.zeros(2)}})
    torch_module = to_torch(without_bias, {"kernel": kernel})  # the params dict alone
    assert torch_module.bias is None
    np.testing.assert_array_equal(torch_module.weight.detach().numpy(), np.ones((3, 2, 3), np.float32))
    nnx_module = jtconv_nnx.ConvTranspose(3, 2, (3,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="variables must be None with an nnx module"):
        to_torch(nnx_module, {"params": {"kernel": nnx_module.kernel[...]}})


def _generator() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.ConvTranspose2d(8, 6, 4, 1, 0, bias=False),
        torch.nn.BatchNorm2d(6),
        torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(6, 3, 4, 2, 1),
        torch.nn.Tanh(),
    )


def test_load_state_dict_from_torch_save_and_safetensors(tmp_path):
    from safetensors.numpy import save_file

    model = _generator()
    expected = {k: v.numpy() for k, v in model.state_dict().items()}
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "nested.pt")
    save_file(expected, str(tmp_path / "weights.safetensors"))

    for loaded in (load_state_dict(tmp_path / "plain.pt"), load_state_dict(tmp_path / "weights.safetensors")):
        assert set(loaded) == set(expected)
        for key in expected:
            np.testing.assert_array_equal(loaded[key], expected[key])
    nested = load_state_dict(tmp_path / "nested.pt")
    assert nested["epoch"] == 3
    np.testing.assert_array_equal(nested["model.3.weight"], expected["3.weight"])
    params = torch_to_flax(
        load_state_dict(tmp_path / "plain.pt"), {"3": "up"}.get, kinds={"3": "conv_transpose"}, strict=False
    )
    np.testing.assert_array_equal(params.variables["params"]["up"]["bias"], expected["3.bias"])


class _Payload:
    """Unpickling this would create a file: a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_state_dict_never_unpickles_arbitrary_objects(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "payload": _Payload(str(marker))}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_state_dict(path)
    assert not marker.exists()


def test_load_state_dict_keeps_other_leaves_and_int_keys(tmp_path):
    torch.save({"steps": [1, 2], 0: {"w": torch.ones(2, dtype=torch.bfloat16)}, "empty": {}}, tmp_path / "c.pt")
    loaded = load_state_dict(tmp_path / "c.pt")
    assert set(loaded) == {"steps", "0.w"} and loaded["steps"] == [1, 2]
    assert loaded["0.w"].dtype == jnp.bfloat16 and isinstance(loaded["0.w"], np.ndarray)


@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_flax_layout_helpers_match_flax_conv_transpose(transpose_kernel):
    t = torch.nn.ConvTranspose2d(3, 5, (4, 3), stride=(2, 3), bias=False)
    x = torch.randn(2, 3, 4, 5)
    flax_layer = nn.ConvTranspose(
        5, (4, 3), strides=(2, 3), padding="VALID", use_bias=False, transpose_kernel=transpose_kernel
    )
    kernel = kernel_to_flax_layout(t.weight.detach().numpy(), transpose_kernel=transpose_kernel)
    y = flax_layer.apply({"params": {"kernel": kernel}}, np.moveaxis(x.numpy(), 1, -1))
    assert_close(y, np.moveaxis(t(x).detach().numpy(), 1, -1))
    np.testing.assert_array_equal(
        kernel_from_flax_layout(kernel, transpose_kernel=transpose_kernel), t.weight.detach().numpy()
    )
