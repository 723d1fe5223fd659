"""Lowering-specific checks: planner choices and shapes that once broke XLA.

The shared torch sweep (test_sweep.py, test_gradients.py) covers every
lowering in ``jtconv.ALGORITHMS``; this file holds the cases that are about
one lowering's construction rather than about the operation.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jtconv
from jtconv.geometry import make_geometry
from jtconv.lowering.axes import axis_plans
from jtconv.lowering.common import MAX_FUSED_OPERANDS, fusable_stack
from jtconv.plans.estimate import algorithm_plan, cpu_algorithm, estimate, gemm_layout, xla_convolutions_win
from jtconv.testing import relative_tolerance

import tiers

TORCH_FN = {
    1: torch.nn.functional.conv_transpose1d,
    2: torch.nn.functional.conv_transpose2d,
    3: torch.nn.functional.conv_transpose3d,
}

# lhs-dilated convolutions that abort XLA's CPU compiler (jaxlib 0.10.2)
# when written with lhs_dilation: the reference lowering inserts zeros itself.
XLA_CRASH_CASES = [
    ((1, 1, 2, 4), (1, 1, 3, 2), dict(stride=2, padding=(2, 1))),
    ((2, 3, 2, 4), (3, 5, 3, 2), dict(stride=2)),
    ((1, 1, 4, 2), (1, 1, 2, 3), dict(stride=2)),
    ((1, 1, 3, 4), (1, 1, 4, 2), dict(stride=2)),
    ((1, 1, 2, 4), (1, 1, 3, 2), dict(stride=(3, 2))),
    ((1, 1, 2, 4), (1, 1, 4, 2), dict(stride=2, padding=(1, 0))),
    ((1, 1, 2, 3, 4), (1, 1, 3, 2, 2), dict(stride=(1, 2, 2))),
]


@pytest.mark.parametrize(
    *tiers.product(
        {"x_shape, w_shape, kwargs": XLA_CRASH_CASES, "algorithm": jtconv.ALGORITHMS},
        every=("x_shape, w_shape, kwargs",),
    )
)
def test_shapes_that_crashed_xla_match_torch(algorithm, x_shape, w_shape, kwargs):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    ndim = len(w_shape) - 2
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    expected = TORCH_FN[ndim](tx, tw, **kwargs)
    cotangent = rng.standard_normal(tuple(expected.shape)).astype(np.float32)
    expected_grads = torch.autograd.grad(expected, (tx, tw), torch.tensor(cotangent))

    def loss(x, w):
        return jnp.sum(jtconv.conv_transpose(x, w, algorithm=algorithm, **kwargs) * cotangent)

    y = jax.jit(lambda x, w: jtconv.conv_transpose(x, w, algorithm=algorithm, **kwargs))(x, w)
    grads = jax.jit(jax.grad(loss, (0, 1)))(x, w)
    assert y.shape == tuple(expected.shape)
    for got, want in [(y, expected), *zip(grads, expected_grads)]:
        want = want.detach().numpy()
        np.testing.assert_allclose(
            np.asarray(got), want, rtol=0, atol=relative_tolerance(np.float32) * np.abs(want).max()
        )


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, on_cpu",
    [
        ((1, 4, 5, 5), (4, 2, 4, 4), dict(stride=2, padding=1), "matmul"),
        ((1, 4, 5, 5), (4, 2, 5, 5), dict(stride=1, padding=2), "split"),  # 2d stride 1, k >= 5, 2·Cout >= Cin
        ((2, 16, 64, 64), (16, 16, 7, 7), dict(stride=1, padding=3), "split"),
        ((1, 128, 8, 8), (128, 64, 5, 5), dict(stride=1, padding=2), "split"),
        ((1, 256, 8, 8), (256, 128, 5, 5), dict(stride=1, padding=2), "matmul"),  # over 128 input channels
        ((4, 32, 64, 64), (32, 8, 5, 5), dict(stride=1, padding=2), "conv"),  # Cout < Cin/2: few channels, k >= 5
        ((1, 4, 9), (4, 2, 7), dict(stride=1, dilation=2), "matmul"),  # 1d with Cout < Cin
        ((1, 2, 9), (2, 4, 7), dict(stride=1, dilation=2), "conv"),  # 1d, few channels, k >= 5
        ((1, 4, 5, 5), (4, 2, 3, 3), dict(stride=1, padding=1), "matmul"),  # k3: the tap products stay small
        ((1, 4, 5, 5), (4, 2, 3, 5), dict(stride=1, dilation=2), "matmul"),
        ((1, 4, 5, 5, 5), (4, 2, 5, 5, 5), dict(stride=1), "matmul"),  # XLA's 3d convolutions are slow
        ((1, 64, 32, 32), (64, 64, 3, 3), dict(stride=1, padding=1), "matmul"),  # 64 channels, 9 MiB of taps
        ((8, 128, 32, 32), (128, 128, 3, 3), dict(stride=1, padding=1), "conv"),  # 36 MiB of taps
        ((1, 4, 5, 5), (4, 1, 3, 3), dict(stride=1, groups=4), "matmul"),  # XLA's grouped convolutions are slow
        ((1, 4, 5), (4, 2, 16), dict(stride=8, padding=4), "matmul"),
        ((12, 16, 64, 64), (16, 16, 3, 3), dict(padding=2, dilation=2), "conv"),  # few channels, k3, 28 MiB
        ((16, 32, 4096), (32, 32, 3), dict(padding=1), "conv"),  # 1d, 25 MiB
        ((2, 16, 64, 64), (16, 16, 3, 3), dict(padding=1), "matmul"),  # 4.7 MiB
        ((37, 16, 4096), (16, 8, 8), dict(stride=4, padding=2), "phase"),  # k = 2s, 37 MiB of taps
        ((2, 16, 4096), (16, 8, 8), dict(stride=4, padding=2), "matmul"),  # 2 MiB of taps
        ((4, 32, 32, 32), (32, 32, 8, 8), dict(stride=4, padding=2), "phase"),  # 33.5 MiB
        ((2, 32, 16, 16, 16), (32, 16, 4, 4, 4), dict(stride=2, padding=1), "phase"),  # 32 MiB
        ((16, 128, 16, 16), (128, 64, 4, 4), dict(stride=2, padding=1), "matmul"),  # DCGAN: 16 MiB
        ((8, 64, 64, 64), (64, 64, 3, 3), dict(stride=2, padding=1, output_padding=1), "matmul"),  # k3 s2 does not tile
        ((16, 64, 64, 64), (64, 32, 2, 2), dict(stride=2), "matmul"),  # k = s: nothing to save
        ((8, 64, 64, 64), (64, 1, 4, 4), dict(stride=2, padding=1, groups=64), "matmul"),  # depthwise
        ((8, 64, 64, 64), (64, 64, 4, 4), dict(stride=2, padding=1, dilation=2, output_padding=1), "matmul"),
    ],
)
def test_planner_choice_per_backend(x_shape, w_shape, kwargs, on_cpu):
    """The planner's CPU rules (thresholds measured in benchmarks/); GPU/TPU run torch's convolution patterns."""
    geom = make_geometry(x_shape, w_shape, **kwargs)
    assert cpu_algorithm(geom, x_shape[0], 4) == on_cpu
    assert estimate(geom, x_shape[0], "float32", "cpu") == algorithm_plan(on_cpu, geom, x_shape[0])
    for backend in ("gpu", "tpu"):
        plan = estimate(geom, x_shape[0], "float32", backend)
        assert (plan.forward, plan.input_transpose, plan.weight_transpose) == ("xla", "xla", "xla-wgrad")


@pytest.mark.parametrize(
    "kernel, stride, dilation, padding, phases, shifts",
    [
        (4, 2, 1, 0, (0, 1, 0, 1), (0, 0, 1, 1)),  # DCGAN without padding: two taps per phase
        (4, 2, 1, 1, (1, 0, 1, 0), (-1, 0, 0, 1)),  # DCGAN: the crop moves tap 0 one block back
        (3, 2, 2, 0, (0, 0, 0), (0, 1, 2)),  # gcd(d, s) = 2: phase 1 gets nothing
        (2, 2, 1, 0, (0, 1), (0, 0)),  # kernel == stride: depth-to-space
        (3, 1, 1, 1, (0, 0, 0), (-1, 0, 1)),  # stride 1: one phase, pure shifts
    ],
)
def test_axis_plan_maps_taps_to_phase_and_shift(kernel, stride, dilation, padding, phases, shifts):
    geom = make_geometry((1, 1, 5), (1, 1, kernel), stride=stride, dilation=dilation, padding=padding)
    (plan,) = axis_plans(geom)
    assert plan.tap_phase == phases
    assert plan.tap_shift == shifts
    # every output position o = i·s + t·d − p is block (i + m_t), phase ρ_t
    for t in range(kernel):
        for i in range(5):
            o = i * stride + t * dilation - padding
            assert (o // stride, o % stride) == (i + plan.tap_shift[t], plan.tap_phase[t])
    assert plan.blocks * stride >= geom.output_size[0] > (plan.blocks - 1) * stride


def test_fusable_stack_of_more_than_64_arrays_equals_stack():
    count = MAX_FUSED_OPERANDS**2 + 3
    arrays = [jnp.full((2,), float(n)) for n in range(count)]
    stacked = fusable_stack(arrays, 1)
    np.testing.assert_array_equal(np.asarray(stacked), np.asarray(jnp.stack(arrays, 1)))
    assert stacked.shape == (2, count)


@pytest.mark.parametrize("algorithm", jtconv.ALGORITHMS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_accumulates_in_float32(algorithm, dtype):
    """Summing 64 taps of ±1 products must not lose integers that bf16/f16 hold exactly."""
    x = jnp.ones((1, 64, 4, 4), dtype)
    w = jnp.ones((64, 1, 4, 4), dtype)
    y = jtconv.conv_transpose(x, w, stride=2, padding=1, algorithm=algorithm)
    expected = torch.nn.functional.conv_transpose2d(
        torch.ones(1, 64, 4, 4, dtype=torch.float64), torch.ones(64, 1, 4, 4, dtype=torch.float64), stride=2, padding=1
    ).numpy()
    assert y.dtype == dtype
    np.testing.assert_array_equal(np.asarray(y, np.float64), expected)


@pytest.mark.parametrize("marker", [1.5, -0.0, np.inf, -np.inf, np.nan])
def test_backward_ordering_marker_leaves_the_cotangent_bit_for_bit_unchanged(marker):
    """The transposes wait for one element of y; whatever its value (inf and nan
    included), the cotangent they use must be exactly the one given."""
    from jtconv.lowering.primitive import _wait_for

    ct = jnp.array([[1.0, -2.5], [3e-38, 7e30]], jnp.float32)
    out = jax.jit(_wait_for)(ct, jnp.array([marker], jnp.float32))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ct))
    assert out.dtype == ct.dtype


@pytest.mark.parametrize("anchor", [[1.5], [np.nan], [np.inf], []])
def test_stored_primal_output_is_bit_for_bit_the_output(anchor):
    """The loop that stores y for the backward never changes it, whatever the
    input's first value (nan included), and passes tangents through unchanged."""
    from jtconv.lowering.primitive import _stored

    y = jnp.array([[1.0, -2.5], [3e-38, np.nan]], jnp.float32)
    a = jnp.array(anchor, jnp.float32)
    out = jax.jit(_stored)(y, a)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(y))
    t = jnp.array([[0.5, 1.0], [-2.0, 4.0]], jnp.float32)
    _, tangent_out = jax.jvp(lambda y: _stored(y, a), (y,), (t,))
    np.testing.assert_array_equal(np.asarray(tangent_out), np.asarray(t))
    grad = jax.grad(lambda y: jnp.sum(_stored(y, a) * t))(jnp.ones_like(y))
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(t))


