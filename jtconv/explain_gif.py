"""The scatter view as an animated GIF (``jtconv explain --gif``).

One picture per step of :func:`~jtconv.explain_frames.frames`: for each input value in row-major order its stamp
``x[i]·w`` (tap ``t`` at ``i·s − p + t·d``) framed, with its products, over the running sum of the full result;
then padding's crop, output_padding's extra positions and the output. Output cells named by ``at`` are framed in
every picture, their sum so far in the caption. matplotlib draws (object API only) and Pillow writes the GIF; both
are imported only when a GIF is made (``pip install matplotlib Pillow``).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from jtconv import explain_plot as plot
from jtconv.explain import Explanation, OutputTerms
from jtconv.explain_frames import Frame, frames
from jtconv.formatting import format_index, format_number, format_shape

__all__ = ["DEFAULT_FRAME_MS", "DEFAULT_WIDTH", "MAX_GIF_INPUTS", "check_gif_options", "save_gif"]

DEFAULT_FRAME_MS = 800  # milliseconds per frame; the last one stays FINAL_HOLD times as long
DEFAULT_WIDTH = 900  # pixels; the height follows from the layout
FINAL_HOLD = 3
MAX_GIF_INPUTS = 144  # one frame per input value: larger inputs are refused
MIN_FRAME_MS, MAX_FRAME_MS = 20, 60_000
MIN_WIDTH, MAX_WIDTH = 400, 2000
MAX_AT_LINES = 3
MIN_CELL_PX = 22  # cells smaller than this (in pixels) are drawn without their numbers
GIF_COLOURS = 128
DPI = 100
STAMP_COLOUR, STAMPED_COLOUR, PRODUCT_COLOUR = "#ff7f0e", "#9ecae1", "#d94801"
AT_COLOUR, OUTPUT_PADDING_COLOUR = "#e7298a", "#2ca02c"
KEY_COLOURS: tuple[str, ...] = ("white", "black", "grey", "#555555", STAMP_COLOUR, STAMPED_COLOUR, PRODUCT_COLOUR)
KEY_COLOURS += (AT_COLOUR, OUTPUT_PADDING_COLOUR)  # kept exactly in the GIF's palette (the others are quantized)


def check_gif_options(explanation: Explanation, frame_ms: int = DEFAULT_FRAME_MS, width: int = DEFAULT_WIDTH) -> None:
    """Raise ``ValueError`` (``TypeError`` for a non-integer) naming the bad option: ``frame_ms`` must lie in
    ``[20, 60000]`` (GIF stores centiseconds: it is rounded down to 10 ms), ``width`` in ``[400, 2000]`` pixels,
    and the input may have at most :data:`MAX_GIF_INPUTS` values."""
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
        raise ValueError(
            f"input_size {format_shape(explanation.geometry.input_size)} has {count} values and the GIF "
            f"draws one frame per value: at most {MAX_GIF_INPUTS} (use a smaller input_size)"
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
      ValueError, TypeError: from :func:`check_gif_options` and ``terms_at``, before anything is drawn.
    """
    check_gif_options(explanation, frame_ms, width)
    at_terms = [explanation.terms_at(index) for index in at]
    steps = frames(explanation)
    from matplotlib.colors import to_rgb
    from PIL import Image

    scene = _Scene(explanation, at_terms, width, len(steps))
    n = len(explanation.copies)
    # One palette for every frame (unchanged pixels stay unchanged, so each frame stores only its changes):
    # KEY_COLOURS exactly, the rest quantized from two frames that between them show every colour.
    samples = [scene.render(steps[n // 2]), scene.render(steps[n + 1])]
    mosaic = Image.new("RGB", (samples[0].width, 2 * samples[0].height))
    mosaic.paste(samples[0], (0, 0))
    mosaic.paste(samples[1], (0, samples[0].height))
    exact = [round(255 * v) for colour in KEY_COLOURS for v in to_rgb(colour)]
    free = GIF_COLOURS - len(KEY_COLOURS)
    palette = Image.new("P", (1, 1))
    quantized = mosaic.quantize(colors=free, dither=Image.Dither.NONE).getpalette() or []
    palette.putpalette(quantized[: 3 * free] + exact)
    Path(path).parent.resolve(strict=True)  # a missing folder fails before every frame is drawn
    images = [scene.render(frame).quantize(palette=palette, dither=Image.Dither.NONE) for frame in steps]
    durations = [frame_ms] * (len(steps) - 1) + [FINAL_HOLD * frame_ms]
    images[0].save(os.fspath(path), save_all=True, append_images=images[1:], duration=durations, loop=0)
    return len(steps)


def _layout(e: Explanation, width: int, at_count: int):
    """Pixel height and the places (figure fractions ``(left, bottom, width, height)``) of the input, kernel
    and canvas panels, the same for every frame: a caption band on top, square cells below."""
    caption, title = 70 + 18 * min(at_count, MAX_AT_LINES), 24
    rows, cols = np.atleast_2d(e.canvas).shape
    if e.ndim == 1:
        cell = min(0.9 * width / cols, 60.0)
        small = min(0.42 * width / max(e.input.size, e.kernel.size), 44.0)
        ticks = 44
        height = caption + title + small + 30 + title + cell + ticks
        bottom = (height - caption - title - small) / height
        boxes = [(0.05, bottom, 0.42, small / height), (0.53, bottom, 0.42, small / height)]
        boxes.append((0.05, ticks / height, 0.9, cell / height))
    else:
        ticks = 30
        canvas_h = min(0.62 * width * rows / cols, 1.3 * width)
        in_h = 0.25 * width * e.input.shape[0] / e.input.shape[1]
        k_h = 0.25 * width * e.kernel.shape[0] / e.kernel.shape[1]
        height = caption + max(canvas_h + title, in_h + k_h + 2 * title + 20) + ticks
        top = height - caption
        boxes = [
            (0.03, (top - title - in_h) / height, 0.25, in_h / height),
            (0.03, ticks / height, 0.25, (top - 2 * title - in_h - 20 - ticks) / height),
            (0.33, ticks / height, 0.64, (top - title - ticks) / height),
        ]
    return int(round(height)), boxes


class _Scene:
    """The figure's artists, made once (axes, ticks and cell texts take the time to draw); :meth:`render`
    updates them for one frame, adds that frame's marks (removed by the next call) and draws it."""

    def __init__(self, e: Explanation, at_terms: Sequence[OutputTerms], width: int, count: int) -> None:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import Normalize, to_rgba
        from matplotlib.figure import Figure

        self.e, self.at_terms, self.count = e, at_terms, count
        self.scale = scale = max(0.6, width / DEFAULT_WIDTH)
        self.marks: list = []
        g = e.geometry
        height, (input_box, kernel_box, canvas_box) = _layout(e, width, len(at_terms))
        figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
        self.canvas = FigureCanvasAgg(figure)

        def numbers(box, values: np.ndarray) -> bool:
            rows, cols = np.atleast_2d(values).shape
            return min(box[2] * width / cols, box[3] * height / rows) >= MIN_CELL_PX

        def caption(y: float, **style):
            return figure.text(0.5, 1 - y / height, "", ha="center", va="center", **style)

        caption(14, fontsize=10 * scale).set_text(plot.figure_title(e))
        self.step_text = caption(40, fontsize=11.5 * scale, fontweight="bold")
        lines = range(min(len(at_terms), MAX_AT_LINES))
        self.at_texts = [caption(62 + 18 * line, fontsize=10 * scale, color=AT_COLOUR) for line in lines]

        self.input_ax = figure.add_axes(input_box)
        white, edges = [to_rgba("white")] * e.input.size, dict(edgecolor="#999999", linewidth=0.6)
        numbered = numbers(input_box, e.input)
        self.input_cells = plot.input_panel(self.input_ax, e, white, "input x", numbered, scale, **edges)
        self.kernel_ax = figure.add_axes(kernel_box)
        annotate = numbers(kernel_box, e.kernel)
        plot.heatmap(self.kernel_ax, e.kernel, "kernel w", "Oranges", annotate=annotate, scale=scale)

        self.canvas_ax = ax = figure.add_axes(canvas_box)
        self.shape = rows, cols = np.atleast_2d(e.canvas).shape
        aspect: Literal["auto", "equal"] = "auto" if g.ndim == 1 and cols > 2 * plot.MAX_ANNOTATED else "equal"
        signed = e.canvas.min() < 0  # blues for sums never negative, else red-white-blue: 0 is white either way
        largest = float(np.abs(e.canvas).max(initial=0.0)) or 1.0
        cmap = colormaps["RdBu_r" if signed else "Blues"].with_extremes(bad="white")  # no tap reached yet: white
        norm = Normalize(vmin=-largest if signed else 0.0, vmax=largest)
        self.image = ax.imshow(
            np.ma.masked_all(self.shape), cmap=cmap, norm=norm, interpolation="nearest", aspect=aspect
        )
        self.overlay = ax.imshow(np.zeros((*self.shape, 4)), interpolation="nearest", aspect=aspect)
        small = max(rows, cols) <= (2 * plot.MAX_ANNOTATED if g.ndim == 1 else plot.MAX_ANNOTATED)
        self.annotate = small and numbers(canvas_box, e.canvas)
        self.value_texts: list = []
        if self.annotate:
            text = dict(fontsize=9.5 * scale, clip_on=True)
            self.value_texts = [[plot.centred(ax, c, r, "", **text) for c in range(cols)] for r in range(rows)]
        row_offset, col_offset = (0, g.crop[0][0]) if g.ndim == 1 else (g.crop[0][0], g.crop[1][0])
        plot.integer_ticks(ax, rows, cols, g.ndim == 1, row_offset, col_offset, fontsize=8 * scale)
        for terms in at_terms:
            r, c = plot.cell(tuple(o + lo for o, (lo, _) in zip(terms.output_index, g.crop)))
            plot.outline_cell(ax, r, c, "white", linewidth=5.5 * scale, inset=0.0, zorder=4)
            plot.outline_cell(ax, r, c, AT_COLOUR, linewidth=3 * scale, inset=0.0, zorder=4)

    def render(self, frame: Frame):
        """The picture of ``frame`` as a Pillow RGB image."""
        from PIL import Image

        for artist in self.marks:
            artist.remove()
        self.marks = []
        self.step_text.set_text(f"step {frame.step + 1}/{self.count}: {frame.caption}")
        for text, terms in zip(self.at_texts, self.at_terms):
            text.set_text(_at_line(frame, terms))
        current = frame.copy.input_index if frame.copy is not None else None
        for index, rectangle in zip(np.ndindex(*self.e.input.shape), self.input_cells):
            stamped = frame.stamped[index]
            rectangle.set_facecolor(STAMP_COLOUR if index == current else STAMPED_COLOUR if stamped else "white")
        if current is not None:
            self._mark(self.input_ax, *plot.cell(current), "black", 2.5, inset=0.06)
            for term in (t for terms in self.at_terms for t in terms.terms if t.input_index == current):
                self._mark(self.kernel_ax, *plot.cell(term.kernel_index), AT_COLOUR, 3)
        self._show_canvas(frame)
        self.canvas.draw()
        return Image.fromarray(np.asarray(self.canvas.buffer_rgba())).convert("RGB")

    def _mark(self, ax, row: int, col: int, colour, linewidth: float, inset: float = 0.05) -> None:
        self.marks.append(plot.outline_cell(ax, row, col, colour, linewidth * self.scale, inset, zorder=3))

    def _show_canvas(self, frame: Frame) -> None:
        e, ax = self.e, self.canvas_ax
        grid = np.atleast_2d(frame.running_sum)
        reached = np.atleast_2d(frame.taps) > 0
        kept = plot.window_mask(self.shape, frame.window)
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
                text.set_text(format_number(grid[r, c]))
                dark = plot.is_dark(self.image.cmap(self.image.norm(grid[r, c])))
                text.set_color("grey" if not kept[r, c] and frame.kind != "stamp" else "white" if dark else "black")
        if frame.kind == "stamp":
            self._show_stamp(frame)
            dashed = dict(linestyle="--", linewidth=1.5 * self.scale, edgecolor="#555555")
            self.marks.append(plot.window_rectangle(ax, frame.output_window, zorder=3, **dashed))
        elif frame.kind != "output":
            solid = dict(linewidth=2.5 * self.scale, edgecolor="black")
            self.marks.append(plot.window_rectangle(ax, frame.window, zorder=3, **solid))
        if frame.kind == "output_padding":
            for r, c in zip(*np.nonzero(kept & ~plot.window_mask(self.shape, e.padding_window))):
                self._mark(ax, r, c, OUTPUT_PADDING_COLOUR, 2.5)
        if frame.kind == "output":
            (r0, r1), (c0, c1) = ((0, 1), frame.window[0]) if e.ndim == 1 else frame.window
            ax.set_xlim(c0 - 0.5, c1 - 0.5)
            ax.set_ylim(r1 - 0.5, r0 - 0.5)
            title = "output y"
        else:
            ax.set_xlim(-0.5, self.shape[1] - 0.5)
            ax.set_ylim(self.shape[0] - 0.5, -0.5)
            title = "full result (ticks: output positions)"
            if frame.kind == "stamp":
                title = "running sum of the full result (ticks: output positions; dashed: the output window)"
        ax.set_title(title, fontsize=9.5 * self.scale)

    def _show_stamp(self, frame: Frame) -> None:
        """This frame's stamp: each tap's cell framed in the stamp colour, its product written at the top."""
        from matplotlib.patches import Rectangle

        assert frame.copy is not None, "stamp frames carry their copy"
        ax, positions = self.canvas_ax, plot.tap_positions(self.e, frame.copy)
        rows, cols = [range(1), *positions] if self.e.ndim == 1 else positions
        values = np.atleast_2d(frame.copy.values)
        for (tr, r), (tc, c) in itertools.product(enumerate(rows), enumerate(cols)):
            self._mark(ax, r, c, STAMP_COLOUR, 2.5)
            if self.annotate:
                label = Rectangle(
                    (c - 0.32, r - 0.44), 0.64, 0.26, facecolor="white", edgecolor="none", alpha=0.85, zorder=4.5
                )
                self.marks.append(ax.add_patch(label))
                product = "+" + format_number(values[tr, tc])
                style = dict(color=PRODUCT_COLOUR, fontweight="bold", clip_on=True, zorder=5)
                self.marks.append(plot.centred(ax, c, r - 0.31, product, fontsize=6.5 * self.scale, **style))


def _at_line(frame: Frame, terms: OutputTerms) -> str:
    """``y[0,1] so far: 1·7 + 1·5 = 12`` (the stamped terms, as input·kernel values)."""
    index = format_index(terms.output_index)
    added = frame.added_terms(terms)
    if not terms.terms:
        return f"y[{index}] = 0: no kernel tap reaches it"
    if not added:
        return f"y[{index}] so far: 0 (no term yet)"
    products = " + ".join(f"{format_number(t.input_value)}·{format_number(t.kernel_value)}" for t in added)
    total = f"{products} = {format_number(math.fsum(t.product for t in added))}"
    if frame.copy is None:
        return f"y[{index}] = {total}"
    new = [t for t in added if t.input_index == frame.copy.input_index]
    return f"y[{index}] so far: {total}" + "".join(
        f"   (this step: + x[{format_index(t.input_index)}]·w[{format_index(t.kernel_index)}]"
        f" = {format_number(t.input_value)}·{format_number(t.kernel_value)})"
        for t in new
    )
