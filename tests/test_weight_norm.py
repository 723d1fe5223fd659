"""Weight-normed and spectral-normed torch layers convert to the weight torch's forward uses.

torch is the oracle: every case loads fresh factors with ``load_state_dict``
(so ``module.weight`` is stale, as after loading a checkpoint), converts with
no torch forward in between, and only then runs torch. Tolerance (float32):
``atol = 1e-5 · max|y_torch|``, ``rtol = 0``.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
import torch
from flax import nnx

import jtconv
from jtconv.interop import from_torch, layer_weight

parametrizations = torch.nn.utils.parametrizations


def old_weight_norm(module, dim=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old API is deprecated, not gone
        return torch.nn.utils.weight_norm(module, dim=dim)


def load_random_state(module: torch.nn.Module, seed: int, scale: float = 1.0) -> None:
    """Overwrite every parameter and buffer through load_state_dict (no forward runs)."""
    generator = torch.Generator().manual_seed(seed)
    state = {
        k: scale * torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in module.state_dict().items()
    }
    module.load_state_dict(state)


def assert_close(actual, expected) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))


def jtconv_output(module, x: torch.Tensor, api: str = "linen") -> np.ndarray:
    if api == "linen":
        converted, variables = from_torch(module)
        return np.asarray(jax.jit(converted.apply)(variables, x.numpy()))
    return np.asarray(from_torch(module, api="nnx")(x.numpy()))


def torch_output(module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return module(x).numpy()


def test_issue_snippet_old_weight_norm_after_load_state_dict():
    """The reported case: the stale module.weight was copied (errors up to 1.56)."""
    m = old_weight_norm(torch.nn.ConvTranspose1d(8, 4, 16, 8, padding=4))
    torch.manual_seed(0)
    m.load_state_dict({k: torch.randn_like(v) for k, v in m.state_dict().items()})
    stale = m.weight.detach().clone()
    x = torch.randn(2, 8, 10)
    y = jtconv_output(m, x)  # converted before any torch forward
    expected = torch_output(m, x)
    assert not torch.allclose(stale, m.weight)  # the forward recomputed it: what was there was stale
    assert_close(y, expected)


CASES = {
    # name: (torch module factory, input shape)
    "1d": (lambda: torch.nn.ConvTranspose1d(6, 4, 5, stride=3, padding=1, output_padding=2), (2, 6, 7)),
    "2d-groups": (lambda: torch.nn.ConvTranspose2d(6, 4, (3, 2), stride=2, padding=1, groups=2), (2, 6, 4, 5)),
    "3d-no-bias": (
        lambda: torch.nn.ConvTranspose3d(4, 2, 3, stride=2, dilation=(1, 2, 1), bias=False),
        (1, 4, 3, 3, 2),
    ),
}


def converted_kernel(module) -> np.ndarray:
    _, variables = from_torch(module)
    return np.asarray(variables["params"]["kernel"])


def torch_forward_weight(module, x: torch.Tensor) -> np.ndarray:
    """The weight torch's forward used (a forward refreshes the hooks' module.weight)."""
    torch_output(module, x)
    return module.weight.detach().numpy()


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2, None])
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("style", ["hooks", "parametrizations"])
def test_weight_norm_every_dim_and_rank(style, name, dim):
    """The converted kernel is the weight torch's forward computes (dim=-1 is the whole tensor, as None)."""
    make, shape = CASES[name]
    layer = make()
    m = old_weight_norm(layer, dim) if style == "hooks" else parametrizations.weight_norm(layer, dim=dim)
    load_random_state(m, seed=sorted(CASES).index(name), scale=1.5)
    kernel = converted_kernel(m)
    np.testing.assert_allclose(kernel, torch_forward_weight(m, torch.randn(*shape)), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("style", ["hooks", "parametrizations"])
def test_weight_norm_outputs_match_torch(style, name):
    make, shape = CASES[name]
    layer = make()
    m = old_weight_norm(layer) if style == "hooks" else parametrizations.weight_norm(layer)
    load_random_state(m, seed=10 + sorted(CASES).index(name), scale=1.5)
    x = torch.randn(*shape)
    y = jtconv_output(m, x)
    assert_close(y, torch_output(m, x))


@pytest.mark.parametrize(
    "style, dim, api",
    [
        ("hooks", None, "linen"),
        ("hooks", 0, "nnx"),
        ("parametrizations", None, "nnx"),
        ("parametrizations", 0, "linen"),
    ],
)
def test_spectral_norm_eval_uses_stored_u_and_v(style, dim, api):
    """Default dim (1 for transposed convolutions) and an explicit dim=0."""
    layer = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, groups=2)
    make = torch.nn.utils.spectral_norm if style == "hooks" else parametrizations.spectral_norm
    m = make(layer, dim=dim).eval()
    load_random_state(m, seed=5)
    x = torch.randn(2, 6, 4, 4)
    y = jtconv_output(m, x, api)
    assert_close(y, torch_output(m, x))


