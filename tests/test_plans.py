"""Plans: the printable value, the method registry, overrides, and every valid
combination of methods checked against torch (values, gradients, second
order, jvp, vmap over weights)."""

from __future__ import annotations

import dataclasses
import itertools
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jtconv
from jtconv import testing
from jtconv.geometry import make_geometry
from jtconv.lowering import methods
from jtconv.lowering.plan import Plan
from jtconv.plans import estimate as planner

import tiers

TORCH_FN = {
    1: torch.nn.functional.conv_transpose1d,
    2: torch.nn.functional.conv_transpose2d,
    3: torch.nn.functional.conv_transpose3d,
}

# Layers that between them let every method take every role it can: stride 1
# one-group 1d/2d (split), kernels tiling strides (phase), groups, depthwise,
# dilation, output_padding, 3d.
LAYERS = [
    ((2, 4, 6), (4, 3, 3), dict(padding=1)),
    ((2, 4, 5, 6), (4, 3, 3, 2), dict(padding=(1, 0), dilation=(1, 2))),
    ((2, 4, 5, 5), (4, 3, 4, 4), dict(stride=2, padding=1)),
    ((1, 6, 7), (6, 2, 8), dict(stride=4, padding=2, groups=3, output_padding=1)),
    ((2, 4, 3, 4), (4, 1, 3, 3), dict(stride=2, groups=4, output_padding=1)),
    ((1, 4, 3, 3, 2), (4, 2, 2, 3, 2), dict(stride=(2, 1, 2), dilation=(1, 2, 1), padding=(0, 1, 0))),
    ((2, 3, 5), (3, 2, 3), dict(stride=3, padding=2, dilation=2, output_padding=2)),
]


def _cases():
    for index, (x_shape, w_shape, kwargs) in enumerate(LAYERS):
        for plan in jtconv.candidate_plans(x_shape, w_shape, **kwargs):
            yield index, plan


CASES = list(_cases())
QUICK_CASES = 24
FULL_CASES = 400


def _coverage() -> set[int]:
    """For every role and every method filling it, the first case that runs it there."""
    first: dict[tuple[str, str], int] = {}
    for i, (_, plan) in enumerate(CASES):
        for role in methods.ROLES:
            first.setdefault((role, getattr(plan, role)), i)
    return set(first.values())


COVERAGE = _coverage()


def _selected_cases():
    """The coverage cases (checked with second order and jvp too) and a seeded sample
    of the cross product: ``QUICK_CASES`` in the quick tier, ``FULL_CASES`` in the full one."""
    rng = np.random.default_rng([tiers.SEED, 15])
    sample = rng.choice(len(CASES), FULL_CASES if tiers.FULL else QUICK_CASES, replace=False)
    return [(*CASES[i], i in COVERAGE) for i in sorted(COVERAGE | {int(i) for i in sample})]


def _torch_reference(x, w, kwargs, cotangent):
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = TORCH_FN[w.ndim - 2](tx, tw, **kwargs)
    grads = torch.autograd.grad(y, (tx, tw), torch.tensor(cotangent))
    return y.detach().numpy(), [g.numpy() for g in grads]


def _close(got, want, length=64):
    scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(
        np.asarray(got), want, rtol=0, atol=testing.relative_tolerance(np.float32, length) * scale
    )


def _case_id(value) -> str:
    if isinstance(value, Plan):
        return str(value).replace("  ", " ")
    if isinstance(value, bool):
        return "transforms" if value else "first-order"
    return f"layer{value}"


