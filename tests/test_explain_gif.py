"""jtconv.explain_gif: one GIF frame per input value, then the crop, output_padding and output frames;
frames drawn without numbers when cells are too small; the captions of ``at`` cells; bad options refused
before anything is drawn."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jtconv import explain_gif
from jtconv.explain import explain
from jtconv.explain_frames import frames
from jtconv.explain_gif import FINAL_HOLD, MAX_GIF_INPUTS, check_gif_options, save_gif

DOCS_GIF = Path(__file__).resolve().parent.parent / "docs" / "explain_classic.gif"

# (input_size, kernel_size, stride, padding, output_padding, dilation)
CONFIGS = {
    "1d-stride2-pad-outpad": ((5,), (3,), (2,), (1,), (1,), (1,)),
    "2d-nonsquare-dilation-outpad": ((2, 3), (3, 2), (2, 1), (1, 0), (1, 0), (1, 2)),
    "2d-stride1-pad-dilation": ((3, 2), (2, 3), (1, 1), (1, 1), (0, 0), (2, 1)),
}


def _case(name: str):
    size, kernel, stride, padding, output_padding, dilation = CONFIGS[name]
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(size).round(2), rng.standard_normal(kernel).round(2)
    return explain(size, kernel, stride, padding, output_padding, dilation, input_values=x, kernel_values=w), x, w


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


def test_small_cells_are_drawn_without_numbers():
    e = explain((8, 8), 3, stride=2)
    width = explain_gif.MIN_WIDTH
    steps = frames(e)
    scene = explain_gif._Scene(e, [], width, len(steps))
    height, (input_box, _, _) = explain_gif._layout(e, width, 0)
    assert min(input_box[2] * width / 8, input_box[3] * height / 8) < explain_gif.MIN_CELL_PX
    assert not scene.annotate
    assert len(scene.input_ax.texts) == 0
    stamp = steps[0]
    assert stamp.kind == "stamp"
    scene.render(stamp)
    assert len(scene.canvas_ax.texts) == 0  # no products written
    canvas_marks = [m for m in scene.marks if m.axes is scene.canvas_ax]
    assert len(canvas_marks) == 9 + 1  # the 3×3 stamp's framed cells and the dashed output window, no labels
    assert [m for m in scene.marks if m.axes is scene.input_ax] != []  # the stamping input value is framed
    scene.render(steps[-1])
    assert steps[-1].kind == "output" and len(scene.canvas_ax.texts) == 0


def test_at_line_of_a_cell_no_tap_reaches():
    e = explain(3, 3, stride=3, output_padding=2, dilation=2, ndim=1)
    terms = e.terms_at(12)
    assert terms.terms == ()
    for frame in frames(e):
        assert explain_gif._at_line(frame, terms) == "y[12] = 0: no kernel tap reaches it"
