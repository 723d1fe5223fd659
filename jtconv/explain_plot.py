"""Pictures of an :class:`~jtconv.explain.Explanation` (``jtconv explain --png``).

Draws, as the tutorials do: the input (each value's cell in the colour of its kernel stamp); the kernel; the scatter
view (each input value stamps ``x[i]·w`` with tap ``t`` at ``i·s − p + t·d``; each cell carries one dot per stamp
reaching it, in that stamp's colour, and the sum; one stamp, or the stamps behind ``--at``, drawn whole with their
products; the output window padding's crop keeps dashed, its cells grey), with a legend of the stamp colours and the
window; the overlap map; and the output, with the ``--at`` cells boxed. matplotlib (``pip install matplotlib
Pillow``) is imported only to draw, and only its object API. The cell helpers are shared with the GIF.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence

import numpy as np

from jtconv.explain import Explanation, KernelCopy, OutputTerms, Window
from jtconv.formatting import format_index, format_number, format_shape

__all__ = ["build_figure", "save_figure"]

MAX_ANNOTATED = 16  # grids with more positions than this per dimension are drawn without numbers
MAX_TAP_PATCHES = 1500  # above this many (copy, tap) cells, the 2-d scatter view outlines the first copies instead
MAX_OUTLINED_COPIES = 100
MAX_DOTS_PER_CELL = 9  # cells reached by more stamps get no dots (too small to see)
MAX_LABELLED_STAMPS = 4  # highlighted stamps that write their products into the cells (one per corner)
AT_COLOUR = "black"  # frame of the output cells named by --at
AT_COLUMN_COLOUR = "#fff2a8"  # 1-d: the column of an output position named by --at
KEPT_COLOUR = "#e6e6e6"  # cells of the output window padding's crop keeps (cropped cells are white)

STAMP_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#e377c2", "#17becf", "#885500",
    "#bbaa00", "#556600", "#99aaff", "#bb0066", "#ff8888", "#2244ff", "#00cc99", "#007744",
)  # fmt: skip
"""One colour per input value's stamp, repeating after 16: saturated, mid-light colours (no pale shade of
another), far apart in CIELAB, starting with matplotlib's tab10 less its grey, olive and brown."""


def save_figure(
    explanation: Explanation, path: str | os.PathLike, dpi: int = 110, at_terms: Sequence[OutputTerms] = ()
) -> None:
    """Draw ``explanation`` and write it to ``path`` (format from the extension, e.g. ``.png``); ``at_terms``
    (from :meth:`~jtconv.explain.Explanation.terms_at`) are highlighted: their output cells, stamps and kernel taps."""
    build_figure(explanation, at_terms).savefig(path, dpi=dpi, bbox_inches="tight")


