"""jtconv.explain_frames and jtconv.explain_gif: the scatter view's frames against jtconv and torch.

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
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import jtconv
from jtconv.explain import explain
from jtconv.explain_frames import frames
from jtconv.explain_gif import FINAL_HOLD, MAX_GIF_INPUTS, check_gif_options, save_gif

F64_SCALE = 1e-12
F32_SCALE = 1e-5
DOCS_GIF = Path(__file__).resolve().parent.parent / "docs" / "explain_classic.gif"

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


def _assert_close(actual, expected, scale: float) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape
    atol = scale * max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


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
    _assert_close(np.asarray(y)[:, 0], expected, F32_SCALE)
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
        _assert_close(frame.values, full[k], F64_SCALE)
        _assert_close(frame.output, out[k], F64_SCALE)
        window = tuple(slice(0, f) for f in e.geometry.full_size)
        np.testing.assert_array_equal(frame.taps[window], ones[k])

    y = _checked_partials(x[None], w, stride, padding, output_padding, dilation)[0]
    crop, extra, final = steps[n:]
    for frame in (crop, extra, final):
        assert frame.copy is None and frame.stamped.all()
        _assert_close(frame.output, y, F64_SCALE)
        np.testing.assert_array_equal(
            frame.taps[tuple(slice(a, b) for a, b in e.output_window)], e.checkerboard.overlap
        )
    cropped_size = tuple(f - 2 * p for f, p in zip(e.geometry.full_size, padding))
    assert crop.values.shape == cropped_size
    if min(cropped_size) >= 1:
        _assert_close(crop.values, _torch(x[None], w, stride, padding, 0, dilation)[0], F64_SCALE)
    _assert_close(extra.values, y, F64_SCALE)
    _assert_close(final.values, y, F64_SCALE)
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


def _frames_of(path: Path) -> list[tuple[np.ndarray, int]]:
    """Every frame of a GIF as RGB pixels, with its duration in milliseconds."""
    result = []
    with Image.open(path) as image:
        for n in range(image.n_frames):
            image.seek(n)
            result.append((np.asarray(image.convert("RGB")), image.info["duration"]))
    return result


@pytest.mark.parametrize(
    "name,at,width",
    [
        ("1d-stride2-pad-outpad", [(4,)], 480),
        ("2d-nonsquare-dilation-outpad", [(0, 0), (3, 4)], 520),
        ("2d-stride1-pad-dilation", [], 400),
    ],
)
def test_gif_has_one_frame_per_input_value_then_crop_output_padding_and_output(tmp_path, name, at, width):
    e, x, _ = _case(name)
    path = tmp_path / f"{name}.gif"
    count = save_gif(e, path, at=at, frame_ms=300, width=width)
    gif = _frames_of(path)
    assert count == len(gif) == x.size + 3 == len(frames(e))
    assert [duration for _, duration in gif] == [300] * (count - 1) + [FINAL_HOLD * 300]
    assert {pixels.shape[1] for pixels, _ in gif} == {width}
    assert len({pixels.shape for pixels, _ in gif}) == 1
    for (before, _), (after, _) in zip(gif, gif[1:]):
        assert (before != after).any(axis=-1).sum() > 100  # each frame draws a new step


def test_committed_docs_gif_is_the_classic_example():
    gif = _frames_of(DOCS_GIF)
    assert len(gif) == 16 + 3
    assert DOCS_GIF.stat().st_size < 400_000


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"frame_ms": 5}, ValueError, "frame_ms must be between 20 and 60000"),
        ({"frame_ms": 0.5}, TypeError, "frame_ms must be an int"),
        ({"width": 100}, ValueError, "width must be between 400 and 2000"),
        ({"width": "wide"}, TypeError, "width must be an int"),
    ],
)
def test_bad_gif_options_raise_naming_them(kwargs, error, match):
    e = explain(3, 2, ndim=1)
    with pytest.raises(error, match=match):
        check_gif_options(e, **kwargs)
    with pytest.raises(error, match=match):
        save_gif(e, "never-written.gif", **kwargs)
    assert not Path("never-written.gif").exists()


def test_too_many_input_values_and_bad_at_are_refused_before_drawing(tmp_path):
    side = math.isqrt(MAX_GIF_INPUTS) + 1
    with pytest.raises(ValueError, match=f"input_size {side}×{side} has {side * side} values"):
        save_gif(explain(side, 2), tmp_path / "big.gif")
    with pytest.raises(ValueError, match="outside the output"):
        save_gif(explain(4, 4, stride=2, padding=1), tmp_path / "at.gif", at=[(8, 0)])
    assert list(tmp_path.iterdir()) == []
