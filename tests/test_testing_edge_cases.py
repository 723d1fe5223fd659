"""jtconv.testing: the report and failure branches of check_config and
compare_with_torch that the main tests do not reach."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jtconv
from jtconv import testing

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
