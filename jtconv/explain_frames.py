"""The scatter view of an :class:`~jtconv.explain.Explanation` as a sequence of frames.

The tutorials' animation of a transposed convolution, as data (``jtconv
explain --gif`` draws it; :mod:`jtconv.explain_gif`). With ``n`` input values
taken in row-major order there are ``n + 3`` frames:

* frames ``0 … n − 1`` (kind ``"stamp"``): frame ``k`` adds input ``k``'s
  copy ``x[i]·w`` (its tap ``t`` at canvas position ``i·s + t·d``) to the
  running sum, so the running sum is the full (uncropped) result of the input
  with every later value set to zero::

      running_sum_k = conv_transpose(x · [rank(i) ≤ k], w, s, padding=0, output_padding=0, d)

* frame ``n`` (``"crop"``): padding ``p`` crops ``p`` positions off both ends
  of the full result (``values`` is ``conv_transpose(x, w, s, p, 0, d)``);
* frame ``n + 1`` (``"output_padding"``): output_padding ``op`` gives back
  ``op`` positions at the high end (zeros past the full result);
* frame ``n + 2`` (``"output"``): the layer's output ``y``.

Every frame's ``running_sum`` lives on the explanation's ``canvas``
coordinates, and ``running_sum[output_window]`` is the layer's output for the
input values stamped so far. Pure numpy; no plotting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np

from jtconv.explain import Explanation, KernelCopy, OutputTerms, Term

__all__ = ["Frame", "FrameKind", "frames"]

FrameKind = Literal["stamp", "crop", "output_padding", "output"]


@dataclasses.dataclass(frozen=True, eq=False)
class Frame:
    """One step of the scatter view.

    Attributes:
      kind: ``"stamp"``, ``"crop"``, ``"output_padding"`` or ``"output"``.
      step: the frame's position, ``0 … n + 2``.
      copy: the kernel copy added in this frame (``"stamp"`` frames), else None.
      stamped: boolean mask shaped like the input, True for the values whose
        copies are in ``running_sum``.
      running_sum: canvas-shaped sum of the stamped copies.
      taps: canvas-shaped count of kernel taps added so far at each position.
      window: per dimension, ``(start, stop)`` of the result this frame shows
        in canvas coordinates: the full result for ``"stamp"`` frames, the
        padding crop for ``"crop"``, the output window after that.
      output_window: the layer's output window in canvas coordinates (the same
        for every frame).
      caption: one sentence saying what the frame shows.
    """

    kind: FrameKind
    step: int
    copy: KernelCopy | None
    stamped: np.ndarray
    running_sum: np.ndarray
    taps: np.ndarray
    window: tuple[tuple[int, int], ...]
    output_window: tuple[tuple[int, int], ...]
    caption: str

    @property
    def values(self) -> np.ndarray:
        """``running_sum`` cut to ``window``: the result this frame shows."""
        return self.running_sum[_slices(self.window)]

    @property
    def output(self) -> np.ndarray:
        """``running_sum`` cut to the output window: the layer's output for the stamped values."""
        return self.running_sum[_slices(self.output_window)]

    def added_terms(self, terms: OutputTerms) -> tuple[Term, ...]:
        """The terms of ``terms`` whose input value is stamped by this frame; they sum to
        ``output[terms.output_index]``."""
        return tuple(term for term in terms.terms if self.stamped[term.input_index])


def frames(explanation: Explanation) -> tuple[Frame, ...]:
    """The ``n + 3`` frames of ``explanation``'s scatter view (see the module docstring)."""
    g = explanation.geometry
    names = _axis_names(explanation.ndim)
    running = np.zeros(explanation.canvas.shape)
    taps = np.zeros(explanation.canvas.shape, dtype=np.int64)
    stamped = np.zeros(explanation.input.shape, dtype=bool)
    full_window = tuple((0, n) for n in g.full_size)
    result = []
    for step, copy in enumerate(explanation.copies):
        where = copy.canvas_taps(g.dilation)
        running[where] += copy.values
        taps[where] += 1
        stamped[copy.input_index] = True
        result.append(
            Frame(
                kind="stamp",
                step=step,
                copy=copy,
                stamped=stamped.copy(),
                running_sum=running.copy(),
                taps=taps.copy(),
                window=full_window,
                output_window=explanation.output_window,
                caption=_stamp_caption(explanation, copy, names),
            )
        )
    endings: list[tuple[FrameKind, tuple[tuple[int, int], ...], str]] = [
        ("crop", explanation.padding_window, _crop_caption(explanation)),
        ("output_padding", explanation.output_window, _output_padding_caption(explanation)),
        ("output", explanation.output_window, f"output y ({_size(g.output_size)}): the sum of all copies, cropped"),
    ]
    for kind, window, caption in endings:
        result.append(
            Frame(
                kind=kind,
                step=len(result),
                copy=None,
                stamped=stamped,
                running_sum=running,
                taps=taps,
                window=window,
                output_window=explanation.output_window,
                caption=caption,
            )
        )
    return tuple(result)


def _slices(window: Sequence[tuple[int, int]]) -> tuple[slice, ...]:
    return tuple(slice(start, stop) for start, stop in window)


def _axis_names(ndim: int) -> tuple[str, ...]:
    return ("positions",) if ndim == 1 else ("rows", "cols")


def _size(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape))


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def _stamp_caption(explanation: Explanation, copy: KernelCopy, names: Sequence[str]) -> str:
    index = ",".join(map(str, copy.input_index))
    spans = copy.output_span(explanation.geometry.dilation)
    where = ", ".join(f"{name} {a}..{b}" for name, (a, b) in zip(names, spans))
    value = _number(copy.input_value)
    return f"x[{index}] = {value} adds {value}·w at output {where}"


def _param(values: Sequence[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else ",".join(map(str, values))


def _crop_caption(explanation: Explanation) -> str:
    g = explanation.geometry
    pads = [lo for lo, _ in g.padding]
    kept = tuple(stop - start for start, stop in explanation.padding_window)
    if not any(pads):
        return f"padding 0 crops nothing: the full result stays {_size(g.full_size)}"
    return f"padding {_param(pads)} crops that many positions off both ends: {_size(g.full_size)} → {_size(kept)}"


def _output_padding_caption(explanation: Explanation) -> str:
    g = explanation.geometry
    kept = tuple(stop - start for start, stop in explanation.padding_window)
    if not any(g.output_padding):
        return f"output_padding 0 adds nothing: the output is {_size(g.output_size)}"
    return (
        f"output_padding {_param(g.output_padding)} adds that many at the high end: "
        f"{_size(kept)} → {_size(g.output_size)}"
    )
