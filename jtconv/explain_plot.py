"""Pictures of an :class:`~jtconv.explain.Explanation` (``jtconv explain --png``).

Draws, as the tutorials do: the input (each input value's cell in the colour
of its kernel stamp); the kernel; the scatter view (each input value stamps
``x[i]·w`` with tap ``t`` at ``i·s − p + t·d``; every cell carries one dot per
stamp reaching it, in that stamp's colour, and the sum; one stamp, or the
stamps behind ``--at``, drawn whole with their products; the output window
after padding's crop dashed, its cells grey), with a legend of the stamp
colours and the window; the overlap map; and the output, with the ``--at``
cells boxed.

matplotlib is imported here only (``pip install matplotlib Pillow``), and only
its object API (no pyplot, no global backend change). The cell-drawing
helpers are shared with :mod:`jtconv.explain_gif`.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence

import numpy as np

from jtconv.explain import Explanation, KernelCopy, OutputTerms

__all__ = ["build_figure", "save_figure"]

MAX_ANNOTATED = 16
"""Grids with more positions than this per dimension are drawn without numbers."""

MAX_TAP_PATCHES = 1500
"""Above this many (copy, tap) cells the 2-d scatter view draws one outline per copy."""

MAX_OUTLINED_COPIES = 100
"""In that case, outline only the first copies (the rest would hide the picture)."""

MAX_DOTS_PER_CELL = 9
"""Cells reached by more stamps than this get no dots (they would be too small to see)."""

MAX_LABELLED_STAMPS = 4
"""At most this many highlighted stamps write their products into the cells (one per corner)."""

AT_COLOUR = "black"
"""Frame of the output cells named by ``--at``."""

STAMP_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#e377c2", "#17becf", "#885500",
    "#bbaa00", "#556600", "#99aaff", "#bb0066", "#ff8888", "#2244ff", "#00cc99", "#007744",
)  # fmt: skip
"""One colour per input value's stamp, repeating after 16: saturated, mid-light colours (no pale shade of
another), far apart in CIELAB, starting with matplotlib's tab10 less its grey, olive and brown."""

AT_COLUMN_COLOUR = "#fff2a8"
"""1-d: the column of an output position named by ``--at``."""

KEPT_COLOUR = "#e6e6e6"
"""Cells of the output window padding's crop keeps (cropped cells are white)."""


def save_figure(
    explanation: Explanation, path: str | os.PathLike, dpi: int = 110, at_terms: Sequence[OutputTerms] = ()
) -> None:
    """Draw ``explanation`` and write it to ``path`` (format from the extension, e.g. ``.png``).

    ``at_terms`` (from :meth:`~jtconv.explain.Explanation.terms_at`) are
    highlighted: their output cells, the stamps and kernel taps that add up to them.
    """
    figure = build_figure(explanation, at_terms)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")


def build_figure(explanation: Explanation, at_terms: Sequence[OutputTerms] = ()):
    """A :class:`matplotlib.figure.Figure` of the explanation (1-d or 2-d)."""
    if explanation.ndim == 1:
        return _figure_1d(explanation, at_terms)
    return _figure_2d(explanation, at_terms)


# ----------------------------------------------------------------------------- shared helpers


def format_value(value: float) -> str:
    """A number as short cell text: integers without a decimal point."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e6 else f"{value:.3g}"


def figure_title(explanation: Explanation) -> str:
    """``ConvTranspose2d: input 4×4, kernel 4×4, stride 2, … → output 8×8``."""
    g = explanation.geometry

    def param(values):
        return str(values[0]) if len(set(values)) == 1 else ",".join(map(str, values))

    size = "×".join(map(str, g.output_size))
    return (
        f"ConvTranspose{g.ndim}d: input {'×'.join(map(str, g.input_size))}, kernel "
        f"{'×'.join(map(str, g.kernel_size))}, stride {param(g.stride)}, padding "
        f"{param([p for p, _ in g.padding])}, output_padding {param(g.output_padding)}, "
        f"dilation {param(g.dilation)}  →  output {size}"
    )


def stamp_colours(count: int) -> list:
    """The colour of each input value's stamp (row-major), as RGBA tuples: :data:`STAMP_PALETTE` in turn."""
    from matplotlib.colors import to_rgba

    return [to_rgba(STAMP_PALETTE[n % len(STAMP_PALETTE)]) for n in range(count)]


