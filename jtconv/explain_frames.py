"""The scatter view of an :class:`~jtconv.explain.Explanation` as frames (``jtconv explain --gif`` draws them).

With ``n`` input values taken in row-major order there are ``n + 3`` frames:

* frames ``0 … n − 1`` (``"stamp"``): frame ``k`` adds input ``k``'s copy ``x[i]·w`` (tap ``t`` at canvas position
  ``i·s + t·d``) to the running sum, which is therefore the full (uncropped) result with every later value zero::

      running_sum_k = conv_transpose(x · [rank(i) ≤ k], w, s, padding=0, output_padding=0, d)

* frame ``n`` (``"crop"``): padding ``p`` crops ``p`` positions off both ends;
* frame ``n + 1`` (``"output_padding"``): ``op`` positions come back at the high end (zeros past the full result);
* frame ``n + 2`` (``"output"``): the layer's output ``y``.

``running_sum`` lives on the explanation's ``canvas`` coordinates, so ``running_sum[output_window]`` is the layer's
output for the values stamped so far.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from jtconv.explain import Explanation, KernelCopy, OutputTerms, Term, Window
from jtconv.formatting import format_index, format_number, format_param, format_shape

__all__ = ["Frame", "FrameKind", "frames"]

FrameKind = Literal["stamp", "crop", "output_padding", "output"]


@dataclasses.dataclass(frozen=True, eq=False)
class Frame:
    """One step of the scatter view.

    Attributes:
      kind: ``"stamp"``, ``"crop"``, ``"output_padding"`` or ``"output"``.
      step: the frame's position, ``0 … n + 2``.
      copy: the kernel copy added in this frame (``"stamp"`` frames), else None.
      stamped: True for the input values whose copies are in ``running_sum``.
      running_sum: canvas-shaped sum of the stamped copies.
      taps: canvas-shaped count of kernel taps added so far.
      window: the part of the canvas this frame shows: the full result for ``"stamp"`` frames, the padding crop
        for ``"crop"``, the output window after that.
      output_window: the layer's output window (the same for every frame).
      caption: one sentence saying what the frame shows.
    """

    kind: FrameKind
    step: int
    copy: KernelCopy | None
    stamped: np.ndarray
    running_sum: np.ndarray
    taps: np.ndarray
    window: Window
    output_window: Window
    caption: str

    @property
    def values(self) -> np.ndarray:
        """``running_sum`` cut to ``window``: the result this frame shows."""
        return self.running_sum[tuple(slice(*w) for w in self.window)]

    @property
    def output(self) -> np.ndarray:
        """``running_sum`` cut to the output window: the layer's output for the stamped values."""
        return self.running_sum[tuple(slice(*w) for w in self.output_window)]

    def added_terms(self, terms: OutputTerms) -> tuple[Term, ...]:
        """The terms whose input value is stamped; they sum to ``output[terms.output_index]``."""
        return tuple(term for term in terms.terms if self.stamped[term.input_index])


def frames(explanation: Explanation) -> tuple[Frame, ...]:
    """The ``n + 3`` frames of ``explanation``'s scatter view (see the module docstring)."""
    e, g = explanation, explanation.geometry
    running = np.zeros(e.canvas.shape)
    taps = np.zeros(e.canvas.shape, dtype=np.int64)
    stamped = np.zeros(e.input.shape, dtype=bool)
    names = ("positions",) if e.ndim == 1 else ("rows", "cols")
    full_window = tuple((0, n) for n in g.full_size)
    result = []
    for step, copy in enumerate(e.copies):
        running[copy.canvas_taps(g.dilation)] += copy.values
        taps[copy.canvas_taps(g.dilation)] += 1
        stamped[copy.input_index] = True
        where = ", ".join(f"{name} {a}..{b}" for name, (a, b) in zip(names, copy.output_span(g.dilation)))
        value = format_number(copy.input_value)
        caption = f"x[{format_index(copy.input_index)}] = {value} adds {value}·w at output {where}"
        snapshot = stamped.copy(), running.copy(), taps.copy()
        result.append(Frame("stamp", step, copy, *snapshot, full_window, e.output_window, caption))
    full, output = format_shape(g.full_size), format_shape(g.output_size)
    kept = format_shape([stop - start for start, stop in e.padding_window])
    pads = [lo for lo, _ in g.padding]
    crop = f"padding 0 crops nothing: the full result stays {full}"
    if any(pads):
        crop = f"padding {format_param(pads)} crops that many positions off both ends: {full} → {kept}"
    extra = f"output_padding 0 adds nothing: the output is {output}"
    if any(g.output_padding):
        extra = f"output_padding {format_param(g.output_padding)} adds that many at the high end: {kept} → {output}"
    endings: list[tuple[FrameKind, Window, str]] = [
        ("crop", e.padding_window, crop),
        ("output_padding", e.output_window, extra),
        ("output", e.output_window, f"output y ({output}): the sum of all copies, cropped"),
    ]
    for kind, window, caption in endings:
        result.append(Frame(kind, len(result), None, stamped, running, taps, window, e.output_window, caption))
    return tuple(result)
