"""Step-by-step explanation of one single-channel transposed convolution.

Pure numpy, built on :mod:`jtconv.geometry` (the same code the library runs).
Per spatial dimension, with stride ``s``, padding ``p`` (the low/high crops
``lo``/``hi``), output_padding ``op``, dilation ``d``, kernel size ``k`` and
input size ``i``::

    out = (i − 1)·s − 2p + d·(k − 1) + op + 1
    y[o] = Σ x[i]·w[t]   over all (i, t) with   o = i·s − p + t·d

:func:`explain` returns an :class:`Explanation` holding the three views of
that sum:

* **scatter view** — each input value stamps a scaled copy of the kernel with
  its tap 0 at ``i·s`` of the *full* (uncropped) result of length
  ``(i − 1)·s + d·(k − 1) + 1``; overlaps add; padding crops ``lo`` at the low
  end and ``hi`` at the high end; output_padding gives back ``op`` positions at
  the high end (beyond the full result they hold zeros);
* **direct-convolution view** — insert ``s − 1`` zeros between input values,
  pad by ``d·(k − 1) − lo`` (low) and ``d·(k − 1) − hi + op`` (high; negative
  crops), flip the kernel, and slide it with stride 1 (taps ``d`` apart);
* **terms** — for one output position, the exact list of products.

The matrix view lives in :mod:`jtconv.matrix`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from jtconv.geometry import ConvTransposeGeometry, IntOrTuple, make_geometry, normalize_tuple
from jtconv.lowering.axes import overlap_phase_counts
from jtconv.matrix import placement_tensor

__all__ = [
    "Checkerboard",
    "Explanation",
    "KernelCopy",
    "OutputTerms",
    "Term",
    "explain",
    "infer_ndim",
    "overlap_phase_counts",
]

SUPPORTED_NDIM = (1, 2)


@dataclasses.dataclass(frozen=True)
class Term:
    """One product ``x[input_index] · w[kernel_index]`` added into an output value."""

    input_index: tuple[int, ...]
    kernel_index: tuple[int, ...]
    input_value: float
    kernel_value: float

    @property
    def product(self) -> float:
        return self.input_value * self.kernel_value


@dataclasses.dataclass(frozen=True)
class OutputTerms:
    """All terms of ``y[output_index]`` (``o = i·s − p + t·d`` per dimension) and their sum."""

    output_index: tuple[int, ...]
    terms: tuple[Term, ...]

    @property
    def total(self) -> float:
        return math.fsum(term.product for term in self.terms)


@dataclasses.dataclass(frozen=True, eq=False)
class KernelCopy:
    """Scatter view: the copy ``x[input_index] · w`` stamped by one input value.

    Tap ``t`` lands at output position ``output_start + t·d`` (which is
    ``full_start + t·d − lo``; ``full_start = i·s``). Positions outside
    ``[0, output_size)`` are cropped by padding.
    """

    input_index: tuple[int, ...]
    input_value: float
    full_start: tuple[int, ...]
    output_start: tuple[int, ...]
    values: np.ndarray

    def canvas_taps(self, dilation: Sequence[int]) -> tuple[slice, ...]:
        """Where the taps land in full-result (canvas) coordinates: ``full_start + t·d`` per dimension."""
        return tuple(
            slice(start, start + (k - 1) * d + 1, d)
            for start, k, d in zip(self.full_start, self.values.shape, dilation)
        )

    def output_span(self, dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """First and last output position reached, per dimension (may lie outside the output)."""
        return tuple(
            (start, start + (k - 1) * d) for start, k, d in zip(self.output_start, self.values.shape, dilation)
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Checkerboard:
    """How evenly kernel taps cover the output.

    Attributes:
      overlap: number of kernel taps reaching each output position.
      phase_counts: per dimension, the taps reaching an interior output
        position of each phase ``(o + lo) mod s``: ``#{t < k : t·d ≡ phase (mod s)}``.
      uneven: True when some dimension's phase counts differ (the structural
        cause of checkerboard artifacts). With ``d = 1`` this is exactly
        ``k mod s ≠ 0``.
      note: a plain-language summary with the settings that avoid it.
    """

    overlap: np.ndarray
    phase_counts: tuple[tuple[int, ...], ...]
    uneven: bool
    note: str


@dataclasses.dataclass(frozen=True, eq=False)
class Explanation:
    """Everything :func:`explain` works out, as data (see the module docstring).

    Attributes:
      geometry: the validated :class:`~jtconv.geometry.ConvTransposeGeometry`
        (one input and one output channel).
      input, kernel: the worked values, shaped ``input_size`` / ``kernel_size``.
      size_formulas: per dimension, the output-size formula with the numbers
        substituted, e.g. ``"(4 − 1)·2 − 2·1 + 1·(4 − 1) + 0 + 1 = 8"``.
      zero_inserted: the input with ``s − 1`` zeros between values.
      direct_input: ``zero_inserted`` padded by ``geometry.conv_padding``
        (negative entries crop).
      direct_input_is_value: True where ``direct_input`` holds an input value
        (not an inserted or padding zero).
      flipped_kernel: the kernel reversed in every spatial dimension.
      direct_output: the stride-1 sliding-window result of the direct view.
      copies: the scatter view, one :class:`KernelCopy` per input value.
      canvas: the sum of all copies over full-result coordinates, extended at
        the high end where output_padding reaches past the full result.
      output_window: per dimension, ``(start, stop)`` of the output in
        ``canvas`` (``start = lo``).
      output: the result ``y``; ``canvas`` cut to ``output_window``.
      checkerboard: the overlap analysis.
    """

    geometry: ConvTransposeGeometry
    input: np.ndarray
    kernel: np.ndarray
    size_formulas: tuple[str, ...]
    zero_inserted: np.ndarray
    direct_input: np.ndarray
    direct_input_is_value: np.ndarray
    flipped_kernel: np.ndarray
    direct_output: np.ndarray
    copies: tuple[KernelCopy, ...]
    canvas: np.ndarray
    output_window: tuple[tuple[int, int], ...]
    output: np.ndarray
    checkerboard: Checkerboard

    @property
    def ndim(self) -> int:
        return self.geometry.ndim

    @property
    def padding_window(self) -> tuple[tuple[int, int], ...]:
        """Per dimension, ``(start, stop)`` in ``canvas`` of the full result after padding's crop
        alone (``p`` off each end, before output_padding gives positions back); may be empty."""
        return tuple((lo, max(lo, full - hi)) for full, (lo, hi) in zip(self.geometry.full_size, self.geometry.padding))

    def terms_at(self, output_index: IntOrTuple) -> OutputTerms:
        """The products summing to ``y[output_index]``, ordered by input index.

        Raises:
          ValueError: (naming ``at``) when the index has the wrong length or
            lies outside the output.
        """
        index = _normalize_index(output_index, self.geometry.output_size)
        per_dim = [[(i, t) for i, t in _reaching_pairs(self.geometry, dim, o)] for dim, o in enumerate(index)]
        terms = []
        for pairs in itertools.product(*per_dim):
            input_index = tuple(i for i, _ in pairs)
            kernel_index = tuple(t for _, t in pairs)
            terms.append(
                Term(
                    input_index=input_index,
                    kernel_index=kernel_index,
                    input_value=float(self.input[input_index]),
                    kernel_value=float(self.kernel[kernel_index]),
                )
            )
        return OutputTerms(output_index=index, terms=tuple(terms))


def infer_ndim(*per_dimension_values: IntOrTuple | None) -> int:
    """Number of spatial dimensions implied by per-dimension arguments.

    The longest sequence among the arguments decides; when all are plain ints
    (or None) the answer is 2, the classic tutorial example (4×4 input).
    """
    lengths = [len(v) for v in per_dimension_values if v is not None and not isinstance(v, (int, np.integer))]
    return max(lengths, default=2)


def explain(
    input_size: IntOrTuple,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    *,
    input_values: Sequence[float] | np.ndarray | None = None,
    kernel_values: Sequence[float] | np.ndarray | None = None,
    ndim: int | None = None,
) -> Explanation:
    """Explain a single-channel 1-d or 2-d transposed convolution.

    Args:
      input_size, kernel_size, stride, padding, output_padding, dilation: an
        int (same in every dimension) or one int per dimension, with
        PyTorch's ``ConvTransposeNd`` meaning.
      input_values: the input, shaped ``input_size`` or flat in row-major
        order; default all ones.
      kernel_values: the kernel, shaped ``kernel_size`` or flat in row-major
        order; default ``1, 2, …, Π kernel_size`` in row-major order.
      ndim: 1 or 2; default :func:`infer_ndim` of the size/parameter args.

    Raises:
      ValueError: naming the argument, for anything PyTorch rejects (stride
        or dilation < 1, padding < 0, output_padding ≥ max(stride, dilation),
        sizes < 1, an empty output) and for values of the wrong count.
    """
    per_dimension = dict(
        input_size=input_size,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )
    for name, value in per_dimension.items():
        if not isinstance(value, (int, np.integer)) and len(value) > max(SUPPORTED_NDIM):
            raise ValueError(
                f"{name} has {len(value)} values, but explain draws 1-d and 2-d convolutions "
                f"(one or two values per argument), got {tuple(value)}"
            )
    if ndim is None:
        ndim = infer_ndim(*per_dimension.values())
    if ndim not in SUPPORTED_NDIM:
        raise ValueError(f"ndim must be 1 or 2 (explain draws 1-d and 2-d convolutions), got {ndim!r}")
    in_size = normalize_tuple(input_size, ndim, "input_size")
    k_size = normalize_tuple(kernel_size, ndim, "kernel_size")
    if any(v < 1 for v in in_size):
        raise ValueError(f"input_size must be >= 1 in every dimension, got {in_size}")
    if any(v < 1 for v in k_size):
        raise ValueError(f"kernel_size must be >= 1 in every dimension, got {k_size}")
    geom = make_geometry(
        (1, *in_size),
        (1, 1, *k_size),
        stride=normalize_tuple(stride, ndim, "stride"),
        padding=normalize_tuple(padding, ndim, "padding"),
        output_padding=normalize_tuple(output_padding, ndim, "output_padding"),
        dilation=normalize_tuple(dilation, ndim, "dilation"),
    )
    x = _values(input_values, in_size, "input_values", default=np.ones(in_size))
    w = _values(
        kernel_values,
        k_size,
        "kernel_values",
        default=np.arange(1, math.prod(k_size) + 1, dtype=np.float64).reshape(k_size),
    )
    zero_inserted, direct_input, is_value = _direct_input(x, geom)
    flipped = np.flip(w, axis=tuple(range(ndim)))
    copies = _kernel_copies(x, w, geom)
    canvas, window = _scatter(copies, geom)
    output = canvas[tuple(slice(start, stop) for start, stop in window)]
    return Explanation(
        geometry=geom,
        input=x,
        kernel=w,
        size_formulas=tuple(_size_formula(geom, dim) for dim in range(ndim)),
        zero_inserted=zero_inserted,
        direct_input=direct_input,
        direct_input_is_value=is_value,
        flipped_kernel=flipped,
        direct_output=_slide(direct_input, flipped, geom),
        copies=copies,
        canvas=canvas,
        output_window=window,
        output=output,
        checkerboard=_checkerboard(geom),
    )


def _values(values, shape: tuple[int, ...], name: str, default: np.ndarray) -> np.ndarray:
    if values is None:
        return default.astype(np.float64)
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {values!r}") from None
    count = math.prod(shape)
    if array.shape != shape and array.size != count:
        size_text = "×".join(map(str, shape))
        raise ValueError(f"{name} must have {count} values (size {size_text}), got {array.size}")
    return array.reshape(shape)


def _normalize_index(index: IntOrTuple, output_size: tuple[int, ...]) -> tuple[int, ...]:
    ndim = len(output_size)
    if isinstance(index, (int, np.integer)) and ndim == 1:
        index = (int(index),)
    if isinstance(index, (int, np.integer)) or len(tuple(index)) != ndim:
        raise ValueError(f"at must have {ndim} indices (one per dimension), got {index!r}")
    index = tuple(int(v) for v in index)
    if any(not 0 <= v < n for v, n in zip(index, output_size)):
        raise ValueError(f"at {index} is outside the output of size {output_size}")
    return index


def _reaching_pairs(geom: ConvTransposeGeometry, dim: int, o: int) -> list[tuple[int, int]]:
    """``(i, t)`` with ``i·s − lo + t·d = o`` in dimension ``dim``, by increasing ``i``."""
    s, d, lo = geom.stride[dim], geom.dilation[dim], geom.crop[dim][0]
    return [
        (i, t) for i in range(geom.input_size[dim]) for t in range(geom.kernel_size[dim]) if i * s - lo + t * d == o
    ]


def _size_formula(geom: ConvTransposeGeometry, dim: int) -> str:
    i, k = geom.input_size[dim], geom.kernel_size[dim]
    s, d, op = geom.stride[dim], geom.dilation[dim], geom.output_padding[dim]
    p = geom.padding[dim][0]
    return f"({i} − 1)·{s} − 2·{p} + {d}·({k} − 1) + {op} + 1 = {geom.output_size[dim]}"


def _pad_or_crop(array: np.ndarray, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Zero-pad ``(lo, hi)`` per dimension; a negative amount crops instead."""
    array = np.pad(array, [(max(lo, 0), max(hi, 0)) for lo, hi in pairs])
    return array[tuple(slice(max(-lo, 0), array.shape[n] - max(-hi, 0)) for n, (lo, hi) in enumerate(pairs))]


