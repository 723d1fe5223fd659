"""Sizes, padding definitions and argument errors, against torch where torch has them; the hint for a
Flax-layout kernel."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import jtconv
from jtconv import testing
from jtconv.geometry import normalize_tuple
from jtconv.interop import kernel_from_flax_layout

import tiers

ALGORITHMS = jtconv.ALGORITHMS


@settings(max_examples=200, deadline=None)
@given(
    i=st.integers(1, 9),
    k=st.integers(1, 5),
    s=st.integers(1, 4),
    d=st.integers(1, 3),
    p=st.integers(0, 6),
    op_fraction=st.floats(0, 0.999),
)
def test_output_size_formula_matches_torch_shapes(i, k, s, d, p, op_fraction):
    op = int(op_fraction * max(s, d))
    expected = (i - 1) * s - 2 * p + d * (k - 1) + op + 1
    assert jtconv.output_size(i, k, s, p, op, d) == expected
    assert jtconv.output_size((i, i), (k, 1), (s, 1), (p, 0), (op, 0), (d, 1)) == (expected, i)
    if expected >= 1:
        y = torch.nn.functional.conv_transpose1d(
            torch.zeros(1, 1, i, dtype=torch.float64),
            torch.zeros(1, 1, k, dtype=torch.float64),
            stride=s,
            padding=p,
            output_padding=op,
            dilation=d,
        )
        assert y.shape[-1] == expected


@pytest.mark.parametrize("i, k, s, p, d", [(4, 3, 2, 1, 1), (5, 4, 3, 2, 1), (3, 2, 2, 0, 3), (2, 3, 4, 4, 2)])
def test_output_padding_for_size_matches_torch_output_size(i, k, s, p, d):
    module = torch.nn.ConvTranspose1d(1, 1, k, stride=s, padding=p, dilation=d, bias=False)
    x = torch.randn(1, 1, i)
    smallest = jtconv.output_size(i, k, s, p, 0, d)
    for target in range(smallest, smallest + s):
        op = jtconv.output_padding_for_size(target, i, k, s, p, d)
        assert jtconv.output_size(i, k, s, p, op, d) == target
        assert module(x, output_size=[target]).shape[-1] == target
        assert op == module._output_padding(x, [target], [s], [p], [k], 1, [d])[0]
    for unreachable in (smallest - 1, smallest + s):
        with pytest.raises(ValueError):
            module(x, output_size=[unreachable])
        with pytest.raises(ValueError, match="output_size"):
            jtconv.output_padding_for_size(unreachable, i, k, s, p, d)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_per_side_padding_pairs_crop_the_full_result(algorithm):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    full = np.asarray(jtconv.conv_transpose(x, w, stride=(2, 3), algorithm=algorithm))
    y = np.asarray(jtconv.conv_transpose(x, w, stride=(2, 3), padding=((0, 2), (3, 1)), algorithm=algorithm))
    np.testing.assert_allclose(
        y, full[:, :, 0 : full.shape[2] - 2, 3 : full.shape[3] - 1], rtol=0, atol=1e-5 * np.abs(full).max()
    )
    # Symmetric pairs are torch's padding.
    testing.assert_matches_torch(
        lambda x, w: jtconv.conv_transpose(x, w, stride=(2, 3), padding=((1, 1), (2, 2)), algorithm=algorithm),
        lambda x, w: torch.nn.functional.conv_transpose2d(x, w, stride=(2, 3), padding=(1, 2)),
        x,
        w,
    )


def _adjoint_of_forward_conv(x, w, stride, dilation, padding_mode, out_size):
    """The Keras/TF definition: the transpose of a forward convolution with
    ``padding_mode`` ("SAME"/"VALID") whose input has size ``out_size``."""
    u = np.zeros((x.shape[0], w.shape[1]) + tuple(out_size), x.dtype)

    def forward(u):
        return lax.conv_general_dilated(u, w, stride, padding_mode, rhs_dilation=dilation)

    _, vjp = jax.vjp(forward, u)
    return np.asarray(vjp(x)[0])


@pytest.mark.parametrize(
    *tiers.product(
        {
            "k, s, d": [(3, 2, 1), (4, 2, 1), (1, 3, 1), (2, 3, 1), (3, 1, 2), (5, 3, 1), (2, 2, 2)],
            "algorithm": ALGORITHMS,
        },
        every=("k, s, d",),
    )
)
def test_same_and_valid_padding_are_transposes_of_forward_same_and_valid(k, s, d, algorithm):
    rng = np.random.default_rng(k * 100 + s * 10 + d)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, k, k)).astype(np.float32)
    k_eff = d * (k - 1) + 1
    for mode, out in (("same", (4 * s, 5 * s)), ("valid", (4 * s + max(k_eff - s, 0), 5 * s + max(k_eff - s, 0)))):
        y = np.asarray(jtconv.conv_transpose(x, w, stride=s, dilation=d, padding=mode, algorithm=algorithm))
        assert y.shape == (2, 2) + out, mode
        expected = _adjoint_of_forward_conv(x, w, (s, s), (d, d), mode.upper(), out)
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5 * np.abs(expected).max(), err_msg=mode)
        assert jtconv.output_size((4, 5), k, s, mode, 0, d) == out


ERRORS = [
    # (kwargs, input shape, weight shape, bias shape, message pattern)
    (dict(stride=0), (1, 2, 3, 3), (2, 1, 2, 2), None, "stride"),
    (dict(stride=(1, -1)), (1, 2, 3, 3), (2, 1, 2, 2), None, "stride"),
    (dict(dilation=0), (1, 2, 3, 3), (2, 1, 2, 2), None, "dilation"),
    (dict(padding=-1), (1, 2, 3, 3), (2, 1, 2, 2), None, "padding"),
    (dict(padding=((0, -1), (0, 0))), (1, 2, 3, 3), (2, 1, 2, 2), None, "padding"),
    (dict(padding="full"), (1, 2, 3, 3), (2, 1, 2, 2), None, "padding"),
    (dict(padding=5), (1, 2, 3, 3), (2, 1, 2, 2), None, "output size"),
    (dict(stride=2, output_padding=2), (1, 2, 3, 3), (2, 1, 2, 2), None, "output_padding"),
    (dict(output_padding=-1), (1, 2, 3, 3), (2, 1, 2, 2), None, "output_padding"),
    (dict(output_padding=(1, 0), padding="same", stride=2), (1, 2, 3, 3), (2, 1, 2, 2), None, "output_padding"),
    (dict(groups=3), (1, 2, 3, 3), (2, 1, 2, 2), None, "groups"),
    (dict(groups=0), (1, 2, 3, 3), (2, 1, 2, 2), None, "groups"),
    (dict(), (1, 3, 3, 3), (2, 1, 2, 2), None, "channels"),
    (dict(), (1, 2, 3, 3), (2, 1, 2, 2), (2,), "bias"),
    (dict(), (1, 1, 2, 3, 3), (2, 1, 2, 2), None, "input"),
    (dict(), (1, 2, 0, 3), (2, 1, 2, 2), None, "input"),
    (dict(), (1, 2, 3, 3), (2, 1, 0, 2), None, "kernel"),
    (dict(stride=(1, 2, 3)), (1, 2, 3, 3), (2, 1, 2, 2), None, "stride"),
    (dict(stride=2, padding=1, output_size=(9, 9)), (1, 2, 4, 4), (2, 1, 3, 3), None, "output_size"),
    (dict(output_padding=1, stride=2, output_size=(8, 8)), (1, 2, 4, 4), (2, 1, 3, 3), None, "output_padding"),
    (dict(algorithm="fastest"), (1, 2, 3, 3), (2, 1, 2, 2), None, "algorithm"),
]


@pytest.mark.parametrize(
    "kwargs, x_shape, w_shape, b_shape, pattern", ERRORS, ids=[f"{e[-1]}-{i}" for i, e in enumerate(ERRORS)]
)
def test_invalid_arguments_raise_value_error_naming_the_argument(kwargs, x_shape, w_shape, b_shape, pattern):
    x = np.zeros(x_shape, np.float32)
    w = np.zeros(w_shape, np.float32)
    b = None if b_shape is None else np.zeros(b_shape, np.float32)
    with pytest.raises(ValueError, match=pattern) as eager:
        jtconv.conv_transpose(x, w, b, **kwargs)
    assert testing._raised_by_jtconv(eager.value)
    # Under jit the error comes from tracing, before XLA compiles anything.
    jitted = jax.jit(lambda x, w, b: jtconv.conv_transpose(x, w, b, **kwargs))
    with pytest.raises(ValueError, match=pattern) as traced:
        jitted.trace(x, w, b)
    assert testing._raised_by_jtconv(traced.value)


@pytest.mark.parametrize(
    "fn, ndim", [(jtconv.conv_transpose1d, 1), (jtconv.conv_transpose2d, 2), (jtconv.conv_transpose3d, 3)]
)
def test_fixed_rank_functions_reject_other_weight_ranks(fn, ndim):
    x = np.zeros((1, 2) + (3,) * ndim, np.float32)
    w = np.zeros((2, 1) + (2,) * (ndim + 1), np.float32)
    with pytest.raises(ValueError, match="weight"):
        fn(x, w)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_empty_batch_with_empty_spatial_input_matches_torch(algorithm):
    x = np.zeros((0, 2, 0, 0), np.float32)
    w = np.ones((2, 3, 2, 2), np.float32)
    expected = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w))
    y = jtconv.conv_transpose(x, w, algorithm=algorithm)
    assert y.shape == tuple(expected.shape) == (0, 3, 1, 1)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "x_shape, kwargs, shape",
    [
        ((0, 2, 1, 1), dict(stride=2, padding=1), (0, 3, 0, 0)),
        ((2, 2, 2, 1), dict(stride=2, padding=(3, 1), output_padding=1, dilation=2), (2, 3, 0, 2)),
        ((2, 2, 2), dict(stride=2, padding=2), (2, 3, 0)),
    ],
)
def test_zero_size_outputs_are_empty_like_torch(algorithm, x_shape, kwargs, shape):
    nd = len(x_shape) - 2
    x = np.ones(x_shape, np.float32)
    w = np.ones((2, 3) + (2,) * nd, np.float32)
    torch_fn = getattr(torch.nn.functional, f"conv_transpose{nd}d")
    expected = torch_fn(torch.from_numpy(x), torch.from_numpy(w), **kwargs)
    assert tuple(expected.shape) == shape
    assert jtconv.conv_transpose(x, w, algorithm=algorithm, **kwargs).shape == shape


def test_weight_with_no_input_channels_is_refused():
    with pytest.raises(
        ValueError, match=r"weight.shape\[0\] \(in_channels\) must be >= 1, got weight shape \(0, 2, 3\)"
    ):
        jtconv.conv_transpose(jnp.zeros((1, 0, 3)), jnp.zeros((0, 2, 3)))


def test_a_string_is_not_a_sequence_of_ints():
    with pytest.raises(ValueError, match=r"stride must be an int or a sequence of 2 ints .* got 'ab'"):
        normalize_tuple("ab", 2, "stride")
    assert normalize_tuple([3], 2, "stride") == (3, 3)


def test_geometry_rules_for_shapes_and_sizes():
    x2, w2 = (1, 4, 5, 5), (4, 2, 3, 3)
    assert jtconv.make_geometry(x2, w2, stride=(2,)).stride == (2, 2)  # one value for every axis
    with pytest.raises(ValueError, match="per-side pairs must be 2 pairs"):
        jtconv.make_geometry(x2, w2, padding=((1, 2), (1,)))
    with pytest.raises(ValueError, match="weight must have shape"):
        jtconv.make_geometry((1, 4, 5), (4, 2))
    with pytest.raises(ValueError, match=r"weight.shape\[1\] \(out_channels // groups\) must be >= 1"):
        jtconv.make_geometry((1, 4, 5), (4, 0, 3))
    with pytest.raises(ValueError, match="output_size must have 2 .spatial. or 4 elements"):
        jtconv.make_geometry(x2, w2, stride=2, output_size=(9, 9, 9))


def test_flax_layout_kernel_error_names_the_layout_and_the_converter():
    x = jnp.ones((1, 4, 5, 5))
    flax_kernel = jnp.ones((3, 3, 4, 8))  # (kh, kw, in, out)
    with pytest.raises(ValueError) as raised:
        jtconv.conv_transpose2d(x, flax_kernel, stride=2)
    message = str(raised.value)
    assert message.startswith("input channels (4) must equal weight.shape[0] (in_channels = 3)")
    assert "(*kernel_size, in_features, out_features)" in message
    assert "(in_channels, out_channels // groups, *kernel_size)" in message
    assert "jtconv.interop.kernel_from_flax_layout" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match="kernel_from_flax_layout"):
        jtconv.conv_transpose(jnp.ones((1, 5, 5, 4)), flax_kernel, stride=2, channels_last=True)
    with pytest.raises(ValueError, match="kernel_from_flax_layout"):
        jtconv.conv_transpose1d(jnp.ones((2, 4, 7)), jnp.ones((5, 4, 6)))


def test_other_channel_mismatches_get_no_layout_hint():
    with pytest.raises(ValueError) as raised:
        jtconv.conv_transpose2d(jnp.ones((1, 4, 5, 5)), jnp.ones((3, 2, 3, 3)))
    assert "Flax" not in str(raised.value)


def test_the_suggested_conversion_computes_flax_s_conv_transpose():
    """Following the hint gives the result of the ``flax.linen.ConvTranspose`` the kernel came from."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 5, 5, 4)), jnp.float32)
    layer = nn.ConvTranspose(features=8, kernel_size=(3, 3), strides=(2, 2), padding="VALID", use_bias=False)
    variables = layer.init(jax.random.key(0), x)
    kernel = variables["params"]["kernel"]
    expected = layer.apply(variables, x)
    y = jtconv.conv_transpose(x, kernel_from_flax_layout(kernel), stride=2, padding="valid", channels_last=True)
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-5, atol=1e-5)