def build_figure(explanation: Explanation, at_terms: Sequence[OutputTerms] = ()):
    """A :class:`matplotlib.figure.Figure` of the explanation (1-d or 2-d)."""
    from matplotlib.figure import Figure

    e = explanation
    colours = stamp_colours(len(e.copies))
    if e.ndim == 1:
        rows = min(len(e.copies), 24)  # many copies: thinner rows, not an ever taller figure
        size = (min(16, max(8, 0.55 * e.canvas.shape[0] + 2)), 2.2 + 0.3 * min(len(at_terms), 3) + 0.42 * (rows + 5))
        figure = Figure(figsize=size, layout="constrained")
        grid = figure.add_gridspec(4, 2, height_ratios=[1, rows + 2, 1, 1])
        places = grid[0, 0], grid[0, 1], grid[1, :], grid[2, :], grid[3, :]
        emphasised = sorted({t.input_index for terms in at_terms for t in terms.terms})
    else:
        figure = Figure(figsize=(16, 9.5), layout="constrained")
        grid = figure.add_gridspec(2, 4, width_ratios=[1, 2.2, 1, 1])
        places = grid[0, 0], grid[1, 0], grid[:, 1], grid[0, 2:], grid[1, 2:]
        highlighted = sorted({_copy_number(e, t.input_index) for terms in at_terms for t in terms.terms})
        if not at_terms:  # the middle input value's stamp is drawn whole
            highlighted = [_copy_number(e, tuple(n // 2 for n in e.geometry.input_size))]
        emphasised = [e.copies[n].input_index for n in highlighted]
    input_ax, kernel_ax, scatter_ax, overlap_ax, output_ax = (figure.add_subplot(place) for place in places)
    title = f"input x (colour = its {'copy' if e.ndim == 1 else 'stamp'})"
    input_panel(input_ax, e, colours, title, max(e.input.shape) <= MAX_ANNOTATED, edgecolor="white", linewidth=1)
    for index in emphasised:
        outline_cell(input_ax, *cell(index), "black", linewidth=2.5, inset=0.06)
    low, high = float(e.kernel.min()), float(e.kernel.max())  # light greys: the largest value mid-grey
    heatmap(kernel_ax, e.kernel, "kernel w", "Greys", vmin=low, vmax=2 * high - low)
    for term in (t for terms in at_terms for t in terms.terms):
        outline_cell(kernel_ax, *cell(term.kernel_index), colours[_copy_number(e, term.input_index)], linewidth=3)
    if e.ndim == 1:
        _scatter_1d(scatter_ax, e, colours, at_terms)
    else:
        _scatter_2d(scatter_ax, e, colours, highlighted, at_terms)
    uneven = "  (uneven!)" if e.checkerboard.uneven else ""
    heatmap(overlap_ax, e.checkerboard.overlap, "overlap: kernel taps per output position" + uneven, "Purples")
    heatmap(output_ax, e.output, "output y", "viridis")
    for terms in at_terms:
        outline_cell(output_ax, *cell(terms.output_index), "white", linewidth=4, inset=0.02)
        outline_cell(output_ax, *cell(terms.output_index), AT_COLOUR, linewidth=2, inset=0.02)
    figure.suptitle(figure_title(e), fontsize=12)
    return figure


# ----------------------------------------------------------------------------- shared with explain_gif


def figure_title(explanation: Explanation) -> str:
    """``ConvTranspose2d: input 4×4, kernel 4×4, stride 2, … → output 8×8``."""
    g = explanation.geometry
    return f"ConvTranspose{g.ndim}d: {explanation.parameters}  →  output {format_shape(g.output_size)}"


def stamp_colours(count: int) -> list:
    """The colour of each input value's stamp (row-major), as RGBA tuples: :data:`STAMP_PALETTE` in turn."""
    from matplotlib.colors import to_rgba

    return [to_rgba(STAMP_PALETTE[n % len(STAMP_PALETTE)]) for n in range(count)]


def cell(index: Sequence[int]) -> tuple[int, int]:
    """``(row, col)`` of an index into a 1-d (one row) or 2-d grid."""
    return (0, int(index[0])) if len(index) == 1 else (int(index[0]), int(index[1]))


def is_dark(rgba) -> bool:
    return 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5


def box(ax, row: float, col: float, height: float = 1, width: float = 1, inset: float = 0.0, **style):
    """Add a rectangle over the grid cells from ``(row, col)`` on, ``inset`` inside their edges."""
    from matplotlib.patches import Rectangle

    corner = (col - 0.5 + inset, row - 0.5 + inset)
    return ax.add_patch(Rectangle(corner, width - 2 * inset, height - 2 * inset, **style))


def outline_cell(ax, row: int, col: int, colour, linewidth: float = 2.5, inset: float = 0.04, **style):
    return box(ax, row, col, inset=inset, fill=False, edgecolor=colour, linewidth=linewidth, **style)


def window_rectangle(ax, window: Window, **style):
    """Outline of a canvas window ``((r0, r1), (c0, c1))`` or ``((c0, c1),)``."""
    (r0, r1), (c0, c1) = ((0, 1), window[0]) if len(window) == 1 else window
    return box(ax, r0, c0, r1 - r0, c1 - c0, fill=False, **style)


def window_mask(shape: tuple[int, ...], window: Window) -> np.ndarray:
    """True inside ``window`` (a 1-d window on a one-row grid, or a 2-d one)."""
    mask = np.zeros(shape, dtype=bool)
    mask[(Ellipsis,) + tuple(slice(start, stop) for start, stop in window)] = True
    return mask


def centred(ax, x: float, y: float, text: str, **style):
    return ax.text(x, y, text, ha="center", va="center", **style)


def write_values(ax, grid: np.ndarray, colours, fontsize: float = 8) -> None:
    """Each value of ``grid`` (2-d) in its cell, white on dark ``colours`` (RGBA per cell)."""
    for (r, c), value in np.ndenumerate(grid):
        centred(ax, c, r, format_number(value), fontsize=fontsize, color="white" if is_dark(colours[r][c]) else "black")


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


def heatmap(ax, values: np.ndarray, title: str, cmap: str, vmin=None, vmax=None, annotate=None, scale: float = 1.0):
    """``values`` (1-d as one row, or 2-d) as an image with its numbers written in (small grids);
    ``scale`` multiplies the font sizes."""
    grid = np.atleast_2d(values)
    aspect = "auto" if values.ndim == 1 and values.shape[0] > MAX_ANNOTATED else "equal"
    image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
    ax.set_title(title, fontsize=11 * scale)
    if max(grid.shape) <= MAX_ANNOTATED if annotate is None else annotate:
        write_values(ax, grid, [[image.cmap(image.norm(v)) for v in row] for row in grid], fontsize=8 * scale)
    integer_ticks(ax, grid.shape[0], grid.shape[1], one_row=values.ndim == 1, fontsize=8 * scale)


def input_panel(ax, explanation: Explanation, colours, title: str, numbers: bool, scale: float = 1.0, **style) -> list:
    """The input as cells filled with ``colours`` (one per value, row-major), with their numbers if
    ``numbers``; returns the cells' rectangles."""
    x = np.atleast_2d(explanation.input)
    rows, cols = x.shape
    cells = [box(ax, r, c, facecolor=colour, **style) for (r, c), colour in zip(np.ndindex(rows, cols), colours)]
    if numbers:
        write_values(ax, x, np.reshape(colours, (rows, cols, 4)), fontsize=8 * scale)
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_aspect("auto" if rows == 1 and cols > MAX_ANNOTATED else "equal")
    ax.set_title(title, fontsize=11 * scale)
    integer_ticks(ax, rows, cols, one_row=explanation.ndim == 1, fontsize=8 * scale)
    return cells


def tap_positions(explanation: Explanation, copy: KernelCopy) -> list[range]:
    """Per dimension, the canvas positions of ``copy``'s taps (``full_start + t·d``)."""
    return [range(s.start, s.stop, s.step) for s in copy.canvas_taps(explanation.geometry.dilation)]


# ----------------------------------------------------------------------------- scatter view


def _copy_number(explanation: Explanation, input_index: Sequence[int]) -> int:
    return int(np.ravel_multi_index(tuple(input_index), explanation.geometry.input_size))


def _at_caption(at_terms: Sequence[OutputTerms]) -> str:
    lines = []
    for terms in at_terms[:3]:
        products = " + ".join(
            f"x[{format_index(t.input_index)}]·w[{format_index(t.kernel_index)}]" for t in terms.terms
        )
        values = " + ".join(f"{format_number(t.input_value)}·{format_number(t.kernel_value)}" for t in terms.terms)
        total = f"{products} = {values} = {format_number(terms.total)}" if terms.terms else "0 (no tap reaches it)"
        lines.append(f"y[{format_index(terms.output_index)}] = {total}")
    return "\n".join(lines)


def _scatter_2d(ax, e: Explanation, colours, highlighted: Sequence[int], at_terms: Sequence[OutputTerms]) -> None:
    """The summed canvas; per cell, one dot per stamp reaching it; highlighted stamps drawn whole."""
    g = e.geometry
    rows, cols = e.canvas.shape
    lo_r, lo_c = g.crop[0][0], g.crop[1][0]
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_aspect("equal")
    small = max(rows, cols) <= MAX_ANNOTATED
    cells = small and len(e.copies) * math.prod(g.kernel_size) <= MAX_TAP_PATCHES
    inside = window_mask(e.canvas.shape, e.output_window)
    if cells:
        for (r, c), kept in np.ndenumerate(inside):
            box(ax, r, c, facecolor=KEPT_COLOUR if kept else "white", edgecolor="#cccccc", linewidth=0.6)
        if e.checkerboard.overlap.max(initial=0) <= MAX_DOTS_PER_CELL:
            _stamp_dots(ax, e, colours)
    else:  # large: the summed canvas as an image, coloured outlines of the first kernel copies
        ax.imshow(e.canvas, cmap="Greys", alpha=0.5, interpolation="nearest")
        for copy, colour in zip(e.copies[:MAX_OUTLINED_COPIES], colours):
            _stamp_outline(ax, e, copy, edgecolor=colour, linewidth=0.8, alpha=0.7)
    for rank, number in enumerate(highlighted[:MAX_OUTLINED_COPIES]):
        _highlight_stamp(ax, e, number, colours[number], rank if small else None)
    if small:
        for (r, c), kept in np.ndenumerate(inside):
            style = dict(color="black", fontweight="bold") if kept else dict(color="grey", fontweight="normal")
            centred(ax, c, r, format_number(e.canvas[r, c]), fontsize=10, **style)
    window_rectangle(ax, e.output_window, linestyle="--", linewidth=2, edgecolor="black")
    for terms in at_terms:
        o_r, o_c = terms.output_index
        outline_cell(ax, o_r + lo_r, o_c + lo_c, "white", linewidth=5, inset=0.0)
        outline_cell(ax, o_r + lo_r, o_c + lo_c, AT_COLOUR, linewidth=2.5, inset=0.0)
    integer_ticks(ax, rows, cols, row_offset=lo_r, col_offset=lo_c)
    names = ", ".join(f"x[{format_index(e.copies[n].input_index)}]·w" for n in highlighted[:4])
    more = f" and {len(highlighted) - 4} more" if len(highlighted) > 4 else ""
    title = (
        "scatter view: each x[i] stamps x[i]·w with tap t at o = i·s − p + t·d; overlaps add\n"
        + ("dots: the stamps reaching a cell (colours as in the input); " if cells else "")
        + f"drawn whole: {names}{more}\ndashed: the output window padding's crop keeps"
        + (" (grey cells; white ones are cropped)" if cells else "")
    )
    ax.set_title(title + ("\n" + _at_caption(at_terms) if at_terms else ""), fontsize=10)
    _legend(ax, e, colours, at_terms, cells)


def _legend(ax, e: Explanation, colours, at_terms: Sequence[OutputTerms], cells: bool) -> None:
    """Below the scatter view: each stamp's colour (the first :data:`STAMP_PALETTE` stamps, in the input's
    row-major order) and what the window, the cells and the frames mean."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    shown = e.copies[: len(STAMP_PALETTE)]
    columns = min(e.geometry.input_size[-1], 4)
    order = sorted(range(len(shown)), key=lambda n: (n % columns, n))  # legends fill column by column
    labels = [f"x[{format_index(copy.input_index)}]·w" for copy in shown]
    stamps = [
        Line2D([], [], linestyle="none", marker="o", markersize=8, color=colours[n], label=labels[n]) for n in order
    ]
    repeat = f" (repeating every {len(STAMP_PALETTE)} inputs)" if len(shown) < len(e.copies) else ""
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


def _stamp_dots(ax, e: Explanation, colours) -> None:
    """In each cell, one dot per stamp reaching it (row-major order), along the cell's lower part."""
    from matplotlib.patches import Circle

    reaching: dict[tuple[int, ...], list[int]] = {}
    for number, copy in enumerate(e.copies):
        for position in itertools.product(*tap_positions(e, copy)):
            reaching.setdefault(position, []).append(number)
    per_row = max(2, math.ceil(math.sqrt(e.checkerboard.overlap.max(initial=1))))
    radius = 0.34 / (2 * per_row)
    for (r, c), numbers in reaching.items():
        for slot, number in enumerate(numbers):
            line, place = divmod(slot, per_row)
            centre = (c - 0.5 + (place + 0.5) / per_row, r + 0.5 - 2.2 * radius * (line + 0.5) - 0.02)
            dot = Circle(centre, radius, facecolor=colours[number], edgecolor="white", linewidth=0.4, zorder=2.5)
            ax.add_patch(dot)


def _stamp_outline(ax, e: Explanation, copy: KernelCopy, **style) -> None:
    rows, cols = tap_positions(e, copy)
    box(ax, rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1, fill=False, **style)


def _highlight_stamp(ax, e: Explanation, number: int, colour, corner: int | None) -> None:
    """Stamp ``number`` drawn whole: its tap cells framed and tinted; products in corner ``corner``."""
    copy = e.copies[number]
    rows, cols = tap_positions(e, copy)
    line = tuple(0.65 * v for v in colour[:3])  # darker: lines and text stay visible on white
    _stamp_outline(ax, e, copy, edgecolor=line, linewidth=2.5)
    for (tr, r), (tc, c) in itertools.product(enumerate(rows), enumerate(cols)):
        box(ax, r, c, inset=0.04, facecolor=colour, alpha=0.25, edgecolor=colour, linewidth=1.2)
        if corner is not None and corner < MAX_LABELLED_STAMPS:
            dx, dy = (-0.44, 0.44)[corner % 2], (-0.44, 0.0)[corner // 2]
            style = dict(fontsize=6.5, color=line, ha="left" if dx < 0 else "right", va="top", fontweight="bold")
            ax.text(c + dx, r + dy, format_number(copy.values[tr, tc]), **style)
    label = f"x[{format_index(copy.input_index)}]·w"
    ax.text(cols[0] - 0.45, rows[0] - 0.55, label, fontsize=8, color=line, fontweight="bold", va="bottom", clip_on=True)


def _scatter_1d(ax, e: Explanation, colours, at_terms: Sequence[OutputTerms]) -> None:
    """One row per kernel copy, offset to where it lands, then the sum row; ``--at`` columns marked."""
    from matplotlib.patches import Patch, Rectangle

    def slot(x: float, y: float, **style) -> None:
        ax.add_patch(Rectangle((x - 0.45, y - 0.4), 0.9, 0.8, **style))

    length, lo = e.canvas.shape[0], e.geometry.crop[0][0]
    start, stop = e.output_window[0]
    annotate = length <= 2 * MAX_ANNOTATED
    sum_row = len(e.copies) + 0.5
    at_positions = {terms.output_index[0] + lo for terms in at_terms}
    used = {(_copy_number(e, t.input_index), t.kernel_index[0]) for terms in at_terms for t in terms.terms}
    for position in sorted(at_positions):
        ax.axvspan(position - 0.5, position + 0.5, color=AT_COLUMN_COLOUR, zorder=0)
    for row, (copy, colour) in enumerate(zip(e.copies, colours)):
        for t, (position, value) in enumerate(zip(tap_positions(e, copy)[0], copy.values)):
            bold = (row, t) in used
            slot(position, row, facecolor=colour, edgecolor="white")
            if bold:
                slot(position, row, fill=False, edgecolor="black", linewidth=2.5)
            if annotate:
                weight, text_colour = "bold" if bold else "normal", "white" if is_dark(colour) else "black"
                centred(ax, position, row, format_number(value), fontsize=8, fontweight=weight, color=text_colour)
    for position, value in enumerate(e.canvas):
        inside, chosen = start <= position < stop, position in at_positions
        edge, width = (AT_COLOUR, 2.5) if chosen else ("black" if inside else "grey", 1)
        slot(position, sum_row, facecolor=KEPT_COLOUR if inside else "white", edgecolor=edge, linewidth=width)
        if annotate:
            style = dict(color="black", fontweight="bold") if inside else dict(color="grey", fontweight="normal")
            centred(ax, position, sum_row, format_number(value), fontsize=8, **style)
    for line in (start - 0.5, stop - 0.5):
        ax.axvline(line, linestyle="--", color="black", linewidth=1.5)
    ax.set_xlim(-0.6, length - 0.4)
    ax.set_ylim(sum_row + 0.6, -0.6)
    ax.set_yticks([*range(len(e.copies)), sum_row])
    ax.set_yticklabels([f"x[{c.input_index[0]}]·w" for c in e.copies] + ["sum"], fontsize=8)
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
