"""Pictures of an :class:`~jtconv.explain.Explanation` (``jtconv explain --png``).

Draws, as the tutorials do: the input and kernel; the scatter view (each
input value's kernel copy in its own colour, placed at ``i·s`` of the full
result, overlaps adding up, the output window after padding's crop dashed);
the overlap map (taps reaching each output position); and the output.

matplotlib is imported here only (``pip install 'jtconv[plot]'``), and only
its object API (no pyplot, no global backend change).
"""

from __future__ import annotations

import os

import numpy as np

from jtconv.explain import Explanation

__all__ = ["build_figure", "save_figure"]

MAX_ANNOTATED = 16
"""Grids with more positions than this per dimension are drawn without numbers."""

MAX_TAP_PATCHES = 1500
"""Above this many (copy, tap) squares the 2-d scatter view draws one outline per copy."""

MAX_OUTLINED_COPIES = 100
"""In that case, outline only the first copies (the rest would hide the picture)."""


def save_figure(explanation: Explanation, path: str | os.PathLike, dpi: int = 110) -> None:
    """Draw ``explanation`` and write it to ``path`` (format from the extension, e.g. ``.png``)."""
    figure = build_figure(explanation)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")


def build_figure(explanation: Explanation):
    """A :class:`matplotlib.figure.Figure` of the explanation (1-d or 2-d)."""
    if explanation.ndim == 1:
        return _figure_1d(explanation)
    return _figure_2d(explanation)


