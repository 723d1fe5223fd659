"""jtconv under JAX transforms: jit, vmap, jvp, second-order gradients, and the
adjoint identity against ``lax.conv_general_dilated`` (the adjoint view in docs/lowerings.md)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import jtconv
from jtconv import testing

import tiers

ALGORITHMS = jtconv.ALGORITHMS
KWARGS_2D = dict(stride=(2, 1), padding=(1, 2), output_padding=(1, 0), dilation=(1, 2), groups=2)


def _inputs(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _torch_ct2d(x, w, b=None, **kwargs):
    return torch.nn.functional.conv_transpose2d(x, w, b, **kwargs)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_jit_matches_torch(algorithm):
    x, w, b = _inputs(0, (2, 4, 5, 4), (4, 3, 3, 2), (6,))
    jitted = jax.jit(functools.partial(jtconv.conv_transpose, algorithm=algorithm, **KWARGS_2D))
    testing.assert_matches_torch(jitted, functools.partial(_torch_ct2d, **KWARGS_2D), x, w, b, jit=False)
    eager = jtconv.conv_transpose(x, w, b, algorithm=algorithm, **KWARGS_2D)
    np.testing.assert_allclose(
        np.asarray(jitted(x, w, b)), np.asarray(eager), rtol=0, atol=1e-5 * float(jnp.abs(eager).max())
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_vmap_over_batch_of_unbatched_inputs(algorithm):
    x, w, b = _inputs(1, (3, 4, 5, 4), (4, 3, 3, 2), (6,))
    per_example = jax.vmap(lambda x: jtconv.conv_transpose(x, w, b, algorithm=algorithm, **KWARGS_2D))
    testing.assert_matches_torch(
        per_example, lambda x: _torch_ct2d(x, torch.from_numpy(w), torch.from_numpy(b), **KWARGS_2D), x, grads=True
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_vmap_over_input_weight_pairs(algorithm):
    """Per-example weights: vmap over (input, weight) equals torch run example by example."""
    xs, ws = _inputs(2, (3, 2, 4, 5, 4), (3, 4, 3, 3, 2))
    f = jax.vmap(lambda x, w: jtconv.conv_transpose(x, w, algorithm=algorithm, **KWARGS_2D))

    def torch_per_example(xs, ws):
        return torch.stack([_torch_ct2d(x, w, **KWARGS_2D) for x, w in zip(xs, ws)])

    testing.assert_matches_torch(f, torch_per_example, xs, ws, grads=True)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_vmap_over_unbatched_pairs_in_1d_and_3d(algorithm):
    xs1, ws1 = _inputs(3, (4, 3, 6), (4, 3, 2, 3))
    f1 = jax.vmap(lambda x, w: jtconv.conv_transpose(x, w, stride=3, padding=1, algorithm=algorithm))

    def torch1(xs, ws):
        return torch.stack([torch.nn.functional.conv_transpose1d(x, w, stride=3, padding=1) for x, w in zip(xs, ws)])

    testing.assert_matches_torch(f1, torch1, xs1, ws1)
    xs3, ws3 = _inputs(4, (2, 2, 3, 2, 3), (2, 2, 1, 2, 2, 2))
    f3 = jax.vmap(lambda x, w: jtconv.conv_transpose(x, w, stride=2, output_padding=1, algorithm=algorithm))

    def torch3(xs, ws):
        return torch.stack(
            [torch.nn.functional.conv_transpose3d(x, w, stride=2, output_padding=1) for x, w in zip(xs, ws)]
        )

    testing.assert_matches_torch(f3, torch3, xs3, ws3)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_jvp_matches_torch_forward_mode(algorithm):
    x, w, b, tx, tw, tb = _inputs(5, (2, 4, 5, 4), (4, 3, 3, 2), (6,), (2, 4, 5, 4), (4, 3, 3, 2), (6,))
    f = functools.partial(jtconv.conv_transpose, algorithm=algorithm, **KWARGS_2D)
    y, ty = jax.jvp(f, (x, w, b), (tx, tw, tb))
    t = [torch.from_numpy(a) for a in (x, w, b, tx, tw, tb)]
    y_ref, ty_ref = torch.func.jvp(functools.partial(_torch_ct2d, **KWARGS_2D), tuple(t[:3]), tuple(t[3:]))
    for actual, expected in ((y, y_ref), (ty, ty_ref)):
        expected = expected.numpy()
        assert actual.shape == expected.shape
        np.testing.assert_allclose(np.asarray(actual), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


# Second-order check_grads in float64 compiles many programs: the quick tier runs one, on the
# jtconv primitive's own jvp and transpose rules.
SECOND_ORDER_QUICK = {(1, "matmul")}


@pytest.mark.parametrize(
    "ndim, algorithm",
    [
        pytest.param(
            ndim,
            algorithm,
            id=f"{ndim}-{algorithm}",
            marks=() if (ndim, algorithm) in SECOND_ORDER_QUICK else pytest.mark.slow,
        )
        for algorithm in ALGORITHMS
        for ndim in (1, 2, 3)
    ],
)
def test_check_grads_second_order_both_modes(algorithm, ndim):
    spatial = {1: (5,), 2: (3, 4), 3: (2, 3, 2)}[ndim]
    kernel = {1: (3,), 2: (2, 3), 3: (2, 2, 1)}[ndim]
    with jax.enable_x64(True):
        rng = np.random.default_rng(6)
        x = rng.standard_normal((2, 4) + spatial)
        w = rng.standard_normal((4, 1) + kernel)
        b = rng.standard_normal(2)
        f = functools.partial(
            jtconv.conv_transpose, stride=2, padding=1, output_padding=1, groups=2, algorithm=algorithm
        )
        jax.test_util.check_grads(f, (x, w, b), order=2, modes=("fwd", "rev"))


ADJOINT_CASES = st.fixed_dictionaries(
    {
        "ndim": st.integers(1, 3),
        "groups": st.integers(1, 3),
        "in_per_group": st.integers(1, 2),
        "out_per_group": st.integers(1, 2),
        "batch": st.integers(1, 2),
        "seed": st.integers(0, 2**16),
    }
).flatmap(
    lambda base: st.fixed_dictionaries(
        {
            "base": st.just(base),
            "kernel": st.lists(st.integers(1, 3), min_size=base["ndim"], max_size=base["ndim"]),
            "stride": st.lists(st.integers(1, 3), min_size=base["ndim"], max_size=base["ndim"]),
            "dilation": st.lists(st.integers(1, 2), min_size=base["ndim"], max_size=base["ndim"]),
            "size": st.lists(st.integers(1, 4), min_size=base["ndim"], max_size=base["ndim"]),
            "padding_fraction": st.lists(st.floats(0, 1), min_size=base["ndim"], max_size=base["ndim"]),
            "output_padding_fraction": st.lists(st.floats(0, 0.999), min_size=base["ndim"], max_size=base["ndim"]),
        }
    )
)


@settings(max_examples=15 if tiers.FULL else 5, deadline=None)
@given(case=ADJOINT_CASES)
def test_adjoint_identity_against_lax_conv(case):
    """``<conv(u, w), v> == <u, conv_transpose(v, w)>`` where conv is
    ``lax.conv_general_dilated`` with the same stride, padding, dilation and
    groups, and ``u`` has the transposed convolution's output size."""
    base = case["base"]
    groups = base["groups"]
    stride, dilation, kernel, size = case["stride"], case["dilation"], case["kernel"], case["size"]
    output_padding = [int(f * max(s, d)) for f, s, d in zip(case["output_padding_fraction"], stride, dilation)]
    padding = [
        int(f * (((i - 1) * s + d * (k - 1) + op) // 2))
        for f, i, s, d, k, op in zip(case["padding_fraction"], size, stride, dilation, kernel, output_padding)
    ]
    cin, cout = groups * base["in_per_group"], groups * base["out_per_group"]
    out_size = jtconv.output_size(
        tuple(size), tuple(kernel), tuple(stride), tuple(padding), tuple(output_padding), tuple(dilation)
    )
    rng = np.random.default_rng(base["seed"])
    with jax.enable_x64(True):
        v = rng.standard_normal((base["batch"], cin, *size))
        w = rng.standard_normal((cin, cout // groups, *kernel))
        u = rng.standard_normal((base["batch"], cout, *out_size))
        conv_u = np.asarray(
            lax.conv_general_dilated(
                u, w, tuple(stride), [(p, p) for p in padding], rhs_dilation=tuple(dilation), feature_group_count=groups
            )
        )
        # With output_padding ≥ stride the conv sees more positions than v has:
        # the transpose is the adjoint of the conv cropped to v's size.
        assert all(c >= i for c, i in zip(conv_u.shape[2:], size))
        conv_u = conv_u[(slice(None), slice(None)) + tuple(slice(0, i) for i in size)]
        for algorithm in ALGORITHMS:
            transposed_v = np.asarray(
                jtconv.conv_transpose(
                    v,
                    w,
                    stride=stride,
                    padding=padding,
                    output_padding=output_padding,
                    dilation=dilation,
                    groups=groups,
                    algorithm=algorithm,
                )
            )
            assert transposed_v.shape == u.shape
            left, right = np.vdot(conv_u, v), np.vdot(u, transposed_v)
            scale = np.vdot(np.abs(conv_u), np.abs(v)) + 1e-300
            assert abs(left - right) <= 1e-12 * scale, (algorithm, left, right)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_grad_of_jit_of_vmap_composes(algorithm):
    xs, ws = _inputs(8, (3, 2, 4, 4), (3, 2, 2, 3, 3))

    def loss(ws):
        y = jax.vmap(lambda x, w: jtconv.conv_transpose(x, w, stride=2, padding=1, algorithm=algorithm))(xs, ws)
        return jnp.sum(y**2)

    grad = jax.jit(jax.grad(loss))(ws)
    t_ws = torch.from_numpy(ws).requires_grad_()
    t_y = torch.stack(
        [torch.nn.functional.conv_transpose2d(torch.from_numpy(x), w, stride=2, padding=1) for x, w in zip(xs, t_ws)]
    )
    (expected,) = torch.autograd.grad((t_y**2).sum(), t_ws)
    expected = expected.numpy()
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("groups", [1, 2])
def test_shard_map_gradients_keep_the_varying_axes(algorithm, groups):
    """Inside ``shard_map`` the input varies over the mesh axis and the weight does not: every
    cotangent must vary as its primal does (JAX checks the types), and the weight's, summed over
    devices by ``shard_map``'s transpose, must equal torch's."""
    x, w, ct = _inputs(9, (2, 4, 5, 3), (4, 6 // groups, 3, 2), (2, 6, 9, 6))
    kwargs = dict(stride=2, padding=(1, 0), groups=groups)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))

    def layer(x, w):
        return jtconv.conv_transpose(x, w, algorithm=algorithm, **kwargs)

    sharded = jax.shard_map(layer, mesh=mesh, in_specs=(jax.P("data"), jax.P()), out_specs=jax.P("data"))
    gx, gw = jax.jit(jax.grad(lambda x, w: jnp.sum(sharded(x, w) * ct), argnums=(0, 1)))(x, w)
    t_x, t_w = (torch.from_numpy(a).requires_grad_() for a in (x, w))
    t_y = torch.nn.functional.conv_transpose2d(t_x, t_w, **kwargs)
    expected = torch.autograd.grad((t_y * torch.from_numpy(ct)).sum(), (t_x, t_w))
    for got, want in zip((gx, gw), expected):
        want = want.numpy()
        np.testing.assert_allclose(
            np.asarray(got), want, rtol=0, atol=testing.relative_tolerance(np.float32) * np.abs(want).max()
        )
