"""The scatter view as an animated GIF (``jtconv explain --gif``).

One picture per :class:`~jtconv.explain_frames.Frame` of
:func:`~jtconv.explain_frames.frames`: for each input value in row-major order
its stamp ``x[i]·w`` (tap ``t`` at ``i·s − p + t·d``) is framed and its
products written in, over the running sum of the full result; then padding's
crop, output_padding's extra positions and the output. Output cells named by
``at`` are framed in every picture, with their sum so far in the caption.

matplotlib draws the pictures (object API only) and a
:class:`matplotlib.animation.AbstractMovieWriter` writes them with Pillow;
both are imported only when a GIF is made (``pip install matplotlib Pillow``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np

from jtconv.explain import Explanation, OutputTerms
from jtconv.explain_frames import Frame, frames
from jtconv.explain_plot import (
    MAX_ANNOTATED,
    cell,
    figure_title,
    format_value,
    heatmap,
    integer_ticks,
    is_dark,
    outline_cell,
    tap_positions,
    window_rectangle,
    write_values,
)

__all__ = ["DEFAULT_FRAME_MS", "DEFAULT_WIDTH", "MAX_GIF_INPUTS", "check_gif_options", "save_gif"]

DEFAULT_FRAME_MS = 800
"""Milliseconds each frame is shown; the last one stays :data:`FINAL_HOLD` times as long."""

DEFAULT_WIDTH = 900
"""Width of the GIF in pixels; the height follows from the layout."""

FINAL_HOLD = 3
MAX_AT_LINES = 3
MIN_CELL_PX = 22
"""Cells smaller than this (in pixels) are drawn without their numbers."""
GIF_COLOURS = 128
MIN_FRAME_MS, MAX_FRAME_MS = 20, 60_000
MIN_WIDTH, MAX_WIDTH = 400, 2000

MAX_GIF_INPUTS = 144
"""One frame per input value: larger inputs are refused (use a smaller ``input_size``)."""

DPI = 100
STAMP_COLOUR = "#ff7f0e"
STAMPED_COLOUR = "#9ecae1"
PRODUCT_COLOUR = "#d94801"
AT_COLOUR = "#e7298a"
OUTPUT_PADDING_COLOUR = "#2ca02c"
SUM_CMAP = "Blues"
SIGNED_SUM_CMAP = "RdBu_r"
KEY_COLOURS = (
    "white",
    "black",
    "grey",
    "#555555",
    STAMP_COLOUR,
    STAMPED_COLOUR,
    PRODUCT_COLOUR,
    AT_COLOUR,
    OUTPUT_PADDING_COLOUR,
)
"""Kept exactly in the GIF's palette (the other colours are quantized)."""


