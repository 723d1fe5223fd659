"""The tiled lowering (kernels that tile their strides): values and transposes
against torch, its transforms, and a program size that does not grow with the kernel.

The lowering is not registered with the planner here; the tests call its
functions directly, and :func:`_layer` makes them one differentiable function
(``jax.custom_vjp`` with the lowering's own transposes).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtconv.geometry import make_geometry
from jtconv.lowering import tiled
from jtconv.lowering.common import accumulation_dtype
from jtconv.lowering.reference import conv_transpose_reference
from jtconv.testing import relative_tolerance

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (x shape, w shape, torch keyword arguments)
LAYERS = [
    ((2, 4, 5), (4, 3, 4), dict(stride=4)),  # k = s, 1d
    ((2, 4, 5), (4, 3, 4), dict(stride=4, padding=1, output_padding=3)),  # output_padding past the crop
    ((3, 5, 7), (5, 2, 1), dict(stride=3, output_padding=2)),  # k = 1 < s
    ((2, 3, 6), (3, 2, 2), dict(stride=5, dilation=3, padding=1, output_padding=2)),  # dilated span 4 ≤ s
    ((2, 4, 3, 5), (4, 3, 2, 2), dict(stride=2)),  # U-Net k2 s2
    ((1, 4, 3, 4), (4, 3, 8, 8), dict(stride=4, padding=2)),  # k = 2s, overlapping blocks
    ((2, 4, 3, 5), (4, 3, 2, 6), dict(stride=(3, 2), padding=(1, 2), output_padding=(2, 1), dilation=(2, 1))),
    ((2, 6, 3, 5), (6, 2, 2, 2), dict(stride=2, groups=3, padding=1, output_padding=1)),  # groups
    ((2, 6, 3, 5), (6, 2, 3, 3), dict(stride=3, groups=6, padding=1, output_padding=2)),  # depthwise, multiplier 2
    ((2, 4, 3, 4), (4, 1, 4, 2), dict(stride=2, groups=4, padding=1)),  # depthwise, k = 2s
    ((1, 1, 5, 4, 3), (1, 1, 4, 4, 4), dict(stride=4, padding=1)),  # 3d, one channel (depthwise path)
    ((2, 4, 2, 3, 2), (4, 4, 2, 3, 4), dict(stride=(2, 3, 2), padding=(0, 1, 1), groups=2)),  # 3d, groups, k = 2s
    ((0, 4, 3, 3), (4, 2, 3, 3), dict(stride=3)),  # empty batch
]


SLOW = {1, 4, 7, 9, 11}
"""Indices of :data:`LAYERS` checked only in the full tier (``--full``)."""


def _params(indices):
    params = []
    for i in indices:
        x_shape, w_shape, kwargs = LAYERS[i]
        marks = [pytest.mark.slow] if i in SLOW else []
        params.append(pytest.param(x_shape, w_shape, kwargs, id=f"x{x_shape}-w{w_shape}-{kwargs}", marks=marks))
    return params


def _assert_close(got, want, reduction_length: int) -> None:
    want = np.asarray(want)
    scale = np.abs(want).max() if want.size else 0.0
    atol = relative_tolerance(np.float32, reduction_length) * max(scale, 1e-30)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=atol)


def _geometry(x_shape, w_shape, kwargs):
    return make_geometry(x_shape, w_shape, **kwargs)


def _data(x_shape, w_shape, out_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    ct = rng.standard_normal(out_shape).astype(np.float32)
    return x, w, ct


def _torch_results(x, w, ct, kwargs):
    conv = getattr(F, f"conv_transpose{x.ndim - 2}d")
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    y = conv(xt, wt, **kwargs)
    dx, dw = torch.autograd.grad(y, (xt, wt), torch.tensor(ct, dtype=torch.float64))
    return y.detach().numpy(), dx.numpy(), dw.numpy()


def _transposes(geom, ct, x, w, dtype=jnp.float32):
    acc = accumulation_dtype(dtype, None)
    dx = tiled.transpose_input(ct, w, geom, precision=None, acc_dtype=acc, out_dtype=dtype)
    dw = tiled.transpose_weight(x, ct, geom, precision=None, acc_dtype=acc, out_dtype=dtype)
    return dx, dw


def _run(geom, x, w, ct, **options):
    """``(y, x̄, w̄)`` from one jitted program (one compile per layer)."""

    def run(x, w, ct):
        return (tiled.tiled_forward(x, w, geom, **options),) + _transposes(geom, ct, x, w, x.dtype)

    return jax.jit(run)(jnp.asarray(x), jnp.asarray(w), jnp.asarray(ct))


def _layer(geom):
    """``tiled.tiled_forward`` differentiable through its own transposes."""

    @jax.custom_vjp
    def layer(x, w):
        return tiled.tiled_forward(x, w, geom)

    def layer_fwd(x, w):
        return layer(x, w), (x, w)

    def layer_bwd(residuals, ct):
        x, w = residuals
        return _transposes(geom, ct, x, w, x.dtype)

    layer.defvjp(layer_fwd, layer_bwd)
    return layer


@pytest.mark.parametrize("x_shape, w_shape, kwargs", _params(range(len(LAYERS))))
def test_values_and_transposes_match_torch(x_shape, w_shape, kwargs):
    geom = _geometry(x_shape, w_shape, kwargs)
    assert tiled.supports(geom)
    x, w, ct = _data(x_shape, w_shape, (x_shape[0], geom.out_channels) + geom.output_size)
    y_want, dx_want, dw_want = _torch_results(x, w, ct, kwargs)
    y, dx, dw = _run(geom, x, w, ct)
    assert y.shape == y_want.shape and y.dtype == jnp.float32
    assert dx.shape == x.shape and dw.shape == w.shape
    taps = int(np.prod(w_shape[2:]))
    _assert_close(y, y_want, geom.in_per_group * taps)
    _assert_close(dx, dx_want, geom.out_per_group * taps)
    _assert_close(dw, dw_want, max(1, x_shape[0] * int(np.prod(x_shape[2:]))))


@pytest.mark.parametrize("x_shape, w_shape, kwargs", _params(range(4, 12)))
def test_transposes_are_exact_adjoints(x_shape, w_shape, kwargs):
    """``⟨f(x, w), ȳ⟩ = ⟨x, x̄⟩ = ⟨w, w̄⟩`` exactly on small integers (every sum exact in float32)."""
    geom = _geometry(x_shape, w_shape, kwargs)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.integers(-3, 4, x_shape), jnp.float32)
    w = jnp.asarray(rng.integers(-3, 4, w_shape), jnp.float32)
    ct = jnp.asarray(rng.integers(-3, 4, (x_shape[0], geom.out_channels) + geom.output_size), jnp.float32)
    y, dx, dw = _run(geom, x, w, ct)
    pairing = float(jnp.sum(y * ct))
    assert pairing == float(jnp.sum(x * dx)) == float(jnp.sum(w * dw))


def _reference(geom):
    return lambda x, w: conv_transpose_reference(x, w, geom)


def test_gradients_jvp_and_vmap_over_weights_match_the_reference():
    x_shape, w_shape, kwargs = (2, 4, 3, 4), (4, 3, 8, 8), dict(stride=4, padding=2, output_padding=1)
    geom = _geometry(x_shape, w_shape, kwargs)
    x, w, _ = _data(x_shape, w_shape, (1,), seed=3)
    x, w = jnp.asarray(x), jnp.asarray(w)
    layer, reference = _layer(geom), _reference(geom)

    def loss(f):
        return lambda x, w: jnp.sum(jnp.sin(f(x, w)))

    grads = jax.jit(lambda x, w: (jax.grad(loss(layer), (0, 1))(x, w), jax.grad(loss(reference), (0, 1))(x, w)))
    for got, want in zip(*grads(x, w)):
        _assert_close(got, want, 256)

    def forward(x, w):
        return tiled.tiled_forward(x, w, geom)

    jvps = jax.jit(lambda x, w: (jax.jvp(forward, (x, w), (x, w)), jax.jvp(reference, (x, w), (x, w))))
    for got, want in zip(*jvps(x, w)):
        _assert_close(got, want, 256)
    ws = jnp.stack([w, 2 * w + 1, -w])

    def square(f):
        return lambda w: jnp.sum(f(x, w) ** 2)

    batched = jax.jit(lambda ws: (jax.vmap(lambda w: layer(x, w))(ws), jax.vmap(jax.grad(square(layer)))(ws)))
    looped = jax.jit(lambda w: (reference(x, w), jax.grad(square(reference))(w)))
    values, weight_grads = batched(ws)
    for i in range(ws.shape[0]):
        value_want, grad_want = looped(ws[i])
        _assert_close(values[i], value_want, 256)
        _assert_close(weight_grads[i], grad_want, 256)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_accumulates_in_float32_and_returns_the_input_dtype(dtype):
    x_shape, w_shape, kwargs = (2, 8, 3, 3), (8, 4, 4, 4), dict(stride=4, padding=1)
    geom = _geometry(x_shape, w_shape, kwargs)
    x, w, ct = _data(x_shape, w_shape, (2, 4) + geom.output_size, seed=7)
    x16, w16, ct16 = (jnp.asarray(a, dtype) for a in (x, w, ct))
    y, dx, dw = _run(geom, x16, w16, ct16)
    assert y.dtype == dx.dtype == dw.dtype == dtype
    exact = [np.asarray(a, np.float32) for a in (x16, w16, ct16)]
    y_want, dx_want, dw_want = _torch_results(exact[0], exact[1], exact[2], kwargs)
    half = relative_tolerance(dtype, 128) * 4
    for got, want in ((y, y_want), (dx, dx_want), (dw, dw_want)):
        np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=0, atol=half * np.abs(want).max())
    y32 = jax.jit(lambda x, w: tiled.tiled_forward(x, w, geom, preferred_element_type=jnp.float32))(x16, w16)
    assert y32.dtype == jnp.float32
    _assert_close(y32, y_want, 128)


@pytest.mark.parametrize(
    "w_shape, kwargs, supported",
    [
        ((2, 2, 4), dict(stride=4), True),
        ((2, 2, 8), dict(stride=4), True),  # k = 2s
        ((2, 2, 3), dict(stride=4), True),  # span 3 < s
        ((2, 2, 3), dict(stride=5, dilation=2), True),  # span 5 = s
        ((2, 2, 3), dict(stride=4, dilation=2), False),  # span 5 > s, not a multiple
        ((2, 2, 3), dict(stride=2), False),  # k3 s2
        ((2, 2, 4), dict(stride=2, dilation=2), False),  # k = 2s but dilated
        ((2, 2, 4, 3), dict(stride=(2, 2)), False),  # one axis does not tile
        ((2, 2, 16, 16, 16), dict(stride=16, padding=7), True),
    ],
)
def test_supports_names_the_kernels_that_tile_their_strides(w_shape, kwargs, supported):
    x_shape = (1, 2) + (3,) * (len(w_shape) - 2)
    assert tiled.supports(_geometry(x_shape, w_shape, kwargs)) is supported


def hlo_op_count(f, *args) -> int:
    """Operations in the lowered (StableHLO) program of ``jax.jit(f)(*args)``."""
    return len(re.findall(r"\bstablehlo\.[a-z_]+", jax.jit(f).lower(*args).as_text()))


def _programs(k: int, m: int, ndim: int) -> tuple[int, int, int]:
    """Op counts of the forward, the input transpose and ``grad`` (both transposes) for ``k = m·s``."""
    stride = k // m
    x_shape, w_shape = (1, 3) + (2,) * ndim, (3, 2) + (k,) * ndim
    geom = _geometry(x_shape, w_shape, dict(stride=stride, padding=1))
    x, w = jnp.ones(x_shape), jnp.ones(w_shape)
    ct = jnp.ones((1, 2) + geom.output_size)
    layer = _layer(geom)
    dtypes = dict(acc_dtype=jnp.float32, out_dtype=jnp.float32)
    return (
        hlo_op_count(lambda x, w: tiled.tiled_forward(x, w, geom), x, w),
        hlo_op_count(lambda c, w: tiled.transpose_input(c, w, geom, precision=None, **dtypes), ct, w),
        hlo_op_count(jax.grad(lambda x, w: jnp.sum(layer(x, w) ** 2), (0, 1)), x, w),
    )


@pytest.mark.parametrize("m, ndim", [(1, 2), (2, 2), (1, 3)])
def test_program_size_does_not_grow_with_the_kernel(m, ndim):
    sizes = (4, 16, 64) if ndim == 2 else (2, 4, 16)
    counts = [_programs(m * k, m, ndim) for k in sizes]
    for small, large in zip(counts[0], counts[-1]):
        assert abs(large - small) <= 4, counts
