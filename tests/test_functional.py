"""jtconv.functional against torch's own test cases (the sample inputs of torch's
``nn.functional.conv_transpose{1,2,3}d`` OpInfos, in every dtype torch's CPU kernel
computes that jtconv computes alike: int64 exactly, float64 and float32), the bias
under a wider accumulation dtype, and the output's sharding on a mesh with explicit
axes in process (one CPU device; the 8-device checks run in ``tests/sharding_checks.py``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jtconv
from jtconv import testing

FUNCTIONS = {1: jtconv.conv_transpose1d, 2: jtconv.conv_transpose2d, 3: jtconv.conv_transpose3d}


def _numpy(value):
    return value.detach().numpy() if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64, torch.float32])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_torch_opinfo_samples(rank, dtype):
    invocations = pytest.importorskip(
        "torch.testing._internal.common_methods_invocations", reason="torch's test internals need expecttest"
    )
    # The import freezes torch.backends' flags for torch's own suite; jtconv.testing.full_precision sets them.
    torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
    (op,) = [op for op in invocations.op_db if op.name == f"nn.functional.conv_transpose{rank}d"]
    samples = list(op.sample_inputs("cpu", dtype))
    assert samples
    with jax.enable_x64(True):
        for sample in samples:
            expected = op.op(sample.input, *sample.args, **sample.kwargs).detach().numpy()
            args = [_numpy(a) for a in sample.args]
            kwargs = {k: _numpy(v) for k, v in sample.kwargs.items()}
            got = np.asarray(FUNCTIONS[rank](_numpy(sample.input), *args, **kwargs))
            assert got.shape == expected.shape and got.dtype == expected.dtype, sample
            if dtype == torch.int64:
                np.testing.assert_array_equal(got, expected)
            else:
                tolerance = testing.relative_tolerance(expected.dtype) * max(1.0, float(np.abs(expected).max()))
                assert float(np.abs(got - expected).max(initial=0.0)) <= tolerance, sample


def test_bias_with_a_wider_accumulation_dtype_is_added_before_the_cast():
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 4, 5), (4, 3, 3), (3,)))
    y = jtconv.conv_transpose(
        jnp.asarray(x, jnp.bfloat16),
        jnp.asarray(w, jnp.bfloat16),
        jnp.asarray(b, jnp.bfloat16),
        stride=2,
        preferred_element_type=jnp.float32,
    )
    assert y.dtype == jnp.float32
    to_bf16 = [torch.tensor(a).bfloat16().float() for a in (x, w, b)]
    want = torch.nn.functional.conv_transpose1d(*to_bf16, stride=2).numpy()
    np.testing.assert_allclose(
        np.asarray(y), want, rtol=0, atol=testing.relative_tolerance(np.float32) * np.abs(want).max()
    )


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