def cell(index: Sequence[int]) -> tuple[int, int]:
    """``(row, col)`` of an index into a 1-d (one row) or 2-d grid."""
    return (0, int(index[0])) if len(index) == 1 else (int(index[0]), int(index[1]))


def darker(rgba) -> tuple[float, float, float]:
    """``rgba``'s colour at 65 % brightness: lines and text in a stamp's colour stay visible on white."""
    from matplotlib.colors import to_rgb

    red, green, blue = to_rgb(rgba)
    return 0.65 * red, 0.65 * green, 0.65 * blue


def is_dark(rgba) -> bool:
    red, green, blue = rgba[:3]
    return 0.299 * red + 0.587 * green + 0.114 * blue < 0.5


def write_values(ax, grid: np.ndarray, colours, fontsize: float = 8) -> None:
    """Each value of ``grid`` (2-d) in its cell, white on dark ``colours`` (RGBA per cell, or None)."""
    rows, cols = grid.shape
    for r in range(rows):
        for c in range(cols):
            dark = colours is not None and is_dark(colours[r][c])
            ax.text(
                c,
                r,
                format_value(grid[r, c]),
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if dark else "black",
            )


def outline_cell(ax, row: int, col: int, colour, linewidth: float = 2.5, inset: float = 0.04, **kwargs) -> None:
    from matplotlib.patches import Rectangle

    ax.add_patch(
        Rectangle(
            (col - 0.5 + inset, row - 0.5 + inset),
            1 - 2 * inset,
            1 - 2 * inset,
            fill=False,
            edgecolor=colour,
            linewidth=linewidth,
            **kwargs,
        )
    )


def window_rectangle(ax, window: Sequence[tuple[int, int]], **kwargs) -> None:
    """Outline of a canvas window ``((r0, r1), (c0, c1))`` or ``((c0, c1),)``."""
    from matplotlib.patches import Rectangle

    (r0, r1), (c0, c1) = ((0, 1), window[0]) if len(window) == 1 else window
    ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, **kwargs))


def integer_ticks(
    ax, rows: int, cols: int, one_row: bool = False, row_offset: int = 0, col_offset: int = 0, fontsize: float = 8
) -> None:
    """Tick labels ``index − offset`` (output coordinates on the canvas), at most about 12 per axis."""
    step_c = max(1, math.ceil(cols / 12))
    ax.set_xticks(range(0, cols, step_c))
    ax.set_xticklabels([str(c - col_offset) for c in range(0, cols, step_c)], fontsize=fontsize)
    if one_row:
        ax.set_yticks([])
    else:
        step_r = max(1, math.ceil(rows / 12))
        ax.set_yticks(range(0, rows, step_r))
        ax.set_yticklabels([str(r - row_offset) for r in range(0, rows, step_r)], fontsize=fontsize)


def heatmap(
    ax,
    values: np.ndarray,
    title: str,
    cmap: str,
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool | None = None,
    scale: float = 1.0,
):
    """``values`` (1-d as one row, or 2-d) as an image with its numbers written in (small grids);
    ``scale`` multiplies the font sizes."""
    grid = np.atleast_2d(values)
    long_row = values.ndim == 1 and values.shape[0] > MAX_ANNOTATED
    image = ax.imshow(
        grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto" if long_row else "equal", interpolation="nearest"
    )
    ax.set_title(title, fontsize=11 * scale)
    rows, cols = grid.shape
    if annotate if annotate is not None else max(rows, cols) <= MAX_ANNOTATED:
        colours = [[image.cmap(image.norm(v)) for v in row] for row in grid]
        write_values(ax, grid, colours, fontsize=8 * scale)
    integer_ticks(ax, rows, cols, one_row=values.ndim == 1, fontsize=8 * scale)
    return image


