"""Geometry of a transposed convolution: argument normalisation, validation, sizes.

Pure Python, no JAX. Everything here works on spatial dimensions only.

Per spatial dimension, with stride ``s``, padding ``p``, output_padding ``op``,
dilation ``d``, kernel size ``k`` and input size ``i``, PyTorch defines::

    out = (i - 1)·s − 2p + d·(k − 1) + op + 1

and input position ``i`` with kernel tap ``t`` contributes to output position
``o = i·s − p + t·d``.

Internally jtconv describes padding as a *crop* of the "full" result (the one
with no padding, of length ``(i − 1)·s + d·(k − 1) + 1``): ``lo`` positions are
removed at the low end and ``hi`` at the high end, where a negative ``hi``
appends zeros-initialised positions (that is what ``output_padding`` does).
PyTorch's ``padding=p, output_padding=op`` is the crop ``(p, p − op)``.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import cast

IntOrTuple = int | Sequence[int]
PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]

__all__ = [
    "ConvTransposeGeometry",
    "normalize_tuple",
    "normalize_padding",
    "output_size",
    "output_padding_for_size",
    "make_geometry",
]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def normalize_tuple(value: IntOrTuple, ndim: int, name: str) -> tuple[int, ...]:
    """Return ``value`` as a tuple of ``ndim`` Python ints.

    An int is repeated; a sequence must have exactly ``ndim`` ints.

    Raises:
      ValueError: naming ``name`` if ``value`` is neither.
    """
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


def effective_kernel_size(kernel_size: int, dilation: int) -> int:
    """Span of a dilated kernel: ``d·(k − 1) + 1``."""
    return dilation * (kernel_size - 1) + 1


def normalize_padding(
    padding: PaddingLike,
    ndim: int,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> tuple[tuple[int, int], ...]:
    """Turn any accepted ``padding`` into per-dimension ``(lo, hi)`` crops.

    Accepted forms:

    * ``int`` or ``(p1, …, pn)`` — PyTorch: crop ``p`` from both ends.
    * ``((lo1, hi1), …, (lon, hin))`` — crop ``lo`` from the low end and ``hi``
      from the high end. Both ``>= 0``. ONNX's ConvTranspose
      ``pads = [b1, …, bn, e1, …, en]`` is ``((b1, e1), …)`` (see :mod:`jtconv.onnx`).
    * ``"valid"`` — Keras/TF: no crop, and when the kernel span
      ``k_eff = d·(k−1)+1`` is shorter than the stride the output is extended
      at the high end so that ``out = i·s + max(k_eff − s, 0)``.
      As a crop: ``(0, min(k_eff − s, 0))``. (ONNX ``VALID`` is ``padding=0``.)
    * ``"same"`` — Keras/TF: ``out = i·s``. This is the adjoint of a forward
      ``"SAME"`` convolution: with ``total = k_eff − s``, the crop is
      ``lo = max(total, 0) // 2``, ``hi = total − lo`` (a negative ``hi``
      extends the high end). It equals ONNX ``SAME_UPPER`` only when
      ``k_eff ≥ s``.

    The returned ``hi`` may be negative only for the string forms.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in ("same", "valid"):
            raise ValueError(f"padding must be an int, a tuple, per-side pairs, 'same' or 'valid', got {padding!r}")
        mode_pairs: list[tuple[int, int]] = []
        for k, s, d in zip(kernel_size, stride, dilation):
            total = effective_kernel_size(k, d) - s
            if mode == "valid":
                mode_pairs.append((0, min(total, 0)))
            else:
                lo = max(total, 0) // 2
                mode_pairs.append((lo, total - lo))
        return tuple(mode_pairs)

    if (
        isinstance(padding, Sequence)
        and len(padding) > 0
        and all(isinstance(p, Sequence) and not isinstance(p, str) for p in padding)
    ):
        sides = cast("Sequence[Sequence[int]]", padding)
        if len(sides) != ndim or not all(len(p) == 2 and all(_is_int(v) for v in p) for p in sides):
            raise ValueError(f"padding given as per-side pairs must be {ndim} pairs (lo, hi) of ints, got {padding!r}")
        pairs = tuple((int(lo), int(hi)) for lo, hi in cast("Sequence[tuple[int, int]]", padding))
        if any(lo < 0 or hi < 0 for lo, hi in pairs):
            raise ValueError(f"padding must be >= 0 on every side, got {pairs}")
        return pairs

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
            (i - 1) * s + effective_kernel_size(k, d)
            for i, k, s, d in zip(self.input_size, self.kernel_size, self.stride, self.dilation)
        )

    @property
    def output_size(self) -> tuple[int, ...]:
        """``(i − 1)·s − lo − hi + d·(k − 1) + op + 1`` per dimension."""
        return tuple(f - lo - hi for f, (lo, hi) in zip(self.full_size, self.crop))

    @property
    def conv_padding(self) -> tuple[tuple[int, int], ...]:
        """Padding of the equivalent stride-1 convolution over the zero-inserted
        input: ``(d·(k−1) − lo, d·(k−1) − hi + op)``; negative values crop."""
        return tuple(
            (effective_kernel_size(k, d) - 1 - lo, effective_kernel_size(k, d) - 1 - hi)
            for k, d, (lo, hi) in zip(self.kernel_size, self.dilation, self.crop)
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

    ``out = (i − 1)·s − 2p + d·(k − 1) + op + 1`` per dimension (with per-side
    or string padding, ``2p`` becomes ``lo + hi`` of :func:`normalize_padding`).
    Returns an int when ``input_size`` is an int, else a tuple.

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
    out = tuple(
        (i - 1) * si + effective_kernel_size(ki, di) - lo - hi + opi
        for i, ki, si, di, (lo, hi), opi in zip(sizes, k, s, d, pads, op)
    )
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

    Like ``torch.nn.ConvTranspose*d.forward(input, output_size=...)``: reachable
    sizes are ``[min, min + s − 1]`` where ``min`` is the size with
    ``output_padding = 0``.

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


def _flax_layout_hint(weight_shape: tuple[int, ...], channels: int) -> str:
    """A sentence for channel-mismatch errors when ``weight_shape`` looks like
    Flax's ``(*kernel_size, in_features, out_features)`` layout (HWIO in 2d):
    its second-to-last axis, not its first, equals the input's channels."""
    if len(weight_shape) < 3 or weight_shape[-2] != channels:
        return ""
    return (
        f"; weight shape {weight_shape} looks like Flax's (*kernel_size, in_features, out_features) layout "
        "(HWIO), but jtconv expects PyTorch's (in_channels, out_channels // groups, *kernel_size): convert a "
        "flax.linen.ConvTranspose kernel with jtconv.interop.kernel_from_flax_layout(kernel)"
    )


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

    ``input_shape`` is batched ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``
    (channels last: ``(N, *spatial, C)`` / ``(*spatial, C)``); ``weight_shape``
    is ``(in_channels, out_channels // groups, *kernel_size)``.

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
    if channels_last:
        spatial = input_shape[-ndim - 1 : -1]
        channels = input_shape[-1]
    else:
        spatial = input_shape[-ndim:]
        channels = input_shape[-ndim - 1]
    batch = input_shape[0] if batched else 1

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
        raise ValueError(
            f"input channels ({channels}) must equal weight.shape[0] (in_channels = {in_channels})"
            + _flax_layout_hint(weight_shape, channels)
        )
    if batch > 0 and any(i < 1 for i in spatial):
        raise ValueError(f"input spatial sizes must be >= 1, got {tuple(spatial)}")

    stride_t = normalize_tuple(stride, ndim, "stride")
    _check_at_least(stride_t, 1, "stride")
    dilation_t = normalize_tuple(dilation, ndim, "dilation")
    _check_at_least(dilation_t, 1, "dilation")
    pads = normalize_padding(padding, ndim, kernel_size, stride_t, dilation_t)

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
        minimum = tuple(
            (i - 1) * s + effective_kernel_size(k, d) - lo - hi
            for i, k, s, d, (lo, hi) in zip(spatial, kernel_size, stride_t, dilation_t, pads)
        )
        op_t = _output_padding_in_range(target, minimum, stride_t, tuple(spatial))
    else:
        op_t = normalize_tuple(output_padding, ndim, "output_padding")
        _check_at_least(op_t, 0, "output_padding")
        limit = tuple(max(s, d) for s, d in zip(stride_t, dilation_t))
        if any(op >= m for op, m in zip(op_t, limit)):
            raise ValueError(
                f"output_padding must be smaller than max(stride, dilation) in every dimension, "
                f"got output_padding={op_t}, stride={stride_t}, dilation={dilation_t}"
            )
        if isinstance(padding, str) and any(op_t):
            raise ValueError(
                f"output_padding must be 0 with padding={padding!r} (the string modes fix the output size)"
            )

    if bias_shape is not None:
        expected = (groups * out_per_group,)
        if tuple(bias_shape) != expected:
            raise ValueError(f"bias must have shape {expected} (out_channels,), got {tuple(bias_shape)}")

    geom = ConvTransposeGeometry(
        input_size=tuple(int(i) for i in spatial),
        kernel_size=kernel_size,
        stride=stride_t,
        dilation=dilation_t,
        padding=pads,
        output_padding=op_t,
        groups=int(groups),
        in_channels=in_channels,
        out_channels=groups * out_per_group,
    )
    # An output size of exactly 0 gives an empty result, as torch's default
    # (oneDNN) CPU path returns; its native fallback raises instead.
    if any(o < 0 for o in geom.output_size):
        raise ValueError(
            f"output size {geom.output_size} must be >= 0 in every dimension "
            f"(input size {geom.input_size}, kernel {kernel_size}, stride {stride_t}, "
            f"padding {pads}, output_padding {op_t}, dilation {dilation_t}); "
            "padding crops too much"
        )
    return geom