WEIGHT_GRADIENT_LAYERS = [
    ((2, 4, 6, 6), (4, 3, 5, 5), dict(padding=2)),
    ((3, 5, 9), (5, 2, 3), dict(dilation=2, output_padding=1)),
    ((1, 3, 4, 3, 4), (3, 2, 3, 3, 3), dict(padding=1)),
]


@pytest.mark.parametrize(
    *tiers.product(
        {"x_shape, w_shape, kwargs": WEIGHT_GRADIENT_LAYERS, "method": ["gemm", "xla", "xla-wgrad"]}, every=("method",)
    )
)
def test_both_weight_gradient_methods_match_torch(method, x_shape, w_shape, kwargs):
    """im2col + GEMM and XLA's convolution weight gradients, each forced on stride-1 layers."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    tw = torch.tensor(w, requires_grad=True)
    y = TORCH_FN[len(w_shape) - 2](torch.tensor(x), tw, **kwargs)
    (y * y).sum().backward()
    for algorithm in ("matmul", "conv", "split"):
        plan = jtconv.plan_for(x_shape, w_shape, algorithm=algorithm, **kwargs).replace(weight_transpose=method)
        got = jax.jit(
            jax.grad(lambda w, plan=plan: jnp.sum(jtconv.conv_transpose(x, w, algorithm=plan, **kwargs) ** 2))
        )(w)
        want = tw.grad.numpy()
        np.testing.assert_allclose(
            np.asarray(got), want, rtol=0, atol=relative_tolerance(np.float32) * np.abs(want).max()
        )


def test_weight_gradient_method_per_layer():
    def method(x_shape, w_shape, algorithm="conv", **kwargs):
        return algorithm_plan(algorithm, make_geometry(x_shape, w_shape, **kwargs), x_shape[0]).weight_transpose

    assert method((1, 16, 8, 8), (16, 16, 5, 5)) == "xla"  # stride 1, few channels, k5, Cout = Cin: XLA's
    assert method((2, 16, 64, 64), (16, 8, 7, 7)) == "gemm"  # fewer output channels, 12 MiB of im2col
    assert method((4, 16, 64, 64), (16, 16, 7, 7)) == "xla"  # 49 MiB of im2col
    assert method((1, 16, 8, 8), (16, 16, 3, 3)) == "gemm"  # k3: the im2col stays small
    assert method((1, 16, 4, 4, 4), (16, 16, 5, 5, 5)) == "gemm"  # 3d: XLA's convolutions are slow
    assert method((1, 64, 8, 8), (64, 64, 5, 5)) == "gemm"  # many channels
    assert method((1, 16, 8, 8), (16, 16, 5, 5), stride=2) == "gemm"
    assert method((1, 16, 8, 8), (16, 1, 3, 3), groups=16) == "matmul-ad"  # depthwise: derived transposes
    assert method((1, 16, 8, 8), (16, 16, 5, 5), algorithm="split") == "split"  # the split forward's own transposes


@pytest.mark.parametrize(
    "rows, inner, cols, groups, full_precision, layout",
    [
        (4096, 64, 800, 1, True, "weight_copy"),  # the activations are the larger operand
        (128, 256, 1152, 1, True, "weight_rhs"),  # Z = 0.6 MiB stays in cache
        (256, 512, 4096, 1, True, "weight_rhs"),  # the weight (8 MiB) is twice Z (4 MiB)
        (512, 256, 2048, 1, True, "weight_lhs_in_place"),  # Z = 4 MiB, weight 2 MiB
        (512, 256, 2048, 1, False, "weight_copy"),  # no such dot for bf16/fp16 with a float32 result
    ],
)
def test_gemm_layout_choice(rows, inner, cols, groups, full_precision, layout):
    assert gemm_layout(rows, inner, cols, groups, 4, full_precision) == layout


@pytest.mark.parametrize("layout", ["weight_copy", "weight_rhs", "weight_lhs_in_place"])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 6, 3, 3), (6, 4, 3, 3), dict(stride=2, padding=1, output_padding=1)),
        ((3, 8, 4), (8, 3, 5), dict(stride=3, padding=2, groups=2)),
        ((1, 4, 2, 3, 2), (4, 2, 2, 3, 2), dict(stride=(2, 1, 2), dilation=(1, 2, 1))),
        ((0, 4, 3, 3), (4, 2, 3, 3), dict(stride=2)),
    ],
)
def test_every_gemm_layout_matches_torch(layout, x_shape, w_shape, kwargs):
    """Each GEMM layout of the matmul forward, forced on layers of every rank."""
    plan = jtconv.plan_for(x_shape, w_shape, algorithm="matmul", **kwargs).replace(gemm_layout=layout)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    want = TORCH_FN[len(w_shape) - 2](torch.tensor(x), torch.tensor(w), **kwargs).numpy()
    got = jax.jit(lambda x, w: jtconv.conv_transpose(x, w, algorithm=plan, **kwargs))(x, w)
    assert got.shape == want.shape
    scale = max(np.abs(want).max(initial=0.0), 1.0)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=relative_tolerance(np.float32) * scale)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, weight_larger",
    [
        ((1, 16, 2, 2), (16, 8, 3, 3), dict(stride=2, padding=1), True),  # the im2col is reordered
        ((2, 4, 8, 8), (4, 6, 3, 3), dict(stride=2, padding=1), False),  # the weight is reordered
        ((1, 8, 3), (8, 6, 5), dict(groups=2, padding=2), True),
    ],
)
def test_matmul_gradients_with_either_operand_reordered(x_shape, w_shape, kwargs, weight_larger):
    """The matmul transposes copy whichever of weight and cotangent im2col is smaller into the other's order."""
    from jtconv.lowering.matmul_transpose import _rows, _weight_is_larger

    geom = make_geometry(x_shape, w_shape, **kwargs)
    cols = _rows(jnp.zeros((x_shape[0], geom.out_channels) + geom.output_size), geom)
    assert _weight_is_larger(geom, cols) is weight_larger
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    (TORCH_FN[len(w_shape) - 2](tx, tw, **kwargs) ** 2).sum().backward()

    def loss(x, w):
        return jnp.sum(jtconv.conv_transpose(x, w, algorithm="matmul", **kwargs) ** 2)

    for got, want in zip(jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w), (tx.grad.numpy(), tw.grad.numpy())):
        np.testing.assert_allclose(
            np.asarray(got), want, rtol=0, atol=relative_tolerance(np.float32) * np.abs(want).max()
        )


