"""The explicit matrix of a convolution, for small shapes (pure numpy).

Per spatial dimension, input position ``i`` and kernel tap ``t`` reach output
position ``o = i·s − lo + t·d`` (``lo``: the low-end crop, PyTorch's ``padding``),
a 0/1 *placement tensor* ``P[i, t, o]``. With the weight ``w[ci, co, *t]`` in
PyTorch's layout ``(Cin, Cout/G, *K)``::

    C[(ci, *i), (g·Cg + co, *o)] = Σ_t w[ci, co, *t] · Π_dim P_dim[i, t, o]

for ``ci`` in group ``g``. ``C`` is the matrix of the *forward* convolution
with the same parameters (``torch.nn.functional.convNd(y, w, stride, padding,
dilation, groups)`` maps ``y`` of shape ``(Cout, *out)`` to ``x`` of shape
``(Cin, *in)``: ``x = C·y``), and the transposed convolution is its adjoint::

    conv_transpose(x, w).reshape(-1) == Cᵀ · x.reshape(-1)
"""

from __future__ import annotations

import math

import numpy as np

from jtconv.geometry import ConvTransposeGeometry, IntOrTuple, PaddingLike, make_geometry, normalize_tuple

__all__ = ["placement_tensor", "convolution_matrix", "DEFAULT_MAX_ENTRIES"]

DEFAULT_MAX_ENTRIES = 1 << 22
"""Largest matrix :func:`convolution_matrix` builds unless told otherwise."""


def placement_tensor(geom: ConvTransposeGeometry, dim: int) -> np.ndarray:
    """0/1 array ``P[i, t, o]``: 1 where ``o = i·s − lo + t·d`` in dimension ``dim``.

    Shape ``(input_size, kernel_size, output_size)`` of that dimension; taps
    that land outside ``[0, output_size)`` (cropped by padding) have no 1.
    """
    size_in, size_k, size_out = geom.input_size[dim], geom.kernel_size[dim], geom.output_size[dim]
    i, t = np.ogrid[:size_in, :size_k]
    o = i * geom.stride[dim] - geom.crop[dim][0] + t * geom.dilation[dim]
    placement = np.zeros((size_in, size_k, size_out), dtype=np.int64)
    inside = (o >= 0) & (o < size_out)
    placement[np.nonzero(inside) + (o[inside],)] = 1
    return placement


def convolution_matrix(
    weight: np.ndarray,
    input_size: IntOrTuple,
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> np.ndarray:
    """Matrix ``C`` of the forward convolution; ``conv_transpose(x) == Cᵀ·x``.

    ``weight`` is ``(Cin, Cout // groups, *kernel_size)`` (equally: the weight of
    the forward ``ConvNd`` from ``Cout`` to ``Cin`` channels), ``input_size`` the
    spatial size of the transposed convolution's input ``x``; ``stride`` to
    ``groups`` are :func:`jtconv.conv_transpose`'s. Returns ``C`` of shape
    ``(Cin·Π input_size, Cout·Π output_size)``, rows and columns in row-major
    ``(channel, *spatial)`` order, in the weight's dtype (float64 for integers).

    Raises:
      ValueError: for invalid parameters (see :func:`jtconv.make_geometry`)
        or when ``C`` would have more than ``max_entries`` entries.
    """
    weight = np.asarray(weight)
    if weight.ndim < 3:
        raise ValueError(
            f"weight must have shape (in_channels, out_channels // groups, *kernel_size), got {weight.shape}"
        )
    ndim = weight.ndim - 2
    in_spatial = normalize_tuple(input_size, ndim, "input_size")
    geom = make_geometry(
        (weight.shape[0], *in_spatial),
        weight.shape,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
    )
    rows = geom.in_channels * math.prod(geom.input_size)
    cols = geom.out_channels * math.prod(geom.output_size)
    if rows * cols > max_entries:
        raise ValueError(
            f"convolution matrix would be {rows}×{cols} = {rows * cols} entries, more than "
            f"max_entries={max_entries}; use smaller shapes or raise max_entries"
        )
    weight = weight.astype(weight.dtype if np.issubdtype(weight.dtype, np.inexact) else np.float64)
    # One einsum over the weight, the per-dimension placements and eye(groups), which keeps each
    # group's block on the diagonal. Axes 0-3: g, ci, co, g'; then the taps, inputs and outputs.
    n, grouped = geom.ndim, weight.reshape(geom.groups, geom.in_per_group, geom.out_per_group, *geom.kernel_size)
    taps, ins, outs = (list(range(4 + k * n, 4 + (k + 1) * n)) for k in range(3))
    operands: list = [grouped, [0, 1, 2, *taps], np.eye(geom.groups, dtype=weight.dtype), [0, 3]]
    for dim in range(n):
        operands += [placement_tensor(geom, dim).astype(weight.dtype), [ins[dim], taps[dim], outs[dim]]]
    return np.einsum(*operands, [0, 1, *ins, 3, 2, *outs]).reshape(rows, cols)
