"""Gradients w.r.t. input, weight and bias against torch autograd.

Each check compares ``jax.vjp`` with ``torch.autograd.grad`` of
``Σ y · cotangent`` (a seeded standard-normal cotangent), for every lowering,
with the per-dtype tolerances of :func:`jtconv.testing.relative_tolerance`
(float32: ``1e-5 · max|torch gradient|``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jtconv
from jtconv import testing

import tiers

GRADIENT_SEED = 31337
CONFIGS = testing.sweep_configs(60, seed=GRADIENT_SEED, invalid_probability=0.0)
CHUNK = 10
QUICK_SAMPLE = 4  # configurations per lowering in the quick tier (tests/tiers.py)

NAMED = {
    "4x4-tutorial": testing.ConvTransposeConfig((1, 1, 4, 4), (1, 1, 4, 4), stride=2, padding=1),
    "grouped-bias": testing.ConvTransposeConfig((2, 4, 5, 5), (4, 2, 3, 3), groups=4, bias_shape=(8,)),
    "1d-big-padding": testing.ConvTransposeConfig(
        (2, 3, 6), (3, 2, 3), stride=2, padding=5, output_padding=1, bias_shape=(2,)
    ),
    "op-above-stride": testing.ConvTransposeConfig((2, 6, 3, 3), (6, 4, 3, 3), dilation=3, output_padding=2, groups=3),
    "3d-mixed": testing.ConvTransposeConfig(
        (2, 4, 3, 3, 3), (4, 2, 2, 3, 2), stride=(2, 1, 3), padding=(1, 0, 1), output_padding=(1, 0, 2), bias_shape=(2,)
    ),
    "output-size-unbatched": testing.ConvTransposeConfig(
        (3, 4, 4), (3, 2, 3, 3), stride=2, padding=1, bias_shape=(2,), output_size=(8, 8)
    ),
    "empty-output": testing.ConvTransposeConfig(
        (2, 2, 2, 1), (2, 3, 2, 2), stride=2, padding=(3, 1), output_padding=1, dilation=2, bias_shape=(3,)
    ),
}


@pytest.mark.parametrize(*tiers.product({"name": list(NAMED), "algorithm": jtconv.ALGORITHMS}, every=("name",)))
def test_named_gradients_match_torch(name, algorithm):
    testing.assert_config_matches_torch(NAMED[name], algorithm=algorithm, grads=True)


@pytest.mark.parametrize("algorithm", jtconv.ALGORITHMS)
@pytest.mark.parametrize("chunk", tiers.chunks(len(CONFIGS), CHUNK, quick=QUICK_SAMPLE), ids=str)
def test_gradient_sweep_matches_torch(chunk, algorithm):
    failures = []
    indices = chunk.indices(salt=algorithm)
    for config in (CONFIGS[i] for i in indices):
        result = testing.check_config(config, algorithm=algorithm, grads=True)
        if not result.passed:
            failures.append(result.report())
        elif result.comparison is not None:
            expected = 2 + (config.bias_shape is not None)
            grads = [leaf for leaf in result.comparison.leaves if leaf.name.startswith("grad")]
            assert len(grads) == expected, f"{config.label()}: compared {len(grads)} gradients, expected {expected}"
    assert not failures, (
        f"{len(failures)} of {len(indices)} gradient checks differ from torch ({chunk.reproducer()}):\n"
        + "\n".join(failures)
    )


@pytest.mark.parametrize("algorithm", jtconv.ALGORITHMS)
def test_bias_gradient_is_the_sum_of_the_cotangent(algorithm):
    import jax

    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    y, vjp = jax.vjp(lambda b: jtconv.conv_transpose(x, w, b, stride=2, algorithm=algorithm), b)
    cotangent = rng.standard_normal(y.shape).astype(np.float32)
    (grad_b,) = vjp(cotangent)
    np.testing.assert_allclose(np.asarray(grad_b), cotangent.sum(axis=(0, 2, 3)), rtol=1e-5)


def test_gradient_check_catches_a_wrong_weight_gradient():
    """The gradient comparison can fail: a conv_transpose whose weight
    gradient is scaled by 1.001 passes forward and fails with grads=True."""
    import jax

    @jax.custom_vjp
    def wrong(x, w):
        return jtconv.conv_transpose(x, w, stride=2)

    def forward(x, w):
        y, vjp = jax.vjp(lambda x, w: jtconv.conv_transpose(x, w, stride=2), x, w)
        return y, vjp

    def backward(vjp, g):
        gx, gw = vjp(g)
        return gx, gw * 1.001

    wrong.defvjp(forward, backward)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)

    def torch_fn(x, w):
        return torch.nn.functional.conv_transpose2d(x, w, stride=2)

    testing.assert_matches_torch(wrong, torch_fn, x, w)
    with pytest.raises(AssertionError, match=r"grad\[1\]"):
        testing.assert_matches_torch(wrong, torch_fn, x, w, grads=True)