@pytest.mark.parametrize("index, plan, transforms", _selected_cases(), ids=_case_id)
def test_every_valid_plan_matches_torch(index, plan, transforms):
    """Values, both gradients and vmap over weights equal torch's for this
    combination of methods; for the cases that first run each method in each
    role, second order and jvp also equal the reference plan's."""
    x_shape, w_shape, kwargs = LAYERS[index]
    rng = np.random.default_rng(index)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / 3).astype(np.float32)
    reproducer = f"layer {LAYERS[index]}, plan {plan}"

    def f(x, w):
        return jtconv.conv_transpose(x, w, algorithm=plan, **kwargs)

    y = jax.jit(f)(x, w)
    cotangent = rng.standard_normal(y.shape).astype(np.float32)
    want_y, want_grads = _torch_reference(x, w, kwargs, cotangent)
    assert y.shape == want_y.shape, reproducer
    _close(y, want_y)
    grads = jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) * cotangent), (0, 1)))(x, w)
    for got, want in zip(grads, want_grads):
        _close(got, want, length=4096)

    ws = np.stack([w, -2 * w])
    got = jax.jit(jax.vmap(f, in_axes=(None, 0)))(x, ws)
    for b in range(2):
        _close(got[b], _torch_reference(x, ws[b], kwargs, cotangent)[0])
    if not transforms:
        return

    def ref(x, w):
        return jtconv.conv_transpose(x, w, algorithm="reference", **kwargs)

    def second(g):
        return jax.grad(lambda x, w: jnp.sum(jax.grad(lambda x: jnp.sum(g(x, w) ** 2))(x) ** 2), (0, 1))

    for got, want in zip(jax.jit(second(f))(x, w), jax.jit(second(ref))(x, w)):
        _close(got, np.asarray(want), length=4096)
    tangents = (np.ones_like(x), np.ones_like(w))
    _, got = jax.jit(lambda x, w: jax.jvp(f, (x, w), tangents))(x, w)
    _, want = jax.jit(lambda x, w: jax.jvp(ref, (x, w), tangents))(x, w)
    _close(got, np.asarray(want))


def test_every_method_and_role_is_swept():
    """The layers above let every method take every role it fills."""
    seen = {role: {getattr(plan, role) for _, plan in CASES} for role in methods.ROLES}
    for role in methods.ROLES:
        assert seen[role] == set(methods.methods_for(role)), role


def test_plan_is_a_printable_hashable_value():
    plan = Plan("phase", "gemm", "xla-wgrad", waits=True)
    assert str(plan) == "forward=phase  dx=gemm  dw=xla-wgrad  waits=yes  stores=no"
    assert Plan.parse(str(plan)) == plan
    assert hash(plan) == hash(Plan("phase", "gemm", "xla-wgrad", waits=True))
    assert pickle.loads(pickle.dumps(plan)) == plan
    assert Plan.from_dict(plan.to_dict()) == plan
    with pytest.raises(AttributeError):
        plan.forward = "matmul"
    with_layout = plan.replace(forward="matmul", gemm_layout="weight_rhs")
    assert Plan.parse(str(with_layout)) == with_layout


@pytest.mark.parametrize(
    "text, message",
    [
        ("forward=phase dx=gemm", "lacks dw"),
        ("forward=phase dx=gemm dw=gemm waits=maybe", "waits must be yes or no"),
        ("forward=phase dx=gemm dw=gemm speed=fast", "cannot read plan item"),
    ],
)
def test_plan_text_errors(text, message):
    with pytest.raises(ValueError, match=message):
        Plan.parse(text)


def test_plan_fields_are_type_checked():
    with pytest.raises(TypeError, match="Plan.forward"):
        Plan(3, "gemm", "gemm")
    with pytest.raises(TypeError, match="Plan.waits"):
        Plan("matmul", "gemm", "gemm", waits="yes")
    with pytest.raises(ValueError, match="gemm_layout"):
        Plan("matmul", "gemm", "gemm", gemm_layout="diagonal")
    with pytest.raises(ValueError, match="unknown Plan fields"):
        Plan.from_dict({"forward": "matmul", "input_transpose": "gemm", "weight_transpose": "gemm", "speed": 1})