def _direct_input(x: np.ndarray, geom: ConvTransposeGeometry):
    inserted_shape = tuple((i - 1) * s + 1 for i, s in zip(geom.input_size, geom.stride))
    every_stride = tuple(slice(None, None, s) for s in geom.stride)
    zero_inserted = np.zeros(inserted_shape)
    zero_inserted[every_stride] = x
    is_value = np.zeros(inserted_shape, dtype=bool)
    is_value[every_stride] = True
    return zero_inserted, _pad_or_crop(zero_inserted, geom.conv_padding), _pad_or_crop(is_value, geom.conv_padding)


def _slide(direct_input: np.ndarray, flipped: np.ndarray, geom: ConvTransposeGeometry) -> np.ndarray:
    """Stride-1 cross-correlation ``out[o] = Σ_t direct_input[o + t·d] · flipped[t]``."""
    out = np.zeros(geom.output_size)
    for tap in itertools.product(*(range(k) for k in geom.kernel_size)):
        window = tuple(slice(t * d, t * d + n) for t, d, n in zip(tap, geom.dilation, geom.output_size))
        out += flipped[tap] * direct_input[window]
    return out


def _kernel_copies(x: np.ndarray, w: np.ndarray, geom: ConvTransposeGeometry) -> tuple[KernelCopy, ...]:
    copies = []
    for index in itertools.product(*(range(n) for n in geom.input_size)):
        full_start = tuple(i * s for i, s in zip(index, geom.stride))
        copies.append(
            KernelCopy(
                input_index=index,
                input_value=float(x[index]),
                full_start=full_start,
                output_start=tuple(f - lo for f, (lo, _) in zip(full_start, geom.crop)),
                values=x[index] * w,
            )
        )
    return tuple(copies)


