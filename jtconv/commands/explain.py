"""``jtconv explain``: show how a transposed convolution computes each value.

Parses the arguments, asks :func:`jtconv.explain.explain` for the
structured explanation and prints it as text; with ``--png`` it draws it
(:mod:`jtconv.explain_plot`), with ``--gif`` it animates the scatter view one
input value at a time (:mod:`jtconv.explain_gif`). Both need the ``plot``
extra; without it the command stops with a one-line install hint before
printing anything.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import numpy as np

from jtconv.commands import missing_module_hint
from jtconv.explain import Explanation, OutputTerms, explain, infer_ndim
from jtconv.explain_gif import DEFAULT_FRAME_MS, DEFAULT_WIDTH, check_gif_options
from jtconv.matrix import convolution_matrix

HELP = "show step by step how a 1-d or 2-d transposed convolution computes its output"

DEFAULT_MAX_GRID = 24
MAX_LISTED_COPIES = 32
MAX_MATRIX_COLUMNS = 64
AXIS_NAMES = {1: ("positions",), 2: ("rows", "cols")}
PLOT_MODULES = ("matplotlib", "PIL")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas (one per dimension, e.g. 4 or 4,5), got {text!r}"
        ) from None
    return values


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
    parser.add_argument(
        "--ndim",
        type=int,
        choices=(1, 2),
        default=None,
        help="spatial dimensions; default: the most values given to any per-dimension option, "
        "or 2 when every option is a single int (the classic 4×4 tutorial example)",
    )
    parser.add_argument(
        "--input-values",
        type=_number_list,
        default=None,
        metavar="V,V,...",
        help="input values in row-major order (default: all ones)",
    )
    parser.add_argument(
        "--kernel-values",
        type=_number_list,
        default=None,
        metavar="V,V,...",
        help="kernel values in row-major order (default: 1, 2, …, K in row-major order)",
    )
    parser.add_argument(
        "--at",
        type=_int_list,
        action="append",
        default=[],
        metavar="I[,J]",
        help="list the (input, kernel, product) terms that sum to this output value; repeatable",
    )
    parser.add_argument("--matrix", action="store_true", help="also print the convolution matrix C (y = Cᵀ·x)")
    parser.add_argument(
        "--png",
        metavar="FILE",
        default=None,
        help="draw the scatter view, overlap map and output (needs the plot extra)",
    )
    parser.add_argument(
        "--gif",
        metavar="FILE",
        default=None,
        help="animate the scatter view: one frame per input value adding its kernel stamp, then the padding "
        "crop, output_padding and the output; --at cells are followed (needs the plot extra)",
    )
    parser.add_argument(
        "--gif-frame-ms",
        type=int,
        default=DEFAULT_FRAME_MS,
        metavar="MS",
        help=f"--gif: milliseconds per frame (default {DEFAULT_FRAME_MS}; the last frame stays 3 times as long)",
    )
    parser.add_argument(
        "--gif-width",
        type=int,
        default=DEFAULT_WIDTH,
        metavar="PX",
        help=f"--gif: width in pixels (default {DEFAULT_WIDTH}; the height follows from the layout)",
    )
    parser.add_argument(
        "--max-grid",
        type=int,
        default=DEFAULT_MAX_GRID,
        metavar="N",
        help=f"print grids only up to N positions per dimension (default {DEFAULT_MAX_GRID})",
    )


def run(args: argparse.Namespace) -> int:
    try:
        ndim = args.ndim or infer_ndim(
            *(
                _per_dim(values)
                for values in (
                    args.input_size,
                    args.kernel_size,
                    args.stride,
                    args.padding,
                    args.output_padding,
                    args.dilation,
                    *args.at,
                )
            )
        )
        for option, suffix in (("--png", ".png"), ("--gif", ".gif")):
            path = getattr(args, option[2:])
            if path and not path.lower().endswith(suffix):
                raise ValueError(f"{option} must name a {suffix} file, got {path!r}")
        result = explain(
            _per_dim(args.input_size),
            _per_dim(args.kernel_size),
            stride=_per_dim(args.stride),
            padding=_per_dim(args.padding),
            output_padding=_per_dim(args.output_padding),
            dilation=_per_dim(args.dilation),
            input_values=args.input_values,
            kernel_values=args.kernel_values,
            ndim=ndim,
        )
        at_terms = [result.terms_at(index) for index in args.at]
        if args.gif:
            check_gif_options(result, frame_ms=args.gif_frame_ms, width=args.gif_width)
    except ValueError as error:
        print(f"jtconv explain: error: {error}", file=sys.stderr)
        return 2
    for option in ("--png", "--gif"):
        hint = getattr(args, option[2:]) and missing_module_hint(*PLOT_MODULES)
        if hint:
            print(f"jtconv explain: error: {option} needs {hint}", file=sys.stderr)
            return 2
    print(render(result, at_terms, max_grid=args.max_grid, show_matrix=args.matrix))
    status = 0
    if args.png:
        status = max(status, _save_png(result, args.png, at_terms))
    if args.gif:
        status = max(status, _save_gif(result, args.gif, at_terms, args.gif_frame_ms, args.gif_width))
    return status


def _per_dim(values: tuple[int, ...]) -> int | tuple[int, ...]:
    return values[0] if len(values) == 1 else values


def _save_png(result: Explanation, path: str, at_terms: Sequence[OutputTerms]) -> int:
    from jtconv.explain_plot import save_figure

    try:
        save_figure(result, path, at_terms=at_terms)
    except OSError as error:
        print(f"jtconv explain: error: --png could not write {path!r}: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def _save_gif(result: Explanation, path: str, at_terms: Sequence[OutputTerms], frame_ms: int, width: int) -> int:
    from jtconv.explain_gif import save_gif

    try:
        count = save_gif(result, path, at=[terms.output_index for terms in at_terms], frame_ms=frame_ms, width=width)
    except OSError as error:
        print(f"jtconv explain: error: --gif could not write {path!r}: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({count} frames)")
    return 0


# ----------------------------------------------------------------------------- text


def render(
    result: Explanation,
    at_terms: Sequence[OutputTerms] = (),
    *,
    max_grid: int = DEFAULT_MAX_GRID,
    show_matrix: bool = False,
) -> str:
    """The whole explanation as text."""
    sections = [
        _header(result),
        _size_section(result),
        _values_section(result, max_grid),
        _direct_section(result, max_grid),
        _scatter_section(result, max_grid),
        _overlap_section(result, max_grid),
        _output_section(result, max_grid),
    ]
    sections += [_terms_section(terms) for terms in at_terms]
    if show_matrix:
        sections.append(_matrix_section(result))
    return "\n\n".join(sections)


def fmt(value: float) -> str:
    """A number as short text: integers without a decimal point."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _size(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape)


