"""The split lowering on the layers it applies to: 1d/2d, stride 1, one group.

The general sweeps (``test_sweep.py``, ``test_gradients.py``) run every
lowering on every configuration, but few of their draws have stride 1 and one
group (154 of 1,795 valid forward configurations, 6 of 60 gradient ones), and
``algorithm="split"`` runs the matmul lowering on all others. This file draws
only such layers and checks values and gradients against torch, then the
transforms on one of them.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jtconv
from jtconv import testing
from jtconv.geometry import make_geometry
from jtconv.lowering import split
from jtconv.testing import ConvTransposeConfig

import tiers
from lowering_checks import assert_second_order_and_jvp_match_reference, assert_vmap_over_weights_matches_a_loop

SPLIT_SEED = 777
SPLIT_COUNT = 120
CHUNK = 20
QUICK_SAMPLE = 10  # configurations in the quick tier (tests/tiers.py)


def _split_configs(count: int, seed: int) -> list[ConvTransposeConfig]:
    """Valid stride-1, one-group 1d/2d layers with every other argument varied."""
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(count):
        ndim = int(rng.integers(1, 3))
        kernel = tuple(int(k) for k in rng.integers(1, 6, ndim))
        dilation = tuple(int(d) for d in rng.integers(1, 4, ndim))
        spatial = tuple(int(s) for s in rng.integers(1, 8, ndim))
        output_padding = tuple(int(rng.integers(0, d)) for d in dilation)  # < max(stride 1, d)
        padding = tuple(
            int(rng.integers(0, ((i - 1) + d * (k - 1) + op) // 2 + 1))
            for i, d, k, op in zip(spatial, dilation, kernel, output_padding)
        )
        cin, cout = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        batch = int(rng.choice([0, 1, 2, 3, -1]))  # -1: unbatched
        input_shape = ((cin,) if batch < 0 else (batch, cin)) + spatial
        configs.append(
            ConvTransposeConfig(
                input_shape,
                (cin, cout) + kernel,
                stride=1,
                padding=padding,
                output_padding=output_padding,
                dilation=dilation,
                bias_shape=(cout,) if rng.random() < 0.5 else None,
            )
        )
    return configs


CONFIGS = _split_configs(SPLIT_COUNT, SPLIT_SEED)


def test_the_drawn_layers_are_split_ones():
    for config in CONFIGS:
        assert testing.torch_rejection(config) is None, config.label()
        x_shape = config.input_shape if config.batched else (1,) + config.input_shape
        geom = make_geometry(x_shape, config.weight_shape, **config.jtconv_kwargs())
        assert split.supports(geom), config.label()


@pytest.mark.parametrize("chunk", tiers.chunks(SPLIT_COUNT, CHUNK, quick=QUICK_SAMPLE), ids=str)
def test_split_values_and_gradients_match_torch(chunk):
    failures = []
    indices = chunk.indices(salt="split")
    for config in (CONFIGS[i] for i in indices):
        result = testing.check_config(config, algorithm="split", grads=True)
        if not result.passed:
            failures.append(result.report())
    assert not failures, (
        f"{len(failures)} of {len(indices)} split checks differ from torch ({chunk.reproducer()}):\n"
        + "\n".join(failures)
    )


def _layer(algorithm: str):
    kwargs = dict(padding=(2, 1), output_padding=(1, 0), dilation=(2, 1))
    return lambda x, w: jtconv.conv_transpose(x, w, algorithm=algorithm, **kwargs)


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((2, 3, 6, 5)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 4, 3, 4)) / 6, jnp.float32)
    return x, w


def test_the_split_forward_runs_for_split_layers_only():
    x, w = _data()
    kwargs = dict(padding=(2, 1), output_padding=(1, 0), dilation=(2, 1))
    assert jtconv.plan_for(x.shape, w.shape, algorithm="split", **kwargs).forward == "split"
    assert jtconv.plan_for(x.shape, w.shape, stride=2, algorithm="split").forward == "matmul"


def test_split_second_order_and_jvp_match_the_reference():
    x, w = _data(1)
    assert_second_order_and_jvp_match_reference(_layer, "split", x, w)


def test_split_vmap_over_weights_matches_a_loop():
    x, _ = _data(2)
    ws = jnp.asarray(np.random.default_rng(3).standard_normal((3, 3, 4, 3, 4)) / 6, jnp.float32)
    assert_vmap_over_weights_matches_a_loop(_layer, "split", x, ws)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, supported",
    [
        ((1, 4, 5, 5), (4, 2, 5, 5), dict(padding=2), True),
        ((1, 4, 9), (4, 2, 7), dict(dilation=2), True),
        ((1, 4, 5, 5), (4, 2, 3, 3), dict(stride=(1, 2)), False),
        ((1, 4, 5, 5), (4, 1, 3, 3), dict(groups=2), False),
        ((1, 4, 5, 5, 5), (4, 2, 3, 3, 3), dict(), False),
    ],
)
def test_split_supports_stride_one_single_group_1d_2d(x_shape, w_shape, kwargs, supported):
    assert split.supports(make_geometry(x_shape, w_shape, **kwargs)) is supported
