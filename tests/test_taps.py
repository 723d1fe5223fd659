"""Bounded im2col / col2im over kernel taps (jtconv.lowering.taps) against the
per-tap functions of the matmul lowering, and their program size.

Data movement (the im2cols) is compared exactly on random data. Where the two
sides sum in different orders (the col2ims), the data are small integers, so
that every sum is exact in float32 and exact equality is the right test.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtconv.geometry import make_geometry
from jtconv.lowering import matmul, matmul_transpose, taps

# (x shape, w shape, geometry keyword arguments)
LAYERS = [
    ((2, 4, 6), (4, 3, 7), dict(padding=3)),  # 1d stride 1: Q = k
    ((3, 5, 7), (5, 2, 3), dict(stride=4, output_padding=3, dilation=2)),  # span < s, gaps between taps
    ((2, 4, 5), (4, 3, 16), dict(stride=8, padding=4)),  # vocoder k = 2s
    ((2, 4, 3, 5), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((2, 4, 3, 5), (4, 3, 4, 2), dict(stride=(1, 3), padding=(2, 0), dilation=(2, 3), output_padding=(1, 2))),
    ((2, 4, 4, 4), (4, 2, 5, 5), dict(padding=2)),  # 2d stride 1: 25 shift combinations
    ((2, 6, 3, 5), (6, 2, 5, 3), dict(stride=2, groups=3, padding=1, output_padding=1)),
    ((2, 6, 3, 5), (6, 2, 3, 3), dict(stride=3, groups=6, padding=1, output_padding=2)),  # depthwise
    ((2, 4, 4, 3), (4, 1, 4, 4), dict(stride=2, groups=4, padding=2)),  # depthwise, Q = 2
    ((1, 2, 3, 4, 3), (2, 3, 3, 4, 2), dict(stride=(2, 1, 3), padding=1)),
    ((1, 4, 2, 3, 2), (4, 2, 4, 2, 3), dict(stride=2, dilation=(1, 2, 1), groups=2, padding=(1, 0, 1))),
    ((0, 4, 3, 3), (4, 2, 3, 3), dict(stride=2)),  # empty batch
]


SLOW = {2, 4, 6, 8, 10}
"""Indices of :data:`LAYERS` checked only in the full tier (``--full``)."""


def _params(layers):
    return [
        pytest.param(*layer, id=f"x{layer[0]}-w{layer[1]}-{layer[2]}", marks=[pytest.mark.slow] * (i in SLOW))
        for i, layer in enumerate(layers)
    ]


def _integers(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).integers(-3, 4, shape), jnp.float32)


def _equal(got, want) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("shift_terms", [taps.MAX_SHIFT_TERMS, 0], ids=["padded-copies", "skew"])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", _params(LAYERS))
def test_bounded_forward_equals_matmul_forward(x_shape, w_shape, kwargs, shift_terms, monkeypatch):
    """shift_products + col2im (conv_transpose_taps) = matmul.tap_products / depthwise_term
    + interleave_phases + the crop (matmul.matmul_forward), on both col2im paths."""
    monkeypatch.setattr(taps, "MAX_SHIFT_TERMS", shift_terms)
    monkeypatch.setattr(taps, "BOUNDED_MIN_TAPS", 10**9)  # the per-tap forward on the other side
    geom = make_geometry(x_shape, w_shape, **kwargs)
    x, w = _integers(x_shape, 0), _integers(w_shape, 1)
    want = jax.jit(lambda x, w: matmul.matmul_forward(x, w, geom))(x, w)
    _equal(jax.jit(lambda x, w: taps.conv_transpose_taps(x, w, geom))(x, w), want)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", _params(LAYERS))
def test_cotangent_columns_equal_matmul_transposes(x_shape, w_shape, kwargs, monkeypatch):
    monkeypatch.setattr(taps, "BOUNDED_MIN_TAPS", 10**9)  # the per-tap im2col on the other side
    geom = make_geometry(x_shape, w_shape, **kwargs)
    rng = np.random.default_rng(2)
    ct = jnp.asarray(rng.standard_normal((x_shape[0], geom.out_channels) + geom.output_size), jnp.float32)
    want = jax.jit(lambda c: matmul_transpose.cotangent_columns(c, geom))(ct)
    _equal(jax.jit(lambda c: taps.cotangent_columns(c, geom))(ct), want)


@pytest.mark.parametrize("shift_terms", [taps.MAX_SHIFT_TERMS, 0], ids=["slices", "gather"])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", _params(LAYERS))
def test_cotangent_taps_are_the_cotangent_columns_reordered(x_shape, w_shape, kwargs, shift_terms, monkeypatch):
    monkeypatch.setattr(taps, "MAX_SHIFT_TERMS", shift_terms)
    monkeypatch.setattr(taps, "BOUNDED_MIN_TAPS", 10**9)
    geom = make_geometry(x_shape, w_shape, **kwargs)
    n, ndim = x_shape[0], geom.ndim
    rng = np.random.default_rng(3)
    ct = jnp.asarray(rng.standard_normal((n, geom.out_channels) + geom.output_size), jnp.float32)
    order = (1, 0, 2 + 2 * ndim) + sum(((2 + a, 2 + ndim + a) for a in range(ndim)), ())
    tap_layout = (n, geom.out_channels) + sum(zip(geom.input_size, geom.kernel_size), ())

    @jax.jit
    def reordered_columns(c):
        columns = matmul_transpose.cotangent_columns(c, geom)  # (G, N, *S, *K, Cg)
        return jnp.transpose(columns, order).reshape(tap_layout)

    want = reordered_columns(ct)
    _equal(jax.jit(lambda c: taps.cotangent_taps(c, geom))(ct), want)


def test_skew_sum_adds_each_slice_shifted_by_its_index():
    parts = _integers((2, 3, 4, 5), 6)  # sum over axis 1 (Q = 3), shift along axis 2 (S = 4)
    for step in (1, 2):
        want = np.zeros((2, 4 + 2 * step, 5), np.float32)
        for q in range(3):
            want[:, q * step : q * step + 4] += np.asarray(parts[:, q])
        np.testing.assert_array_equal(np.asarray(taps.skew_sum(parts, 1, step)), want)
    np.testing.assert_array_equal(np.asarray(taps.skew_sum(parts[:, :1], 1)), np.asarray(parts[:, 0]))


def hlo_op_count(f, *args) -> int:
    """Operations in the lowered (StableHLO) program of ``jax.jit(f)(*args)``."""
    return len(re.findall(r"\bstablehlo\.[a-z_]+", jax.jit(f).lower(*args).as_text()))


def _programs(k: int, stride: int, groups: int) -> tuple[int, int, int]:
    """Op counts of the bounded forward, cotangent_columns and cotangent_taps for a 2d layer with kernel ``k``."""
    x_shape, w_shape = (1, 2 * groups, 4, 4), (2 * groups, 2, k, k)
    geom = make_geometry(x_shape, w_shape, stride=stride, padding=1, groups=groups)
    x, w = jnp.ones(x_shape), jnp.ones(w_shape)
    ct = jnp.ones((1, geom.out_channels) + geom.output_size)
    return (
        hlo_op_count(lambda x, w: taps.conv_transpose_taps(x, w, geom), x, w),
        hlo_op_count(lambda c: taps.cotangent_columns(c, geom), ct),
        hlo_op_count(lambda c: taps.cotangent_taps(c, geom), ct),
    )


@pytest.mark.parametrize("stride, groups", [(1, 1), (2, 1), (3, 2), (1, 2)])
def test_program_size_does_not_grow_with_the_kernel(stride, groups):
    """The programs for k = 3, 7 and 15 (9 to 225 taps) differ by at most the
    :data:`taps.MAX_SHIFT_TERMS` padded copies of the small-shift col2im."""
    counts = [_programs(k, stride, groups) for k in (3, 7, 15)]
    for per_function in zip(*counts):
        assert max(per_function) - min(per_function) <= 4 * taps.MAX_SHIFT_TERMS, counts
    assert counts[1] == counts[2] or stride > 1, counts  # stride 1, k ≥ 7: the skew path, the same program


@pytest.mark.parametrize("groups", [1, 3])
def test_matmul_runs_large_kernels_bounded_and_equal_to_torch(groups):
    """From taps.BOUNDED_MIN_TAPS taps on, the matmul algorithm's forward and both transposes
    equal torch's, and its program for k23 (529 taps) is no larger than for k17 (289 taps) plus
    the col2im's padded copies; kernels that do not tile the stride, so ``tiled`` cannot run them."""
    import torch

    import jtconv
    from jtconv import testing

    kwargs = dict(stride=2, padding=4, output_padding=1, groups=groups)

    def layer(x, w):
        return jtconv.conv_transpose(x, w, algorithm="matmul", **kwargs)

    def training(k):
        x, w = jnp.ones((1, 2 * groups, 6, 5)), jnp.ones((2 * groups, 2, k, k))
        return hlo_op_count(jax.value_and_grad(lambda x, w: jnp.sum(layer(x, w) ** 2), argnums=(0, 1)), x, w)

    assert taps.uses_bounded_taps(make_geometry((1, 2 * groups, 6, 5), (2 * groups, 2, 17, 17), **kwargs))
    assert training(23) <= training(17) + 4 * taps.MAX_SHIFT_TERMS
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2 * groups, 6, 5)).astype(np.float32)
    w = rng.standard_normal((2 * groups, 2, 17, 17)).astype(np.float32)
    y, (dx, dw) = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(layer(x, w) ** 2) / 2, argnums=(0, 1)))(x, w)
    tx, tw = (torch.tensor(a, requires_grad=True) for a in (x, w))
    ty = torch.nn.functional.conv_transpose2d(tx, tw, **kwargs)
    ((ty**2).sum() / 2).backward()
    for got, want in ((y, (ty**2).sum().item() / 2), (dx, tx.grad.numpy()), (dw, tw.grad.numpy())):
        want = np.asarray(want)
        np.testing.assert_allclose(
            np.asarray(got),
            want,
            rtol=0,
            atol=testing.relative_tolerance(np.float32) * max(1.0, float(np.abs(want).max())),
        )
