"""jtconv.explain and jtconv.matrix against torch (the oracle) and jtconv.conv_transpose.

Tolerances, set once per dtype from the arithmetic: the explanation is
computed in float64 numpy and compared with float64 torch at
``atol = 1e-12 · max|y_torch|``; jtconv runs in float32 and is compared at
``atol = 1e-5 · max|y_torch|`` (both with ``rtol = 0``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import jtconv
from jtconv.explain import explain, infer_ndim, overlap_phase_counts
from jtconv.matrix import convolution_matrix, placement_tensor

from lowering_checks import assert_close_at_scale

F64_SCALE = 1e-12
F32_SCALE = 1e-5


def _torch_conv_transpose(x: np.ndarray, w: np.ndarray, stride, padding, output_padding, dilation, groups=1):
    """Unbatched ``x`` (Cin, *S), ``w`` (Cin, Cout/G, *K) through torch in float64."""
    ndim = w.ndim - 2
    fn = getattr(torch.nn.functional, f"conv_transpose{ndim}d")
    y = fn(
        torch.from_numpy(x)[None],
        torch.from_numpy(w),
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
    )
    return y[0].numpy()


def _random_configs(seed: int, count: int, ndims=(1, 2)):
    """Valid single-channel configs (torch's rules), all parameters varied together."""
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        ndim = int(rng.choice(ndims))
        size = tuple(int(v) for v in rng.integers(1, 6, ndim))
        kernel = tuple(int(v) for v in rng.integers(1, 5, ndim))
        stride = tuple(int(v) for v in rng.integers(1, 4, ndim))
        dilation = tuple(int(v) for v in rng.integers(1, 3, ndim))
        padding = tuple(int(v) for v in rng.integers(0, 3, ndim))
        output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        out = jtconv.output_size(size, kernel, stride, padding, output_padding, dilation)
        if min(out) >= 1:
            configs.append((size, kernel, stride, padding, output_padding, dilation))
    return configs


CONFIGS = _random_configs(seed=6, count=40)


def test_classic_example_output_and_terms():
    e = explain(4, 4, stride=2, padding=1)
    assert e.ndim == 2
    assert e.geometry.output_size == (8, 8)
    assert e.size_formulas == ("(4 − 1)·2 − 2·1 + 1·(4 − 1) + 0 + 1 = 8",) * 2
    np.testing.assert_array_equal(e.kernel, np.arange(1, 17).reshape(4, 4))
    np.testing.assert_array_equal(e.input, np.ones((4, 4)))
    assert e.output[0, 0] == 6 and e.output[0, 1] == 12
    terms = e.terms_at((0, 1))
    assert [(t.input_index, t.kernel_index, t.product) for t in terms.terms] == [
        ((0, 0), (1, 2), 7.0),
        ((0, 1), (1, 0), 5.0),
    ]
    assert terms.total == 12
    assert [(t.input_index, t.kernel_index, t.product) for t in e.terms_at((0, 0)).terms] == [((0, 0), (1, 1), 6.0)]
    x, w = np.ones((1, 4, 4)), np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(e.output, _torch_conv_transpose(x, w, 2, 1, 0, 1)[0])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_views_and_terms_match_torch(config):
    size, kernel, stride, padding, output_padding, dilation = config
    rng = np.random.default_rng(abs(hash(config)) % 2**32)
    x = rng.standard_normal(size)
    w = rng.standard_normal(kernel)
    e = explain(size, kernel, stride, padding, output_padding, dilation, input_values=x, kernel_values=w.ravel())
    expected = _torch_conv_transpose(x[None], w[None, None], stride, padding, output_padding, dilation)[0]

    assert_close_at_scale(e.output, expected, F64_SCALE)  # scatter view
    assert_close_at_scale(e.direct_output, expected, F64_SCALE)  # direct-convolution view
    for algorithm in jtconv.ALGORITHMS:
        y = jtconv.conv_transpose(
            x[None].astype(np.float32),
            w[None, None].astype(np.float32),
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            algorithm=algorithm,
        )
        assert_close_at_scale(np.asarray(y)[0], expected, F32_SCALE)

    totals = np.zeros(e.geometry.output_size)
    counts = np.zeros(e.geometry.output_size, dtype=np.int64)
    for index in np.ndindex(*e.geometry.output_size):
        terms = e.terms_at(index)
        totals[index] = terms.total
        counts[index] = len(terms.terms)
        for term in terms.terms:
            for o, i, t, s, p, d in zip(index, term.input_index, term.kernel_index, stride, padding, dilation):
                assert o == i * s - p + t * d
            assert term.input_value == x[term.input_index] and term.kernel_value == w[term.kernel_index]
    assert_close_at_scale(totals, expected, F64_SCALE)
    np.testing.assert_array_equal(counts, e.checkerboard.overlap)

    for copy in e.copies:
        assert copy.output_start == tuple(i * s - p for i, s, p in zip(copy.input_index, stride, padding))
        np.testing.assert_array_equal(copy.values, x[copy.input_index] * w)


@pytest.mark.parametrize("config", CONFIGS[:12], ids=lambda c: "-".join(map(str, c)))
def test_overlap_map_is_conv_transpose_of_ones(config):
    size, kernel, stride, padding, output_padding, dilation = config
    e = explain(size, kernel, stride, padding, output_padding, dilation)
    ones = _torch_conv_transpose(
        np.ones((1, *size)), np.ones((1, 1, *kernel)), stride, padding, output_padding, dilation
    )[0]
    np.testing.assert_array_equal(e.checkerboard.overlap, ones)


@pytest.mark.parametrize(
    "kernel,stride,dilation", [(3, 2, 1), (4, 2, 1), (5, 3, 1), (6, 3, 1), (3, 2, 2), (4, 3, 2), (1, 2, 1)]
)
def test_checkerboard_phases_match_interior_of_torch(kernel, stride, dilation):
    size = 12
    phases = overlap_phase_counts(kernel, stride, dilation)
    assert sum(phases) == kernel
    ones = _torch_conv_transpose(np.ones((1, size)), np.ones((1, 1, kernel)), stride, 0, 0, dilation)[0]
    span = dilation * (kernel - 1)
    for o in range(span, (size - 1) * stride + 1):  # reached by every tap's copy range
        assert ones[o] == phases[o % stride]
    e = explain(size, kernel, stride, dilation=dilation, ndim=1)
    uneven = len(set(phases)) > 1
    assert e.checkerboard.uneven == uneven
    assert uneven == (kernel % stride != 0 or math.gcd(dilation, stride) > 1)
    assert ("Uneven overlap" in e.checkerboard.note) == uneven
    if uneven:
        assert "kernel size divisible by the stride" in e.checkerboard.note


def test_output_padding_past_full_result_is_zero_with_no_terms():
    e = explain(3, 3, stride=3, padding=0, output_padding=2, dilation=2, ndim=1)
    assert e.geometry.output_size == (13,)
    assert e.output[11] == 0 and e.output[12] == 0
    assert e.terms_at(12).terms == ()
    assert e.canvas.shape == (13,)


@pytest.mark.parametrize(
    "cin,cout_g,groups,size,kernel,stride,padding,output_padding,dilation",
    [
        (1, 1, 1, (5,), (3,), (2,), (1,), (1,), (1,)),
        (4, 3, 2, (5, 4), (3, 2), (2, 3), (1, 0), (1, 2), (1, 1)),
        (3, 1, 3, (3, 4, 2), (2, 2, 3), (1, 2, 2), (0, 1, 1), (0, 1, 1), (2, 1, 1)),
        (2, 2, 1, (4, 3), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1)),
    ],
)
def test_conv_transpose_is_multiplication_by_c_transposed(
    cin, cout_g, groups, size, kernel, stride, padding, output_padding, dilation
):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((cin, cout_g, *kernel))
    x = rng.standard_normal((cin, *size))
    c = convolution_matrix(
        w, size, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups
    )
    expected = _torch_conv_transpose(x, w, stride, padding, output_padding, dilation, groups)
    assert c.shape == (x.size, expected.size)
    assert_close_at_scale((c.T @ x.reshape(-1)).reshape(expected.shape), expected, F64_SCALE)
    for algorithm in jtconv.ALGORITHMS:
        y = jtconv.conv_transpose(
            x.astype(np.float32),
            w.astype(np.float32),
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            groups=groups,
            algorithm=algorithm,
        )
        assert_close_at_scale(np.asarray(y), (c.T @ x.reshape(-1)).reshape(expected.shape), F32_SCALE)

    # C is the forward convolution's matrix: x-shaped = C · y-shaped (torch's convNd, first `size` positions)
    v = rng.standard_normal(expected.shape)
    conv = getattr(torch.nn.functional, f"conv{len(size)}d")
    forward = conv(
        torch.from_numpy(v)[None],
        torch.from_numpy(w),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )[0].numpy()
    forward = forward[(slice(None),) + tuple(slice(0, n) for n in size)]
    assert_close_at_scale((c @ v.reshape(-1)).reshape(x.shape), forward, F64_SCALE)


