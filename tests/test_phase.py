"""The phase lowering: values and gradients of both ways it computes ``Z``.

The general sweeps (``test_sweep.py``, ``test_gradients.py``) run
``algorithm="phase"`` on every configuration, but their layers are small, so
the forward always takes the GEMM path. This file draws strided, grouped and
dilated layers and checks them against torch twice: as they come (GEMM path)
and with the planner's ``phase_conv_min_bytes`` threshold set to 0, which
sends every forward (and, in 1d, every input transpose) through an XLA
convolution. It then checks which path real sizes take, the transforms, and
the per-axis plan.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jtconv
from jtconv import testing
from jtconv.geometry import make_geometry
from jtconv.lowering import phase
from jtconv.testing import ConvTransposeConfig

import tiers
from lowering_checks import assert_second_order_and_jvp_match_reference, assert_vmap_over_weights_matches_a_loop

PHASE_SEED = 4242
PHASE_COUNT = 100
CHUNK = 20
QUICK_SAMPLE = 5  # configurations per path in the quick tier (tests/tiers.py)
CHUNKS = tiers.chunks(PHASE_COUNT, CHUNK, quick=QUICK_SAMPLE)


def _phase_configs(count: int, seed: int) -> list[ConvTransposeConfig]:
    """Valid layers with more than one input channel per group, every argument varied."""
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        ndim = int(rng.integers(1, 4))
        kernel = tuple(int(k) for k in rng.integers(1, 6 if ndim < 3 else 4, ndim))
        stride = tuple(int(s) for s in rng.integers(1, 5, ndim))
        dilation = tuple(int(rng.choice([1, 1, 2, 3])) for _ in range(ndim))
        spatial = tuple(int(s) for s in rng.integers(1, 7 if ndim < 3 else 4, ndim))
        output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        padding = tuple(
            int(rng.integers(0, ((i - 1) * s + d * (k - 1) + op) // 2 + 1))
            for i, k, s, d, op in zip(spatial, kernel, stride, dilation, output_padding)
        )
        groups = int(rng.choice([1, 1, 2]))
        cin, cout_g = groups * int(rng.integers(2, 4)), int(rng.integers(1, 4))
        batch = int(rng.choice([0, 1, 2, 3, -1]))  # -1: unbatched
        config = ConvTransposeConfig(
            ((cin,) if batch < 0 else (batch, cin)) + spatial,
            (cin, cout_g) + kernel,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            groups=groups,
            bias_shape=(groups * cout_g,) if rng.random() < 0.5 else None,
        )
        if testing.torch_rejection(config) is None:
            configs.append(config)
    return configs


CONFIGS = _phase_configs(PHASE_COUNT, PHASE_SEED)


def test_the_drawn_layers_are_phase_ones():
    strided = 0
    for config in CONFIGS:
        x_shape = config.input_shape if config.batched else (1,) + config.input_shape
        geom = make_geometry(x_shape, config.weight_shape, **config.jtconv_kwargs())
        assert phase.supports(geom), config.label()
        strided += max(geom.stride) > 1
    assert strided >= PHASE_COUNT // 2


def _check(configs) -> list[str]:
    failures = []
    for config in configs:
        result = testing.check_config(config, algorithm="phase", grads=True)
        if not result.passed:
            failures.append(result.report())
    return failures


@pytest.mark.parametrize("chunk", CHUNKS, ids=str)
def test_phase_gemm_path_values_and_gradients_match_torch(chunk):
    configs = [CONFIGS[i] for i in chunk.indices(salt="gemm")]
    failures = _check(configs)
    assert not failures, (
        f"{len(failures)} of {len(configs)} phase checks differ from torch ({chunk.reproducer()}):\n"
        + "\n".join(failures)
    )


@pytest.mark.parametrize("chunk", CHUNKS, ids=str)
def test_phase_convolution_path_values_and_gradients_match_torch(chunk, monkeypatch):
    _phase_conv_from_zero_bytes(monkeypatch)
    configs = [CONFIGS[i] for i in chunk.indices(salt="convolution")]
    inputs = testing.make_inputs(configs[0])
    lowered = jax.jit(testing.jtconv_conv_transpose(configs[0], "phase")).lower(*inputs).as_text()
    assert "stablehlo.convolution" in lowered and "stablehlo.dot_general" not in lowered
    failures = _check(configs)
    assert not failures, (
        f"{len(failures)} of {len(configs)} phase checks differ from torch ({chunk.reproducer()}):\n"
        + "\n".join(failures)
    )


def _phase_conv_from_zero_bytes(monkeypatch) -> None:
    """Make the planner run ``phase-conv`` (the convolution path) for every phase layer."""
    from jtconv.plans import estimate as planner

    rule = planner.THRESHOLDS["phase_conv_min_bytes"]
    monkeypatch.setitem(planner.THRESHOLDS, "phase_conv_min_bytes", dataclasses.replace(rule, value=0))


def _phase_lowerings(x, w) -> tuple[str, str]:
    """Lowered text of a phase layer and of its gradient, traced afresh (the
    path is chosen while lowering, and jit caches per function)."""

    def layer(x, w):
        return jtconv.conv_transpose(x, w, stride=4, padding=2, algorithm="phase")

    def loss(x, w):
        return jnp.sum(layer(x, w) ** 2)

    return jax.jit(layer).lower(x, w).as_text(), jax.jit(jax.grad(loss)).lower(x, w).as_text()


def test_the_threshold_selects_the_convolution_path(monkeypatch):
    x = jnp.ones((2, 4, 9), jnp.float32)
    w = jnp.ones((4, 3, 8), jnp.float32)
    forward, gradient = _phase_lowerings(x, w)
    assert "stablehlo.convolution" not in forward and "stablehlo.convolution" not in gradient
    _phase_conv_from_zero_bytes(monkeypatch)
    forward, gradient = _phase_lowerings(x, w)
    assert "stablehlo.convolution" in forward
    assert gradient.count("stablehlo.convolution") == 2  # the forward and the input transpose (1d)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, convolves",
    [
        ((37, 16, 4096), (16, 8, 8), dict(stride=4, padding=2), True),  # P and Z: 37 MiB
        ((4, 32, 32, 32), (32, 32, 8, 8), dict(stride=4, padding=2), False),  # 9 MiB
        ((64, 128, 16, 16), (128, 64, 4, 4), dict(stride=2, padding=1), True),  # 57 MiB
        ((16, 128, 16, 16), (128, 64, 4, 4), dict(stride=2, padding=1), False),  # 14 MiB
    ],
)
def test_real_sizes_take_the_path_their_temporaries_allow(x_shape, w_shape, kwargs, convolves):
    from jtconv.lowering.methods import METHODS
    from jtconv.plans.estimate import algorithm_plan

    geom = make_geometry(x_shape, w_shape, **kwargs)
    plan = algorithm_plan("phase", geom, x_shape[0])
    assert (plan.forward == "phase-conv") is convolves
    forward = METHODS[plan.forward].forward
    jaxpr = str(
        jax.make_jaxpr(
            lambda x, w: forward(x, w, geom, precision=None, preferred_element_type=None, layout=None, platform="cpu")
        )(jax.ShapeDtypeStruct(x_shape, jnp.float32), jax.ShapeDtypeStruct(w_shape, jnp.float32))
    )
    assert ("conv_general_dilated" in jaxpr) is convolves
    assert ("dot_general" in jaxpr) is not convolves


def test_depthwise_layers_bind_matmul():
    plan = jtconv.plan_for((1, 4, 5, 5), (4, 1, 4, 4), stride=2, groups=4, algorithm="phase")
    assert plan.forward == "matmul"
    assert jtconv.plan_for((1, 4, 5, 5), (4, 3, 4, 4), stride=2, groups=2, algorithm="phase").forward == "phase"


def _layer(algorithm: str):
    kwargs = dict(stride=(2, 3), padding=(1, 2), output_padding=(1, 0), dilation=(1, 2))
    return lambda x, w: jtconv.conv_transpose(x, w, algorithm=algorithm, **kwargs)


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((2, 3, 5, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 4, 4, 3)) / 6, jnp.float32)
    return x, w


@pytest.mark.parametrize("convolves", [False, True])
def test_phase_second_order_and_jvp_match_the_reference(convolves, monkeypatch):
    if convolves:
        _phase_conv_from_zero_bytes(monkeypatch)
    x, w = _data(1)
    assert_second_order_and_jvp_match_reference(_layer, "phase", x, w)


def test_phase_vmap_over_weights_matches_a_loop():
    x, _ = _data(2)
    ws = jnp.asarray(np.random.default_rng(3).standard_normal((3, 3, 4, 4, 3)) / 6, jnp.float32)
    assert_vmap_over_weights_matches_a_loop(_layer, "phase", x, ws)


@pytest.mark.parametrize(
    "kernel, stride, dilation, padding, shifts, tap_phase, tap_shift, first_block, offset",
    [
        (8, 4, 1, 2, 2, (0, 1, 2, 3, 0, 1, 2, 3), (0, 0, 0, 0, 1, 1, 1, 1), 0, 2),
        (3, 2, 1, 1, 2, (0, 1, 0), (0, 0, 1), 0, 1),
        (3, 2, 2, 2, 3, (0, 0, 0), (0, 1, 2), 1, 0),  # dilation 2: phase 1 gets no tap
        (2, 2, 1, 0, 1, (0, 1), (0, 0), 0, 0),  # k = s: one shift, P is the input
        (1, 3, 1, 4, 1, (0,), (0,), 1, 1),  # padding beyond the kernel span crops the input
    ],
)
def test_phase_axes(kernel, stride, dilation, padding, shifts, tap_phase, tap_shift, first_block, offset):
    geom = make_geometry((1, 2, 6), (2, 2, kernel), stride=stride, dilation=dilation, padding=padding)
    (axis,) = phase.phase_axes(geom)
    assert (axis.shifts, axis.tap_phase, axis.tap_shift) == (shifts, tap_phase, tap_shift)
    assert (axis.first_block, axis.offset) == (first_block, offset)
    assert axis.blocks * stride >= offset + geom.output_size[0] > (axis.blocks - 1) * stride
    assert axis.input_low + geom.input_size[0] + axis.input_high == axis.blocks + shifts - 1
    for t, (r, q) in enumerate(zip(tap_phase, tap_shift)):
        assert t * dilation == q * stride + r
        assert axis.tap_table(kernel)[r, shifts - 1 - q] == t


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, tiles",
    [
        ((1, 4, 9), (4, 2, 8), dict(stride=4), True),
        ((1, 4, 5, 5), (4, 2, 4, 4), dict(stride=2, padding=1), True),
        ((1, 4, 5, 5), (4, 2, 3, 3), dict(stride=2, padding=1), False),  # 3 is not a multiple of 2
        ((1, 4, 5, 5), (4, 2, 2, 2), dict(stride=2), False),  # k = s
        ((1, 4, 5, 5), (4, 2, 4, 4), dict(stride=(1, 2)), False),  # stride 1 on one axis
        ((1, 4, 5, 5), (4, 2, 4, 4), dict(stride=2, dilation=2, output_padding=1), False),
        ((1, 4, 5, 5), (4, 1, 4, 4), dict(stride=2, groups=4), False),  # depthwise
    ],
)
def test_phase_tiles(x_shape, w_shape, kwargs, tiles):
    from jtconv.plans.estimate import phase_tiles

    assert phase_tiles(make_geometry(x_shape, w_shape, **kwargs)) is tiles
