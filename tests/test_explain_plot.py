"""jtconv.explain_plot: each stamp and the ``--at`` terms in the picture, the stamp palette, the legends and
captions, and the large-grid, crowded-cell and 1-d ``--at`` branches.

Figures are built with matplotlib's object API and inspected (patches, texts,
titles, legends); only the legend check renders.
"""

from __future__ import annotations

import itertools

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb, to_rgba
from matplotlib.image import AxesImage
from matplotlib.legend import Legend
from matplotlib.patches import Circle, Rectangle

from jtconv import explain_plot
from jtconv.explain import explain
from jtconv.formatting import format_number


def test_png_picture_follows_each_stamp_and_the_at_terms():
    e = explain(4, 4, stride=2, padding=1)
    figure = explain_plot.build_figure(e, [e.terms_at((0, 1))])
    input_ax, kernel_ax, scatter_ax, _, output_ax = figure.axes
    colours = [tuple(np.round(c[:3], 4)) for c in explain_plot.stamp_colours(16)]

    # the input is the legend: cell x[i] has the colour of x[i]'s stamp
    cells = [p for p in input_ax.patches if isinstance(p, Rectangle) and p.get_fill()]
    assert [tuple(np.round(p.get_facecolor()[:3], 4)) for p in cells] == colours
    # one dot per (stamp, tap) in the stamp's colour; canvas cell (1, 2) is output (0, 1): x[0,0] and x[0,1]
    dots = [p for p in scatter_ax.patches if isinstance(p, Circle)]
    assert len(dots) == 16 * 16
    at_cell = {
        tuple(np.round(d.get_facecolor()[:3], 4))
        for d in dots
        if round(d.center[0]) == 2 and round(d.center[1] - 0.3) == 1
    }
    assert at_cell == {colours[0], colours[1]}
    # the --at terms: their kernel taps w[1,2], w[1,0] framed, the output cell framed, the sum in the title
    framed = {(round(p.get_y() + 0.5), round(p.get_x() + 0.5)) for p in kernel_ax.patches if not p.get_fill()}
    assert framed == {(1, 2), (1, 0)}
    boxed = {(round(p.get_y() + 0.5), round(p.get_x() + 0.5)) for p in output_ax.patches if not p.get_fill()}
    assert boxed == {(0, 1)}
    assert "y[0,1] = x[0,0]·w[1,2] + x[0,1]·w[1,0] = 1·7 + 1·5 = 12" in scatter_ax.get_title()


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
    scatter_ax = explain_plot.build_figure(e, [at]).axes[2]
    assert "y[12,12] = 0 (no tap reaches it)" in scatter_ax.get_title()
    assert not [t for t in scatter_ax.texts if t.get_text().endswith("·w")]  # no stamp behind it is drawn whole


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
    explain_plot.write_values(ax, grid, [[to_rgba("white"), to_rgba("navy")]] * 2)
    assert [t.get_text() for t in ax.texts[before:]] == [format_number(v) for v in grid.ravel()]
    assert [t.get_color() for t in ax.texts[before:]] == ["black", "white"] * 2  # white on dark cells
    assert [t.get_position() for t in ax.texts[before:]] == [(0, 0), (1, 0), (0, 1), (1, 1)]


