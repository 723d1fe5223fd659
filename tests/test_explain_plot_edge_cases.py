"""jtconv.explain_plot: the large-grid, crowded-cell and 1-d ``--at`` branches of the picture.

Figures are built with matplotlib's object API and inspected (patches, texts,
titles); nothing is rendered.
"""

from __future__ import annotations

import numpy as np
from matplotlib.image import AxesImage
from matplotlib.patches import Circle, Rectangle

from jtconv import explain_plot
from jtconv.explain import explain


def test_large_2d_case_outlines_the_first_copies_without_numbers():
    e = explain(20, 3)  # 400 stamps on a 22×22 canvas: too large for dots and numbers
    figure = explain_plot.build_figure(e)
    input_ax, kernel_ax, scatter_ax, overlap_ax, output_ax = figure.axes
    assert len(input_ax.texts) == 0 and len(overlap_ax.texts) == 0 and len(output_ax.texts) == 0
    assert len(kernel_ax.texts) == 9  # the 3×3 kernel is small enough to carry its numbers
    assert any(isinstance(image, AxesImage) for image in scatter_ax.images)
    outlines = [p for p in scatter_ax.patches if isinstance(p, Rectangle) and p.get_linewidth() == 0.8]
    assert len(outlines) == explain_plot.MAX_OUTLINED_COPIES
    assert not any(isinstance(p, Circle) for p in scatter_ax.patches)
    # only the highlighted (middle) stamp's label, no per-cell sums or products
    assert [t.get_text() for t in scatter_ax.texts] == ["x[10,10]·w"]
    assert "dots:" not in scatter_ax.get_title()


def test_crowded_cells_get_no_dots_and_only_four_stamps_write_products():
    e = explain(4, 4)  # stride 1: the middle output cell is reached by all 16 stamps
    at = e.terms_at((3, 3))
    assert len(at.terms) == 16 and e.checkerboard.overlap.max() == 16
    figure = explain_plot.build_figure(e, [at])
    scatter_ax = figure.axes[2]
    assert not any(isinstance(p, Circle) for p in scatter_ax.patches)
    canvas_cells = e.canvas.size
    products = explain_plot.MAX_LABELLED_STAMPS * 16  # four corners, one stamp each, 16 taps
    labels = [t for t in scatter_ax.texts if t.get_text().endswith("·w")]
    assert len(labels) == 16
    assert len(scatter_ax.texts) == canvas_cells + products + len(labels)
    assert "and 12 more" in scatter_ax.get_title()


def test_output_cell_no_tap_reaches_is_captioned_as_zero():
    e = explain((3, 3), (3, 3), stride=3, output_padding=2, dilation=2)
    at = e.terms_at((12, 12))
    assert at.terms == ()
    figure = explain_plot.build_figure(e, [at])
    assert "y[12,12] = 0 (no tap reaches it)" in figure.axes[2].get_title()


def test_1d_at_terms_mark_the_column_the_taps_and_the_output_cell():
    e = explain(5, 3, stride=2, padding=1, ndim=1)
    at = e.terms_at(3)
    assert [(t.input_index, t.kernel_index) for t in at.terms] == [((1,), (2,)), ((2,), (0,))]
    figure = explain_plot.build_figure(e, [at])
    input_ax, kernel_ax, scatter_ax, overlap_ax, output_ax = figure.axes
    framed = sorted(round(p.get_x() + 0.5) for p in kernel_ax.patches if not p.get_fill())
    assert framed == [0, 2]
    boxed = {round(p.get_x() + 0.5) for p in output_ax.patches if not p.get_fill()}
    assert boxed == {3}
    # the yellow column at canvas position 3 + padding
    spans = [p for p in scatter_ax.patches if tuple(np.round(p.get_facecolor()[:3], 3)) == (1.0, 0.949, 0.659)]
    assert len(spans) == 1
    bold = [p for p in scatter_ax.patches if isinstance(p, Rectangle) and not p.get_fill() and p.get_linewidth() == 2.5]
    assert sorted((round(p.get_y() + 0.4), round(p.get_x() + 0.45)) for p in bold) == [(1, 4), (2, 4)]
    title = scatter_ax.get_title()
    assert "y[3] = x[1]·w[2] + x[2]·w[0] = 1·3 + 1·1 = 4" in title
    assert title.endswith("(yellow column; framed: its products)")
    assert e.output[3] == 4


def test_long_1d_case_has_no_numbers_in_the_scatter_view():
    e = explain(40, 3, ndim=1)
    assert e.canvas.shape[0] > 2 * explain_plot.MAX_ANNOTATED
    figure = explain_plot.build_figure(e)
    scatter_ax = figure.axes[2]
    assert len(scatter_ax.texts) == 0
    assert len([p for p in scatter_ax.patches if isinstance(p, Rectangle)]) == 40 * 3 + e.canvas.shape[0]


def test_write_values_writes_every_cell_in_row_order():
    figure = explain_plot.build_figure(explain(2, 2))
    ax = figure.axes[0]
    before = len(ax.texts)
    grid = np.array([[1.0, 2.5], [3.0, 4.0]])
    explain_plot.write_values(ax, grid, None)
    assert [t.get_text() for t in ax.texts[before:]] == [explain_plot.format_value(v) for v in grid.ravel()]
    assert [t.get_position() for t in ax.texts[before:]] == [(0, 0), (1, 0), (0, 1), (1, 1)]