def input_legend(
    ax,
    explanation: Explanation,
    colours,
    title: str,
    emphasised=(),
    fontsize: float = 8,
) -> None:
    """The input, each cell filled with its stamp's colour; ``emphasised`` indices get a black frame."""
    from matplotlib.patches import Rectangle

    x = np.atleast_2d(explanation.input)
    rows, cols = x.shape
    for index, colour in zip(np.ndindex(*explanation.input.shape), colours):
        r, c = cell(index)
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor=colour, edgecolor="white", linewidth=1))
    if max(rows, cols) <= MAX_ANNOTATED:
        write_values(ax, x, np.reshape(colours, (rows, cols, 4)), fontsize=fontsize)
    for index in emphasised:
        outline_cell(ax, *cell(index), "black", linewidth=2.5, inset=0.06)
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_aspect("auto" if rows == 1 and cols > MAX_ANNOTATED else "equal")
    ax.set_title(title, fontsize=11)
    integer_ticks(ax, rows, cols, one_row=explanation.ndim == 1)


def tap_positions(explanation: Explanation, copy: KernelCopy) -> list[range]:
    """Per dimension, the canvas positions of ``copy``'s taps (``full_start + t·d``)."""
    return [range(s.start, s.stop, s.step) for s in copy.canvas_taps(explanation.geometry.dilation)]


def _copy_number(explanation: Explanation, input_index: Sequence[int]) -> int:
    return int(np.ravel_multi_index(tuple(input_index), explanation.geometry.input_size))


def _at_caption(at_terms: Sequence[OutputTerms]) -> str:
    lines = []
    for terms in at_terms[:3]:
        index = ",".join(map(str, terms.output_index))
        products = " + ".join(
            f"x[{','.join(map(str, t.input_index))}]·w[{','.join(map(str, t.kernel_index))}]" for t in terms.terms
        )
        values = " + ".join(f"{format_value(t.input_value)}·{format_value(t.kernel_value)}" for t in terms.terms)
        if terms.terms:
            lines.append(f"y[{index}] = {products} = {values} = {format_value(terms.total)}")
        else:
            lines.append(f"y[{index}] = 0 (no tap reaches it)")
    return "\n".join(lines)


def _kernel_heatmap(ax, explanation: Explanation) -> None:
    """The kernel in light greys (its largest value mid-grey), under frames in the stamps' colours."""
    low, high = float(explanation.kernel.min()), float(explanation.kernel.max())
    heatmap(ax, explanation.kernel, "kernel w", "Greys", vmin=low, vmax=2 * high - low)