@pytest.mark.parametrize(
    "forward, x_shape, w_shape, kwargs, xla",
    [
        ("matmul", (8, 16, 64, 64), (16, 16, 3, 3), dict(padding=1), True),  # 19 MiB of im2col
        ("conv", (8, 16, 64, 64), (16, 16, 3, 3), dict(padding=1), True),
        ("matmul", (16, 32, 4096), (32, 32, 3), dict(padding=2, dilation=2), True),  # 1d
        ("matmul", (2, 16, 64, 64), (16, 16, 3, 3), dict(padding=1), False),  # 4.7 MiB
        ("matmul", (6, 16, 64, 64), (16, 4, 3, 3), dict(padding=1), False),  # 2·Cout < Cin
        ("matmul", (8, 64, 64, 64), (64, 64, 3, 3), dict(padding=1), False),  # many channels
        ("matmul", (8, 16, 64, 64), (16, 16, 5, 5), dict(padding=2), False),  # k5: the k >= 5 rules
        ("matmul", (8, 16, 64, 64), (16, 16, 3, 3), dict(stride=2), False),  # strided
        ("split", (8, 16, 64, 64), (16, 16, 3, 3), dict(padding=1), False),  # split's own transposes
    ],
)
def test_xla_transposes_per_layer(forward, x_shape, w_shape, kwargs, xla):
    geom = make_geometry(x_shape, w_shape, **kwargs)
    if forward != "split":
        assert xla_convolutions_win(geom, x_shape[0], 4) is xla
    plan = algorithm_plan(forward, geom, x_shape[0])
    assert ((plan.input_transpose, plan.weight_transpose) == ("xla", "xla")) is xla
    assert plan.waits is (not xla and plan.waits)