@pytest.mark.parametrize("seed", range(40))
def test_plan_for_prints_a_plan_for_any_torch_valid_layer(seed):
    config = dataclasses.replace(testing.random_config(np.random.default_rng(seed)), bias_shape=None)
    kwargs = dict(
        stride=config.stride,
        padding=config.padding,
        output_padding=config.output_padding,
        groups=config.groups,
        dilation=config.dilation,
        output_size=config.output_size,
    )
    if testing.torch_rejection(config) is not None:
        with pytest.raises(ValueError):
            jtconv.plan_for(config.input_shape, config.weight_shape, **kwargs)
        return
    for backend in ("cpu", "gpu", "tpu"):
        plan = jtconv.plan_for(config.input_shape, config.weight_shape, backend=backend, **kwargs)
        assert isinstance(plan, Plan)
        assert str(plan).startswith("forward=")
        assert plan in jtconv.candidate_plans(config.input_shape, config.weight_shape, backend=backend, **kwargs)


def test_gpu_and_tpu_run_torch_s_three_convolution_patterns():
    for backend in ("gpu", "tpu"):
        plan = jtconv.plan_for((8, 64, 16, 16, 16), (64, 32, 4, 4, 4), stride=2, padding=1, backend=backend)
        assert (plan.forward, plan.input_transpose, plan.weight_transpose) == ("xla", "xla", "xla-wgrad")


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 4, 5, 6), (4, 3, 3, 2), dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2))),
        ((2, 6, 7), (6, 2, 4), dict(stride=2, output_padding=1, groups=3, dilation=2)),
        ((1, 4, 3, 3, 3), (4, 1, 2, 3, 2), dict(stride=(1, 2, 3), groups=4)),
        ((2, 4, 7), (4, 3, 3), dict(stride=2, padding=1)),
    ],
)
def test_torch_pattern_weight_gradient_is_no_lhs_dilated_convolution(x_shape, w_shape, kwargs):
    """``dw=xla-wgrad`` optimises to a backward-filter convolution, with no lhs (base) dilation,
    in XLA's CPU program (a GPU's is a cuDNN call)."""
    cpu = jax.devices("cpu")[0]
    x = jax.device_put(jnp.ones(x_shape, jnp.float32), cpu)
    w = jax.device_put(jnp.ones(w_shape, jnp.float32), cpu)

    def weight_gradient_hlo(algorithm):
        """The optimised HLO's convolutions of ``w ↦ ∂⟨y, c⟩/∂w`` (a linear loss: no forward in it)."""

        def loss(w):
            return jnp.sum(jtconv.conv_transpose(x, w, algorithm=algorithm, **kwargs))

        hlo = jax.jit(jax.grad(loss)).lower(w).compile().as_text()
        convolutions = [line for line in hlo.splitlines() if " convolution(" in line]
        assert convolutions
        return "\n".join(convolutions)

    torch_pattern = jtconv.plan_for(x_shape, w_shape, algorithm="xla", backend="cpu", **kwargs)
    assert torch_pattern.weight_transpose == "xla-wgrad"
    assert "lhs_dilate" not in weight_gradient_hlo(torch_pattern)


@pytest.mark.parametrize(
    "algorithm, message",
    [
        (
            Plan("split", "gemm", "gemm"),
            r"Plan.forward=.split. does not support this layer "
            r"\(2d 4→4 channels, kernel \(3, 3\), stride \(2, 2\), groups 4",
        ),
        (Plan("matmul", "phase", "gemm"), "Plan.input_transpose='phase' does not support"),
        (Plan("matmul", "gemm", "fft"), "Plan.weight_transpose must be one of"),
        (Plan("xla-wgrad", "gemm", "gemm"), "Plan.forward must be one of"),
        ({"weight_transpose": "split"}, "Plan.weight_transpose='split' does not support"),
        ({"speed": "fast"}, "unknown Plan fields"),
        ("fastest", "algorithm must be 'auto', a Plan, or one of"),
        ("forward=matmul dx=gemm dw=nope", "Plan.weight_transpose must be one of"),
    ],
)
def test_invalid_plans_raise_naming_the_part_and_the_layer(algorithm, message):
    x = jnp.ones((1, 4, 3, 3))
    w = jnp.ones((4, 1, 3, 3))  # depthwise, strided: split and phase cannot express it
    with pytest.raises(ValueError, match=message):
        jtconv.conv_transpose(x, w, stride=2, groups=4, algorithm=algorithm)
    with pytest.raises(ValueError, match=message):
        jax.jit(lambda x, w: jtconv.conv_transpose(x, w, stride=2, groups=4, algorithm=algorithm))(x, w)


