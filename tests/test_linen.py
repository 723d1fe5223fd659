"""jtconv.linen.ConvTranspose against torch.nn.ConvTranspose{1,2,3}d (torch is the oracle).

Tolerance (float32): ``atol = 1e-5 · max|y_torch|``, ``rtol = 0``, for
outputs and gradients alike: each output sums at most a few dozen products,
so the float32 rounding error is a few ulps of the output's scale.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jtconv
from jtconv.linen import ConvTranspose, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d

import tiers

TORCH_CLASSES = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}

# (in, out, kernel, stride, padding, output_padding, dilation, groups, bias, input spatial size)
CONFIGS = {
    "1d-groups-op": (4, 6, 3, 2, 1, 1, 1, 2, True, (7,)),
    "1d-pad-beyond-kernel": (3, 2, 4, 3, 7, 0, 2, 1, False, (6,)),
    "2d-nonsquare-dilated-groups": (4, 4, (3, 2), (2, 1), (1, 0), (1, 0), (1, 2), 2, True, (5, 6)),
    "2d-op-ge-stride-lt-dilation": (2, 3, 3, 1, 0, 2, 3, 1, False, (4, 5)),
    "2d-depthwise": (4, 4, 4, 2, 1, 0, 1, 4, True, (6, 6)),
    "2d-nonsquare-strides": (3, 5, (1, 5), (3, 2), (0, 2), (2, 1), 1, 1, True, (4, 3)),
    "3d-mixed": (4, 4, (2, 3, 2), (2, 1, 2), (0, 1, 1), (1, 0, 0), (1, 1, 2), 2, True, (3, 4, 3)),
    "3d-op-from-dilation": (2, 3, 3, 1, 0, 1, 2, 1, False, (2, 3, 2)),
}


def torch_module(name: str) -> torch.nn.Module:
    cin, cout, k, s, p, op, d, g, bias, _ = CONFIGS[name]
    torch.manual_seed(sorted(CONFIGS).index(name))
    ndim = len(CONFIGS[name][-1])
    return TORCH_CLASSES[ndim](cin, cout, k, stride=s, padding=p, output_padding=op, groups=g, bias=bias, dilation=d)


def torch_input(name: str, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(100 + sorted(CONFIGS).index(name))
    return torch.randn(batch, CONFIGS[name][0], *CONFIGS[name][-1])


def linen_twin(t: torch.nn.Module, **overrides) -> tuple[ConvTranspose, dict]:
    """A linen module with t's hyperparameters (built by hand, not by from_torch) and t's weights."""
    options = dict(
        features=t.out_channels,
        kernel_size=t.kernel_size,
        strides=t.stride,
        padding=t.padding,
        output_padding=t.output_padding,
        kernel_dilation=t.dilation,
        feature_group_count=t.groups,
        use_bias=t.bias is not None,
    )
    options.update(overrides)
    params = {"kernel": jnp.asarray(t.weight.detach().numpy())}
    if t.bias is not None:
        params["bias"] = jnp.asarray(t.bias.detach().numpy())
    return ConvTranspose(**options), {"params": params}


def channels_last(a) -> np.ndarray:
    return np.moveaxis(np.asarray(a), 1, -1)


def assert_close(actual, expected) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize(*tiers.product({"name": sorted(CONFIGS), "algorithm": jtconv.ALGORITHMS}, every=("name",)))
def test_channels_last_matches_torch(name, algorithm):
    t, x = torch_module(name), torch_input(name)
    module, variables = linen_twin(t, algorithm=algorithm)
    y = jax.jit(module.apply)(variables, channels_last(x))
    assert_close(y, channels_last(t(x).detach()))


@pytest.mark.parametrize("name", ["1d-groups-op", "2d-op-ge-stride-lt-dilation", "3d-mixed"])
def test_channels_first_matches_torch(name):
    t, x = torch_module(name), torch_input(name)
    module, variables = linen_twin(t, channels_first=True)
    assert_close(jax.jit(module.apply)(variables, x.numpy()), t(x).detach())


@pytest.mark.parametrize("name", ["1d-groups-op", "2d-nonsquare-dilated-groups", "3d-op-from-dilation"])
def test_init_creates_torch_layout_params(name):
    t = torch_module(name)
    module, _ = linen_twin(t)
    variables = jax.eval_shape(module.init, jax.random.key(0), channels_last(torch_input(name)))
    shapes = jax.tree.map(jnp.shape, variables["params"])
    expected = {"kernel": tuple(t.weight.shape)}
    if t.bias is not None:
        expected["bias"] = tuple(t.bias.shape)
    assert shapes == expected


def test_unbatched_and_extra_batch_dims_match_torch():
    t = torch_module("2d-nonsquare-dilated-groups")
    x = torch_input("2d-nonsquare-dilated-groups", batch=6)
    module, variables = linen_twin(t)
    expected = channels_last(t(x).detach())
    assert_close(module.apply(variables, channels_last(x)[0]), expected[0])
    stacked = channels_last(x).reshape(2, 3, *channels_last(x).shape[1:])
    assert_close(module.apply(variables, stacked), expected.reshape(2, 3, *expected.shape[1:]))


@pytest.mark.parametrize("full_shape", [False, True])
def test_output_size_matches_torch_forward(full_shape):
    t = torch.nn.ConvTranspose2d(3, 4, 3, stride=(3, 2), padding=1, output_padding=1)
    x = torch.randn(2, 3, 4, 5)
    target = (11, 10)
    expected = t(x, output_size=list(target)).detach()
    assert expected.shape[2:] == target
    module, variables = linen_twin(t)
    size = (2, *target, 4) if full_shape else target
    assert_close(module.apply(variables, channels_last(x), output_size=size), channels_last(expected))


def test_gradients_under_jit_match_torch_autograd():
    t, x = torch_module("2d-nonsquare-dilated-groups"), torch_input("2d-nonsquare-dilated-groups")
    x.requires_grad_(True)
    y = t(x)
    cotangent = torch.randn_like(y)
    (y * cotangent).sum().backward()

    module, variables = linen_twin(t)

    @jax.jit
    def loss(variables, x):
        return jnp.sum(module.apply(variables, x) * channels_last(cotangent))

    grads, grad_x = jax.grad(loss, argnums=(0, 1))(variables, channels_last(x.detach()))
    assert_close(grads["params"]["kernel"], t.weight.grad)
    assert_close(grads["params"]["bias"], t.bias.grad)
    assert_close(grad_x, channels_last(x.grad))


def test_vmap_over_batch_equals_batched_call():
    t, x = torch_module("1d-groups-op"), torch_input("1d-groups-op", batch=3)
    module, variables = linen_twin(t)
    x_cl = channels_last(x)
    mapped = jax.vmap(lambda xi: module.apply(variables, xi))(x_cl)
    assert_close(mapped, module.apply(variables, x_cl))
    assert_close(mapped, channels_last(t(x).detach()))


class _Block(nn.Module):
    """A size-preserving layer (k=3, p=1, s=1) in the carry/output form nn.scan wants."""

    @nn.compact
    def __call__(self, carry, _):
        return jnp.tanh(ConvTranspose(4, (3,), padding=1)(carry)), None


def test_nn_scan_equals_layer_by_layer_and_torch():
    length = 3
    scanned = nn.scan(_Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=length)
    x = jax.random.normal(jax.random.key(1), (2, 9, 4))
    variables = jax.jit(scanned().init)(jax.random.key(0), x, None)
    kernels = variables["params"]["ConvTranspose_0"]["kernel"]
    biases = variables["params"]["ConvTranspose_0"]["bias"]
    assert kernels.shape == (length, 4, 4, 3)
    y, _ = jax.jit(scanned().apply)(variables, x, None)

    h = torch.tensor(np.asarray(jnp.moveaxis(x, -1, 1)))
    for i in range(length):
        layer = torch.nn.ConvTranspose1d(4, 4, 3, padding=1)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(np.asarray(kernels[i])))
            layer.bias.copy_(torch.tensor(np.asarray(biases[i])))
        h = torch.tanh(layer(h))
    assert_close(y, channels_last(h.detach()))


def test_nn_remat_gives_same_values_and_gradients():
    t, x = torch_module("2d-depthwise"), torch_input("2d-depthwise")
    _, variables = linen_twin(t)
    options = dict(features=4, kernel_size=(4, 4), strides=2, padding=1, feature_group_count=4)
    plain, rematted = ConvTranspose(**options), nn.remat(ConvTranspose)(**options)
    x_cl = channels_last(x)

    def loss(module):
        return jax.jit(jax.value_and_grad(lambda v: jnp.sum(jnp.sin(module.apply(v, x_cl)))))(variables)

    (value, grads), (value_remat, grads_remat) = loss(plain), loss(rematted)
    assert_close(value_remat, value)
    assert_close(grads_remat["params"]["kernel"], grads["params"]["kernel"])
    assert_close(rematted.apply(variables, x_cl), channels_last(t(x).detach()))


def test_mixed_precision_bfloat16_compute_float32_params():
    t, x = torch_module("2d-nonsquare-dilated-groups"), torch_input("2d-nonsquare-dilated-groups")
    module, _ = linen_twin(t, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    variables = jax.jit(module.init)(jax.random.key(0), channels_last(x))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    y = jax.jit(module.apply)(variables, channels_last(x))
    assert y.dtype == jnp.bfloat16

    # Reference: the same rounding of inputs and parameters to bfloat16, computed by torch in float64.
    def rounded(a):
        return torch.tensor(np.asarray(jnp.asarray(a, jnp.bfloat16)).astype(np.float64))

    params = variables["params"]
    t64 = t.double()
    with torch.no_grad():
        t64.weight.copy_(rounded(params["kernel"]))
        t64.bias.zero_()
        conv = channels_last(t64(rounded(x.numpy())).detach())
    expected = conv + np.asarray(rounded(params["bias"]))
    # XLA accumulates in float32, rounds the convolution to bfloat16 (unit roundoff
    # u = 2^-8), then adds the bias in bfloat16 (another rounding): |err| <= u·(|conv| + |y|),
    # plus float32 accumulation error far below 1e-5 of the output's scale.
    bound = 2.0**-8 * (np.abs(conv) + np.abs(expected)) + 1e-5 * np.abs(expected).max()
    err = np.abs(np.asarray(y, np.float64) - expected)
    assert np.all(err <= bound), float((err / bound).max())


def test_torch_default_init_spread_matches_torch():
    features, in_features, groups, kernel_size = 32, 64, 2, (3, 3)
    module = ConvTranspose(features, kernel_size, feature_group_count=groups)
    x = jax.ShapeDtypeStruct((1, 1, 1, in_features), jnp.float32)
    keys = jax.random.split(jax.random.key(0), 64)
    params = jax.jit(jax.vmap(lambda k: module.lazy_init(k, x)["params"]))(keys)
    torch.manual_seed(0)
    torch_layers = [torch.nn.ConvTranspose2d(in_features, features, kernel_size, groups=groups) for _ in range(64)]
    torch_kernels = np.stack([m.weight.detach().numpy() for m in torch_layers])
    torch_biases = np.stack([m.bias.detach().numpy() for m in torch_layers])
    assert params["kernel"].shape[1:] == torch_kernels.shape[1:]

    bound = 1 / np.sqrt((features // groups) * 9)  # torch's 1/sqrt(fan_in)
    for ours, theirs in ((params["kernel"], torch_kernels), (params["bias"], torch_biases)):
        ours = np.asarray(ours)
        assert abs(ours.std() / theirs.std() - 1) < 0.15
        assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound
        assert abs(ours.mean()) < 0.1 * bound


def test_custom_initializers_are_used():
    module = ConvTranspose(6, (2, 3), kernel_init=nn.initializers.ones, bias_init=nn.initializers.constant(0.5))
    params = module.init(jax.random.key(0), jnp.zeros((1, 4, 4, 2)))["params"]
    assert params["kernel"].shape == (2, 6, 2, 3)
    np.testing.assert_array_equal(params["kernel"], np.ones((2, 6, 2, 3)))
    np.testing.assert_array_equal(params["bias"], np.full((6,), 0.5))


@pytest.mark.parametrize(
    "cls, kernel_size, input_shape, expected_kernel",
    [
        (ConvTranspose1d, 3, (2, 5, 4), (4, 6, 3)),
        (ConvTranspose2d, 3, (2, 5, 5, 4), (4, 6, 3, 3)),
        (ConvTranspose3d, 2, (5, 5, 5, 4), (4, 6, 2, 2, 2)),
    ],
)
def test_fixed_rank_modules_accept_int_kernel_size(cls, kernel_size, input_shape, expected_kernel):
    module = cls(6, kernel_size, strides=2)
    y, variables = jax.eval_shape(lambda x: module.init_with_output(jax.random.key(0), x), jnp.ones(input_shape))
    assert variables["params"]["kernel"].shape == expected_kernel
    spatial = tuple((i - 1) * 2 + kernel_size for i in input_shape[-len(expected_kernel) + 2 - 1 : -1])
    assert y.shape == (*input_shape[: -len(spatial) - 1], *spatial, 6)


@pytest.mark.parametrize(
    "options, input_shape, message",
    [
        (dict(features=4, kernel_size=3), (1, 5, 2), "kernel_size"),
        (dict(features=3, kernel_size=(3,), feature_group_count=2), (1, 5, 2), "feature_group_count"),
        (dict(features=4, kernel_size=(3,), feature_group_count=2), (1, 5, 3), "feature_group_count"),
        (dict(features=4, kernel_size=(3,), strides=0), (1, 5, 2), "strides"),
        (dict(features=4, kernel_size=(3,), kernel_dilation=0), (1, 5, 2), "kernel_dilation"),
        (dict(features=4, kernel_size=(3,), strides=2, output_padding=2), (1, 5, 2), "output_padding"),
        (dict(features=4, kernel_size=(3,), padding=-1), (1, 5, 2), "padding"),
        (dict(features=4, kernel_size=(3,), padding=9), (1, 2, 2), "output size"),
        (dict(features=4, kernel_size=(3, 3)), (5, 2), "inputs"),
        (dict(features=4, kernel_size=(3,), algorithm="nope"), (1, 5, 2), "algorithm"),
    ],
)
def test_invalid_arguments_raise_value_error(options, input_shape, message):
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(ConvTranspose(**options).init, jax.random.key(0), jnp.ones(input_shape))


def test_output_size_out_of_range_raises():
    module = ConvTranspose(2, (3,), strides=2)
    x = jnp.ones((1, 4, 2))
    variables = jax.eval_shape(module.init, jax.random.key(0), x)
    assert jax.eval_shape(lambda v: module.apply(v, x, output_size=(10,)), variables).shape == (1, 10, 2)
    with pytest.raises(ValueError, match="output_size"):
        jax.eval_shape(lambda v: module.apply(v, x, output_size=(11,)), variables)