def test_xla_transposes_match_torch_and_are_convolutions():
    """A layer past the im2col threshold: both gradients from XLA's convolutions, and the compiled
    program has nothing else (the forward, whose output the gradient does not need, is gone)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 16, 64, 64)).astype(np.float32)
    w = (rng.standard_normal((16, 16, 3, 3)) / 12).astype(np.float32)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    expected = torch.nn.functional.conv_transpose2d(tx, tw, padding=1)
    cotangent = rng.standard_normal(tuple(expected.shape)).astype(np.float32)
    expected_grads = torch.autograd.grad(expected, (tx, tw), torch.tensor(cotangent))

    def loss(x, w):
        return jnp.sum(jtconv.conv_transpose(x, w, padding=1, algorithm="matmul") * cotangent)

    grad = jax.jit(jax.grad(loss, (0, 1)))
    text = grad.lower(x, w).compile().as_text()
    assert len(re.findall(r"= f32\[[0-9,]+\]\{[0-9,]+\} convolution\(", text)) == 2 and " dot(" not in text
    lengths = (16 * 3 * 3, 8 * 64 * 64)  # terms summed per element of x̄ and of w̄
    for got, want, length in zip(grad(x, w), expected_grads, lengths):
        want = want.numpy()
        np.testing.assert_allclose(
            np.asarray(got), want, rtol=0, atol=relative_tolerance(np.float32, length) * np.abs(want).max()
        )
