"""Step-by-step explanation of one single-channel transposed convolution (pure numpy, on :mod:`jtconv.geometry`).

Per spatial dimension, with stride ``s``, padding ``p`` (crops ``lo``/``hi``), output_padding ``op``,
dilation ``d``, kernel size ``k`` and input size ``i``::

    out = (i − 1)·s − 2p + d·(k − 1) + op + 1
    y[o] = Σ x[i]·w[t]   over all (i, t) with   o = i·s − p + t·d

:func:`explain` returns the views of that sum: the **scatter view** (each input value stamps ``x[i]·w`` with
tap 0 at ``i·s`` of the full result, of length ``(i − 1)·s + d·(k − 1) + 1``; overlaps add; padding crops
``lo`` and ``hi`` off its ends, output_padding gives ``op`` positions back at the high end, zeros past the
full result), the **direct-convolution view** (insert ``s − 1`` zeros between input values, pad by
``d·(k − 1) − lo`` and ``d·(k − 1) − hi + op``, negative amounts cropping, flip the kernel and slide it with
stride 1, taps ``d`` apart) and the **terms** of one output value. The matrix view is :mod:`jtconv.matrix`'s.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from jtconv.formatting import format_param, format_shape
from jtconv.geometry import ConvTransposeGeometry, IntOrTuple, make_geometry, normalize_tuple
from jtconv.lowering.axes import overlap_phase_counts
from jtconv.matrix import placement_tensor

__all__ = ["Checkerboard", "Explanation", "KernelCopy", "OutputTerms", "Term", "explain", "infer_ndim"]
__all__ += ["overlap_phase_counts"]

Window = tuple[tuple[int, int], ...]
PER_DIMENSION = ("input_size", "kernel_size", "stride", "padding", "output_padding", "dilation")


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
    """Scatter view: the copy ``x[input_index] · w`` stamped by one input value; tap ``t`` lands at output
    position ``output_start + t·d`` (``= full_start + t·d − lo``, ``full_start = i·s``), cropped outside the output."""

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

    def output_span(self, dilation: Sequence[int]) -> Window:
        """First and last output position reached, per dimension (may lie outside the output)."""
        return tuple((a, a + (k - 1) * d) for a, k, d in zip(self.output_start, self.values.shape, dilation))


@dataclasses.dataclass(frozen=True, eq=False)
class Checkerboard:
    """How evenly kernel taps cover the output.

    Attributes:
      overlap: number of kernel taps reaching each output position.
      phase_counts: per dimension, the taps reaching an interior output position of each phase ``(o + lo) mod s``:
        ``#{t < k : t·d ≡ phase (mod s)}``.
      uneven: True when some dimension's phase counts differ (the structural cause of checkerboard artifacts);
        with ``d = 1``, exactly ``k mod s ≠ 0``.
      note: a plain-language summary with the settings that avoid it.
    """

    overlap: np.ndarray
    phase_counts: tuple[tuple[int, ...], ...]
    uneven: bool
    note: str


@dataclasses.dataclass(frozen=True, eq=False)
class Explanation:
    """Everything :func:`explain` works out (see the module docstring).

    Attributes:
      geometry: the validated geometry (one input and one output channel).
      input, kernel: the values, shaped ``input_size`` / ``kernel_size``.
      size_formulas: per dimension, the output-size formula with the numbers substituted, e.g.
        ``"(4 − 1)·2 − 2·1 + 1·(4 − 1) + 0 + 1 = 8"``.
      zero_inserted: the input with ``s − 1`` zeros between values.
      direct_input: ``zero_inserted`` padded by ``geometry.conv_padding`` (negative entries crop);
        ``direct_input_is_value`` marks the input values in it.
      flipped_kernel: the kernel reversed in every spatial dimension.
      direct_output: the stride-1 sliding-window result of the direct view.
      copies: the scatter view, one :class:`KernelCopy` per input value (row-major).
      canvas: the sum of all copies over full-result coordinates, extended at the high end where output_padding
        reaches past the full result.
      output_window: per dimension, ``(start, stop)`` of the output in ``canvas``.
      output: the result ``y``: ``canvas`` cut to ``output_window``.
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
    output_window: Window
    output: np.ndarray
    checkerboard: Checkerboard

    @property
    def ndim(self) -> int:
        return self.geometry.ndim

    @property
    def parameters(self) -> str:
        """``input 4×4, kernel 4×4, stride 2, padding 1, output_padding 0, dilation 1``."""
        g = self.geometry
        return (
            f"input {format_shape(g.input_size)}, kernel {format_shape(g.kernel_size)}, "
            f"stride {format_param(g.stride)}, padding {format_param([p for p, _ in g.padding])}, "
            f"output_padding {format_param(g.output_padding)}, dilation {format_param(g.dilation)}"
        )

    @property
    def padding_window(self) -> Window:
        """Per dimension, ``(start, stop)`` in ``canvas`` of the full result after padding's crop alone
        (``p`` off each end, before output_padding gives positions back); may be empty."""
        return tuple((lo, max(lo, full - hi)) for full, (lo, hi) in zip(self.geometry.full_size, self.geometry.padding))

    def terms_at(self, output_index: IntOrTuple) -> OutputTerms:
        """The products summing to ``y[output_index]``, ordered by input index.

        Raises:
          ValueError: (naming ``at``) when the index has the wrong length or lies outside the output.
        """
        g = self.geometry
        index = output_index
        if isinstance(index, (int, np.integer)) and g.ndim == 1:
            index = (int(index),)
        if isinstance(index, (int, np.integer)) or len(tuple(index)) != g.ndim:
            raise ValueError(f"at must have {g.ndim} indices (one per dimension), got {index!r}")
        index = tuple(int(v) for v in index)
        if any(not 0 <= v < n for v, n in zip(index, g.output_size)):
            raise ValueError(f"at {index} is outside the output of size {g.output_size}")
        per_dim = [
            [(i, t) for i in range(n) for t in range(k) if i * s - lo + t * d == o]
            for o, n, k, s, d, (lo, _) in zip(index, g.input_size, g.kernel_size, g.stride, g.dilation, g.crop)
        ]
        terms = []
        for pairs in itertools.product(*per_dim):
            i, t = tuple(i for i, _ in pairs), tuple(t for _, t in pairs)
            terms.append(Term(i, t, float(self.input[i]), float(self.kernel[t])))
        return OutputTerms(index, tuple(terms))