def _highlighted_copies(explanation: Explanation, at_terms: Sequence[OutputTerms]) -> list[int]:
    """The stamps behind the ``--at`` cells, or else the one of the middle input value."""
    if at_terms:
        numbers = {_copy_number(explanation, t.input_index) for terms in at_terms for t in terms.terms}
        return sorted(numbers)
    middle = tuple(n // 2 for n in explanation.geometry.input_size)
    return [_copy_number(explanation, middle)]


# ----------------------------------------------------------------------------- 2-d


def _figure_2d(explanation: Explanation, at_terms: Sequence[OutputTerms]):
    from matplotlib.figure import Figure

    colours = stamp_colours(len(explanation.copies))
    highlighted = _highlighted_copies(explanation, at_terms)
    inputs = [explanation.copies[n].input_index for n in highlighted]
    figure = Figure(figsize=(16, 9.5), layout="constrained")
    grid = figure.add_gridspec(2, 4, width_ratios=[1, 2.2, 1, 1])
    input_legend(
        figure.add_subplot(grid[0, 0]), explanation, colours, "input x (colour = its stamp)", emphasised=inputs
    )
    kernel_ax = figure.add_subplot(grid[1, 0])
    _kernel_heatmap(kernel_ax, explanation)
    for terms in at_terms:
        for term in terms.terms:
            colour = colours[_copy_number(explanation, term.input_index)]
            outline_cell(kernel_ax, *cell(term.kernel_index), colour, linewidth=3)
    _scatter_2d(figure.add_subplot(grid[:, 1]), explanation, colours, highlighted, at_terms)
    heatmap(
        figure.add_subplot(grid[0, 2:]),
        explanation.checkerboard.overlap,
        "overlap: kernel taps per output position" + ("  (uneven!)" if explanation.checkerboard.uneven else ""),
        "Purples",
    )
    output_ax = figure.add_subplot(grid[1, 2:])
    heatmap(output_ax, explanation.output, "output y", "viridis")
    for terms in at_terms:
        outline_cell(output_ax, *cell(terms.output_index), "white", linewidth=4, inset=0.02)
        outline_cell(output_ax, *cell(terms.output_index), AT_COLOUR, linewidth=2, inset=0.02)
    figure.suptitle(figure_title(explanation), fontsize=12)
    return figure


def _scatter_2d(
    ax, explanation: Explanation, colours, highlighted: Sequence[int], at_terms: Sequence[OutputTerms]
) -> None:
    """The summed canvas; per cell, one dot per stamp reaching it; highlighted stamps drawn whole."""
    g = explanation.geometry
    canvas = explanation.canvas
    rows, cols = canvas.shape
    (r0, r1), (c0, c1) = explanation.output_window
    lo_r, lo_c = g.crop[0][0], g.crop[1][0]
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_aspect("equal")
    small = max(rows, cols) <= MAX_ANNOTATED
    many = len(explanation.copies) * math.prod(g.kernel_size) > MAX_TAP_PATCHES
    if many or not small:
        _copy_outlines_2d(ax, explanation, colours)
    else:
        _cell_backgrounds(ax, explanation)
        if explanation.checkerboard.overlap.max(initial=0) <= MAX_DOTS_PER_CELL:
            _stamp_dots(ax, explanation, colours)
    for rank, number in enumerate(highlighted[:MAX_OUTLINED_COPIES]):
        _highlight_stamp(ax, explanation, number, colours[number], rank if small else None)
    if small:
        for r in range(rows):
            for c in range(cols):
                inside = r0 <= r < r1 and c0 <= c < c1
                ax.text(
                    c,
                    r,
                    format_value(canvas[r, c]),
                    ha="center",
                    va="center",
                    fontsize=10,
                    color="black" if inside else "grey",
                    fontweight="bold" if inside else "normal",
                )
    window_rectangle(ax, explanation.output_window, linestyle="--", linewidth=2, edgecolor="black")
    for terms in at_terms:
        o_r, o_c = terms.output_index
        outline_cell(ax, o_r + lo_r, o_c + lo_c, "white", linewidth=5, inset=0.0)
        outline_cell(ax, o_r + lo_r, o_c + lo_c, AT_COLOUR, linewidth=2.5, inset=0.0)
    integer_ticks(ax, rows, cols, row_offset=lo_r, col_offset=lo_c)
    names = ", ".join(f"x[{','.join(map(str, explanation.copies[n].input_index))}]·w" for n in highlighted[:4])
    more = f" and {len(highlighted) - 4} more" if len(highlighted) > 4 else ""
    title = (
        "scatter view: each x[i] stamps x[i]·w with tap t at o = i·s − p + t·d; overlaps add\n"
        + ("dots: the stamps reaching a cell (colours as in the input); " if small and not many else "")
        + f"drawn whole: {names}{more}\ndashed: the output window padding's crop keeps"
        + (" (grey cells; white ones are cropped)" if small and not many else "")
    )
    if at_terms:
        title += "\n" + _at_caption(at_terms)
    ax.set_title(title, fontsize=10)
    _legend(ax, explanation, colours, at_terms, cells=small and not many)


def _legend(ax, explanation: Explanation, colours, at_terms: Sequence[OutputTerms], cells: bool) -> None:
    """Below the scatter view: each stamp's colour (the first :data:`STAMP_PALETTE` stamps, in the input's
    row-major order) and what the window, the cells and the frames mean."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    shown = explanation.copies[: len(STAMP_PALETTE)]
    columns = min(explanation.geometry.input_size[-1], 4)
    order = sorted(range(len(shown)), key=lambda n: (n % columns, n))  # legends fill column by column
    stamps = [
        Line2D([], [], linestyle="none", marker="o", markersize=8, color=colours[n], label=f"x[{_index(shown[n])}]·w")
        for n in order
    ]
    repeat = f" (repeating every {len(STAMP_PALETTE)} inputs)" if len(shown) < len(explanation.copies) else ""
    key = _window_key(cells)
    if at_terms:
        key.append(Patch(fill=False, edgecolor=AT_COLOUR, linewidth=2.5, label="--at output cell"))
    style = dict(fontsize=8, title_fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.05))
    ax.add_artist(ax.legend(handles=stamps, title="stamp colours" + repeat, loc="upper right", ncols=columns, **style))
    ax.artists[-1].set_clip_on(False)  # add_artist clips it to the axes: the layout would leave it no room
    ax.legend(handles=key, loc="upper left", **style)


def _window_key(cells: bool) -> list:
    """Legend entries for the output window padding's crop keeps (grey ``cells``, if drawn) and the cropped ones."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if not cells:
        return [Line2D([], [], color="black", linestyle="--", label="output window: kept")]
    return [
        Patch(facecolor=KEPT_COLOUR, edgecolor="black", linestyle="--", label="output window: kept"),
        Patch(facecolor="white", edgecolor="#cccccc", label="white: cropped by padding"),
    ]


def _index(copy: KernelCopy) -> str:
    return ",".join(map(str, copy.input_index))


def _cell_backgrounds(ax, explanation: Explanation) -> None:
    """Grey cells inside the output window, white ones outside (cropped)."""
    from matplotlib.patches import Rectangle

    rows, cols = explanation.canvas.shape
    (r0, r1), (c0, c1) = explanation.output_window
    for r in range(rows):
        for c in range(cols):
            inside = r0 <= r < r1 and c0 <= c < c1
            ax.add_patch(
                Rectangle(
                    (c - 0.5, r - 0.5),
                    1,
                    1,
                    facecolor=KEPT_COLOUR if inside else "white",
                    edgecolor="#cccccc",
                    linewidth=0.6,
                )
            )


def _stamp_dots(ax, explanation: Explanation, colours) -> None:
    """In each cell, one dot per stamp reaching it (row-major order), along the cell's lower part."""
    from matplotlib.patches import Circle

    reaching: dict[tuple[int, int], list[int]] = {}
    for number, copy in enumerate(explanation.copies):
        rows, cols = tap_positions(explanation, copy)
        for position in itertools.product(rows, cols):
            reaching.setdefault(position, []).append(number)
    per_row = max(1, math.ceil(math.sqrt(explanation.checkerboard.overlap.max(initial=1))))
    per_row = max(per_row, 2)
    radius = 0.34 / (2 * per_row)
    for (r, c), numbers in reaching.items():
        for slot, number in enumerate(numbers):
            line, place = divmod(slot, per_row)
            x = c - 0.5 + (place + 0.5) / per_row
            y = r + 0.5 - 2.2 * radius * (line + 0.5) - 0.02
            ax.add_patch(
                Circle((x, y), radius, facecolor=colours[number], edgecolor="white", linewidth=0.4, zorder=2.5)
            )


def _highlight_stamp(ax, explanation: Explanation, number: int, colour, corner: int | None) -> None:
    """Stamp ``number`` drawn whole: its tap cells framed and tinted; products in corner ``corner``."""
    from matplotlib.patches import Rectangle

    copy = explanation.copies[number]
    rows, cols = tap_positions(explanation, copy)
    fr, fc = rows[0], cols[0]
    line = darker(colour)
    ax.add_patch(
        Rectangle(
            (fc - 0.5, fr - 0.5),
            cols[-1] - fc + 1,
            rows[-1] - fr + 1,
            fill=False,
            edgecolor=line,
            linewidth=2.5,
            linestyle="-",
        )
    )
    for tr, r in enumerate(rows):
        for tc, c in enumerate(cols):
            ax.add_patch(
                Rectangle(
                    (c - 0.46, r - 0.46), 0.92, 0.92, facecolor=colour, alpha=0.25, edgecolor=colour, linewidth=1.2
                )
            )
            if corner is not None and corner < MAX_LABELLED_STAMPS:
                dx, dy = (-0.44, 0.44)[corner % 2], (-0.44, 0.0)[corner // 2]
                ax.text(
                    c + dx,
                    r + dy,
                    format_value(copy.values[tr, tc]),
                    fontsize=6.5,
                    color=line,
                    ha="left" if dx < 0 else "right",
                    va="top",
                    fontweight="bold",
                )
    index = ",".join(map(str, copy.input_index))
    ax.text(
        fc - 0.45,
        fr - 0.55,
        f"x[{index}]·w",
        fontsize=8,
        color=line,
        fontweight="bold",
        va="bottom",
        ha="left",
        clip_on=True,
    )


def _copy_outlines_2d(ax, explanation: Explanation, colours) -> None:
    """Large cases: the summed canvas as an image, coloured outlines of the first kernel copies."""
    from matplotlib.patches import Rectangle

    ax.imshow(explanation.canvas, cmap="Greys", alpha=0.5, interpolation="nearest")
    for copy, colour in zip(explanation.copies[:MAX_OUTLINED_COPIES], colours):
        rows, cols = tap_positions(explanation, copy)
        ax.add_patch(
            Rectangle(
                (cols[0] - 0.5, rows[0] - 0.5),
                cols[-1] - cols[0] + 1,
                rows[-1] - rows[0] + 1,
                fill=False,
                edgecolor=colour,
                linewidth=0.8,
                alpha=0.7,
            )
        )


# ----------------------------------------------------------------------------- 1-d


def _figure_1d(explanation: Explanation, at_terms: Sequence[OutputTerms]):
    from matplotlib.figure import Figure

    copies = explanation.copies
    colours = stamp_colours(len(copies))
    length = explanation.canvas.shape[0]
    width = min(16, max(8, 0.55 * length + 2))
    shown_rows = min(len(copies), 24)  # many copies: thinner rows, not an ever taller figure
    extra = 0.3 * min(len(at_terms), 3)
    figure = Figure(figsize=(width, 2.2 + extra + 0.42 * (shown_rows + 5)), layout="constrained")
    grid = figure.add_gridspec(4, 2, height_ratios=[1, shown_rows + 2, 1, 1])
    inputs = sorted({t.input_index for terms in at_terms for t in terms.terms})
    input_legend(figure.add_subplot(grid[0, 0]), explanation, colours, "input x (colour = its copy)", emphasised=inputs)
    kernel_ax = figure.add_subplot(grid[0, 1])
    _kernel_heatmap(kernel_ax, explanation)
    for terms in at_terms:
        for term in terms.terms:
            outline_cell(
                kernel_ax, *cell(term.kernel_index), colours[_copy_number(explanation, term.input_index)], linewidth=3
            )
    _scatter_1d(figure.add_subplot(grid[1, :]), explanation, colours, at_terms)
    heatmap(
        figure.add_subplot(grid[2, :]),
        explanation.checkerboard.overlap,
        "overlap: kernel taps per output position" + ("  (uneven!)" if explanation.checkerboard.uneven else ""),
        "Purples",
    )
    output_ax = figure.add_subplot(grid[3, :])
    heatmap(output_ax, explanation.output, "output y", "viridis")
    for terms in at_terms:
        outline_cell(output_ax, *cell(terms.output_index), "white", linewidth=4, inset=0.02)
        outline_cell(output_ax, *cell(terms.output_index), AT_COLOUR, linewidth=2, inset=0.02)
    figure.suptitle(figure_title(explanation), fontsize=12)
    return figure


def _scatter_1d(ax, explanation: Explanation, colours, at_terms: Sequence[OutputTerms]) -> None:
    """One row per kernel copy, offset to where it lands, then the sum row; ``--at`` columns marked."""
    from matplotlib.patches import Patch, Rectangle

    g = explanation.geometry
    copies = explanation.copies
    canvas = explanation.canvas
    length = canvas.shape[0]
    start, stop = explanation.output_window[0]
    lo = g.crop[0][0]
    annotate = length <= 2 * MAX_ANNOTATED
    sum_row = len(copies) + 0.5
    at_positions = {terms.output_index[0] + lo for terms in at_terms}
    used = {(_copy_number(explanation, t.input_index), t.kernel_index[0]) for terms in at_terms for t in terms.terms}
    for position in sorted(at_positions):
        ax.axvspan(position - 0.5, position + 0.5, color=AT_COLUMN_COLOUR, zorder=0)
    for row, (copy, colour) in enumerate(zip(copies, colours)):
        (positions,) = tap_positions(explanation, copy)
        for t, (position, value) in enumerate(zip(positions, copy.values)):
            bold = (row, t) in used
            ax.add_patch(Rectangle((position - 0.45, row - 0.4), 0.9, 0.8, facecolor=colour, edgecolor="white"))
            if bold:
                ax.add_patch(
                    Rectangle((position - 0.45, row - 0.4), 0.9, 0.8, fill=False, edgecolor="black", linewidth=2.5)
                )
            if annotate:
                ax.text(
                    position,
                    row,
                    format_value(value),
                    ha="center",
                    va="center",
                    fontsize=8,
                    fontweight="bold" if bold else "normal",
                    color="white" if is_dark(colour) else "black",
                )
    for position, value in enumerate(canvas):
        inside = start <= position < stop
        chosen = position in at_positions
        ax.add_patch(
            Rectangle(
                (position - 0.45, sum_row - 0.4),
                0.9,
                0.8,
                facecolor=KEPT_COLOUR if inside else "white",
                edgecolor=AT_COLOUR if chosen else ("black" if inside else "grey"),
                linewidth=2.5 if chosen else 1,
            )
        )
        if annotate:
            ax.text(
                position,
                sum_row,
                format_value(value),
                ha="center",
                va="center",
                fontsize=8,
                color="black" if inside else "grey",
                fontweight="bold" if inside else "normal",
            )
    for edge in (start - 0.5, stop - 0.5):
        ax.axvline(edge, linestyle="--", color="black", linewidth=1.5)
    ax.set_xlim(-0.6, length - 0.4)
    ax.set_ylim(sum_row + 0.6, -0.6)
    labels = [f"x[{c.input_index[0]}]·w" for c in copies] + ["sum"]
    ax.set_yticks([*range(len(copies)), sum_row])
    ax.set_yticklabels(labels, fontsize=8)
    for tick, colour in zip(ax.get_yticklabels(), colours):
        tick.set_color(colour)
    step = max(1, length // 16)
    ax.set_xticks(range(0, length, step))
    ax.set_xticklabels([str(p - lo) for p in range(0, length, step)], fontsize=8)
    ax.set_xlabel("output position o = i·s − p + t·d")
    title = "scatter view: each input stamps a scaled kernel copy\n"
    title += "dashed: the output window padding's crop keeps (grey sums; white ones are cropped)"
    if at_terms:
        title += "\n" + _at_caption(at_terms) + "   (yellow column; framed: its products)"
    ax.set_title(title, fontsize=11)
    key = _window_key(cells=True)
    if at_terms:
        key.append(Patch(facecolor=AT_COLUMN_COLOUR, label="--at output position"))
    ax.legend(handles=key, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
