"""Operand dtypes as torch's CPU functional has them (jtconv.operand_types):
floating operands, or int64 input and weight computed exactly; every other
integer or boolean operand refused with a TypeError naming it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jtconv

FUNCTIONS = {1: jtconv.conv_transpose1d, 2: jtconv.conv_transpose2d, 3: jtconv.conv_transpose3d}
TORCH = {
    1: torch.nn.functional.conv_transpose1d,
    2: torch.nn.functional.conv_transpose2d,
    3: torch.nn.functional.conv_transpose3d,
}
REFUSED = ["int32", "int16", "int8", "uint8", "bool"]

# (x shape, w shape, keywords): strided, dilated, grouped, depthwise, 3d, a large kernel
INT64_LAYERS = [
    ((2, 3, 5, 5), (3, 4, 3, 3), dict(stride=2, padding=1)),
    ((2, 4, 7), (4, 2, 3), dict(stride=3, dilation=2, output_padding=1)),
    ((2, 4, 3, 4, 4), (4, 2, 2, 2, 2), dict(stride=2)),
    ((2, 6, 6, 6), (6, 1, 4, 4), dict(stride=2, padding=1, groups=6)),
    ((2, 6, 6, 6), (6, 3, 5, 5), dict(padding=2, groups=2)),
    ((1, 2, 8, 8), (2, 2, 16, 16), dict(stride=8, padding=4)),
]


def _operands(ndim: int, x_dtype: str, w_dtype: str):
    return jnp.ones((1, 2) + (3,) * ndim, x_dtype), jnp.ones((2, 3) + (2,) * ndim, w_dtype)


@pytest.mark.parametrize("algorithm", ("auto",) + jtconv.ALGORITHMS)
@pytest.mark.parametrize("x_shape, w_shape, kwargs", INT64_LAYERS)
def test_int64_is_computed_exactly_like_torch(x_shape, w_shape, kwargs, algorithm):
    rng = np.random.default_rng(0)
    x, w, bias = rng.integers(-9, 9, x_shape), rng.integers(-9, 9, w_shape), rng.integers(-9, 9, (w_shape[1],))
    bias = np.tile(bias, kwargs.get("groups", 1))
    ndim = len(x_shape) - 2
    expected = TORCH[ndim](torch.tensor(x), torch.tensor(w), torch.tensor(bias), **kwargs).numpy()
    assert expected.dtype == np.int64
    with jax.enable_x64(True):
        got = jax.jit(lambda x, w, b: jtconv.conv_transpose(x, w, b, algorithm=algorithm, **kwargs))(x, w, bias)
        assert got.dtype == jnp.int64
        np.testing.assert_array_equal(np.asarray(got), expected)


def test_int64_beyond_float_precision_stays_exact():
    x, w = np.array([[[2**40 + 1, 3]]], np.int64), np.array([[[3, 5]]], np.int64)
    expected = torch.nn.functional.conv_transpose1d(torch.tensor(x), torch.tensor(w)).numpy()
    with jax.enable_x64(True):
        np.testing.assert_array_equal(np.asarray(jtconv.conv_transpose1d(x, w)), expected)


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("dtype", REFUSED)
@pytest.mark.parametrize("operand", ["input", "weight"])
def test_other_integer_operands_are_refused_naming_them(ndim, dtype, operand):
    x, w = _operands(ndim, dtype if operand == "input" else "float32", dtype if operand == "weight" else "float32")
    pattern = rf"^{operand} has dtype {dtype} .*: torch's conv_transpose computes floating-point dtypes, and int64"
    for call in (FUNCTIONS[ndim], jax.jit(FUNCTIONS[ndim]), jtconv.conv_transpose):
        with pytest.raises(TypeError, match=pattern):
            call(x, w)


@pytest.mark.parametrize("dtype", REFUSED)
def test_torch_refuses_the_same_operands(dtype):
    """The oracle for the rule above."""
    x, w = torch.ones((1, 2, 3, 3)), torch.ones((2, 3, 2, 2))
    as_int = getattr(torch, dtype)
    for pair in [(x.to(as_int), w), (x, w.to(as_int)), (x.to(as_int), w.to(as_int))]:
        with pytest.raises((RuntimeError, NotImplementedError)):
            torch.nn.functional.conv_transpose2d(*pair)


def test_int64_mixed_with_a_floating_operand_is_refused_like_torch():
    with pytest.raises(RuntimeError):
        torch.nn.functional.conv_transpose2d(torch.ones((1, 2, 3, 3), dtype=torch.int64), torch.ones((2, 3, 2, 2)))
    with jax.enable_x64(True):
        x, w = _operands(2, "int64", "float32")
        with pytest.raises(TypeError, match=r"^weight has dtype float32 \(input int64, weight float32\)"):
            jtconv.conv_transpose2d(x, w)
        x, w = _operands(2, "int64", "int64")
        for dtype in ["float32", "int32"]:
            with pytest.raises(TypeError, match=rf"^bias must be int64 like the int64 input and weight, got {dtype}"):
                jtconv.conv_transpose3d(x[..., None], w[..., None], jnp.ones(3, dtype))
    x3, w3 = torch.ones((1, 2, 3, 3, 3), dtype=torch.int64), torch.ones((2, 3, 2, 2, 2), dtype=torch.int64)
    with pytest.raises(RuntimeError):  # torch's 3d kernel refuses a narrower integer bias
        torch.nn.functional.conv_transpose3d(x3, w3, torch.ones(3, dtype=torch.int32))


def test_without_x64_an_int64_array_becomes_int32_and_the_error_says_how_to_enable_it():
    assert not jax.config.jax_enable_x64
    x, w = np.ones((1, 2, 3, 3), np.int64), np.ones((2, 3, 2, 2), np.int64)
    assert jnp.asarray(x).dtype == jnp.int32
    with pytest.raises(TypeError, match=r"^input has dtype int32 .*jax_enable_x64"):
        jtconv.conv_transpose2d(x, w)


def test_an_integer_bias_with_floating_operands_is_refused():
    """torch's oneDNN path (a batch of 2 here) refuses an integer bias; jtconv does whatever the batch."""
    x, w = torch.ones((2, 3, 4, 4)), torch.ones((3, 2, 3, 3))
    for dtype in ["int32", "int16", "bool"]:
        with pytest.raises(RuntimeError, match="bias type"):
            torch.nn.functional.conv_transpose2d(x, w, torch.ones(2, dtype=getattr(torch, dtype)), stride=2)
        for batch in (1, 2):
            with pytest.raises(TypeError, match=rf"^bias must have a floating-point dtype .* got {dtype}\b"):
                jtconv.conv_transpose2d(jnp.ones((batch, 3, 4, 4)), jnp.ones((3, 2, 3, 3)), jnp.ones(2, dtype))


def test_floating_operands_are_accepted():
    for dtype in ["float32", "bfloat16", "float16"]:
        x, w = _operands(2, dtype, dtype)
        assert jtconv.conv_transpose2d(x, w, stride=2).dtype == jnp.dtype(dtype)
    x, w = _operands(2, "float32", "bfloat16")
    assert jtconv.conv_transpose2d(x, w, stride=2).dtype == jnp.float32  # JAX's promotion