def infer_ndim(*per_dimension_values: IntOrTuple | None) -> int:
    """Number of spatial dimensions implied by per-dimension arguments: the longest sequence decides;
    when all are plain ints (or None) the answer is 2, the classic tutorial example (4×4 input)."""
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
      input_size, kernel_size, stride, padding, output_padding, dilation: an int (same in every dimension) or one
        int per dimension, with PyTorch's ``ConvTransposeNd`` meaning.
      input_values: the input, shaped ``input_size`` or flat in row-major order; default all ones.
      kernel_values: the kernel, shaped ``kernel_size`` or flat in row-major order; default ``1, 2, …, Π kernel_size``.
      ndim: 1 or 2; default :func:`infer_ndim` of the size/parameter args.

    Raises:
      ValueError: naming the argument, for anything PyTorch rejects (stride or dilation < 1, padding < 0,
        output_padding ≥ max(stride, dilation), sizes < 1, an empty output) and for values of the wrong count.
    """
    args = dict(zip(PER_DIMENSION, (input_size, kernel_size, stride, padding, output_padding, dilation)))
    for name, value in args.items():
        if not isinstance(value, (int, np.integer)) and len(value) > 2:
            raise ValueError(
                f"{name} has {len(value)} values, but explain draws 1-d and 2-d convolutions "
                f"(one or two values per argument), got {tuple(value)}"
            )
    ndim = infer_ndim(*args.values()) if ndim is None else ndim
    if ndim not in (1, 2):
        raise ValueError(f"ndim must be 1 or 2 (explain draws 1-d and 2-d convolutions), got {ndim!r}")
    in_size, k_size, s, p, op, d = (normalize_tuple(value, ndim, name) for name, value in args.items())
    for name, size in (("input_size", in_size), ("kernel_size", k_size)):
        if min(size) < 1:
            raise ValueError(f"{name} must be >= 1 in every dimension, got {size}")
    g = make_geometry((1, *in_size), (1, 1, *k_size), stride=s, padding=p, output_padding=op, dilation=d)
    x = _values(input_values, in_size, "input_values", np.ones(in_size))
    w = _values(kernel_values, k_size, "kernel_values", np.arange(1.0, math.prod(k_size) + 1).reshape(k_size))

    every_stride = tuple(slice(None, None, s) for s in g.stride)
    zero_inserted = np.zeros(tuple((i - 1) * s + 1 for i, s in zip(in_size, g.stride)))
    zero_inserted[every_stride] = x
    is_value = np.zeros(zero_inserted.shape, dtype=bool)
    is_value[every_stride] = True
    direct_input = _pad_or_crop(zero_inserted, g.conv_padding)
    flipped = np.flip(w)
    direct_output = np.zeros(g.output_size)
    for tap in np.ndindex(*k_size):  # stride-1 cross-correlation: out[o] = Σ_t direct_input[o + t·d] · flipped[t]
        reached = tuple(slice(t * d, t * d + n) for t, d, n in zip(tap, g.dilation, g.output_size))
        direct_output += flipped[tap] * direct_input[reached]

    copies = tuple(
        KernelCopy(index, float(x[index]), full, tuple(f - lo for f, (lo, _) in zip(full, g.crop)), x[index] * w)
        for index in np.ndindex(*in_size)
        for full in [tuple(i * s for i, s in zip(index, g.stride))]
    )
    window = tuple((lo, lo + out) for (lo, _), out in zip(g.crop, g.output_size))
    canvas = np.zeros(tuple(max(full, stop) for full, (_, stop) in zip(g.full_size, window)))
    for copy in copies:
        canvas[copy.canvas_taps(g.dilation)] += copy.values
    size_formulas = tuple(
        f"({i} − 1)·{s} − 2·{p} + {d}·({k} − 1) + {op} + 1 = {out}"
        for i, s, (p, _), d, k, op, out in zip(
            in_size, g.stride, g.padding, g.dilation, k_size, g.output_padding, g.output_size
        )
    )
    output = canvas[tuple(slice(start, stop) for start, stop in window)]
    direct_is_value = _pad_or_crop(is_value, g.conv_padding)
    return Explanation(
        g, x, w, size_formulas, zero_inserted, direct_input, direct_is_value, flipped, direct_output,
        copies, canvas, window, output, _checkerboard(g),
    )  # fmt: skip


def _values(values, shape: tuple[int, ...], name: str, default: np.ndarray) -> np.ndarray:
    if values is None:
        return default.astype(np.float64)
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {values!r}") from None
    count = math.prod(shape)
    if array.shape != shape and array.size != count:
        raise ValueError(f"{name} must have {count} values (size {format_shape(shape)}), got {array.size}")
    return array.reshape(shape)


def _pad_or_crop(array: np.ndarray, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Zero-pad ``(lo, hi)`` per dimension; a negative amount crops instead."""
    array = np.pad(array, [(max(lo, 0), max(hi, 0)) for lo, hi in pairs])
    return array[tuple(slice(max(-lo, 0), n - max(-hi, 0)) for n, (lo, hi) in zip(array.shape, pairs))]


