"""jtconv.testing: assert_matches_torch passes correct functions and catches wrong ones, reports readably, handles
pytrees and whole models; the float64 referee; the configuration helpers and check_config's verdicts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax

import jtconv
from jtconv import testing

KW = dict(stride=2, padding=1, output_padding=1)


def _inputs(seed=0, x_shape=(2, 3, 4, 5), w_shape=(3, 2, 3, 4)):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)


def torch_ct(x, w):
    return torch.nn.functional.conv_transpose2d(x, w, **KW)


def correct(x, w):
    return jtconv.conv_transpose(x, w, **KW)


def _direct_conv(x, w, low, high):
    """Stride-1 conv over the zero-inserted input with explicit (low, high) padding."""
    w = jnp.flip(jnp.swapaxes(w, 0, 1), axis=(2, 3))
    return lax.conv_general_dilated(x, w, (1, 1), list(zip(low, high)), lhs_dilation=(2, 2))


def wrong_padding_convention(x, w):
    """Pads by ``p`` like a forward convolution instead of cropping ``p``: bigger output."""
    k = w.shape[2:]
    return _direct_conv(x, w, [kk - 1 + 1 for kk in k], [kk - 1 + 1 + 1 for kk in k])


def output_padding_on_the_wrong_side(x, w):
    """Same shape as torch, but output_padding added at the low end."""
    k = w.shape[2:]
    return _direct_conv(x, w, [kk - 1 - 1 + 1 for kk in k], [kk - 1 - 1 for kk in k])


def flipped_kernel(x, w):
    return jtconv.conv_transpose(x, jnp.flip(w, axis=(2, 3)), **KW)


def off_by_one_output_padding(x, w):
    return jtconv.conv_transpose(x, w, stride=2, padding=1, output_padding=0)


def test_correct_function_passes_with_gradients():
    comparison = testing.assert_matches_torch(correct, torch_ct, *_inputs(), grads=True)
    assert [leaf.name for leaf in comparison.leaves] == ["output[0]", "grad[0]", "grad[1]"]
    assert comparison.max_abs_err < 1e-4


@pytest.mark.parametrize(
    "wrong", [wrong_padding_convention, output_padding_on_the_wrong_side, flipped_kernel, off_by_one_output_padding]
)
def test_wrong_functions_raise_assertion_error(wrong):
    with pytest.raises(AssertionError, match="differ") as info:
        testing.assert_matches_torch(wrong, torch_ct, *_inputs())
    same_shape = wrong in (output_padding_on_the_wrong_side, flipped_kernel)
    assert ("shape mismatch" in str(info.value)) != same_shape


def test_report_names_error_location_shapes_and_dtypes():
    with pytest.raises(AssertionError) as info:
        testing.assert_matches_torch(flipped_kernel, torch_ct, *_inputs())
    report = str(info.value)
    assert "max abs error" in report and "at index (" in report
    assert "(2, 2, 8, 11)" in report and "float32" in report
    assert "relative error" in report and "elements outside" in report


def test_shape_mismatch_is_reported():
    with pytest.raises(AssertionError, match="shape mismatch"):
        testing.assert_matches_torch(off_by_one_output_padding, torch_ct, *_inputs())


def test_structure_mismatch_is_reported():
    with pytest.raises(AssertionError, match="output structures differ"):
        testing.assert_matches_torch(lambda x, w: (correct(x, w), correct(x, w)), torch_ct, *_inputs())


def test_tolerance_arguments_are_used():
    def perturbed(x, w):
        return correct(x, w) * (1 + 1e-3)

    with pytest.raises(AssertionError):
        testing.assert_matches_torch(perturbed, torch_ct, *_inputs())
    testing.assert_matches_torch(perturbed, torch_ct, *_inputs(), rtol=2e-3)
    testing.assert_matches_torch(perturbed, torch_ct, *_inputs(), rtol=0, atol=1.0)


def test_whole_model_with_parameter_pytree_and_pytree_outputs():
    """A two-layer decoder as a function of (params, z): dict inputs, tuple+dict outputs,
    gradients for every parameter; an integer input passes through unchanged."""
    rng = np.random.default_rng(3)
    params = {
        "w1": rng.standard_normal((8, 4, 4, 4)).astype(np.float32) * 0.2,
        "b1": rng.standard_normal(4).astype(np.float32),
        "w2": rng.standard_normal((4, 1, 3, 3)).astype(np.float32) * 0.2,
    }
    z = rng.standard_normal((2, 8, 3, 3)).astype(np.float32)
    repeats = np.array(2)

    def jax_model(params, z, repeats):
        h = jax.nn.relu(jtconv.conv_transpose2d(z, params["w1"], params["b1"], 2, 1))
        y = jtconv.conv_transpose2d(h, params["w2"], None, 1, 1)
        return y, {"hidden": h, "scaled": y * repeats}

    def torch_model(params, z, repeats):
        h = torch.relu(torch.nn.functional.conv_transpose2d(z, params["w1"], params["b1"], 2, 1))
        y = torch.nn.functional.conv_transpose2d(h, params["w2"], None, 1, 1)
        return y, {"hidden": h, "scaled": y * repeats}

    comparison = testing.assert_matches_torch(jax_model, torch_model, params, z, repeats, grads=True)
    assert len([leaf for leaf in comparison.leaves if leaf.name.startswith("grad")]) == 4  # b1, w1, w2, z
    with pytest.raises(AssertionError):
        testing.assert_matches_torch(
            lambda p, z, r: jax_model({**p, "b1": p["b1"] + 1e-2}, z, r), torch_model, params, z, repeats, grads=True
        )


def test_numpy_inputs_reach_both_frameworks_unchanged():
    seen = {}

    def jax_fn(x):
        seen["jax"] = type(x)
        return x * 2

    def torch_fn(x):
        seen["torch"] = type(x)
        return x * 2

    testing.assert_matches_torch(jax_fn, torch_fn, np.arange(6, dtype=np.float32).reshape(2, 3), jit=False)
    assert issubclass(seen["jax"], jax.Array) and seen["torch"] is torch.Tensor


def test_check_config_catches_missing_validation(monkeypatch):
    """The 'torch rejects → jtconv raises ValueError' check can fail: a jtconv
    stand-in that skips validation is caught, and so is a ValueError from XLA/lax."""
    config = testing.ConvTransposeConfig((1, 2, 5, 5), (2, 1, 3, 3), stride=2, output_padding=2)
    assert testing.check_config(config).passed

    def unvalidated(config, algorithm="auto", precision=None):
        return lambda x, w, b=None: lax.conv_general_dilated(x, w, (1, 1), "VALID")

    monkeypatch.setattr(testing, "jtconv_conv_transpose", unvalidated)
    result = testing.check_config(config)
    assert result.expected == "rejection" and not result.passed

    def lax_error(config, algorithm="auto", precision=None):
        return lambda x, w, b=None: lax.conv_general_dilated(x, w, (0, 0), "VALID")

    monkeypatch.setattr(testing, "jtconv_conv_transpose", lax_error)
    result = testing.check_config(config)
    assert not result.passed and "outside jtconv" in result.report()


def test_check_config_runs_the_measured_plan_and_auto_is_the_estimate(quick_measurements, monkeypatch):
    config = testing.named_configs()[1]
    monkeypatch.setenv("JTCONV_PLANNING", "measure")
    assert testing.check_config(config, algorithm="auto", grads=True).passed
    assert quick_measurements == []  # "auto" is the estimate whatever the planning mode in force
    monkeypatch.delenv("JTCONV_PLANNING")
    assert testing.check_config(config, algorithm="measure", grads=True).passed
    assert len(quick_measurements) == 1 and '"groups":4' in quick_measurements[0].key
    assert testing.planned("measure") == ("auto", "measure")
    assert testing.planned("auto") == ("auto", "estimate") and testing.planned("xla") == ("xla", "estimate")


def test_check_config_runs_a_plan_text():
    config = testing.named_configs()[2]  # 1d stride 2: phase can express it
    text = "forward=phase  dx=phase  dw=phase  waits=no  stores=no"
    jaxpr = jax.make_jaxpr(testing.jtconv_conv_transpose(config, text))(*testing.make_inputs(config))
    assert text in str(jaxpr)
    assert testing.check_config(config, algorithm=text, grads=True).passed
    unsupported = testing.check_config(testing.named_configs()[0], algorithm=text)
    assert not unsupported.passed and "Plan.forward='phase' does not support this layer" in unsupported.jtconv_error


def test_config_json_round_trip_and_label():
    configs = testing.sweep_configs(40, seed=1)
    for config in configs:
        assert testing.ConvTransposeConfig.from_json(config.to_json()) == config
    config = testing.ConvTransposeConfig((1, 4, 5, 5), (4, 2, 3, 3), stride=2, padding=1, groups=4, bias_shape=(8,))
    assert config.label() == "2d x(1,4,5,5) w(4,2,3,3) s=2 p=1 g=4 +b"


def test_make_inputs_rounds_once_for_both_frameworks():
    config = testing.ConvTransposeConfig((1, 2, 3), (2, 1, 2), bias_shape=(1,))
    x, w, b = testing.make_inputs(config, "bfloat16")
    assert x.dtype == jnp.bfloat16 and w.shape == (2, 1, 2) and b.shape == (1,)
    assert torch.equal(testing._to_torch(x, "cpu").float(), torch.from_numpy(x.astype(np.float32)))


def test_full_precision_disables_tf32_and_restores():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with testing.full_precision():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert jax.config.jax_default_matmul_precision == "highest"
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


# --- constants, sibling scales, float64, messages ----------------------------------------------


def _batch_norm_model():
    rng = np.random.default_rng(7)
    params = {
        "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3,
        "scale": 1 + 0.1 * rng.standard_normal(3).astype(np.float32),
        "bias": 0.1 * rng.standard_normal(3).astype(np.float32),
    }
    stats = {"mean": 0.1 * rng.standard_normal(3).astype(np.float32), "var": 0.5 + rng.random(3).astype(np.float32)}
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)

    def jax_fn(variables, x):
        p, s = variables["params"], variables["batch_stats"]
        y = jtconv.conv_transpose2d(x, p["w"], stride=2)
        shape = (1, -1, 1, 1)
        normed = (y - s["mean"].reshape(shape)) / jnp.sqrt(s["var"].reshape(shape) + 1e-5)
        return normed * p["scale"].reshape(shape) + p["bias"].reshape(shape)

    def torch_fn(variables, x):
        p, s = variables["params"], variables["batch_stats"]
        y = torch.nn.functional.conv_transpose2d(x, p["w"], stride=2)
        return torch.nn.functional.batch_norm(y, s["mean"], s["var"], p["scale"], p["bias"], training=False, eps=1e-5)

    return jax_fn, torch_fn, params, stats, x


def test_constant_inputs_are_not_differentiated_on_either_side():
    jax_fn, torch_fn, params, stats, x = _batch_norm_model()
    with pytest.raises(RuntimeError, match="not differentiable"):  # what torch says without constants
        testing.assert_matches_torch(jax_fn, torch_fn, {"params": params, "batch_stats": stats}, x, grads=True)
    comparison = testing.assert_matches_torch(
        jax_fn, torch_fn, {"params": params, "batch_stats": testing.constant(stats)}, x, grads=True
    )
    paths = [leaf.path for leaf in comparison.leaves if leaf.name.startswith("grad")]
    assert paths == ["input[0]['params']['bias']", "input[0]['params']['scale']", "input[0]['params']['w']", "input[1]"]
    # A wrong statistic on the JAX side is still caught, in the outputs.
    wrong = {**stats, "mean": stats["mean"] + 1e-2}
    with pytest.raises(AssertionError, match=r"first output\[0\]"):
        testing.assert_matches_torch(
            lambda v, x: jax_fn({"params": v["params"], "batch_stats": wrong}, x),
            torch_fn,
            {"params": params, "batch_stats": testing.constant(stats)},
            x,
            grads=True,
        )


def _bias_before_instance_norm():
    """A conv bias followed by an affine-free InstanceNorm: its gradient is analytically 0,
    so both sides return rounding noise."""
    rng = np.random.default_rng(11)
    params = {
        "up": {
            "kernel": rng.standard_normal((3, 4, 3, 3)).astype(np.float32),
            "bias": rng.standard_normal(4).astype(np.float32),
        }
    }
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)

    def jax_fn(params, x):
        y = jtconv.conv_transpose2d(x, params["up"]["kernel"], params["up"]["bias"], stride=2)
        mean = y.mean(axis=(2, 3), keepdims=True)
        return (y - mean) / jnp.sqrt(y.var(axis=(2, 3), keepdims=True) + 1e-5)

    def torch_fn(params, x):
        y = torch.nn.functional.conv_transpose2d(x, params["up"]["kernel"], params["up"]["bias"], stride=2)
        return torch.nn.functional.instance_norm(y, eps=1e-5)

    return jax_fn, torch_fn, params, x


def test_gradient_tolerance_is_relative_to_sibling_gradients():
    jax_fn, torch_fn, params, x = _bias_before_instance_norm()
    comparison = testing.assert_matches_torch(jax_fn, torch_fn, params, x, grads=True)
    bias = comparison.leaf("input[0]['up']['bias']")
    kernel = comparison.leaf("input[0]['up']['kernel']")
    assert bias.scale < 1e-3 * kernel.scale  # rounding noise only
    assert bias.sibling_scale == kernel.scale and bias.reference_scale == kernel.scale
    assert comparison.leaf("input[1]").sibling_scale == 0.0  # top-level inputs have no siblings
    own_only = testing.compare_with_torch(jax_fn, torch_fn, params, x, grads=True, sibling_scale=False)
    assert not own_only.leaf("input[0]['up']['bias']").passed
    assert "siblings' max|torch|" in bias.report()


def test_float64_compares_gradients_away_from_relu_kinks():
    """(a + b) + c and (a + c) + b are both right, but in float32 one rounds to 0 and the
    other to 3e-8: ReLU's derivative flips at that element. float64 keeps both at 3e-8."""
    a = np.array([1.0, 0.5], np.float32)
    b = np.array([3e-8, 0.25], np.float32)
    c = np.array([-1.0, 0.5], np.float32)

    def jax_fn(a, b, c):
        return jax.nn.relu((a + b) + c)

    def torch_fn(a, b, c):
        return torch.relu((a + c) + b)

    with pytest.raises(AssertionError) as info:
        testing.assert_matches_torch(jax_fn, torch_fn, a, b, c, grads=True)
    first_line = str(info.value).splitlines()[0]
    assert "first grad[0] (input[0])" in first_line and "at (0,)" in first_line and "allowed" in first_line
    comparison = testing.assert_matches_torch(jax_fn, torch_fn, a, b, c, grads=True, float64=True)
    assert {leaf.jax_dtype for leaf in comparison.leaves} == {"float64"}
    assert not jax.config.jax_enable_x64