def _param(values: Sequence[int]) -> str:
    """A per-dimension parameter as typed on the command line: ``2`` when uniform, else ``2,3``."""
    values = tuple(values)
    return str(values[0]) if len(set(values)) == 1 else ",".join(map(str, values))


def _positions(first: int, last: int) -> str:
    return f"position {first}" if first == last else f"positions {first}..{last}"


def _index(index: Sequence[int]) -> str:
    return ",".join(str(i) for i in index)


def _grid(values: np.ndarray, labels: np.ndarray | None = None, indent: str = "    ") -> list[str]:
    """Right-aligned grid lines; ``labels`` (strings, same shape) replaces the numbers where given."""
    cells = np.vectorize(fmt, otypes=[object])(values) if labels is None else labels
    cells = np.atleast_2d(cells)
    width = max(len(str(c)) for c in cells.flat)
    return [indent + " ".join(str(c).rjust(width) for c in row) for row in cells]


def _grid_or_note(values: np.ndarray, max_grid: int, labels: np.ndarray | None = None) -> list[str]:
    if max(values.shape) > max_grid:
        return [f"    (grid of {_size(values.shape)} omitted: larger than --max-grid {max_grid})"]
    return _grid(values, labels)


def _header(result: Explanation) -> str:
    g = result.geometry
    return (
        f"Transposed convolution, {g.ndim}-d (PyTorch ConvTranspose{g.ndim}d semantics, one channel)\n"
        f"  input {_size(g.input_size)}, kernel {_size(g.kernel_size)}, stride {_param(g.stride)}, "
        f"padding {_param([p for p, _ in g.padding])}, output_padding {_param(g.output_padding)}, "
        f"dilation {_param(g.dilation)}"
    )


def _size_section(result: Explanation) -> str:
    lines = ["Output size: out = (i − 1)·s − 2·p + d·(k − 1) + op + 1"]
    names = AXIS_NAMES[result.ndim]
    for name, formula in zip(names, result.size_formulas):
        lines.append(f"  {name}: {formula}")
    lines.append(f"  output: {_size(result.geometry.output_size)}")
    return "\n".join(lines)


