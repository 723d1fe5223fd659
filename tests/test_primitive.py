"""jtconv.lowering.primitive: precision lists, vmap of a waiting plan's backward and jvp, symbolic zeros."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.interpreters import ad

import jtconv
from jtconv import testing
from jtconv.geometry import make_geometry
from jtconv.lowering import primitive

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 5)).astype(np.float32)
W = RNG.standard_normal((3, 2, 3)).astype(np.float32)
WAITING = jtconv.Plan("matmul", "gemm", "gemm", waits=True)
TOLERANCE = testing.relative_tolerance(np.float32)


def assert_close(actual, expected) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert np.max(np.abs(actual - expected)) <= TOLERANCE * np.max(np.abs(expected))


def torch_conv(x, w):
    return torch.nn.functional.conv_transpose1d(x, w, stride=2)


def test_precision_list_is_accepted_like_a_tuple():
    highest = jax.lax.Precision.HIGHEST
    as_list = jtconv.conv_transpose(X, W, stride=2, precision=[highest, highest])
    as_tuple = jtconv.conv_transpose(X, W, stride=2, precision=(highest, highest))
    np.testing.assert_array_equal(np.asarray(as_list), np.asarray(as_tuple))
    assert_close(as_list, torch_conv(torch.tensor(X), torch.tensor(W)).numpy())


def test_vmap_of_the_gradient_of_a_waiting_plan():
    def loss(x, w):
        return (jtconv.conv_transpose(x[None], w, stride=2, algorithm=WAITING) ** 2).sum()

    got = jax.vmap(jax.grad(loss), in_axes=(0, None))(jnp.asarray(X), jnp.asarray(W))
    x = torch.tensor(X, requires_grad=True)
    (torch_conv(x, torch.tensor(W)) ** 2).sum().backward()
    assert_close(got, x.grad.numpy())


def rule_parameters():
    geom = make_geometry(X.shape, W.shape, stride=2)
    return dict(
        role="forward", plan=WAITING, geom=geom, precision=None, preferred_element_type=None, differentiated=False
    )


def test_jvp_with_zero_tangents_is_a_symbolic_zero():
    x, w = jnp.asarray(X), jnp.asarray(W)
    after = primitive._no_marker(x.dtype)
    zero_x, zero_w = ad.Zero(jax.typeof(x).to_tangent_aval()), ad.Zero(jax.typeof(w).to_tangent_aval())
    y, tangent = primitive._jvp((x, w, after), (zero_x, zero_w, ad.Zero(jax.typeof(after))), **rule_parameters())
    assert type(tangent) is ad.Zero and tangent.aval.shape == y.shape == (2, 2, 11)
    assert_close(y, torch_conv(torch.tensor(X), torch.tensor(W)).numpy())


def test_transpose_of_a_zero_cotangent_and_of_the_ordering_operand():
    x, w = jnp.asarray(X), jnp.asarray(W)
    after = primitive._no_marker(x.dtype)
    zero_ct = ad.Zero(jax.core.ShapedArray((2, 2, 11), jnp.float32))
    undefined_x = ad.UndefinedPrimal(jax.typeof(x))
    assert primitive._transpose(zero_ct, undefined_x, w, after, **rule_parameters()) == (None, None, None)
    ct = jnp.ones((2, 2, 11), jnp.float32)
    with pytest.raises(ValueError, match="the ordering operand is not differentiable"):
        primitive._transpose(ct, x, w, ad.UndefinedPrimal(jax.typeof(after)), **rule_parameters())


def test_vmap_of_the_jvp_of_a_waiting_plan_batches_the_ordering_operand():
    tangent_in = RNG.standard_normal(X.shape).astype(np.float32)

    def f(x):
        return jtconv.conv_transpose(x[None], jnp.asarray(W), stride=2, algorithm=WAITING)[0]

    y, tangent = jax.vmap(lambda x, t: jax.jvp(f, (x,), (t,)))(jnp.asarray(X), jnp.asarray(tangent_in))
    assert_close(y, torch_conv(torch.tensor(X), torch.tensor(W)).numpy())
    assert_close(tangent, torch_conv(torch.tensor(tangent_in), torch.tensor(W)).numpy())  # linear in x


def test_vmap_of_a_jvp_whose_tangent_is_not_batched():
    """Only the waiting plan's marker carries the batch: the tangent is the same for every example."""
    tangent_in = RNG.standard_normal(X.shape[1:]).astype(np.float32)

    def f(x):
        return jtconv.conv_transpose(x[None], jnp.asarray(W), stride=2, algorithm=WAITING)[0]

    _, tangents = jax.vmap(lambda x: jax.jvp(f, (x,), (jnp.asarray(tangent_in),)))(jnp.asarray(X))
    expected = torch_conv(torch.tensor(tangent_in)[None], torch.tensor(W)).numpy()[0]
    for tangent in tangents:
        assert_close(tangent, expected)


def test_the_gradient_of_an_empty_batch_with_a_waiting_plan():
    x = jnp.zeros((0,) + X.shape[1:], jnp.float32)
    dx, dw = jax.grad(lambda x, w: jnp.sum(jtconv.conv_transpose(x, w, stride=2, algorithm=WAITING)), (0, 1))(
        x, jnp.asarray(W)
    )
    assert dx.shape == x.shape and dw.shape == W.shape
    np.testing.assert_array_equal(np.asarray(dw), np.zeros_like(W))


def test_a_request_prints_what_was_asked_in_the_jaxpr():
    jaxpr = str(jax.make_jaxpr(lambda x, w: jtconv.conv_transpose(x, w, stride=2))(X, W))
    assert "plan=PlanRequest('auto', planning=estimate)" in jaxpr
    with jtconv.planning("measure"):
        jaxpr = str(jax.make_jaxpr(lambda x, w: jtconv.conv_transpose(x, w, stride=2, algorithm="matmul"))(X, W))
    assert "plan=PlanRequest('matmul', planning=measure)" in jaxpr