def _checkerboard(g: ConvTransposeGeometry) -> Checkerboard:
    overlap = np.ones(g.output_size, dtype=np.int64)
    for dim in range(g.ndim):
        overlap = overlap * placement_tensor(g, dim).sum(axis=(0, 1)).reshape((-1,) + (1,) * (g.ndim - 1 - dim))
    phase_counts = tuple(overlap_phase_counts(k, s, d) for k, s, d in zip(g.kernel_size, g.stride, g.dilation))
    uneven_dims = [n for n, counts in enumerate(phase_counts) if len(set(counts)) > 1]
    lines = []
    for n in uneven_dims:
        k, s, d = g.kernel_size[n], g.stride[n], g.dilation[n]
        if math.gcd(d, s) > 1:
            cause = f"dilation {d} and stride {s} share a factor (some phases get no tap at all)"
        else:
            cause = f"kernel size {k} is not divisible by stride {s}"
        where = f" in dimension {n}" if g.ndim > 1 else ""
        lines.append(
            f"Uneven overlap{where}: {cause}, so interior output positions receive "
            f"{', '.join(map(str, phase_counts[n]))} taps in turn (repeating every {s})."
        )
    if uneven_dims:
        lines += [
            "Uneven overlap is the cause of checkerboard artifacts (Odena et al., 2016, 'Deconvolution and "
            "Checkerboard Artifacts'): even a constant input and a constant kernel give a patterned output.",
            "To avoid it: use a kernel size divisible by the stride (e.g. kernel 4 with stride 2) and dilation coprime "
            "with the stride (e.g. 1), or stride 1, or resize first (nearest or bilinear upsampling) and then apply a "
            "stride-1 convolution.",
        ]
    else:
        lines.append(
            "Even overlap: every interior output position receives the same number of kernel taps "
            f"({math.prod(counts[0] for counts in phase_counts)}), because the kernel size is divisible by the "
            "stride (and dilation coprime with it). So overlap alone creates no checkerboard: a constant input and "
            "a constant kernel give a constant interior output. (Other patterns come from the kernel's values: "
            "each phase sums a different subset of taps.)"
        )
        if overlap.min() != overlap.max():
            lines.append(
                f"Positions near the border receive fewer taps (down to {overlap.min()}): fewer kernel copies reach "
                "the edges. That is a border effect, not a checkerboard."
            )
    return Checkerboard(overlap, phase_counts, bool(uneven_dims), "\n".join(lines))