def test_report_names_the_output_path_and_the_tolerance():
    def jax_fn(x):
        return {"a": x * 2, "b": (x + 1, x * 3)}

    def torch_fn(x):
        return {"a": x * 2, "b": (x + 1, x * 3.001)}

    with pytest.raises(AssertionError) as info:
        testing.assert_matches_torch(jax_fn, torch_fn, np.arange(4, dtype=np.float32))
    report = str(info.value)
    assert report.splitlines()[0].startswith(
        "JAX and torch results differ: 1 of 3 compared arrays outside tolerance, first output[2] (output['b'][1])"
    )
    assert "max abs error 0.003 at index (3,): jax 9.0 vs torch 9.003" in report
    assert "allowed 9e-05 (atol 0 + rtol 1e-05 · 9)" in report


# --- the float64 referee -----------------------------------------------------------------------


def _rounded_through_bfloat16(y):
    """A float32 result rounded to bfloat16 and back: a kernel whose float32 path is sloppy
    while its float64 path is exact (float64 passes unchanged)."""
    if isinstance(y, torch.Tensor):
        return y.to(torch.bfloat16).to(y.dtype) if y.dtype == torch.float32 else y
    return y.astype(jnp.bfloat16).astype(y.dtype) if y.dtype == jnp.float32 else y


