"""jtconv.explain_gif: frames drawn without numbers (cells too small to read),
and the caption of an ``--at`` cell no kernel tap reaches. Frames are drawn
into a figure, not written to a GIF."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jtconv import explain_gif
from jtconv.explain import explain


def scene_for(explanation, width: int, at_terms=()):
    steps = explain_gif.frames(explanation)
    layout = explain_gif._layout(explanation, width, len(at_terms))
    figure = Figure(figsize=(width / explain_gif.DPI, layout.height / explain_gif.DPI), dpi=explain_gif.DPI)
    FigureCanvasAgg(figure)
    return explain_gif._Scene(figure, explanation, list(at_terms), layout, width, len(steps)), steps


def test_small_cells_are_drawn_without_numbers():
    e = explain((8, 8), 3, stride=2)
    width = explain_gif.MIN_WIDTH
    scene, steps = scene_for(e, width)
    layout = explain_gif._layout(e, width, 0)
    assert explain_gif._cell_px(layout.input, (8, 8), width, layout.height) < explain_gif.MIN_CELL_PX
    assert not scene.annotate
    assert len(scene.input_ax.texts) == 0
    stamp = steps[0]
    assert stamp.kind == "stamp"
    scene.show(stamp)
    assert len(scene.canvas_ax.texts) == 0  # no products written
    canvas_marks = [m for m in scene.marks if m.axes is scene.canvas_ax]
    assert len(canvas_marks) == 9 + 1  # the 3×3 stamp's framed cells and the dashed output window, no labels
    assert [m for m in scene.marks if m.axes is scene.input_ax] != []  # the stamping input value is framed
    scene.show(steps[-1])
    assert steps[-1].kind == "output" and len(scene.canvas_ax.texts) == 0


def test_at_line_of_a_cell_no_tap_reaches():
    e = explain(3, 3, stride=3, output_padding=2, dilation=2, ndim=1)
    terms = e.terms_at(12)
    assert terms.terms == ()
    for frame in explain_gif.frames(e):
        assert explain_gif._at_line(frame, terms) == "y[12] = 0: no kernel tap reaches it"
