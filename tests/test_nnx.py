"""jtconv.nnx.ConvTranspose against torch.nn.ConvTranspose{1,2,3}d (torch is the oracle).

Tolerance (float32): ``atol = 1e-5 · max|y_torch|``, ``rtol = 0``, for
outputs and gradients alike (a few ulps of the output's scale).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jtconv
from jtconv.nnx import ConvTranspose, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d

import tiers

TORCH_CLASSES = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}

# (in, out, kernel, stride, padding, output_padding, dilation, groups, bias, input spatial size)
CONFIGS = {
    "1d-groups-op": (6, 4, 3, 3, 2, 2, 1, 2, True, (5,)),
    "2d-nonsquare-op-from-dilation": (4, 6, (2, 3), (1, 2), (0, 1), (1, 1), (2, 1), 2, False, (4, 5)),
    "2d-depthwise-dilated": (3, 6, 3, 2, 2, 1, 2, 3, True, (5, 4)),
    "3d-nonsquare": (2, 4, (3, 1, 2), (1, 2, 3), (1, 0, 0), (0, 1, 2), 1, 1, True, (3, 2, 3)),
}


def torch_module(name: str) -> torch.nn.Module:
    cin, cout, k, s, p, op, d, g, bias, size = CONFIGS[name]
    torch.manual_seed(sorted(CONFIGS).index(name))
    return TORCH_CLASSES[len(size)](
        cin, cout, k, stride=s, padding=p, output_padding=op, groups=g, bias=bias, dilation=d
    )


def torch_input(name: str, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(100 + sorted(CONFIGS).index(name))
    return torch.randn(batch, CONFIGS[name][0], *CONFIGS[name][-1])


def nnx_twin(t: torch.nn.Module, **overrides) -> ConvTranspose:
    """An nnx module with t's hyperparameters (built by hand, not by from_torch) and t's weights."""
    options = dict(
        strides=t.stride,
        padding=t.padding,
        output_padding=t.output_padding,
        kernel_dilation=t.dilation,
        feature_group_count=t.groups,
        use_bias=t.bias is not None,
        rngs=nnx.Rngs(0),
    )
    options.update(overrides)
    module = ConvTranspose(t.in_channels, t.out_channels, t.kernel_size, **options)
    assert module.kernel.shape == tuple(t.weight.shape)
    module.kernel[...] = jnp.asarray(t.weight.detach().numpy())
    if t.bias is not None:
        module.bias[...] = jnp.asarray(t.bias.detach().numpy())
    return module


def channels_last(a) -> np.ndarray:
    return np.moveaxis(np.asarray(a), 1, -1)


def assert_close(actual, expected) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)


@nnx.jit
def forward(module, x):
    return module(x)


@pytest.mark.parametrize(*tiers.product({"name": sorted(CONFIGS), "algorithm": jtconv.ALGORITHMS}, every=("name",)))
def test_channels_last_matches_torch(name, algorithm):
    t, x = torch_module(name), torch_input(name)
    module = nnx_twin(t, algorithm=algorithm)
    assert_close(forward(module, channels_last(x)), channels_last(t(x).detach()))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_channels_first_matches_torch(name):
    t, x = torch_module(name), torch_input(name)
    module = nnx_twin(t, channels_first=True)
    assert_close(forward(module, x.numpy()), t(x).detach())
    assert_close(forward(module, x.numpy()[0]), t(x[0]).detach())  # unbatched, like torch


def test_parameters_have_torch_layout_and_bias_can_be_off():
    module = ConvTranspose(6, 4, (3, 2), feature_group_count=2, rngs=nnx.Rngs(0))
    assert module.kernel.shape == (6, 2, 3, 2)
    assert module.bias.shape == (4,)
    no_bias = ConvTranspose(6, 4, (3, 2), use_bias=False, rngs=nnx.Rngs(0))
    assert no_bias.bias is None
    assert [tuple(p.shape) for p in jax.tree.leaves(nnx.state(no_bias, nnx.Param))] == [(6, 4, 3, 2)]


def test_nnx_grad_under_nnx_jit_matches_torch_autograd():
    name = "2d-depthwise-dilated"
    t, x = torch_module(name), torch_input(name)
    x.requires_grad_(True)
    y = t(x)
    cotangent = torch.randn_like(y)
    (y * cotangent).sum().backward()

    module = nnx_twin(t)

    @nnx.jit
    def grads(module, x):
        return nnx.grad(lambda m, x: jnp.sum(m(x) * channels_last(cotangent)), argnums=(0, 1))(module, x)

    grad_module, grad_x = grads(module, channels_last(x.detach()))
    assert_close(grad_module.kernel[...], t.weight.grad)
    assert_close(grad_module.bias[...], t.bias.grad)
    assert_close(grad_x, channels_last(x.grad))


def test_one_optimizer_step_matches_torch_sgd():
    name = "1d-groups-op"
    t, x = torch_module(name), torch_input(name)
    target = torch.randn_like(t(x))
    module = nnx_twin(t)

    torch_optimizer = torch.optim.SGD(t.parameters(), lr=0.1)
    torch.nn.functional.mse_loss(t(x), target).backward()
    torch_optimizer.step()

    optimizer = nnx.Optimizer(module, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def step(module, optimizer, x, target):
        grads = nnx.grad(lambda m: jnp.mean((m(x) - target) ** 2))(module)
        optimizer.update(module, grads)

    step(module, optimizer, channels_last(x), channels_last(target))
    assert_close(module.kernel[...], t.weight.detach())
    assert_close(module.bias[...], t.bias.detach())


def test_vmap_over_batch_equals_batched_call():
    name = "3d-nonsquare"
    t, x = torch_module(name), torch_input(name, batch=3)
    module = nnx_twin(t)
    mapped = nnx.vmap(lambda m, xi: m(xi), in_axes=(None, 0))(module, channels_last(x))
    assert_close(mapped, channels_last(t(x).detach()))


def test_output_size_matches_torch_forward():
    t = torch.nn.ConvTranspose1d(2, 3, 4, stride=3, padding=1)
    x = torch.randn(2, 2, 5)
    expected = t(x, output_size=[16]).detach()
    module = nnx_twin(t)
    assert_close(module(channels_last(x), output_size=(16,)), channels_last(expected))


def test_mixed_precision_bfloat16_compute_float32_params():
    module = ConvTranspose(4, 6, (3, 3), strides=2, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    assert module.kernel.dtype == jnp.float32 and module.bias.dtype == jnp.float32
    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 4))
    y = forward(module, x)
    assert y.dtype == jnp.bfloat16
    # Reference in float32 from the same bfloat16-rounded operands; the two bfloat16
    # roundings (convolution, then + bias; unit roundoff u = 2^-8) bound the error by
    # u·(|conv| + |y|), float32 accumulation adds ~1e-7 of the scale.
    kernel = module.kernel[...].astype(jnp.bfloat16).astype(jnp.float32)
    bias = module.bias[...].astype(jnp.bfloat16).astype(jnp.float32)
    xb = x.astype(jnp.bfloat16).astype(jnp.float32)
    conv = np.asarray(jtconv.conv_transpose(xb, kernel, stride=2, channels_last=True, precision="highest"))
    expected = conv + np.asarray(bias)
    bound = 2.0**-8 * (np.abs(conv) + np.abs(expected)) + 1e-5 * np.abs(expected).max()
    assert np.all(np.abs(np.asarray(y, np.float32) - expected) <= bound)


def test_torch_default_init_spread_matches_torch():
    torch.manual_seed(0)
    torch_layers = [torch.nn.ConvTranspose3d(8, 12, (2, 3, 1), groups=4) for _ in range(64)]
    modules = [ConvTranspose(8, 12, (2, 3, 1), feature_group_count=4, rngs=nnx.Rngs(i)) for i in range(64)]
    bound = 1 / np.sqrt(3 * 6)  # 1/sqrt(fan_in), fan_in = (12/4)·2·3·1
    for ours, theirs in (
        ([m.kernel[...] for m in modules], [t.weight.detach().numpy() for t in torch_layers]),
        ([m.bias[...] for m in modules], [t.bias.detach().numpy() for t in torch_layers]),
    ):
        ours, theirs = np.stack(ours), np.stack(theirs)
        assert ours.shape == theirs.shape
        assert abs(ours.std() / theirs.std() - 1) < 0.15
        assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound


@pytest.mark.parametrize(
    "cls, input_shape, expected_shape",
    [
        (ConvTranspose1d, (2, 5, 3), (2, 11, 4)),
        (ConvTranspose2d, (5, 4, 3), (11, 9, 4)),
        (ConvTranspose3d, (1, 2, 3, 2, 3), (1, 5, 7, 5, 4)),
    ],
)
def test_fixed_rank_modules_accept_int_kernel_size(cls, input_shape, expected_shape):
    module = cls(3, 4, 3, strides=2, rngs=nnx.Rngs(0))
    assert module.kernel.shape == (3, 4) + (3,) * cls.spatial_dims
    assert jax.eval_shape(lambda x: module(x), jnp.ones(input_shape)).shape == expected_shape


@pytest.mark.parametrize(
    "args, options, message",
    [
        ((2, 4, 3), {}, "kernel_size"),
        ((2, 4, (3,)), dict(feature_group_count=3), "feature_group_count"),
        ((3, 4, (3,)), dict(feature_group_count=2), "feature_group_count"),
        ((0, 4, (3,)), {}, "in_features"),
        ((2, 4, (3, 0)), {}, "kernel_size"),
        ((2, 4, (3,)), dict(strides=(1, 2)), "strides"),
        ((2, 4, (3,)), dict(kernel_dilation=-1), "kernel_dilation"),
        ((2, 4, (3,)), dict(strides=2, kernel_dilation=3, output_padding=3), "output_padding"),
        ((2, 4, (3,)), dict(padding="full"), "padding"),
        ((2, 4, (3,)), dict(padding="same", output_padding=1, strides=2), "output_padding"),
    ],
)
def test_invalid_arguments_raise_value_error_at_construction(args, options, message):
    with pytest.raises(ValueError, match=message):
        ConvTranspose(*args, **options, rngs=nnx.Rngs(0))


def test_wrong_input_channels_raise_value_error():
    module = ConvTranspose(4, 2, (3,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input channels"):
        jax.eval_shape(lambda x: module(x), jnp.ones((1, 5, 3)))