class SloppyConvTranspose2d(torch.nn.ConvTranspose2d):
    def forward(self, x):
        return _rounded_through_bfloat16(super().forward(x))


def test_referee_passes_a_torch_side_whose_float32_rounding_is_off():
    torch.manual_seed(0)
    module = SloppyConvTranspose2d(3, 2, (3, 4), **KW)
    w, b = (p.detach().numpy() for p in (module.weight, module.bias))

    def jax_fn(x):
        return jtconv.conv_transpose2d(x, w.astype(x.dtype), b.astype(x.dtype), **KW)

    x = _inputs()[0]
    with pytest.raises(AssertionError, match="differ"):
        testing.assert_matches_torch(jax_fn, module, x, grads=True, referee=False)
    comparison = testing.assert_matches_torch(jax_fn, module, x, grads=True)
    assert [leaf.name for leaf in comparison.refereed] == ["output[0]", "grad[0]"]
    for leaf in comparison.refereed:
        assert leaf.mismatched > 0 and leaf.referee.verdict == "torch"
        assert leaf.referee.jtconv_error <= leaf.tolerance < leaf.referee.torch_error
        assert leaf.referee.float64_error <= leaf.referee.float64_tolerance
    assert comparison.report().startswith(
        "JAX and torch results match (2 of 2 compared arrays by the float64 referee: torch's float32 rounding is off)"
    )
    assert module.weight.dtype == torch.float32  # the float64 run used a copy


