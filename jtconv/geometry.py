"""Geometry of a transposed convolution: argument normalisation, validation, sizes (spatial dimensions, no JAX).

Per spatial dimension, with stride ``s``, padding ``p``, output_padding ``op``, dilation ``d``, kernel size ``k``
and input size ``i``, PyTorch defines ``out = (i − 1)·s − 2p + d·(k − 1) + op + 1``, input position ``i`` with tap
``t`` contributing to output position ``o = i·s − p + t·d``.

jtconv describes padding as a *crop* ``(lo, hi)`` of the full result (no padding, ``(i − 1)·s + d·(k − 1) + 1``
long): ``lo`` positions removed at the low end, ``hi`` at the high end, a negative ``hi`` appending zeros (what
``output_padding`` does). PyTorch's ``padding=p, output_padding=op`` is the crop ``(p, p − op)``.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import cast

IntOrTuple = int | Sequence[int]
PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def normalize_tuple(value: IntOrTuple, ndim: int, name: str) -> tuple[int, ...]:
    """``value`` as ``ndim`` Python ints: an int (or a one-int sequence) repeated, or a sequence of ``ndim`` ints;
    otherwise a ``ValueError`` naming ``name``."""
    if _is_int(value):
        return (int(cast(int, value)),) * ndim
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = tuple(value)
        if len(items) == ndim and all(_is_int(v) for v in items):
            return tuple(int(v) for v in items)
        if len(items) == 1 and _is_int(items[0]):
            return (int(items[0]),) * ndim
    raise ValueError(f"{name} must be an int or a sequence of {ndim} ints (one per spatial dimension), got {value!r}")


def _check_at_least(values: tuple[int, ...], minimum: int, name: str) -> None:
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum} in every dimension, got {values}")


def normalize_padding(
    padding: PaddingLike, ndim: int, kernel_size: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """Any accepted ``padding`` as per-dimension crops ``(lo, hi)``:

    * ``int`` or ``(p1, …, pn)``: PyTorch's, ``p`` cropped from both ends;
    * ``((lo1, hi1), …)``: ``lo`` cropped from the low end, ``hi`` from the high end, both ``>= 0`` (ONNX's
      ``pads = [b1, …, bn, e1, …, en]`` is ``((b1, e1), …)``);
    * ``"valid"`` (Keras/TF): no crop, and the output extended at the high end when the kernel span
      ``k_eff = d·(k − 1) + 1`` is shorter than the stride: ``out = i·s + max(k_eff − s, 0)``, the crop
      ``(0, min(k_eff − s, 0))`` (ONNX's ``VALID`` is ``padding=0``);
    * ``"same"`` (Keras/TF): ``out = i·s``, the adjoint of a forward ``"SAME"`` convolution: with
      ``total = k_eff − s``, ``lo = max(total, 0) // 2``, ``hi = total − lo`` (ONNX's ``SAME_UPPER`` only when
      ``k_eff ≥ s``).

    Only the string forms give a negative ``hi``.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in ("same", "valid"):
            raise ValueError(f"padding must be an int, a tuple, per-side pairs, 'same' or 'valid', got {padding!r}")
        pairs: list[tuple[int, int]] = []
        for k, s, d in zip(kernel_size, stride, dilation):
            total = d * (k - 1) + 1 - s
            pairs.append((0, min(total, 0)) if mode == "valid" else (max(total, 0) // 2, total - max(total, 0) // 2))
        return tuple(pairs)
    if (
        isinstance(padding, Sequence)
        and len(padding) > 0
        and all(isinstance(p, Sequence) and not isinstance(p, str) for p in padding)
    ):
        sides = cast("Sequence[Sequence[int]]", padding)
        if len(sides) != ndim or not all(len(p) == 2 and all(_is_int(v) for v in p) for p in sides):
            raise ValueError(f"padding given as per-side pairs must be {ndim} pairs (lo, hi) of ints, got {padding!r}")
        crops = tuple((int(lo), int(hi)) for lo, hi in sides)
        if any(lo < 0 or hi < 0 for lo, hi in crops):
            raise ValueError(f"padding must be >= 0 on every side, got {crops}")
        return crops
    symmetric = normalize_tuple(cast("IntOrTuple", padding), ndim, "padding")
    _check_at_least(symmetric, 0, "padding")
    return tuple((p, p) for p in symmetric)


@dataclasses.dataclass(frozen=True)
class ConvTransposeGeometry:
    """Validated geometry of one transposed convolution (spatial dims only).

    Attributes:
      input_size: spatial input sizes ``i``.
      kernel_size: spatial kernel sizes ``k``.
      stride: ``s`` per dimension.
      dilation: ``d`` per dimension.
      padding: crop pairs ``(lo, hi)`` before output_padding.
      output_padding: ``op`` per dimension, added at the high end.
      groups: number of groups ``G``.
      in_channels: ``Cin`` (input channels).
      out_channels: ``Cout`` (output channels, ``G ·`` weight.shape[1]).
    """

    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    output_padding: tuple[int, ...]
    groups: int
    in_channels: int
    out_channels: int

    @property
    def ndim(self) -> int:
        return len(self.kernel_size)

    @property
    def crop(self) -> tuple[tuple[int, int], ...]:
        """Crop of the full result: ``(lo, hi − op)`` per dimension."""
        return tuple((lo, hi - op) for (lo, hi), op in zip(self.padding, self.output_padding))

    @property
    def full_size(self) -> tuple[int, ...]:
        """Uncropped result length ``(i − 1)·s + d·(k − 1) + 1``."""
        return tuple(
            (i - 1) * s + d * (k - 1) + 1
            for i, k, s, d in zip(self.input_size, self.kernel_size, self.stride, self.dilation)
        )

    @property
    def output_size(self) -> tuple[int, ...]:
        """``(i − 1)·s − lo − hi + d·(k − 1) + op + 1`` per dimension."""
        return tuple(f - lo - hi for f, (lo, hi) in zip(self.full_size, self.crop))

    @property
    def conv_padding(self) -> tuple[tuple[int, int], ...]:
        """Padding of the equivalent stride-1 convolution over the zero-inserted input:
        ``(d·(k−1) − lo, d·(k−1) − hi + op)``; negative values crop."""
        return tuple(
            (d * (k - 1) - lo, d * (k - 1) - hi) for k, d, (lo, hi) in zip(self.kernel_size, self.dilation, self.crop)
        )

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups


def output_size(
    input_size: IntOrTuple,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: PaddingLike = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
) -> int | tuple[int, ...]:
    """Spatial output size of a transposed convolution.

    ``out = (i − 1)·s − 2p + d·(k − 1) + op + 1`` per dimension (with per-side or string padding, ``2p`` becomes
    ``lo + hi`` of :func:`normalize_padding`). Returns an int when ``input_size`` is an int, else a tuple.

    >>> output_size(4, 4, stride=2, padding=1)
    8
    """
    scalar = _is_int(input_size)
    ndim = 1 if scalar else len(tuple(cast("Sequence[int]", input_size)))
    sizes = normalize_tuple(input_size, ndim, "input_size")
    k = normalize_tuple(kernel_size, ndim, "kernel_size")
    s = normalize_tuple(stride, ndim, "stride")
    d = normalize_tuple(dilation, ndim, "dilation")
    pads = normalize_padding(padding, ndim, k, s, d)
    op = normalize_tuple(output_padding, ndim, "output_padding")
    out = ConvTransposeGeometry(sizes, k, s, d, pads, op, groups=1, in_channels=1, out_channels=1).output_size
    return out[0] if scalar else out


def output_padding_for_size(
    target_size: IntOrTuple,
    input_size: IntOrTuple,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: PaddingLike = 0,
    dilation: IntOrTuple = 1,
) -> int | tuple[int, ...]:
    """The ``output_padding`` that makes the output exactly ``target_size``.

    Like ``torch.nn.ConvTranspose*d.forward(input, output_size=...)``: reachable sizes are ``[min, min + s − 1]``
    where ``min`` is the size with ``output_padding = 0``.

    Raises:
      ValueError: (naming ``output_size``) when a size is out of that range.
    """
    scalar = _is_int(input_size)
    ndim = 1 if scalar else len(tuple(cast("Sequence[int]", input_size)))
    target = normalize_tuple(target_size, ndim, "output_size")
    s = normalize_tuple(stride, ndim, "stride")
    minimum = output_size(input_size, kernel_size, stride, padding, 0, dilation)
    minimum_sizes = (minimum,) if isinstance(minimum, int) else minimum
    op = _output_padding_in_range(target, minimum_sizes, s, normalize_tuple(input_size, ndim, "input_size"))
    return op[0] if scalar else op


def _output_padding_in_range(
    target: Sequence[int], minimum: Sequence[int], stride: Sequence[int], input_size: Sequence[int]
) -> tuple[int, ...]:
    maximum = tuple(m + s - 1 for m, s in zip(minimum, stride))
    if any(t < lo or t > hi for t, lo, hi in zip(target, minimum, maximum)):
        raise ValueError(
            f"output_size {tuple(target)} is unreachable: valid sizes range from {tuple(minimum)} "
            f"to {maximum} (input size {tuple(input_size)}, stride {tuple(stride)})"
        )
    return tuple(int(t) - m for t, m in zip(target, minimum))


def make_geometry(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    output_size: Sequence[int] | None = None,
    bias_shape: Sequence[int] | None = None,
    channels_last: bool = False,
) -> ConvTransposeGeometry:
    """Validate every argument against PyTorch's rules and build the geometry.

    ``input_shape`` is batched ``(N, C, *spatial)`` or unbatched ``(C, *spatial)`` (channels last:
    ``(N, *spatial, C)`` / ``(*spatial, C)``); ``weight_shape`` is ``(in_channels, out_channels // groups,
    *kernel_size)``.

    Raises:
      ValueError: naming the offending argument and the rule it breaks.
    """
    weight_shape = tuple(weight_shape)
    input_shape = tuple(input_shape)
    if len(weight_shape) < 3:
        raise ValueError(
            "weight must have shape (in_channels, out_channels // groups, *kernel_size) "
            f"with at least one spatial dimension, got shape {weight_shape}"
        )
    ndim = len(weight_shape) - 2
    if len(input_shape) not in (ndim + 1, ndim + 2):
        raise ValueError(
            f"input must have {ndim + 2} dimensions (batched) or {ndim + 1} (unbatched) "
            f"for a {ndim}-d weight of shape {weight_shape}, got shape {input_shape}"
        )
    batched = len(input_shape) == ndim + 2
    spatial = input_shape[-ndim - 1 : -1] if channels_last else input_shape[-ndim:]
    channels = input_shape[-1] if channels_last else input_shape[-ndim - 1]

    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    in_channels, out_per_group = weight_shape[0], weight_shape[1]
    kernel_size = tuple(weight_shape[2:])
    if in_channels < 1:
        raise ValueError(f"weight.shape[0] (in_channels) must be >= 1, got weight shape {weight_shape}")
    if out_per_group < 1:
        raise ValueError(f"weight.shape[1] (out_channels // groups) must be >= 1, got weight shape {weight_shape}")
    _check_at_least(kernel_size, 1, "kernel_size (weight.shape[2:])")
    if in_channels % groups:
        raise ValueError(f"in_channels (weight.shape[0] = {in_channels}) must be divisible by groups = {groups}")
    if channels != in_channels:
        flax_hint = (
            f"; weight shape {weight_shape} looks like Flax's (*kernel_size, in_features, out_features) layout "
            "(HWIO), but jtconv expects PyTorch's (in_channels, out_channels // groups, *kernel_size): convert a "
            "flax.linen.ConvTranspose kernel with jtconv.interop.kernel_from_flax_layout(kernel)"
        )
        raise ValueError(
            f"input channels ({channels}) must equal weight.shape[0] (in_channels = {in_channels})"
            + (flax_hint if weight_shape[-2] == channels else "")
        )
    if (not batched or input_shape[0] > 0) and any(i < 1 for i in spatial):
        raise ValueError(f"input spatial sizes must be >= 1, got {tuple(spatial)}")

    stride_t = normalize_tuple(stride, ndim, "stride")
    _check_at_least(stride_t, 1, "stride")
    dilation_t = normalize_tuple(dilation, ndim, "dilation")
    _check_at_least(dilation_t, 1, "dilation")
    pads = normalize_padding(padding, ndim, kernel_size, stride_t, dilation_t)
    geom = ConvTransposeGeometry(
        tuple(int(i) for i in spatial),
        kernel_size,
        stride_t,
        dilation_t,
        pads,
        (0,) * ndim,
        int(groups),
        in_channels,
        groups * out_per_group,
    )

    if output_size is not None:
        if output_padding not in (0, None) and normalize_tuple(output_padding, ndim, "output_padding") != (0,) * ndim:
            raise ValueError("pass either output_padding or output_size, not both")
        target = tuple(output_size)
        non_spatial = 2 if batched else 1
        if len(target) == ndim + non_spatial:  # full shape: keep the spatial part
            target = target[non_spatial - 1 : -1] if channels_last else target[non_spatial:]
        if len(target) != ndim:
            raise ValueError(
                f"output_size must have {ndim} (spatial) or {ndim + non_spatial} elements, got {tuple(output_size)}"
            )
        target = normalize_tuple(target, ndim, "output_size")
        op_t = _output_padding_in_range(target, geom.output_size, stride_t, tuple(spatial))
    else:
        op_t = normalize_tuple(output_padding, ndim, "output_padding")
        _check_at_least(op_t, 0, "output_padding")
        if any(op >= max(s, d) for op, s, d in zip(op_t, stride_t, dilation_t)):
            raise ValueError(
                f"output_padding must be smaller than max(stride, dilation) in every dimension, "
                f"got output_padding={op_t}, stride={stride_t}, dilation={dilation_t}"
            )
        if isinstance(padding, str) and any(op_t):
            raise ValueError(
                f"output_padding must be 0 with padding={padding!r} (the string modes fix the output size)"
            )

    if bias_shape is not None and tuple(bias_shape) != (geom.out_channels,):
        raise ValueError(f"bias must have shape {(geom.out_channels,)} (out_channels,), got {tuple(bias_shape)}")

    geom = dataclasses.replace(geom, output_padding=op_t)
    # An output size of exactly 0 gives an empty result, as torch's default (oneDNN) CPU path returns.
    if any(o < 0 for o in geom.output_size):
        raise ValueError(
            f"output size {geom.output_size} must be >= 0 in every dimension "
            f"(input size {geom.input_size}, kernel {kernel_size}, stride {stride_t}, "
            f"padding {pads}, output_padding {op_t}, dilation {dilation_t}); "
            "padding crops too much"
        )
    return geom
