"""jtconv.explain_frames: the scatter view's frames against jtconv and torch.

Frame ``k`` of ``n`` input values holds the running sum of the first ``k + 1``
kernel stamps (row-major), so it must equal the transposed convolution of the
input with every later value set to zero: over the full result (padding 0,
output_padding 0) and, cut to the output window, the layer's output. The
oracle is torch in float64, compared at ``atol = 1e-12 · max|y|``; jtconv runs
the same batch of masked inputs in float32 and is compared with torch at
``atol = 1e-5 · max|y|`` (``rtol = 0``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import jtconv
from jtconv.explain import explain
from jtconv.explain_frames import frames

from lowering_checks import assert_close_at_scale

F64_SCALE = 1e-12
F32_SCALE = 1e-5

# (input_size, kernel_size, stride, padding, output_padding, dilation)
CONFIGS = {
    "1d-stride1": ((4,), (3,), (1,), (0,), (0,), (1,)),
    "1d-stride2-pad-outpad": ((5,), (3,), (2,), (1,), (1,), (1,)),
    "1d-outpad-past-full-dilation": ((3,), (3,), (3,), (0,), (2,), (2,)),
    "2d-classic": ((4, 4), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1)),
    "2d-nonsquare-dilation-outpad": ((2, 3), (3, 2), (2, 1), (1, 0), (1, 0), (1, 2)),
    "2d-stride1-pad-dilation": ((3, 2), (2, 3), (1, 1), (1, 1), (0, 0), (2, 1)),
    "2d-stride3-pad-outpad": ((2, 2), (4, 3), (3, 2), (2, 1), (2, 1), (1, 1)),
}


def _torch(xs: np.ndarray, w: np.ndarray, stride, padding, output_padding, dilation) -> np.ndarray:
    """``xs`` (N, *S) single-channel inputs, ``w`` (*K), through torch in float64: (N, *out)."""
    fn = getattr(torch.nn.functional, f"conv_transpose{w.ndim}d")
    y = fn(
        torch.from_numpy(xs)[:, None],
        torch.from_numpy(w)[None, None],
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )
    return y[:, 0].numpy()


def _checked_partials(xs: np.ndarray, w: np.ndarray, stride, padding, output_padding, dilation) -> np.ndarray:
    """jtconv's transposed convolution of each masked input, checked against torch; torch's values returned."""
    expected = _torch(xs, w, stride, padding, output_padding, dilation)
    y = jtconv.conv_transpose(
        xs[:, None].astype(np.float32),
        w[None, None].astype(np.float32),
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )
    assert_close_at_scale(np.asarray(y)[:, 0], expected, F32_SCALE)
    return expected


def _case(name: str, seed: int = 0):
    size, kernel, stride, padding, output_padding, dilation = CONFIGS[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(size).round(2)
    w = rng.standard_normal(kernel).round(2)
    e = explain(size, kernel, stride, padding, output_padding, dilation, input_values=x, kernel_values=w)
    return e, x, w


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_frame_is_a_partial_transposed_convolution(name):
    e, x, w = _case(name)
    size, kernel, stride, padding, output_padding, dilation = CONFIGS[name]
    steps = frames(e)
    n = x.size
    assert len(steps) == n + 3
    assert [f.kind for f in steps] == ["stamp"] * n + ["crop", "output_padding", "output"]
    assert [f.step for f in steps] == list(range(n + 3))

    # input k's stamp is added in frame k: the input with every later (row-major) value zeroed
    masks = np.stack([(np.arange(n) <= k).reshape(size) for k in range(n)])
    masked = x * masks
    full = _checked_partials(masked, w, stride, 0, 0, dilation)
    out = _checked_partials(masked, w, stride, padding, output_padding, dilation)
    ones = _torch(masks.astype(np.float64), np.ones(kernel), stride, 0, 0, dilation)
    for k, frame in enumerate(steps[:n]):
        assert frame.copy is e.copies[k]
        assert frame.copy.input_index == np.unravel_index(k, size)
        np.testing.assert_array_equal(frame.stamped, masks[k])
        assert_close_at_scale(frame.values, full[k], F64_SCALE)
        assert_close_at_scale(frame.output, out[k], F64_SCALE)
        window = tuple(slice(0, f) for f in e.geometry.full_size)
        np.testing.assert_array_equal(frame.taps[window], ones[k])

    y = _checked_partials(x[None], w, stride, padding, output_padding, dilation)[0]
    crop, extra, final = steps[n:]
    for frame in (crop, extra, final):
        assert frame.copy is None and frame.stamped.all()
        assert_close_at_scale(frame.output, y, F64_SCALE)
        np.testing.assert_array_equal(
            frame.taps[tuple(slice(a, b) for a, b in e.output_window)], e.checkerboard.overlap
        )
    cropped_size = tuple(f - 2 * p for f, p in zip(e.geometry.full_size, padding))
    assert crop.values.shape == cropped_size
    if min(cropped_size) >= 1:
        assert_close_at_scale(crop.values, _torch(x[None], w, stride, padding, 0, dilation)[0], F64_SCALE)
    assert_close_at_scale(extra.values, y, F64_SCALE)
    assert_close_at_scale(final.values, y, F64_SCALE)
    np.testing.assert_array_equal(final.values, e.output)


@pytest.mark.parametrize("name", ["1d-stride2-pad-outpad", "2d-classic", "2d-nonsquare-dilation-outpad"])
def test_added_terms_follow_each_output_value(name):
    e, _, _ = _case(name, seed=1)
    for frame in frames(e):
        for index in np.ndindex(*e.geometry.output_size):
            terms = e.terms_at(index)
            added = frame.added_terms(terms)
            assert all(frame.stamped[t.input_index] for t in added)
            assert len(added) == sum(frame.stamped[t.input_index] for t in terms.terms)
            total = math.fsum(t.product for t in added)
            assert abs(total - frame.output[index]) <= F64_SCALE * max(1.0, abs(total))


def test_classic_example_frames():
    e = explain(4, 4, stride=2, padding=1)
    steps = frames(e)
    assert len(steps) == 19
    assert steps[0].caption == "x[0,0] = 1 adds 1·w at output rows -1..2, cols -1..2"
    assert steps[16].caption == "padding 1 crops that many positions off both ends: 10×10 → 8×8"
    assert steps[17].caption == "output_padding 0 adds nothing: the output is 8×8"
    at = e.terms_at((0, 1))
    assert [frame.output[0, 1] for frame in steps[:3]] == [7, 12, 12]
    assert [len(frame.added_terms(at)) for frame in steps[:3]] == [1, 2, 2]