def _values_section(result: Explanation, max_grid: int) -> str:
    lines = [f"Input x ({_size(result.input.shape)})"]
    lines += _grid_or_note(result.input, max_grid)
    lines.append(f"Kernel w ({_size(result.kernel.shape)})")
    lines += _grid_or_note(result.kernel, max_grid)
    return "\n".join(lines)


def _direct_section(result: Explanation, max_grid: int) -> str:
    g = result.geometry
    lows = [lo for lo, _ in g.conv_padding]
    highs = [hi for _, hi in g.conv_padding]
    lines = [
        "Direct-convolution view (what the reference lowering computes)",
        f"  1. insert s − 1 = {_param([s - 1 for s in g.stride])} zero(s) between input values: "
        f"{_size(g.input_size)} → {_size(result.zero_inserted.shape)}",
        f"  2. pad by d·(k − 1) − p = {_param(lows)} at the low end and d·(k − 1) − p + op = {_param(highs)} "
        f"at the high end (negative crops): → {_size(result.direct_input.shape)}",
        "  3. flip the kernel in every dimension",
        f"  4. slide the flipped kernel with stride 1 (taps d = {_param(g.dilation)} apart); each output is "
        f"the sum of kernel × window: → {_size(g.output_size)}",
        f"  zero-inserted, padded input ({_size(result.direct_input.shape)}; · = inserted or padding zero):",
    ]
    labels = np.where(
        result.direct_input_is_value,
        np.vectorize(fmt, otypes=[object])(result.direct_input),
        "·",
    )
    lines += _grid_or_note(result.direct_input, max_grid, labels)
    lines.append(f"  flipped kernel ({_size(result.flipped_kernel.shape)}):")
    lines += _grid_or_note(result.flipped_kernel, max_grid)
    return "\n".join(lines)


def _scatter_section(result: Explanation, max_grid: int) -> str:
    g = result.geometry
    lines = [
        "Scatter view (what the tutorials draw): input value x[i] stamps the copy x[i]·w with its tap t at "
        "output position o = i·s − p + t·d; overlaps add"
    ]
    names = AXIS_NAMES[result.ndim]
    for copy in result.copies[:MAX_LISTED_COPIES]:
        spans = copy.output_span(g.dilation)
        where = ", ".join(f"{name} {a}..{b}" for name, (a, b) in zip(names, spans))
        cropped = _cropped_note(spans, g.output_size)
        value = fmt(copy.input_value)
        lines.append(f"  x[{_index(copy.input_index)}] = {value} → {value}·w at {where}{cropped}")
    if len(result.copies) > MAX_LISTED_COPIES:
        lines.append(f"  … and {len(result.copies) - MAX_LISTED_COPIES} more copies")
    lines.append(
        f"  full (uncropped) sum: {_size(g.full_size)}, output positions "
        + " × ".join(f"{-lo}..{f - 1 - lo}" for f, (lo, _) in zip(g.full_size, g.crop))
    )
    for name, dim in zip(names, range(g.ndim)):
        lines.append(f"  {name}: {_crop_sentence(result, dim)}")
    if result.ndim == 1:
        lines += _stacked_copies(result, max_grid)
    else:
        lines.append("  the sum over the full canvas; (v) = cropped, not in the output:")
        lines += _grid_or_note(result.canvas, max_grid, _canvas_labels(result))
    return "\n".join(lines)


def _cropped_note(spans, output_size) -> str:
    outside = any(a < 0 or b >= n for (a, b), n in zip(spans, output_size))
    return "  (partly cropped)" if outside else ""


def _crop_sentence(result: Explanation, dim: int) -> str:
    g = result.geometry
    p, op = g.padding[dim][0], g.output_padding[dim]
    full = g.full_size[dim]
    if p == 0 and op == 0:
        return "padding 0 crops nothing"
    if p:
        parts = [f"padding {p} crops {p} at the low end ({_positions(-p, -1)})"]
    else:
        parts = ["padding 0 crops nothing at the low end"]
    if op == 0:
        parts.append(f"{p} at the high end ({_positions(full - 2 * p, full - p - 1)})")
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


def _canvas_labels(result: Explanation) -> np.ndarray:
    text = np.vectorize(fmt, otypes=[object])(result.canvas)
    inside = np.zeros(result.canvas.shape, dtype=bool)
    inside[tuple(slice(a, b) for a, b in result.output_window)] = True
    labels = np.vectorize(lambda s: f"({s})", otypes=[object])(text)
    labels[inside] = text[inside]
    return labels