def test_placement_tensor_marks_o_equals_i_s_minus_p_plus_t_d():
    geom = jtconv.make_geometry((1, 3), (1, 1, 2), stride=2, padding=1, output_padding=1, dilation=3)
    placement = placement_tensor(geom, 0)
    assert placement.shape == (3, 2, geom.output_size[0])
    hits = {(i, t, o) for i, t, o in zip(*np.nonzero(placement))}
    expected = {(i, t, i * 2 - 1 + t * 3) for i in range(3) for t in range(2) if 0 <= i * 2 - 1 + t * 3 < 7}
    assert hits == expected


def test_convolution_matrix_refuses_large_shapes():
    with pytest.raises(ValueError, match="max_entries"):
        convolution_matrix(np.ones((1, 1, 3, 3)), (20, 20), stride=2, max_entries=1000)
    with pytest.raises(ValueError, match="weight must have shape"):
        convolution_matrix(np.ones((4, 2)), (5,))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input_size=4, kernel_size=4, stride=0), "stride"),
        (dict(input_size=-1, kernel_size=4), "input_size"),
        (dict(input_size=4, kernel_size=0), "kernel_size"),
        (dict(input_size=4, kernel_size=3, padding=-1), "padding"),
        (dict(input_size=4, kernel_size=4, stride=2, output_padding=2), "output_padding"),
        (dict(input_size=4, kernel_size=4, dilation=0), "dilation"),
        (dict(input_size=2, kernel_size=1, padding=3), "output size"),
        (dict(input_size=4, kernel_size=4, input_values=[1, 2, 3]), "input_values must have 16 values"),
        (dict(input_size=4, kernel_size=2, kernel_values=["a"] * 4), "kernel_values must be numbers"),
        (dict(input_size=(4, 4, 4), kernel_size=2), "input_size has 3 values"),
        (dict(input_size=4, kernel_size=2, ndim=3), "ndim must be 1 or 2"),
        (dict(input_size=(4, 4), kernel_size=(2, 2), stride=(1, 2, 1)), "stride has 3 values"),
        (dict(input_size=(4, 4), kernel_size=(2, 2, 2)), "kernel_size"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        explain(**kwargs)


def test_terms_at_rejects_bad_indices():
    e = explain(4, 4, stride=2, padding=1)
    with pytest.raises(ValueError, match="at must have 2 indices"):
        e.terms_at((1,))
    with pytest.raises(ValueError, match="outside the output"):
        e.terms_at((0, 8))


def test_infer_ndim():
    assert infer_ndim(4, 4, 2) == 2
    assert infer_ndim((4,), 3) == 1
    assert infer_ndim(4, (3, 2), None) == 2
    assert explain(4, 4, ndim=1).output.shape == (7,)
