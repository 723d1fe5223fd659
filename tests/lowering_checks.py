"""Transform checks shared by the per-lowering test files (``test_split.py``, ``test_phase.py``).

``layer(algorithm)`` returns ``f(x, w)``: one fixed layer run with that lowering.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jtconv.testing import relative_tolerance


def assert_close(got, want) -> None:
    """Within the float32 tolerance of ``jtconv.testing``, relative to ``max|want|``."""
    want = np.asarray(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=relative_tolerance(np.float32) * np.abs(want).max())


def assert_second_order_and_jvp_match_reference(layer: Callable, algorithm: str, x, w) -> None:
    """jvp of grad (a Hessian-vector product) and jvp of ``algorithm`` equal the reference lowering's."""

    def hessian_vector(name):
        def loss(x, w):
            return jnp.sum(jnp.sin(layer(name)(x, w)))

        grad_x = jax.grad(loss, argnums=0)
        return jax.jvp(lambda w: grad_x(x, w), (w,), (jnp.ones_like(w),))

    for got, want in zip(
        jax.tree.leaves(jax.jit(lambda: hessian_vector(algorithm))()),
        jax.tree.leaves(jax.jit(lambda: hessian_vector("reference"))()),
    ):
        assert_close(got, want)
    got = jax.jvp(layer(algorithm), (x, w), (x, w))
    want = jax.jvp(layer("reference"), (x, w), (x, w))
    for a, b in zip(got, want):
        assert_close(a, b)


def assert_vmap_over_weights_matches_a_loop(layer: Callable, algorithm: str, x, ws) -> None:
    """vmap over a stack of weights (values and weight gradients) equals one reference call per weight."""
    f = layer(algorithm)
    batched = jax.jit(jax.vmap(lambda w: f(x, w)))(ws)
    grads = jax.jit(jax.vmap(jax.grad(lambda w: jnp.sum(f(x, w) ** 2))))(ws)
    for i in range(ws.shape[0]):
        assert_close(batched[i], layer("reference")(x, ws[i]))
        assert_close(grads[i], jax.grad(lambda w: jnp.sum(layer("reference")(x, w) ** 2))(ws[i]))


def assert_close_at_scale(actual, expected, scale: float) -> None:
    """``|actual − expected| ≤ scale · max(1, max|expected|)``, in float64, shapes equal."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape
    atol = scale * max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)
