"""jtconv.functional on a mesh with explicit axes, in process (one CPU device):
the output's sharding follows the batch of ``x`` and the output channels of
``weight`` (the 8-device checks run in ``tests/sharding_checks.py``)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jtconv
from jtconv import testing

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 4, 5)).astype(np.float32)
W = RNG.standard_normal((4, 3, 3)).astype(np.float32)
TOLERANCE = testing.relative_tolerance(np.float32)


def mesh() -> Mesh:
    devices = np.array(jax.devices("cpu")[:1]).reshape(1, 1)
    return Mesh(devices, ("data", "model"), axis_types=(AxisType.Explicit, AxisType.Explicit))


def assert_close(actual, expected) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert np.max(np.abs(actual - expected)) <= TOLERANCE * np.max(np.abs(expected))


def expected(groups: int = 1) -> np.ndarray:
    return torch.nn.functional.conv_transpose1d(torch.tensor(X), torch.tensor(W), stride=2, groups=groups).numpy()


def test_explicit_batch_and_channel_axes_shard_the_output():
    m = mesh()
    with jax.set_mesh(m):
        x = jax.device_put(X, NamedSharding(m, P("data")))
        w = jax.device_put(W, NamedSharding(m, P(None, "model")))
        y = jtconv.conv_transpose(x, w, stride=2)
        assert jax.typeof(y).sharding.spec == P("data", "model", None)
        assert_close(y, expected())
        channels_last = jtconv.conv_transpose(np.moveaxis(X, 1, -1), w, stride=2, channels_last=True)
        assert jax.typeof(channels_last).sharding.spec == P(None, None, "model")
        assert_close(np.moveaxis(np.asarray(channels_last), -1, 1), expected())


def test_explicit_axes_with_groups_and_an_unbatched_input():
    m = mesh()
    with jax.set_mesh(m):
        w = jax.device_put(W[:, :1], NamedSharding(m, P(None, "model")))
        grouped = jtconv.conv_transpose(X, w, stride=2, groups=2)
        assert jax.typeof(grouped).sharding.spec == P(None, None, None)  # groups > 1: channels not sharded
        assert_close(
            grouped,
            torch.nn.functional.conv_transpose1d(torch.tensor(X), torch.tensor(W[:, :1]), stride=2, groups=2).numpy(),
        )
        x = jax.device_put(X[0], NamedSharding(m, P("data")))
        unbatched = jtconv.conv_transpose(x, W, stride=2)
        assert jax.typeof(unbatched).sharding.spec == P(None, None)
        assert_close(unbatched, expected()[0])


@pytest.mark.parametrize("channel_axes", ["data", ("data", "model")], ids=["same-axis", "overlapping-axes"])
def test_one_mesh_axis_on_the_batch_and_the_weight_shards_only_the_batch(channel_axes):
    m = mesh()
    with jax.set_mesh(m):
        x = jax.device_put(X, NamedSharding(m, P("data")))
        w = jax.device_put(W, NamedSharding(m, P(None, channel_axes)))
        y = jtconv.conv_transpose(x, w, stride=2)
        assert jax.typeof(y).sharding.spec == P("data", None, None)
        assert_close(y, expected())