def test_referee_blames_a_jax_side_whose_float32_rounding_is_off():
    def sloppy(x, w):
        return _rounded_through_bfloat16(correct(x, w))

    comparison = testing.compare_with_torch(sloppy, torch_ct, *_inputs(), grads=True)
    assert not comparison.passed
    assert {leaf.referee.verdict for leaf in comparison.leaves} == {"jtconv"}
    with pytest.raises(AssertionError) as info:
        testing.assert_matches_torch(sloppy, torch_ct, *_inputs())
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith("JAX and torch results differ: 1 of 1 compared arrays outside tolerance")
    assert "; float64 referee: jtconv is off (jtconv beyond 2 × torch's error + tolerance = " in first_line


def test_referee_reports_a_real_difference_when_the_float64_runs_disagree():
    comparison = testing.compare_with_torch(flipped_kernel, torch_ct, *_inputs(), grads=True)
    assert not comparison.passed
    assert {leaf.referee.verdict for leaf in comparison.leaves} == {"float64"}
    assert (
        comparison.report()
        .splitlines()[0]
        .endswith("float64 referee: the float64 runs differ too: a real difference, not rounding")
    )


def test_referee_that_cannot_run_in_float64_leaves_the_failure():
    weight = torch.ones(3, 2)

    def torch_fn(x):  # closes over a float32 tensor: no float64 run
        return _rounded_through_bfloat16(x @ weight)

    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3) / 3
    comparison = testing.compare_with_torch(lambda x: x @ jnp.ones((3, 2), x.dtype), torch_fn, x)
    assert not comparison.passed and comparison.leaves[0].referee is None
    assert "float64 referee could not run: RuntimeError: " in comparison.report()