@pytest.mark.parametrize("style", ["hooks", "parametrizations"])
def test_spectral_norm_in_training_mode_warns(style):
    make = torch.nn.utils.spectral_norm if style == "hooks" else parametrizations.spectral_norm
    m = make(torch.nn.ConvTranspose1d(3, 2, 4, 2))
    with pytest.warns(UserWarning, match="eval-mode"):
        from_torch(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_torch(m.eval())


def test_unknown_hooks_and_parametrizations_are_refused():
    from torch.nn.utils import prune

    pruned = prune.random_unstructured(torch.nn.ConvTranspose1d(2, 2, 3), "weight", amount=0.5)
    with pytest.raises(ValueError, match="forward pre-hook"):
        from_torch(pruned)

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    doubled = torch.nn.ConvTranspose1d(2, 2, 3)
    torch.nn.utils.parametrize.register_parametrization(doubled, "weight", Double())
    with pytest.raises(ValueError, match="parametrized by one weight_norm or spectral_norm"):
        from_torch(doubled)

    bias_norm = old_weight_norm(torch.nn.ConvTranspose1d(2, 2, 3), dim=0)
    torch.nn.utils.parametrize.register_parametrization(bias_norm, "bias", Double())
    with pytest.raises(ValueError, match="at most one weight reparametrization"):
        from_torch(bias_norm)


def test_layer_weight_reads_plain_layers_unchanged():
    t = torch.nn.ConvTranspose2d(3, 2, 3)
    np.testing.assert_array_equal(np.asarray(layer_weight(t)), t.weight.detach().numpy())


def test_nnx_module_from_weight_norm_layer_is_plain_nnx():
    m = parametrizations.weight_norm(torch.nn.ConvTranspose1d(4, 2, 4, 2, 1))
    load_random_state(m, seed=9)
    layer = from_torch(m, api="nnx")
    assert isinstance(layer, nnx.Module)
    np.testing.assert_allclose(np.asarray(layer.kernel[...]), m.weight.detach().numpy(), rtol=2e-6, atol=1e-7)


def test_to_torch_weight_norm_round_trip():
    """to_torch(weight_norm=True) gives a parametrized layer whose g, v reproduce the kernel."""
    t = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
    module, variables = from_torch(t)
    for dim in (0, 1, None):
        back = jtconv.to_torch(module, variables, weight_norm=True, weight_norm_dim=dim)
        assert torch.nn.utils.parametrize.is_parametrized(back, "weight")
        assert isinstance(back.parametrizations.weight[0], parametrizations._WeightNorm)
        assert back.parametrizations.weight[0].dim == (-1 if dim is None else dim)
        g = back.parametrizations.weight.original0
        expected_g = torch.norm_except_dim(t.weight, 2, -1 if dim is None else dim)
        torch.testing.assert_close(g, expected_g, rtol=0, atol=0)
        torch.testing.assert_close(back.weight, t.weight, rtol=1e-6, atol=1e-7)
        x = torch.randn(2, 6, 3, 3)
        assert_close(torch_output(back, x), torch_output(t, x))
        assert_close(jtconv_output(back, x), torch_output(t, x))
    plain = jtconv.to_torch(module, variables)
    assert not torch.nn.utils.parametrize.is_parametrized(plain)


def test_to_torch_weight_norm_arguments_are_checked():
    module, variables = from_torch(torch.nn.ConvTranspose1d(2, 2, 3))
    with pytest.raises(TypeError, match="weight_norm"):
        jtconv.to_torch(module, variables, weight_norm="yes")
    with pytest.raises(ValueError, match="weight_norm_dim"):
        jtconv.to_torch(module, variables, weight_norm=True, weight_norm_dim=3)
