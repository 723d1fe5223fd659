"""jtconv.torch_keys: state-dict keys by layer, weight forms, and the reparametrization math against torch's own."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from jtconv import torch_keys

parametrizations = torch.nn.utils.parametrizations


def test_group_by_layer_and_weight_forms():
    keys = [
        "ups.0.parametrizations.weight.original0",
        "ups.0.parametrizations.weight.original1",
        "ups.0.bias",
        "weight_orig",
        "weight_u",
        "weight_v",
        "bn.num_batches_tracked",
        "alpha",
    ]
    layers, unknown = torch_keys.group_by_layer(keys)
    assert unknown == ["alpha"]
    assert layers == {
        "ups.0": {
            "parametrizations.weight.original0": keys[0],
            "parametrizations.weight.original1": keys[1],
            "bias": keys[2],
        },
        "": {"weight_orig": "weight_orig", "weight_u": "weight_u", "weight_v": "weight_v"},
        "bn": {"num_batches_tracked": "bn.num_batches_tracked"},
    }
    assert [torch_keys.weight_form(layer) for layer in layers.values()] == ["weight_norm_p", "spectral_norm", None]
    with pytest.raises(ValueError, match=r"weight keys \['weight', 'weight_g'\] are no supported weight form"):
        torch_keys.weight_form(["weight", "weight_g", "bias"])
    assert torch_keys.weight_shape("weight_norm", {"weight_g": (4, 1, 1), "weight_v": (4, 3, 5)}) == (4, 3, 5)


def load_random_state(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    module.load_state_dict({k: torch.randn(v.shape, generator=generator) for k, v in module.state_dict().items()})


@pytest.mark.parametrize("dim", [0, 1, 2, 3, -1, -2, -3, None])
def test_weight_from_weight_norm_matches_torch_weight_norm(dim):
    torch.manual_seed(1)
    v = torch.randn(4, 3, 5, 2)
    torch_dim = -1 if dim is None else dim
    g = torch.randn_like(torch.norm_except_dim(v, 2, torch_dim))
    expected = torch._weight_norm(v, g, torch_dim)
    actual = torch_keys.weight_from_weight_norm(g.numpy(), v.numpy())  # dim read from g's shape
    np.testing.assert_allclose(actual, expected.numpy(), rtol=2e-6, atol=1e-7)
    norm_dim = torch_keys.weight_norm_dim(g.shape, v.shape)
    assert norm_dim == (None if dim in (None, -1) else dim % 4)
    norm = torch.norm_except_dim(v, 2, torch_dim)
    np.testing.assert_allclose(torch_keys.norm_except_dim(v.numpy(), norm_dim), norm.numpy(), rtol=2e-6)
    written = torch_keys.write_weight("weight_norm", v.numpy(), {"weight_g": g.shape, "weight_v": v.shape})
    np.testing.assert_allclose(written["weight_g"], norm.numpy(), rtol=2e-6)
    np.testing.assert_array_equal(written["weight_v"], v.numpy())


def test_weight_norm_dim_from_shapes():
    assert torch_keys.weight_norm_dim((), (4, 3, 5)) is None
    assert torch_keys.weight_norm_dim((4, 1, 1), (4, 3, 5)) == 0
    assert torch_keys.weight_norm_dim((1, 1, 5), (4, 3, 5)) == 2
    assert torch_keys.weight_norm_dim((1, 1, 1), (4, 1, 5)) == 1  # every fitting dim: same weight
    for bad in [(4,), (4, 3, 1), (1, 1, 1), (3, 1, 1)]:
        with pytest.raises(ValueError, match="weight_g"):
            torch_keys.weight_norm_dim(bad, (4, 3, 5))
    with pytest.raises(ValueError, match="weight_g must have shape"):
        torch_keys.weight_from_weight_norm(np.ones((3, 1, 1)), np.ones((4, 3, 5)))


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_weight_from_spectral_norm_matches_torch_eval(dim):
    torch.manual_seed(2)
    layer = parametrizations.spectral_norm(torch.nn.ConvTranspose2d(5, 3, (2, 4)), dim=dim).eval()
    load_random_state(layer, seed=dim)
    spectral = layer.parametrizations.weight[0]
    expected = layer.weight.detach().numpy()  # eval mode: no power iteration, u and v unchanged
    original = layer.parametrizations.weight.original.detach().numpy()
    actual = torch_keys.weight_from_spectral_norm(original, spectral._u.numpy(), spectral._v.numpy(), dim)
    np.testing.assert_allclose(actual, expected, rtol=2e-6, atol=1e-7)
    with pytest.raises(ValueError, match="spectral norm vectors"):
        torch_keys.weight_from_spectral_norm(original, spectral._u.numpy(), spectral._v.numpy(), (dim + 1) % 4)
    with pytest.raises(ValueError, match=r"dim must be in \[-4, 4\) for a weight of rank 4, got -5"):
        torch_keys.weight_from_spectral_norm(original, spectral._u.numpy(), spectral._v.numpy(), -5)


def test_spectral_forms_cannot_be_written():
    with pytest.raises(ValueError, match="cannot be written from a plain weight"):
        torch_keys.write_weight("spectral_norm_p", np.ones((2, 3, 4)), {})


def test_weight_norm_is_differentiable_and_jittable():
    """Gradients with respect to g and v match torch's (the factors are what a port trains)."""
    torch.manual_seed(3)
    v = torch.randn(3, 2, 4, requires_grad=True)
    g = torch.randn(3, 1, 1, requires_grad=True)
    cot = torch.randn(3, 2, 4)
    (torch._weight_norm(v, g, 0) * cot).sum().backward()
    grads = jax.jit(jax.grad(lambda g, v: (torch_keys.weight_from_weight_norm(g, v) * cot.numpy()).sum(), (0, 1)))(
        g.detach().numpy(), v.detach().numpy()
    )
    np.testing.assert_allclose(grads[0], g.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[1], v.grad.numpy(), rtol=1e-5, atol=1e-6)