def _scatter(copies: Sequence[KernelCopy], geom: ConvTransposeGeometry):
    """Sum the copies over full-result coordinates; return the canvas and the output window."""
    window = tuple((lo, lo + out) for (lo, _), out in zip(geom.crop, geom.output_size))
    canvas = np.zeros(tuple(max(full, stop) for full, (_, stop) in zip(geom.full_size, window)))
    for copy in copies:
        canvas[copy.canvas_taps(geom.dilation)] += copy.values
    return canvas, window


def _checkerboard(geom: ConvTransposeGeometry) -> Checkerboard:
    overlap = np.ones(geom.output_size, dtype=np.int64)
    for dim in range(geom.ndim):
        counts = placement_tensor(geom, dim).sum(axis=(0, 1))
        overlap = overlap * counts.reshape((-1,) + (1,) * (geom.ndim - 1 - dim))
    phase_counts = tuple(overlap_phase_counts(k, s, d) for k, s, d in zip(geom.kernel_size, geom.stride, geom.dilation))
    uneven = any(len(set(counts)) > 1 for counts in phase_counts)
    return Checkerboard(
        overlap=overlap,
        phase_counts=phase_counts,
        uneven=uneven,
        note=_checkerboard_note(geom, phase_counts, overlap),
    )


def _checkerboard_note(geom: ConvTransposeGeometry, phase_counts, overlap: np.ndarray) -> str:
    lines = []
    uneven_dims = [n for n, counts in enumerate(phase_counts) if len(set(counts)) > 1]
    if not uneven_dims:
        taps = math.prod(counts[0] for counts in phase_counts)
        lines.append(
            f"Even overlap: every interior output position receives the same number of kernel taps "
            f"({taps}), because the kernel size is divisible by the stride (and dilation coprime with it). "
            "So overlap alone creates no checkerboard: a constant input and a constant kernel give a "
            "constant interior output. (Other patterns come from the kernel's values: each phase "
            "sums a different subset of taps.)"
        )
        if overlap.min() != overlap.max():
            lines.append(
                f"Positions near the border receive fewer taps (down to {overlap.min()}): fewer kernel "
                "copies reach the edges. That is a border effect, not a checkerboard."
            )
        return "\n".join(lines)
    for n in uneven_dims:
        k, s, d = geom.kernel_size[n], geom.stride[n], geom.dilation[n]
        counts = phase_counts[n]
        where = f" in dimension {n}" if geom.ndim > 1 else ""
        if math.gcd(d, s) > 1:
            cause = f"dilation {d} and stride {s} share a factor (some phases get no tap at all)"
        else:
            cause = f"kernel size {k} is not divisible by stride {s}"
        lines.append(
            f"Uneven overlap{where}: {cause}, so interior output positions receive "
            f"{', '.join(map(str, counts))} taps in turn (repeating every {s})."
        )
    lines.append(
        "Uneven overlap is the cause of checkerboard artifacts (Odena et al., 2016, "
        "'Deconvolution and Checkerboard Artifacts'): even a constant input and a constant kernel "
        "give a patterned output."
    )
    lines.append(
        "To avoid it: use a kernel size divisible by the stride (e.g. kernel 4 with stride 2) "
        "and dilation coprime with the stride (e.g. 1), or stride 1, or resize first "
        "(nearest or bilinear upsampling) and then apply a stride-1 convolution."
    )
    return "\n".join(lines)