def test_wrong_algorithm_type_is_a_type_error():
    with pytest.raises(TypeError, match="algorithm must be"):
        jtconv.conv_transpose(jnp.ones((1, 2, 3)), jnp.ones((2, 2, 3)), algorithm=3)


def test_one_part_can_be_forced_and_the_rest_follows_auto():
    shape = dict(x_shape=(2, 16, 8, 8), w_shape=(16, 8, 4, 4))
    auto = jtconv.plan_for(**shape, stride=2, padding=1)
    forced = jtconv.plan_for(**shape, stride=2, padding=1, algorithm={"weight_transpose": "xla-wgrad"})
    assert forced == auto.replace(weight_transpose="xla-wgrad")
    x = np.random.default_rng(0).standard_normal(shape["x_shape"]).astype(np.float32)
    w = np.random.default_rng(1).standard_normal(shape["w_shape"]).astype(np.float32)
    for algorithm in (forced, str(forced), {"weight_transpose": "xla-wgrad"}):
        got = jax.grad(
            lambda w, algorithm=algorithm: jnp.sum(
                jtconv.conv_transpose2d(x, w, stride=2, padding=1, algorithm=algorithm) ** 2
            )
        )(w)
        want = jax.grad(
            lambda w: jnp.sum(jtconv.conv_transpose2d(x, w, stride=2, padding=1, algorithm="reference") ** 2)
        )(w)
        _close(got, np.asarray(want), length=4096)


def test_old_algorithm_names_keep_their_plans():
    """Each name in ALGORITHMS means a full plan; ``auto`` on CPU is one of them."""
    geom = make_geometry((16, 128, 16, 16), (128, 64, 4, 4), stride=2, padding=1)
    assert planner.algorithm_plan("matmul", geom, 16) == Plan(
        "matmul", "gemm", "gemm", waits=True, stores_output=True, gemm_layout="weight_copy"
    )
    assert planner.algorithm_plan("reference", geom, 16) == Plan("xla", "xla", "xla")
    assert planner.algorithm_plan("phase", geom, 16).forward == "phase"
    assert planner.algorithm_plan("split", geom, 16).forward == "matmul"  # split cannot express stride 2
    assert planner.estimate(geom, 16, "float32", "cpu") == planner.algorithm_plan("matmul", geom, 16)


def test_large_tiling_kernels_leave_matmul():
    """FCN-8s' k16 s8 and FCN-32s' k64 s32 run phase (k > s); PyTorch's 3d k16 s16 test layer
    (k = s) runs tiled: one GEMM, whatever the kernel size."""
    for x_shape, w_shape, stride in (((1, 21, 64, 64), (21, 21, 16, 16), 8), ((1, 21, 8, 8), (21, 21, 64, 64), 32)):
        plan = jtconv.plan_for(x_shape, w_shape, stride=stride, backend="cpu")
        assert (plan.forward, plan.input_transpose, plan.weight_transpose) == ("phase",) * 3
    plan = jtconv.plan_for((1, 1, 15, 13, 13), (1, 1, 16, 16, 16), stride=16, padding=7, backend="cpu")
    assert (plan.forward, plan.input_transpose, plan.weight_transpose) == ("tiled",) * 3
    assert jtconv.plan_for((16, 128, 16, 16), (128, 64, 4, 4), stride=2, padding=1, backend="cpu").forward == "matmul"