def _stacked_copies(result: Explanation, max_grid: int) -> list[str]:
    """1-d tutorial picture: one row per copy, offset to where it lands, then the sum."""
    g = result.geometry
    length = result.canvas.shape[0]
    if length > max_grid:
        return [f"    (picture of {length} positions omitted: larger than --max-grid {max_grid})"]
    lo = g.crop[0][0]
    start, stop = result.output_window[0]
    rows = [("position", [str(f - lo) for f in range(length)])]
    for copy in result.copies:
        cells = [""] * length
        for t, value in enumerate(copy.values):
            cells[copy.full_start[0] + t * g.dilation[0]] = fmt(value)
        rows.append((f"x[{copy.input_index[0]}]·w", cells))
    rows.append(("sum", [fmt(v) for v in result.canvas]))
    rows.append(("output", [fmt(v) if start <= f < stop else "✗" for f, v in enumerate(result.canvas)]))
    width = max(len(c) for _, cells in rows for c in cells)
    label_width = max(len(label) for label, _ in rows)
    lines = ["  one row per copy (✗ = cropped):"]
    for label, cells in rows:
        lines.append(f"    {label.ljust(label_width)} " + " ".join(c.rjust(width) for c in cells).rstrip())
    return lines


def _overlap_section(result: Explanation, max_grid: int) -> str:
    board = result.checkerboard
    lines = ["Overlap map: how many kernel taps reach each output position"]
    lines += _grid_or_note(board.overlap, max_grid)
    phases = "; ".join(
        f"{name}: {', '.join(map(str, counts))}" for name, counts in zip(AXIS_NAMES[result.ndim], board.phase_counts)
    )
    lines.append(f"  interior taps per phase (o + p) mod s — {phases}")
    lines += ["  " + line for line in board.note.splitlines()]
    return "\n".join(lines)


def _output_section(result: Explanation, max_grid: int) -> str:
    lines = [f"Output y ({_size(result.output.shape)})"]
    lines += _grid_or_note(result.output, max_grid)
    return "\n".join(lines)


def _terms_section(terms: OutputTerms) -> str:
    lines = [f"y[{_index(terms.output_index)}] = {fmt(terms.total)}: the terms x[i]·w[t] with o = i·s − p + t·d"]
    if not terms.terms:
        lines.append("  no (input, kernel tap) pair satisfies o = i·s − p + t·d here, so the value is 0")
        return "\n".join(lines)
    for term in terms.terms:
        lines.append(
            f"  x[{_index(term.input_index)}] · w[{_index(term.kernel_index)}] = "
            f"{fmt(term.input_value)} · {fmt(term.kernel_value)} = {fmt(term.product)}"
        )
    if len(terms.terms) > 1:
        lines.append(f"  sum = {' + '.join(fmt(t.product) for t in terms.terms)} = {fmt(terms.total)}")
    return "\n".join(lines)


def _matrix_section(result: Explanation) -> str:
    g = result.geometry
    in_count, out_count = math.prod(g.input_size), math.prod(g.output_size)
    lines = [
        f"Matrix view: C ({in_count}×{out_count}) is the matrix of the forward convolution with the same "
        "parameters (x-shaped = C · y-shaped); the transposed convolution is y = Cᵀ · x"
    ]
    if out_count > MAX_MATRIX_COLUMNS or in_count > MAX_MATRIX_COLUMNS:
        lines.append(f"    (matrix of {in_count}×{out_count} omitted: more than {MAX_MATRIX_COLUMNS} rows or columns)")
        return "\n".join(lines)

    def matrix_of(kernel: np.ndarray) -> np.ndarray:
        return convolution_matrix(
            kernel.reshape(1, 1, *g.kernel_size),
            g.input_size,
            stride=g.stride,
            padding=tuple(p for p, _ in g.padding),
            output_padding=g.output_padding,
            dilation=g.dilation,
        )

    matrix = matrix_of(result.kernel)
    reached = matrix_of(np.ones(g.kernel_size)) != 0
    lines.append("  rows: input positions, columns: output positions (row-major); · = no kernel tap")
    lines += _grid(matrix, np.where(reached, np.vectorize(fmt, otypes=[object])(matrix), "·"))
    agrees = np.allclose(matrix.T @ result.input.reshape(-1), result.output.reshape(-1))
    lines.append(f"  Cᵀ · x equals the output above: {'yes' if agrees else 'NO'}")
    return "\n".join(lines)