@pytest.mark.parametrize(
    "jtconv_error, float64_error, verdict",
    [(5.0, 0.0, "torch"), (5.0 + 1e-9, 0.0, "jtconv"), (0.0, 2e-12, "float64")],
)
def test_referee_factor_and_float64_agreement(jtconv_error, float64_error, verdict):
    referee = testing.Referee(
        jtconv_error=jtconv_error, torch_error=2.0, float64_error=float64_error, float64_tolerance=1e-12, tolerance=1.0
    )
    assert testing.REFEREE_FACTOR == 2 and referee.allowed == 5.0
    assert referee.verdict == verdict and referee.passed == (verdict == "torch")


def test_half_precision_reference_computes_float64_in_float64():
    third = testing._computed_in_float32(lambda x: x / 3)
    assert third(torch.tensor([1.0], dtype=torch.float64)).item() == 1 / 3
    assert third(torch.tensor([1.0], dtype=torch.bfloat16)).dtype == torch.bfloat16


# --- check_config's verdicts and reports, comparisons of unusual outputs -----------------------------

VALID = testing.ConvTransposeConfig((1, 2, 3), (2, 1, 2), stride=2, bias_shape=(1,))
REJECTED = testing.ConvTransposeConfig((1, 2, 5, 5), (2, 1, 3, 3), stride=2, output_padding=2)


def test_break_rule_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match=r"kind must be one of \(.*\), got 'nope'"):
        testing.break_rule(VALID, np.random.default_rng(0), kind="nope")


def test_empty_batch_counts_as_rejected_when_a_batch_of_one_is():
    config = testing.ConvTransposeConfig((0, 4, 5, 5), (4, 2, 3, 3), dilation=0)
    assert testing._torch_error(config, testing.make_inputs(config)) is None  # torch skips the checks
    error = testing.torch_rejection(config)
    assert isinstance(error, RuntimeError) and "dilation should be greater than zero" in str(error)
    result = testing.check_config(config)
    assert result.expected == "rejection" and result.passed


def test_config_result_reports():
    passing = testing.check_config(VALID)
    assert passing.passed and passing.report() == f"{VALID.label()}: matches torch"
    rejected = testing.check_config(REJECTED)
    assert rejected.passed and rejected.report().startswith(f"{REJECTED.label()}: both reject (torch: ")


def raising(error: Exception):
    """A stand-in for ``testing.jtconv_conv_transpose`` whose layers raise ``error``."""

    def build(config, algorithm="auto", precision=None):
        def forward(x, w, b=None):
            raise error

        return forward

    return build