def _cielab(colour) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB colour."""
    rgb = np.array(to_rgb(colour))
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    f = np.cbrt(xyz / [0.95047, 1.0, 1.08883])  # every palette colour is far above the cube root's linear toe
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_stamp_colours_are_distinct_saturated_and_repeat_after_the_palette():
    palette = [_cielab(c) for c in explain_plot.STAMP_PALETTE]
    assert len(palette) == 16  # the classic 4×4 example: one colour per stamp
    for lightness, a, b in palette:  # no pale shade of another colour, no grey
        assert 35 <= lightness <= 75 and np.hypot(a, b) >= 35
    assert min(np.linalg.norm(p - q) for p, q in itertools.combinations(palette, 2)) >= 25  # CIE76 ΔE
    colours = explain_plot.stamp_colours(18)
    assert colours[:16] == [to_rgba(c) for c in explain_plot.STAMP_PALETTE] and colours[16:] == colours[:2]


def test_2d_legends_name_each_stamp_and_the_window_and_are_saved():
    e = explain(4, 4, stride=2, padding=1)
    figure = explain_plot.build_figure(e, [e.terms_at((0, 1))])
    input_ax, _, scatter_ax, _, _ = figure.axes
    (stamps,) = [a for a in scatter_ax.artists if isinstance(a, Legend)]
    key = scatter_ax.get_legend()
    colours = explain_plot.stamp_colours(16)
    # filled column by column, four columns: read row by row, it is the input's row-major order
    labels = [t.get_text() for t in stamps.get_texts()]
    assert labels[:5] == ["x[0,0]·w", "x[1,0]·w", "x[2,0]·w", "x[3,0]·w", "x[0,1]·w"]
    by_label = dict(zip(labels, (to_rgba(h.get_color()) for h in stamps.legend_handles)))
    assert [by_label[f"x[{r},{c}]·w"] for r in range(4) for c in range(4)] == colours
    assert stamps.get_title().get_text() == "stamp colours"
    assert [t.get_text() for t in key.get_texts()] == [
        "output window: kept",
        "white: cropped by padding",
        "--at output cell",
    ]
    kept = key.legend_handles[0].get_facecolor()
    assert kept == to_rgba(explain_plot.KEPT_COLOUR) and kept[:3] != (1.0, 1.0, 1.0)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # lays the figure out
    renderer = canvas.get_renderer()
    room = scatter_ax.get_tightbbox(renderer)  # what the layout keeps clear for the scatter view
    for legend in (stamps, key):
        extent = legend.get_window_extent(renderer)
        assert room.x0 <= extent.x0 and extent.x1 <= room.x1 and room.y0 <= extent.y0 and extent.y1 <= room.y1
        assert figure.bbox.y0 <= extent.y0 and extent.y1 <= figure.bbox.y1


def test_2d_caption_says_grey_cells_are_kept_and_dots_are_drawn_over_the_tints():
    e = explain(4, 4, stride=2, padding=1)
    scatter_ax = explain_plot.build_figure(e).axes[2]
    assert "dashed: the output window padding's crop keeps (grey cells; white ones are cropped)" in (
        scatter_ax.get_title()
    )
    (r0, r1), (c0, c1) = e.output_window
    backgrounds = [p for p in scatter_ax.patches if isinstance(p, Rectangle) and p.get_linewidth() == 0.6]
    assert len(backgrounds) == e.canvas.size
    for patch in backgrounds:
        r, c = round(patch.get_y() + 0.5), round(patch.get_x() + 0.5)
        inside = r0 <= r < r1 and c0 <= c < c1
        assert patch.get_facecolor() == to_rgba(explain_plot.KEPT_COLOUR if inside else "white")
    tints = [p for p in scatter_ax.patches if isinstance(p, Rectangle) and p.get_fill() and p.get_alpha()]
    dots = [p for p in scatter_ax.patches if isinstance(p, Circle)]
    assert len(tints) == 16 and len(dots) == 16 * 16
    assert min(d.get_zorder() for d in dots) > max(t.get_zorder() for t in tints)
    assert all(d.get_alpha() is None for d in dots)
    # large pictures draw no grey cells, and the caption does not mention them
    assert (
        explain_plot.build_figure(explain(20, 3)).axes[2].get_title().endswith("the output window padding's crop keeps")
    )


def test_more_stamps_than_colours_say_the_colours_repeat():
    e = explain(5, 3, stride=2, padding=1)
    (stamps,) = [a for a in explain_plot.build_figure(e).axes[2].artists if isinstance(a, Legend)]
    assert stamps.get_title().get_text() == "stamp colours (repeating every 16 inputs)"
    assert len(stamps.get_texts()) == 16


def test_1d_stamps_are_opaque_and_the_legend_names_the_window_and_the_at_column():
    e = explain(5, 3, stride=2, padding=1, ndim=1)
    scatter_ax = explain_plot.build_figure(e, [e.terms_at(3)]).axes[2]
    colours = explain_plot.stamp_colours(5)
    stamp_cells = [p for p in scatter_ax.patches if isinstance(p, Rectangle) and p.get_height() == 0.8 and p.get_fill()]
    by_row: dict[int, set] = {}
    for patch in stamp_cells[: 5 * 3]:
        by_row.setdefault(round(patch.get_y() + 0.4), set()).add(patch.get_facecolor())
    assert by_row == {row: {colour} for row, colour in enumerate(colours)}  # full colour, alpha 1
    assert [t.get_text() for t in scatter_ax.get_legend().get_texts()] == [
        "output window: kept",
        "white: cropped by padding",
        "--at output position",
    ]
    assert "dashed: the output window padding's crop keeps (grey sums; white ones are cropped)" in (
        scatter_ax.get_title()
    )
