"""Worked examples of the kind tutorials draw, each compared with torch.

Also the scatter view of docs/lowerings.md: every input value stamps a scaled copy
of the kernel at ``i·s − p``, written here as a plain numpy loop.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import jtconv
from jtconv import testing

ALGORITHMS = jtconv.ALGORITHMS


def _torch(fn, *arrays, **kwargs) -> np.ndarray:
    return fn(*(torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in arrays), **kwargs).numpy()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_4x4_ones_with_kernel_1_to_16_stride_2_padding_1(algorithm):
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    y = np.asarray(jtconv.conv_transpose(x, w, stride=2, padding=1, algorithm=algorithm))
    assert y.shape == (1, 1, 8, 8)
    # out[0, 0] only sees tap (1, 1) = 6; out[0, 1] sees taps (1, 0) and (1, 2): 5 + 7.
    assert y[0, 0, 0, 0] == 6
    assert y[0, 0, 0, 1] == 12
    np.testing.assert_array_equal(y, _torch(torch.nn.functional.conv_transpose2d, x, w, stride=2, padding=1))


def test_4x4_example_through_the_torch_signature():
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    # Positional order of torch.nn.functional: input, weight, bias, stride, padding.
    y = np.asarray(jtconv.conv_transpose2d(x, w, None, 2, 1))
    np.testing.assert_array_equal(y, _torch(torch.nn.functional.conv_transpose2d, x, w, None, 2, 1))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_2x2_input_with_2x2_kernel(algorithm):
    # Dive into Deep Learning, §14.10: X = K = [[0, 1], [2, 3]].
    x = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32).reshape(1, 1, 2, 2)
    k = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32).reshape(1, 1, 2, 2)
    y = np.asarray(jtconv.conv_transpose(x, k, algorithm=algorithm))
    np.testing.assert_array_equal(y[0, 0], [[0, 0, 1], [0, 4, 6], [4, 12, 9]])
    np.testing.assert_array_equal(y, _torch(torch.nn.functional.conv_transpose2d, x, k))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_2x2_input_with_2x2_kernel_stride_2(algorithm):
    x = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32).reshape(1, 1, 2, 2)
    k = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32).reshape(1, 1, 2, 2)
    y = np.asarray(jtconv.conv_transpose(x, k, stride=2, algorithm=algorithm))
    np.testing.assert_array_equal(y[0, 0], [[0, 0, 0, 1], [0, 0, 2, 3], [0, 2, 0, 3], [4, 6, 6, 9]])
    np.testing.assert_array_equal(y, _torch(torch.nn.functional.conv_transpose2d, x, k, stride=2))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_grouped_1x4x5x5_with_4x2x3x3_groups_4(algorithm):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    y = np.asarray(jtconv.conv_transpose(x, w, b, groups=4, algorithm=algorithm))
    assert y.shape == (1, 8, 7, 7)
    expected = _torch(torch.nn.functional.conv_transpose2d, x, w, b, groups=4)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    # Each group is an independent single-channel transposed convolution.
    for g in range(4):
        alone = np.asarray(
            jtconv.conv_transpose(x[:, g : g + 1], w[g : g + 1], b[2 * g : 2 * g + 2], algorithm=algorithm)
        )
        np.testing.assert_allclose(y[:, 2 * g : 2 * g + 2], alone, rtol=0, atol=1e-5 * np.abs(expected).max())


def scatter_reference(x, w, stride, padding, output_padding, dilation, groups):
    """The scatter view in numpy: ``y[n, g·Cg+co, i·s − p + t·d] += x[n, ci, i] · w[ci, co, t]``."""
    n_batch, cin, *spatial = x.shape
    _, cout_g, *kernel = w.shape
    nd = len(spatial)
    out = [
        (i - 1) * s - 2 * p + d * (k - 1) + op + 1
        for i, k, s, p, op, d in zip(spatial, kernel, stride, padding, output_padding, dilation)
    ]
    y = np.zeros((n_batch, cout_g * groups, *out), np.float64)
    cin_g = cin // groups
    for ci in range(cin):
        g = ci // cin_g
        for pos in itertools.product(*(range(i) for i in spatial)):
            for tap in itertools.product(*(range(k) for k in kernel)):
                o = tuple(i * s - p + t * d for i, t, s, p, d in zip(pos, tap, stride, padding, dilation))
                if all(0 <= oi < size for oi, size in zip(o, out)):
                    idx = (slice(None), slice(g * cout_g, (g + 1) * cout_g)) + o
                    y[idx] += x[(slice(None), ci) + pos][:, None] * w[(ci, slice(None)) + tap][None, :]
    assert nd == len(out)
    return y


SCATTER_CASES = [
    # (input shape, weight shape, stride, padding, output_padding, dilation, groups)
    ((1, 1, 4, 4), (1, 1, 4, 4), (2, 2), (1, 1), (0, 0), (1, 1), 1),
    ((2, 4, 3), (4, 3, 3), (3,), (4,), (2,), (2,), 2),  # padding > d·(k−1)
    ((1, 2, 3, 2), (2, 2, 2, 3), (1, 2), (0, 1), (1, 1), (3, 1), 1),  # output_padding ≥ stride, < dilation
    ((1, 3, 2, 2, 2), (3, 1, 2, 2, 2), (2, 1, 2), (1, 0, 0), (1, 0, 1), (1, 1, 1), 3),
]


@pytest.mark.parametrize("case", SCATTER_CASES, ids=lambda c: f"{len(c[0]) - 2}d")
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_scatter_view_matches_jtconv_and_torch(case, algorithm):
    shape_x, shape_w, stride, padding, output_padding, dilation, groups = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape_x).astype(np.float32)
    w = rng.standard_normal(shape_w).astype(np.float32)
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups)
    expected = scatter_reference(x, w, **kwargs)
    y = np.asarray(jtconv.conv_transpose(x, w, algorithm=algorithm, **kwargs))
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    torch_fn = getattr(torch.nn.functional, f"conv_transpose{len(shape_x) - 2}d")
    np.testing.assert_allclose(_torch(torch_fn, x, w, **kwargs), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(
    "name, fn, torch_fn, shape_x, shape_w",
    [
        ("1d", jtconv.conv_transpose1d, torch.nn.functional.conv_transpose1d, (2, 4, 5), (4, 3, 3)),
        ("2d", jtconv.conv_transpose2d, torch.nn.functional.conv_transpose2d, (2, 4, 5, 4), (4, 3, 3, 2)),
        ("3d", jtconv.conv_transpose3d, torch.nn.functional.conv_transpose3d, (2, 4, 3, 4, 3), (4, 3, 2, 3, 2)),
    ],
)
def test_fixed_rank_functions_take_torch_positional_arguments(name, fn, torch_fn, shape_x, shape_w):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape_x).astype(np.float32)
    w = rng.standard_normal(shape_w).astype(np.float32)
    b = rng.standard_normal(shape_w[1] * 2).astype(np.float32)
    # input, weight, bias, then stride, padding, output_padding, groups, dilation
    args = (2, 1, 1, 2, 2)
    testing.assert_matches_torch(
        lambda x, w, b: fn(x, w, b, *args), lambda x, w, b: torch_fn(x, w, b, *args), x, w, b, grads=True
    )