def check_gif_options(explanation: Explanation, frame_ms: int = DEFAULT_FRAME_MS, width: int = DEFAULT_WIDTH) -> None:
    """Raise ``ValueError`` (``TypeError`` for a non-integer) naming the bad option.

    ``frame_ms`` must lie in ``[20, 60000]`` (GIF stores centiseconds, so it is
    rounded down to 10 ms), ``width`` in ``[240, 4000]`` pixels, and the input
    may have at most :data:`MAX_GIF_INPUTS` values.
    """
    for name, value, low, high, unit in (
        ("frame_ms", frame_ms, MIN_FRAME_MS, MAX_FRAME_MS, "milliseconds"),
        ("width", width, MIN_WIDTH, MAX_WIDTH, "pixels"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int ({unit}), got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high} {unit}, got {value}")
    count = len(explanation.copies)
    if count > MAX_GIF_INPUTS:
        size = "×".join(map(str, explanation.geometry.input_size))
        raise ValueError(
            f"input_size {size} has {count} values and the GIF draws one frame per value: "
            f"at most {MAX_GIF_INPUTS} (use a smaller input_size)"
        )


def save_gif(
    explanation: Explanation,
    path: str | os.PathLike,
    *,
    at: Sequence[Sequence[int] | int] = (),
    frame_ms: int = DEFAULT_FRAME_MS,
    width: int = DEFAULT_WIDTH,
) -> int:
    """Write the animation of ``explanation`` to ``path`` and return its number of frames (``n + 3``).

    Args:
      at: output indices to follow (as for :meth:`~jtconv.explain.Explanation.terms_at`).
      frame_ms: milliseconds per frame; the last frame stays 3 times as long.
      width: width in pixels.

    Raises:
      ValueError, TypeError: from :func:`check_gif_options` and ``terms_at``,
        before anything is drawn.
    """
    check_gif_options(explanation, frame_ms, width)
    at_terms = [explanation.terms_at(index) for index in at]
    steps = frames(explanation)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layout = _layout(explanation, width, len(at_terms))
    figure = Figure(figsize=(width / DPI, layout.height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    scene = _Scene(figure, explanation, at_terms, layout, width, len(steps))
    stamps = len(explanation.copies)
    samples = []
    for frame in (steps[stamps // 2], steps[stamps + 1]):  # between them, every colour the frames use
        scene.show(frame)
        samples.append(_render(figure))
    writer = _gif_writer([frame_ms] * (len(steps) - 1) + [FINAL_HOLD * frame_ms], _palette(samples))
    with writer.saving(figure, os.fspath(path), DPI):
        for frame in steps:
            scene.show(frame)
            writer.grab_frame()
    return len(steps)


def _render(figure):
    """The figure as a Pillow RGB image (its canvas is a FigureCanvasAgg)."""
    from PIL import Image

    figure.canvas.draw()
    return Image.fromarray(np.asarray(figure.canvas.buffer_rgba())).convert("RGB")


def _palette(samples):
    """One palette for every frame (so that unchanged pixels stay unchanged and each frame stores only its
    changes): :data:`KEY_COLOURS` exactly, the rest quantized from ``samples``."""
    from matplotlib import colors
    from PIL import Image

    width, height = samples[0].size
    mosaic = Image.new("RGB", (width, height * len(samples)))
    for n, sample in enumerate(samples):
        mosaic.paste(sample, (0, height * n))
    exact = [colors.to_rgb(c) for c in KEY_COLOURS]
    free = GIF_COLOURS - len(exact)
    quantized = mosaic.quantize(colors=free, dither=Image.Dither.NONE)
    palette = Image.new("P", (1, 1))
    palette.putpalette(quantized.getpalette()[: 3 * free] + [round(255 * v) for rgb in exact for v in rgb])
    return palette


def _gif_writer(durations: Sequence[int], palette):
    """An animation writer that keeps each frame in ``palette`` and saves them with Pillow, one duration each."""
    from matplotlib.animation import AbstractMovieWriter
    from PIL import Image

    class GifWriter(AbstractMovieWriter):
        def setup(self, fig, outfile, dpi=None):
            super().setup(fig, outfile, dpi=dpi)
            self._images = []

        def grab_frame(self, **savefig_kwargs):
            self._images.append(_render(self.fig).quantize(palette=palette, dither=Image.Dither.NONE))

        def finish(self):
            first, *rest = self._images
            first.save(self.outfile, save_all=True, append_images=rest, duration=list(durations), loop=0)

    return GifWriter(fps=max(1, round(1000 / durations[0])))  # the writer keeps its own per-frame durations


# ----------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Pixel height and the panels' places as figure fractions ``(left, bottom, width, height)``."""

    height: int
    caption_px: int
    input: tuple[float, float, float, float]
    kernel: tuple[float, float, float, float]
    canvas: tuple[float, float, float, float]


def _layout(explanation: Explanation, width: int, at_count: int) -> _Layout:
    """Fixed places for every frame (so frames line up): caption band on top, square cells below."""
    caption = 70 + 18 * min(at_count, MAX_AT_LINES)
    title = 24
    rows, cols = np.atleast_2d(explanation.canvas).shape
    if explanation.ndim == 1:
        cell = min(0.9 * width / cols, 60.0)
        small = min(0.42 * width / max(explanation.input.size, explanation.kernel.size), 44.0)
        ticks = 44
        height = caption + title + small + 30 + title + cell + ticks
        small_bottom = height - caption - title - small
        boxes = (
            (0.05, small_bottom / height, 0.42, small / height),
            (0.53, small_bottom / height, 0.42, small / height),
            (0.05, ticks / height, 0.9, cell / height),
        )
    else:
        ticks = 30
        canvas_h = min(0.62 * width * rows / cols, 1.3 * width)
        in_h = 0.25 * width * explanation.input.shape[0] / explanation.input.shape[1]
        k_h = 0.25 * width * explanation.kernel.shape[0] / explanation.kernel.shape[1]
        body = max(canvas_h + title, in_h + k_h + 2 * title + 20)
        height = caption + body + ticks
        top = height - caption
        boxes = (
            (0.03, (top - title - in_h) / height, 0.25, in_h / height),
            (0.03, ticks / height, 0.25, (top - 2 * title - in_h - 20 - ticks) / height),
            (0.33, ticks / height, 0.64, (top - title - ticks) / height),
        )
    return _Layout(int(round(height)), caption, *boxes)


def _cell_px(box: tuple[float, float, float, float], shape: tuple[int, ...], width: int, height: int) -> float:
    """Side in pixels of one square cell of a ``shape`` grid drawn in ``box`` (figure fractions)."""
    rows, cols = shape
    return min(box[2] * width / cols, box[3] * height / rows)


def _sum_range(explanation: Explanation):
    """One colour scale for every frame: ``[0, max]``, or ``[−m, m]`` with ``m = max|canvas|``
    when some sum is negative (so that 0 is white either way)."""
    from matplotlib.colors import Normalize

    largest = float(np.abs(explanation.canvas).max(initial=0.0)) or 1.0
    return Normalize(vmin=-largest if explanation.canvas.min() < 0 else 0.0, vmax=largest)


def _sum_colours(explanation: Explanation):
    """Blues for sums that are never negative, red-white-blue otherwise; cells no tap reached are white."""
    from matplotlib import colormaps

    return colormaps[SUM_CMAP if explanation.canvas.min() >= 0 else SIGNED_SUM_CMAP].with_extremes(bad="white")


# ----------------------------------------------------------------------------- drawing


class _Scene:
    """The figure's artists, made once (axes, ticks and cell texts are what take the time to draw);
    :meth:`show` updates them for one frame and adds that frame's marks (removed by the next call)."""

    def __init__(
        self, figure, explanation: Explanation, at_terms: Sequence[OutputTerms], layout: _Layout, width: int, count: int
    ) -> None:
        from matplotlib.patches import Rectangle

        self.explanation, self.at_terms, self.count = explanation, at_terms, count
        self.scale = scale = max(0.6, width / DEFAULT_WIDTH)
        self.marks: list = []
        g = explanation.geometry
        height = layout.height
        figure.text(0.5, 1 - 14 / height, figure_title(explanation), ha="center", va="center", fontsize=10 * scale)
        self.step_text = figure.text(
            0.5, 1 - 40 / height, "", ha="center", va="center", fontsize=11.5 * scale, fontweight="bold"
        )
        self.at_texts = [
            figure.text(
                0.5, 1 - (62 + 18 * line) / height, "", ha="center", va="center", fontsize=10 * scale, color=AT_COLOUR
            )
            for line in range(min(len(at_terms), MAX_AT_LINES))
        ]

        self.input_ax = ax = figure.add_axes(layout.input)
        x = np.atleast_2d(explanation.input)
        self.input_cells = {}
        for index in np.ndindex(*explanation.input.shape):
            r, c = cell(index)
            self.input_cells[index] = Rectangle(
                (c - 0.5, r - 0.5), 1, 1, facecolor="white", edgecolor="#999999", linewidth=0.6
            )
            ax.add_patch(self.input_cells[index])
        if _cell_px(layout.input, x.shape, width, height) >= MIN_CELL_PX:
            write_values(ax, x, None, fontsize=8 * scale)
        ax.set_xlim(-0.5, x.shape[1] - 0.5)
        ax.set_ylim(x.shape[0] - 0.5, -0.5)
        ax.set_aspect("auto" if x.shape[0] == 1 and x.shape[1] > MAX_ANNOTATED else "equal")
        ax.set_title("input x", fontsize=11 * scale)
        integer_ticks(ax, x.shape[0], x.shape[1], one_row=g.ndim == 1, fontsize=8 * scale)

        self.kernel_ax = figure.add_axes(layout.kernel)
        kernel_numbers = _cell_px(layout.kernel, np.atleast_2d(explanation.kernel).shape, width, height) >= MIN_CELL_PX
        heatmap(self.kernel_ax, explanation.kernel, "kernel w", "Oranges", annotate=kernel_numbers, scale=scale)

        self.canvas_ax = ax = figure.add_axes(layout.canvas)
        shape = np.atleast_2d(explanation.canvas).shape
        rows, cols = shape
        aspect = "auto" if g.ndim == 1 and cols > 2 * MAX_ANNOTATED else "equal"
        self.image = ax.imshow(
            np.ma.masked_all(shape),
            cmap=_sum_colours(explanation),
            norm=_sum_range(explanation),
            interpolation="nearest",
            aspect=aspect,
        )
        self.overlay = ax.imshow(np.zeros((*shape, 4)), interpolation="nearest", aspect=aspect)
        self.annotate = max(rows, cols) <= (2 * MAX_ANNOTATED if g.ndim == 1 else MAX_ANNOTATED) and (
            _cell_px(layout.canvas, shape, width, height) >= MIN_CELL_PX
        )
        self.value_texts = (
            [
                [ax.text(c, r, "", ha="center", va="center", fontsize=9.5 * scale, clip_on=True) for c in range(cols)]
                for r in range(rows)
            ]
            if self.annotate
            else []
        )
        self.offsets = (0, g.crop[0][0]) if g.ndim == 1 else (g.crop[0][0], g.crop[1][0])
        integer_ticks(
            ax,
            rows,
            cols,
            one_row=g.ndim == 1,
            row_offset=self.offsets[0],
            col_offset=self.offsets[1],
            fontsize=8 * scale,
        )
        for terms in at_terms:
            r, c = cell(tuple(o + lo for o, (lo, _) in zip(terms.output_index, g.crop)))
            outline_cell(ax, r, c, "white", linewidth=5.5 * scale, inset=0.0, zorder=4)
            outline_cell(ax, r, c, AT_COLOUR, linewidth=3 * scale, inset=0.0, zorder=4)
        self.shape = shape

    def show(self, frame: Frame) -> None:
        for artist in self.marks:
            artist.remove()
        self.marks = []
        self.step_text.set_text(f"step {frame.step + 1}/{self.count}: {frame.caption}")
        for text, terms in zip(self.at_texts, self.at_terms):
            text.set_text(_at_line(frame, terms))
        self._show_input(frame)
        self._show_kernel(frame)
        self._show_canvas(frame)

    def _mark_cell(self, ax, row: int, col: int, colour, linewidth: float, inset: float = 0.05) -> None:
        before = len(ax.patches)
        outline_cell(ax, row, col, colour, linewidth=linewidth * self.scale, inset=inset, zorder=3)
        self.marks.extend(ax.patches[before:])

    def _show_input(self, frame: Frame) -> None:
        current = frame.copy.input_index if frame.copy is not None else None
        for index, rectangle in self.input_cells.items():
            stamped = frame.stamped[index]
            rectangle.set_facecolor(STAMP_COLOUR if index == current else STAMPED_COLOUR if stamped else "white")
        if current is not None:
            self._mark_cell(self.input_ax, *cell(current), "black", 2.5, inset=0.06)

    def _show_kernel(self, frame: Frame) -> None:
        if frame.copy is None:
            return
        for terms in self.at_terms:
            for term in terms.terms:
                if term.input_index == frame.copy.input_index:
                    self._mark_cell(self.kernel_ax, *cell(term.kernel_index), AT_COLOUR, 3)

    def _show_canvas(self, frame: Frame) -> None:
        explanation, ax, ndim = self.explanation, self.canvas_ax, self.explanation.ndim
        grid = np.atleast_2d(frame.running_sum)
        reached = np.atleast_2d(frame.taps) > 0
        kept = _window_mask(self.shape, frame.window, ndim)
        self.image.set_data(np.ma.masked_where(~reached, grid))
        overlay = np.zeros((*self.shape, 4))
        if frame.kind in ("crop", "output_padding"):
            overlay[~kept] = (1.0, 1.0, 1.0, 0.7)
        self.overlay.set_data(overlay)
        if self.annotate:
            shown = {"stamp": reached, "output": kept}.get(frame.kind, reached | kept)
            for r, c in np.ndindex(*self.shape):
                text = self.value_texts[r][c]
                text.set_visible(bool(shown[r, c]))
                text.set_text(format_value(grid[r, c]))
                dark = is_dark(self.image.cmap(self.image.norm(grid[r, c])))
                text.set_color("grey" if not kept[r, c] and frame.kind != "stamp" else "white" if dark else "black")
        if frame.kind == "stamp":
            self._show_stamp(frame)
            self._mark_window(frame.output_window, linestyle="--", linewidth=1.5 * self.scale, edgecolor="#555555")
        elif frame.kind != "output":
            self._mark_window(frame.window, linewidth=2.5 * self.scale, edgecolor="black")
        if frame.kind == "output_padding":
            given_back = kept & ~_window_mask(self.shape, explanation.padding_window, ndim)
            for r, c in zip(*np.nonzero(given_back)):
                self._mark_cell(ax, r, c, OUTPUT_PADDING_COLOUR, 2.5)
        rows, cols = self.shape
        (r0, r1), (c0, c1) = ((0, 1), frame.window[0]) if ndim == 1 else frame.window
        if frame.kind == "output":
            ax.set_xlim(c0 - 0.5, c1 - 0.5)
            ax.set_ylim(r1 - 0.5, r0 - 0.5)
            ax.set_title("output y", fontsize=9.5 * self.scale)
        else:
            ax.set_xlim(-0.5, cols - 0.5)
            ax.set_ylim(rows - 0.5, -0.5)
            ax.set_title(
                "running sum of the full result (ticks: output positions; dashed: the output window)"
                if frame.kind == "stamp"
                else "full result (ticks: output positions)",
                fontsize=9.5 * self.scale,
            )

    def _mark_window(self, window, **kwargs) -> None:
        before = len(self.canvas_ax.patches)
        window_rectangle(self.canvas_ax, window, zorder=3, **kwargs)
        self.marks.extend(self.canvas_ax.patches[before:])

    def _show_stamp(self, frame: Frame) -> None:
        """This frame's stamp: each tap's cell framed in the stamp colour, its product written at the top."""
        from matplotlib.patches import Rectangle

        assert frame.copy is not None, "stamp frames carry their copy"
        positions = tap_positions(self.explanation, frame.copy)
        if self.explanation.ndim == 1:
            positions = [range(1), *positions]
        values = np.atleast_2d(frame.copy.values)
        for tr, r in enumerate(positions[0]):
            for tc, c in enumerate(positions[1]):
                self._mark_cell(self.canvas_ax, r, c, STAMP_COLOUR, 2.5)
                if self.annotate:
                    label = Rectangle(
                        (c - 0.32, r - 0.44), 0.64, 0.26, facecolor="white", edgecolor="none", alpha=0.85, zorder=4.5
                    )
                    self.canvas_ax.add_patch(label)
                    self.marks.append(label)
                    self.marks.append(
                        self.canvas_ax.text(
                            c,
                            r - 0.31,
                            "+" + format_value(values[tr, tc]),
                            ha="center",
                            va="center",
                            fontsize=6.5 * self.scale,
                            color=PRODUCT_COLOUR,
                            fontweight="bold",
                            clip_on=True,
                            zorder=5,
                        )
                    )


def _at_line(frame: Frame, terms: OutputTerms) -> str:
    """``y[0,1] so far: 1·7 + 1·5 = 12`` (the stamped terms, as input·kernel values)."""
    index = ",".join(map(str, terms.output_index))
    added = frame.added_terms(terms)
    products = " + ".join(f"{format_value(t.input_value)}·{format_value(t.kernel_value)}" for t in added)
    total = format_value(math.fsum(t.product for t in added))
    if not terms.terms:
        return f"y[{index}] = 0: no kernel tap reaches it"
    if frame.kind != "stamp":
        return f"y[{index}] = {products} = {total}"
    if not added:
        return f"y[{index}] so far: 0 (no term yet)"
    line = f"y[{index}] so far: {products} = {total}"
    assert frame.copy is not None, "stamp frames carry their copy"
    for t in added:
        if t.input_index == frame.copy.input_index:
            line += (
                f"   (this step: + x[{','.join(map(str, t.input_index))}]·w[{','.join(map(str, t.kernel_index))}]"
                f" = {format_value(t.input_value)}·{format_value(t.kernel_value)})"
            )
    return line


def _window_mask(shape: tuple[int, int], window, ndim: int) -> np.ndarray:
    """True inside ``window`` (canvas coordinates) on the 2-d (1-d: one row) grid."""
    mask = np.zeros(shape, dtype=bool)
    (r0, r1), (c0, c1) = ((0, 1), window[0]) if ndim == 1 else window
    mask[r0:r1, c0:c1] = True
    return mask