def test_check_config_of_a_valid_config_jtconv_refuses(monkeypatch):
    monkeypatch.setattr(testing, "jtconv_conv_transpose", raising(ValueError("refused\nsecond line")))
    result = testing.check_config(VALID)
    assert result.expected == "values" and not result.passed and result.comparison is None
    assert result.jtconv_error == "ValueError: refused"
    assert result.report() == f"{VALID.label()}: torch accepts but jtconv raised ValueError: refused"


def test_check_config_of_a_rejected_config_that_jtconv_accepts_or_fails_otherwise(monkeypatch):
    def accepts(config, algorithm="auto", precision=None):
        return lambda x, w, b=None: x

    monkeypatch.setattr(testing, "jtconv_conv_transpose", accepts)
    result = testing.check_config(REJECTED)
    assert result.expected == "rejection" and not result.passed and result.jtconv_error == "no error"
    assert "jtconv did not raise ValueError" in result.report()

    monkeypatch.setattr(testing, "jtconv_conv_transpose", raising(TypeError("wrong type")))
    result = testing.check_config(REJECTED)
    assert not result.passed and result.jtconv_error == "TypeError: wrong type"
    assert result.torch_error and "jtconv did not raise ValueError" in result.report()


def test_assert_config_matches_torch_raises_the_report(monkeypatch):
    testing.assert_config_matches_torch(VALID)

    def doubled(config, algorithm="auto", precision=None):
        kwargs = config.jtconv_kwargs()
        return lambda x, w, b=None: 2 * jtconv.conv_transpose(x, w, b, **kwargs)

    monkeypatch.setattr(testing, "jtconv_conv_transpose", doubled)
    with pytest.raises(AssertionError, match=r"JAX and torch results differ: 1 of 1 compared arrays outside tolerance"):
        testing.assert_config_matches_torch(VALID)


def test_raised_by_jtconv_needs_a_traceback():
    assert testing._raised_by_jtconv(ValueError("never raised")) is False
    try:
        jtconv.conv_transpose(jnp.zeros((1, 2, 3)), jnp.zeros((2, 1, 2)), stride=0)
    except ValueError as error:
        assert testing._raised_by_jtconv(error)
    else:
        pytest.fail("stride=0 was accepted")


def test_comparison_of_empty_outputs_and_its_report():
    x = np.zeros((2, 0), np.float32)
    comparison = testing.compare_with_torch(lambda x: x * 2, lambda x: x * 2, x)
    assert comparison.passed and comparison.max_relative_err == 0.0 and comparison.max_abs_err == 0.0
    report = comparison.report()
    assert report.splitlines()[0] == "JAX and torch results match"
    assert "(empty arrays)" in report


def test_max_relative_err_spans_outputs_and_gradients():
    x = np.array([1.0, -2.0, 4.0], np.float32)
    comparison = testing.compare_with_torch(lambda x: x * 3, lambda x: x * 3, x, grads=True)
    assert comparison.passed and [leaf.name for leaf in comparison.leaves] == ["output[0]", "grad[0]"]
    assert comparison.max_relative_err == 0.0
    off = testing.compare_with_torch(lambda x: x * 3 + 1, lambda x: x * 3, x, grads=True)
    assert off.max_relative_err == 1 / 12 and off.leaf("output[0]").relative_error == 1 / 12


def test_torch_side_without_gradient_has_zero_gradients():
    x = np.array([1.0, 2.0], np.float32)
    comparison = testing.compare_with_torch(lambda x: x * 0, lambda x: torch.zeros(2), x, grads=True)
    assert comparison.passed
    gradient = comparison.leaf("grad[0]")
    assert gradient.scale == 0.0 and gradient.max_abs_err == 0.0


def test_numpy_outputs_integer_dtypes_and_non_array_inputs():
    x = np.array([1.5, -2.5, 3.0], np.float32)

    def jax_fn(x, factor, name):
        assert name == "label" and factor == 3
        return (x * factor).astype(jnp.int32)

    def torch_fn(x, factor, name):
        assert name == "label" and factor == 3
        return (x * factor).numpy().astype(np.int32)

    comparison = testing.compare_with_torch(jax_fn, torch_fn, x, 3, "label")
    leaf = comparison.leaf("output[0]")
    assert comparison.passed and leaf.jax_dtype == "int32" and leaf.torch_dtype == "int32"
    assert leaf.rtol == testing.relative_tolerance(np.float32)
    assert testing._lower_precision("int32", "bool") == np.float32
    assert testing._lower_precision("int32", "float16") == np.float16