def _fmt(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e6 else f"{value:.3g}"


def _title(explanation: Explanation) -> str:
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


def _colours(count: int):
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](n) for n in range(count)]
    # tab20 pairs a dark and a light shade of each hue: take all dark ones first
    cmap = colormaps["tab20"]
    return [cmap((2 * n) % 20 + (2 * n // 20) % 2) for n in range(count)]


def _heatmap(ax, values: np.ndarray, title: str, cmap: str, annotate_ints: bool = False) -> None:
    grid = np.atleast_2d(values)
    long_row = values.ndim == 1 and values.shape[0] > MAX_ANNOTATED
    image = ax.imshow(grid, cmap=cmap, aspect="auto" if long_row else "equal", interpolation="nearest")
    ax.set_title(title, fontsize=11)
    rows, cols = grid.shape
    if max(rows, cols) <= MAX_ANNOTATED:
        for r in range(rows):
            for c in range(cols):
                red, green, blue, _ = image.cmap(image.norm(grid[r, c]))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                ax.text(c, r, _fmt(grid[r, c]), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    _integer_ticks(ax, rows, cols, one_row=values.ndim == 1)


def _integer_ticks(ax, rows: int, cols: int, one_row: bool = False, col_offset: int = 0) -> None:
    step_c = max(1, cols // 12)
    ax.set_xticks(range(0, cols, step_c))
    ax.set_xticklabels([str(c + col_offset) for c in range(0, cols, step_c)], fontsize=8)
    if one_row:
        ax.set_yticks([])
    else:
        step_r = max(1, rows // 12)
        ax.set_yticks(range(0, rows, step_r))
        ax.set_yticklabels([str(r) for r in range(0, rows, step_r)], fontsize=8)


def _figure_2d(explanation: Explanation):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(16, 8.5), layout="constrained")
    grid = figure.add_gridspec(2, 4, width_ratios=[1, 2.2, 1, 1])
    _heatmap(figure.add_subplot(grid[0, 0]), explanation.input, "input x", "Greys")
    _heatmap(figure.add_subplot(grid[1, 0]), explanation.kernel, "kernel w", "Oranges")
    _scatter_2d(figure.add_subplot(grid[:, 1]), explanation)
    _heatmap(
        figure.add_subplot(grid[0, 2:]),
        explanation.checkerboard.overlap,
        "overlap: kernel taps per output position" + ("  (uneven!)" if explanation.checkerboard.uneven else ""),
        "Purples",
    )
    _heatmap(figure.add_subplot(grid[1, 2:]), explanation.output, "output y", "viridis")
    figure.suptitle(_title(explanation), fontsize=12)
    return figure


def _scatter_2d(ax, explanation: Explanation) -> None:
    """Coloured kernel copies on the full canvas, the sum's values, and the output window."""
    from matplotlib.patches import Rectangle

    g = explanation.geometry
    canvas = explanation.canvas
    rows, cols = canvas.shape
    (r0, r1), (c0, c1) = explanation.output_window
    copies = explanation.copies
    colours = _colours(len(copies))
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_aspect("equal")
    if len(copies) * int(np.prod(g.kernel_size)) > MAX_TAP_PATCHES:
        _copy_outlines_2d(ax, explanation, colours)
    else:
        _tap_squares_2d(ax, explanation, colours)
    if max(rows, cols) <= MAX_ANNOTATED:
        for r in range(rows):
            for c in range(cols):
                inside = r0 <= r < r1 and c0 <= c < c1
                ax.text(
                    c, r, _fmt(canvas[r, c]), ha="center", va="center", fontsize=9,
                    color="black" if inside else "grey", fontweight="bold" if inside else "normal",
                )
    ax.add_patch(
        Rectangle(
            (c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, linestyle="--", linewidth=2, edgecolor="black"
        )
    )
    lo_r, lo_c = g.crop[0][0], g.crop[1][0]
    step_r, step_c = max(1, rows // 12), max(1, cols // 12)
    ax.set_xticks(range(0, cols, step_c))
    ax.set_xticklabels([str(c - lo_c) for c in range(0, cols, step_c)], fontsize=8)
    ax.set_yticks(range(0, rows, step_r))
    ax.set_yticklabels([str(r - lo_r) for r in range(0, rows, step_r)], fontsize=8)
    ax.set_title(
        "scatter view: x[i]·w stamped at i·s − p (one colour per input)\n"
        "dashed: output window after padding's crop; grey: cropped",
        fontsize=11,
    )


def _copy_outlines_2d(ax, explanation: Explanation, colours) -> None:
    """Large cases: the summed canvas as an image, coloured outlines of the first kernel copies."""
    from matplotlib.patches import Rectangle

    g = explanation.geometry
    ax.imshow(explanation.canvas, cmap="Greys", alpha=0.5, interpolation="nearest")
    (kr, kc), (dr, dc) = g.kernel_size, g.dilation
    for copy, colour in zip(explanation.copies[:MAX_OUTLINED_COPIES], colours):
        fr, fc = copy.full_start
        ax.add_patch(
            Rectangle(
                (fc - 0.5, fr - 0.5), (kc - 1) * dc + 1, (kr - 1) * dr + 1,
                fill=False, edgecolor=colour, linewidth=0.8, alpha=0.7,
            )
        )


def _tap_squares_2d(ax, explanation: Explanation, colours) -> None:
    """One translucent square per (copy, tap); each further copy on a cell nests inside."""
    from matplotlib.patches import Rectangle

    g = explanation.geometry
    copies = explanation.copies
    layers = np.zeros(explanation.canvas.shape, dtype=int)
    inset_step = min(0.1, 0.32 / max(1, int(explanation.checkerboard.overlap.max(initial=1))))
    for copy, colour in zip(copies, colours):
        (fr, fc), (kr, kc), (dr, dc) = copy.full_start, g.kernel_size, g.dilation
        for tr in range(kr):
            for tc in range(kc):
                # each further copy on a cell is drawn a little inside the previous one
                inset = 0.04 + layers[fr + tr * dr, fc + tc * dc] * inset_step
                layers[fr + tr * dr, fc + tc * dc] += 1
                ax.add_patch(
                    Rectangle(
                        (fc + tc * dc - 0.5 + inset, fr + tr * dr - 0.5 + inset),
                        1 - 2 * inset,
                        1 - 2 * inset,
                        facecolor=colour,
                        alpha=0.22,
                        edgecolor=colour,
                        linewidth=1.2,
                    )
                )


def _figure_1d(explanation: Explanation):
    from matplotlib.figure import Figure

    copies = explanation.copies
    length = explanation.canvas.shape[0]
    width = min(16, max(8, 0.55 * length + 2))
    shown_rows = min(len(copies), 24)  # many copies: thinner rows, not an ever taller figure
    figure = Figure(figsize=(width, 2.2 + 0.42 * (shown_rows + 5)), layout="constrained")
    grid = figure.add_gridspec(4, 2, height_ratios=[1, shown_rows + 2, 1, 1])
    _heatmap(figure.add_subplot(grid[0, 0]), explanation.input, "input x", "Greys")
    _heatmap(figure.add_subplot(grid[0, 1]), explanation.kernel, "kernel w", "Oranges")
    _scatter_1d(figure.add_subplot(grid[1, :]), explanation)
    _heatmap(
        figure.add_subplot(grid[2, :]),
        explanation.checkerboard.overlap,
        "overlap: kernel taps per output position" + ("  (uneven!)" if explanation.checkerboard.uneven else ""),
        "Purples",
    )
    _heatmap(figure.add_subplot(grid[3, :]), explanation.output, "output y", "viridis")
    figure.suptitle(_title(explanation), fontsize=12)
    return figure


def _scatter_1d(ax, explanation: Explanation) -> None:
    """One row per kernel copy, offset to where it lands, then the sum row."""
    from matplotlib.patches import Rectangle

    g = explanation.geometry
    copies = explanation.copies
    canvas = explanation.canvas
    length = canvas.shape[0]
    start, stop = explanation.output_window[0]
    colours = _colours(len(copies))
    annotate = length <= 2 * MAX_ANNOTATED
    for row, (copy, colour) in enumerate(zip(copies, colours)):
        for t, value in enumerate(copy.values):
            position = copy.full_start[0] + t * g.dilation[0]
            ax.add_patch(
                Rectangle((position - 0.45, row - 0.4), 0.9, 0.8, facecolor=colour, alpha=0.35, edgecolor=colour)
            )
            if annotate:
                ax.text(position, row, _fmt(value), ha="center", va="center", fontsize=8)
    sum_row = len(copies) + 0.5
    for position, value in enumerate(canvas):
        inside = start <= position < stop
        ax.add_patch(
            Rectangle(
                (position - 0.45, sum_row - 0.4), 0.9, 0.8,
                facecolor="#dddddd" if inside else "white", edgecolor="black" if inside else "grey",
            )
        )
        if annotate:
            ax.text(
                position, sum_row, _fmt(value), ha="center", va="center", fontsize=8,
                color="black" if inside else "grey", fontweight="bold" if inside else "normal",
            )
    for edge in (start - 0.5, stop - 0.5):
        ax.axvline(edge, linestyle="--", color="black", linewidth=1.5)
    ax.set_xlim(-0.6, length - 0.4)
    ax.set_ylim(sum_row + 0.6, -0.6)
    labels = [f"x[{c.input_index[0]}]·w" for c in copies] + ["sum"]
    ax.set_yticks([*range(len(copies)), sum_row])
    ax.set_yticklabels(labels, fontsize=8)
    lo = g.crop[0][0]
    step = max(1, length // 16)
    ax.set_xticks(range(0, length, step))
    ax.set_xticklabels([str(p - lo) for p in range(0, length, step)], fontsize=8)
    ax.set_xlabel("output position o = i·s − p + t·d")
    ax.set_title("scatter view: each input stamps a scaled kernel copy; dashed: output window after the crop", fontsize=11)
