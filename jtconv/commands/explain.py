"""``jtconv explain``: show how a transposed convolution computes each value.

Prints :func:`jtconv.explain.explain`'s explanation as text; ``--png`` draws it
(:mod:`jtconv.explain_plot`) and ``--gif`` animates its scatter view
(:mod:`jtconv.explain_gif`). Both need matplotlib and Pillow: without them the
command stops with a one-line install hint before printing anything.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import numpy as np

from jtconv.commands import missing_module_hint
from jtconv.explain import PER_DIMENSION, Explanation, OutputTerms, explain, infer_ndim
from jtconv.explain_gif import DEFAULT_FRAME_MS, DEFAULT_WIDTH, check_gif_options
from jtconv.formatting import format_index, format_number, format_param, format_shape
from jtconv.matrix import convolution_matrix

HELP = "show step by step how a 1-d or 2-d transposed convolution computes its output"

DEFAULT_MAX_GRID = 24
MAX_LISTED_COPIES = 32
MAX_MATRIX_COLUMNS = 64
AXIS_NAMES = {1: ("positions",), 2: ("rows", "cols")}


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas (one per dimension, e.g. 4 or 4,5), got {text!r}"
        ) from None


def _number_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas (row-major order), got {text!r}"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    per_dim = "an int, or one per dimension separated by commas (e.g. 4,5)"
    parser.add_argument("--input-size", type=_int_list, required=True, metavar="N[,N]", help=f"input size: {per_dim}")
    parser.add_argument("--kernel-size", type=_int_list, required=True, metavar="K[,K]", help=f"kernel size: {per_dim}")
    parser.add_argument("--stride", type=_int_list, default=(1,), metavar="S[,S]", help="stride (default 1)")
    parser.add_argument("--padding", type=_int_list, default=(0,), metavar="P[,P]", help="padding (default 0)")
    parser.add_argument(
        "--output-padding", type=_int_list, default=(0,), metavar="OP[,OP]", help="output_padding (default 0)"
    )
    parser.add_argument("--dilation", type=_int_list, default=(1,), metavar="D[,D]", help="dilation (default 1)")
    ndim = "spatial dimensions; default: the most values given to any per-dimension option, or 2 when every "
    ndim += "option is a single int (the classic 4×4 tutorial example)"
    parser.add_argument("--ndim", type=int, choices=(1, 2), help=ndim)
    for option, default in (("--input-values", "all ones"), ("--kernel-values", "1, 2, …, K in row-major order")):
        text = f"{option[2:].replace('-', ' ')} in row-major order (default: {default})"
        parser.add_argument(option, type=_number_list, metavar="V,V,...", help=text)
    at = "list the (input, kernel, product) terms that sum to this output value; repeatable"
    parser.add_argument("--at", type=_int_list, action="append", default=[], metavar="I[,J]", help=at)
    parser.add_argument("--matrix", action="store_true", help="also print the convolution matrix C (y = Cᵀ·x)")
    png = "draw the scatter view, overlap map and output (needs the plot extra)"
    parser.add_argument("--png", metavar="FILE", help=png)
    gif = "animate the scatter view: one frame per input value adding its kernel stamp, then the padding crop, "
    gif += "output_padding and the output; --at cells are followed (needs the plot extra)"
    parser.add_argument("--gif", metavar="FILE", help=gif)
    frame_ms = "--gif: milliseconds per frame (default %(default)s; the last frame stays 3 times as long)"
    parser.add_argument("--gif-frame-ms", type=int, default=DEFAULT_FRAME_MS, metavar="MS", help=frame_ms)
    width = "--gif: width in pixels (default %(default)s; the height follows from the layout)"
    parser.add_argument("--gif-width", type=int, default=DEFAULT_WIDTH, metavar="PX", help=width)
    max_grid = "print grids only up to N positions per dimension (default %(default)s)"
    parser.add_argument("--max-grid", type=int, default=DEFAULT_MAX_GRID, metavar="N", help=max_grid)


def run(args: argparse.Namespace) -> int:
    per_dim = [_per_dim(getattr(args, name)) for name in PER_DIMENSION]
    try:
        ndim = args.ndim or infer_ndim(*per_dim, *map(_per_dim, args.at))
        for option in ("png", "gif"):
            path = getattr(args, option)
            if path and not path.lower().endswith("." + option):
                raise ValueError(f"--{option} must name a .{option} file, got {path!r}")
        result = explain(*per_dim, input_values=args.input_values, kernel_values=args.kernel_values, ndim=ndim)
        at_terms = [result.terms_at(index) for index in args.at]
        if args.gif:
            check_gif_options(result, frame_ms=args.gif_frame_ms, width=args.gif_width)
    except ValueError as error:
        print(f"jtconv explain: error: {error}", file=sys.stderr)
        return 2
    hint = (args.png or args.gif) and missing_module_hint("matplotlib", "PIL")
    if hint:
        print(f"jtconv explain: error: {'--png' if args.png else '--gif'} needs {hint}", file=sys.stderr)
        return 2
    print(render(result, at_terms, max_grid=args.max_grid, show_matrix=args.matrix))
    status = 0
    for option, path in (("--png", args.png), ("--gif", args.gif)):
        if path:
            try:
                note = _draw(option, result, at_terms, args)
            except OSError as error:
                print(f"jtconv explain: error: {option} could not write {path!r}: {error}", file=sys.stderr)
                status = 1
            else:
                print(f"wrote {path}{note}")
    return status


def _per_dim(values: tuple[int, ...]) -> int | tuple[int, ...]:
    return values[0] if len(values) == 1 else values


def _draw(option: str, result: Explanation, at_terms: Sequence[OutputTerms], args: argparse.Namespace) -> str:
    """Write the ``--png`` or ``--gif`` file; return a note for the ``wrote`` line."""
    if option == "--png":
        from jtconv.explain_plot import save_figure

        save_figure(result, args.png, at_terms=at_terms)
        return ""
    from jtconv.explain_gif import save_gif

    at = [terms.output_index for terms in at_terms]
    return f" ({save_gif(result, args.gif, at=at, frame_ms=args.gif_frame_ms, width=args.gif_width)} frames)"


# ----------------------------------------------------------------------------- text


def render(
    result: Explanation, at_terms: Sequence[OutputTerms] = (), *, max_grid: int = DEFAULT_MAX_GRID, show_matrix=False
) -> str:
    """The whole explanation as text."""
    g, board, names = result.geometry, result.checkerboard, AXIS_NAMES[result.ndim]
    phases = "; ".join(f"{name}: {', '.join(map(str, counts))}" for name, counts in zip(names, board.phase_counts))
    sections = [
        [f"Transposed convolution, {g.ndim}-d (PyTorch ConvTranspose{g.ndim}d semantics, one channel)"]
        + [f"  {result.parameters}"],
        ["Output size: out = (i − 1)·s − 2·p + d·(k − 1) + op + 1"]
        + [f"  {name}: {formula}" for name, formula in zip(names, result.size_formulas)]
        + [f"  output: {format_shape(g.output_size)}"],
        [f"Input x ({format_shape(result.input.shape)})", *_grid(result.input, max_grid)]
        + [f"Kernel w ({format_shape(result.kernel.shape)})", *_grid(result.kernel, max_grid)],
        _direct_section(result, max_grid),
        _scatter_section(result, max_grid),
        ["Overlap map: how many kernel taps reach each output position", *_grid(board.overlap, max_grid)]
        + [f"  interior taps per phase (o + p) mod s — {phases}"]
        + ["  " + line for line in board.note.splitlines()],
        [f"Output y ({format_shape(result.output.shape)})", *_grid(result.output, max_grid)],
        *(_terms_section(terms) for terms in at_terms),
    ]
    if show_matrix:
        sections.append(_matrix_section(result))
    return "\n\n".join("\n".join(lines) for lines in sections)


def _cells(values: np.ndarray) -> np.ndarray:
    return np.vectorize(format_number, otypes=[object])(values)


def _grid(values: np.ndarray, max_grid: float, labels: np.ndarray | None = None) -> list[str]:
    """Right-aligned grid lines; ``labels`` (strings, same shape) replaces the numbers where given."""
    if max(values.shape) > max_grid:
        return [f"    (grid of {format_shape(values.shape)} omitted: larger than --max-grid {max_grid})"]
    cells = np.atleast_2d(_cells(values) if labels is None else labels)
    width = max(len(c) for c in cells.flat)
    return ["    " + " ".join(c.rjust(width) for c in row) for row in cells]


def _direct_section(result: Explanation, max_grid: int) -> list[str]:
    g = result.geometry
    padded = format_shape(result.direct_input.shape)
    lines = [
        "Direct-convolution view (what the reference lowering computes)",
        f"  1. insert s − 1 = {format_param([s - 1 for s in g.stride])} zero(s) between input values: "
        f"{format_shape(g.input_size)} → {format_shape(result.zero_inserted.shape)}",
        f"  2. pad by d·(k − 1) − p = {format_param([lo for lo, _ in g.conv_padding])} at the low end and "
        f"d·(k − 1) − p + op = {format_param([hi for _, hi in g.conv_padding])} at the high end (negative crops): "
        f"→ {padded}",
        "  3. flip the kernel in every dimension",
        f"  4. slide the flipped kernel with stride 1 (taps d = {format_param(g.dilation)} apart); each output is "
        f"the sum of kernel × window: → {format_shape(g.output_size)}",
        f"  zero-inserted, padded input ({padded}; · = inserted or padding zero):",
    ]
    labels = np.where(result.direct_input_is_value, _cells(result.direct_input), "·")
    lines += _grid(result.direct_input, max_grid, labels)
    lines.append(f"  flipped kernel ({format_shape(result.flipped_kernel.shape)}):")
    lines += _grid(result.flipped_kernel, max_grid)
    return lines


def _scatter_section(result: Explanation, max_grid: int) -> list[str]:
    g = result.geometry
    names = AXIS_NAMES[result.ndim]
    lines = [
        "Scatter view (what the tutorials draw): input value x[i] stamps the copy x[i]·w with its tap t at "
        "output position o = i·s − p + t·d; overlaps add"
    ]
    for copy in result.copies[:MAX_LISTED_COPIES]:
        spans = copy.output_span(g.dilation)
        where = ", ".join(f"{name} {a}..{b}" for name, (a, b) in zip(names, spans))
        cropped = "  (partly cropped)" if any(a < 0 or b >= n for (a, b), n in zip(spans, g.output_size)) else ""
        value = format_number(copy.input_value)
        lines.append(f"  x[{format_index(copy.input_index)}] = {value} → {value}·w at {where}{cropped}")
    if len(result.copies) > MAX_LISTED_COPIES:
        lines.append(f"  … and {len(result.copies) - MAX_LISTED_COPIES} more copies")
    lines.append(
        f"  full (uncropped) sum: {format_shape(g.full_size)}, output positions "
        + " × ".join(f"{-lo}..{f - 1 - lo}" for f, (lo, _) in zip(g.full_size, g.crop))
    )
    lines += [f"  {name}: {_crop_sentence(result, dim)}" for dim, name in enumerate(names)]
    if result.ndim == 1:
        return lines + _stacked_copies(result, max_grid)
    text = _cells(result.canvas)
    labels = "(" + text + ")"
    inside = tuple(slice(a, b) for a, b in result.output_window)
    labels[inside] = text[inside]
    lines.append("  the sum over the full canvas; (v) = cropped, not in the output:")
    return lines + _grid(result.canvas, max_grid, labels)


def _crop_sentence(result: Explanation, dim: int) -> str:
    g = result.geometry
    p, op, full = g.padding[dim][0], g.output_padding[dim], g.full_size[dim]
    if p == 0 and op == 0:
        return "padding 0 crops nothing"
    if p:
        first = "position -1" if p == 1 else f"positions {-p}..-1"
        parts = [f"padding {p} crops {p} at the low end ({first})"]
    else:
        parts = ["padding 0 crops nothing at the low end"]
    if op == 0:
        last = f"position {full - 2 * p}" if p == 1 else f"positions {full - 2 * p}..{full - p - 1}"
        parts.append(f"{p} at the high end ({last})")
    elif op <= p:
        parts.append(
            f"output_padding {op} keeps {op} of the {p} high-end positions padding would crop "
            f"(inside the full result), so "
            + (f"{p - op} are cropped at the high end" if p > op else "nothing is cropped at the high end")
        )
    else:
        kept = f"keeps the {p} high-end positions padding would crop and " if p else ""
        parts.append(
            f"output_padding {op} {kept}adds {op - p} position(s) past the full result "
            f"(no kernel copy reaches there: zeros)"
        )
    return ", ".join(parts)


def _stacked_copies(result: Explanation, max_grid: int) -> list[str]:
    """1-d tutorial picture: one row per copy, offset to where it lands, then the sum."""
    length, d = result.canvas.shape[0], result.geometry.dilation[0]
    if length > max_grid:
        return [f"    (picture of {length} positions omitted: larger than --max-grid {max_grid})"]
    lo = result.geometry.crop[0][0]
    start, stop = result.output_window[0]
    rows = [("position", [str(f - lo) for f in range(length)])]
    for copy in result.copies:
        cells = [""] * length
        for t, value in enumerate(copy.values):
            cells[copy.full_start[0] + t * d] = format_number(value)
        rows.append((f"x[{copy.input_index[0]}]·w", cells))
    rows.append(("sum", list(_cells(result.canvas))))
    rows.append(("output", [c if start <= f < stop else "✗" for f, c in enumerate(_cells(result.canvas))]))
    width = max(len(c) for _, cells in rows for c in cells)
    label_width = max(len(label) for label, _ in rows)
    lines = ["  one row per copy (✗ = cropped):"]
    for label, cells in rows:
        lines.append(f"    {label.ljust(label_width)} " + " ".join(c.rjust(width) for c in cells).rstrip())
    return lines


def _terms_section(terms: OutputTerms) -> list[str]:
    n = format_number
    lines = [f"y[{format_index(terms.output_index)}] = {n(terms.total)}: the terms x[i]·w[t] with o = i·s − p + t·d"]
    if not terms.terms:
        lines.append("  no (input, kernel tap) pair satisfies o = i·s − p + t·d here, so the value is 0")
    for t in terms.terms:
        lines.append(
            f"  x[{format_index(t.input_index)}] · w[{format_index(t.kernel_index)}] = "
            f"{n(t.input_value)} · {n(t.kernel_value)} = {n(t.product)}"
        )
    if len(terms.terms) > 1:
        lines.append(f"  sum = {' + '.join(n(t.product) for t in terms.terms)} = {n(terms.total)}")
    return lines


def _matrix_section(result: Explanation) -> list[str]:
    g = result.geometry
    in_count, out_count = math.prod(g.input_size), math.prod(g.output_size)
    lines = [
        f"Matrix view: C ({in_count}×{out_count}) is the matrix of the forward convolution with the same "
        "parameters (x-shaped = C · y-shaped); the transposed convolution is y = Cᵀ · x"
    ]
    if max(in_count, out_count) > MAX_MATRIX_COLUMNS:
        lines.append(f"    (matrix of {in_count}×{out_count} omitted: more than {MAX_MATRIX_COLUMNS} rows or columns)")
        return lines
    pads = tuple(p for p, _ in g.padding)
    matrix, reached = (
        convolution_matrix(
            kernel.reshape(1, 1, *g.kernel_size), g.input_size, stride=g.stride, padding=pads,
            output_padding=g.output_padding, dilation=g.dilation,
        )
        for kernel in (result.kernel, np.ones(g.kernel_size))
    )  # fmt: skip
    lines.append("  rows: input positions, columns: output positions (row-major); · = no kernel tap")
    lines += _grid(matrix, math.inf, np.where(reached != 0, _cells(matrix), "·"))
    agrees = np.allclose(matrix.T @ result.input.reshape(-1), result.output.reshape(-1))
    lines.append(f"  Cᵀ · x equals the output above: {'yes' if agrees else 'NO'}")
    return lines