def test_thresholds_use_the_layer_s_dtype_size():
    """37 MiB of float32 tap products run phase; the same layer in bfloat16 (18.5 MiB) stays below the threshold."""
    shape = ((37, 16, 4096), (16, 8, 8))
    assert jtconv.plan_for(*shape, stride=4, padding=2, dtype="float32", backend="cpu").forward.startswith("phase")
    assert jtconv.plan_for(*shape, stride=4, padding=2, dtype="bfloat16", backend="cpu").forward == "matmul"


def test_every_threshold_is_documented():
    for name, rule in planner.THRESHOLDS.items():
        assert rule.value > 0 and rule.unit and rule.measures and rule.evidence.startswith("python benchmarks/"), name


def test_no_kernel_falls_between_the_kernel_rules():
    """(3, 5) is a small kernel (not every axis has 5 taps), like (3, 3)."""
    mixed = make_geometry((8, 16, 64, 64), (16, 16, 3, 5), padding=(1, 2))
    small = make_geometry((8, 16, 64, 64), (16, 16, 3, 3), padding=1)
    assert planner.xla_convolutions_win(mixed, 8, 4) == planner.xla_convolutions_win(small, 8, 4) is True


def test_vmap_over_weights_adapts_a_split_plan():
    """Stacked weights fold into groups, which split cannot express: the folded layer takes split's fallbacks."""
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    ws = np.random.default_rng(1).standard_normal((3, 4, 3, 5, 5)).astype(np.float32)
    plan = jtconv.plan_for(x.shape, ws.shape[1:], padding=2, algorithm="split")
    assert plan.forward == "split"
    got = jax.vmap(lambda w: jtconv.conv_transpose(x, w, padding=2, algorithm=plan))(ws)
    for b in range(3):
        _close(got[b], TORCH_FN[2](torch.tensor(x), torch.tensor(ws[b]), padding=2).numpy())
    geom = make_geometry((2, 12, 6, 6), (12, 3, 5, 5), padding=2, groups=3)
    assert methods.adapt(plan, geom) == plan.replace(
        forward="matmul", input_transpose="gemm", weight_transpose="gemm", gemm_layout="weight_copy"
    )


def test_registry_records_fill_their_roles():
    for name, record in methods.METHODS.items():
        assert record.name == name and record.summary
        assert any(record.fills(role) for role in methods.ROLES)
        for role, fallback in record.fallback.items():
            assert methods.METHODS[fallback].fills(role)
    assert set(methods.FORWARD_METHODS) == {"matmul", "split", "phase", "phase-conv", "tiled", "xla"}
    assert set(methods.WEIGHT_TRANSPOSE_METHODS) - set(methods.INPUT_TRANSPOSE_METHODS) == {"xla-wgrad"}


def test_combinations_cover_the_cross_product():
    x_shape, w_shape, kwargs = LAYERS[1]
    geom = make_geometry(x_shape, w_shape, **kwargs)
    plans = jtconv.candidate_plans(x_shape, w_shape, **kwargs)
    expected = set(itertools.product(*(methods.methods_for(role, geom) for role in methods.ROLES)))
    assert {(p.forward, p.input_transpose, p.weight_transpose) for p in plans} == expected
    assert len(plans) == len(expected)


def test_plan_values_of_the_wrong_kind():
    geom = jtconv.make_geometry((1, 4, 5), (4, 2, 3), stride=2)
    with pytest.raises(ValueError, match="role must be one of"):
        methods.methods_for("backward", geom)
    with pytest.raises(TypeError, match="must be a dict"):
        Plan.from_dict("forward=matmul")
    with pytest.raises(TypeError, match="algorithm must be a str, a Plan or a dict"):
        planner.validate(("matmul", "gemm", "gemm"), geom)
    with pytest.raises(ValueError, match="gemm_layout must be None or one of"):
        Plan("matmul", "gemm", "gemm", gemm_layout="sideways")
    x, w = jnp.ones((1, 4, 5)), jnp.ones((4, 2, 3))
    with pytest.raises(ValueError, match=r"unknown Plan fields \['speed'\]"):
        jtconv.conv_transpose(x, w, stride=2, algorithm={"speed": "fast"})
