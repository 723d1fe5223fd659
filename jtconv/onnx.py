"""An ONNX ``ConvTranspose`` node's attributes as :func:`jtconv.conv_transpose` arguments.

Pure Python; the ``onnx`` package is not needed. Per spatial dimension, with input
size ``i``, stride ``s``, dilation ``d``, kernel size ``k`` and output_padding ``op``,
the output with no padding is ``F + op`` long, ``F = s·(i − 1) + d·(k − 1) + 1``.
The attributes map onto jtconv as follows:

* ``pads = [b1, …, bn, e1, …, en]`` (auto_pad ``NOTSET``) is ``padding=((b1, e1), …)``.
* ``auto_pad="VALID"`` is ``padding=0`` (not jtconv's ``"valid"``).
* ``output_shape`` (which overrides ``pads``), and ``SAME_UPPER`` / ``SAME_LOWER``
  without it (target ``i·s``), crop ``total = F + op − target``: ``SAME_UPPER`` crops
  ``total // 2`` at the start and the rest at the end; every other ``auto_pad`` crops
  the larger half at the start. A negative ``total`` (the spec's ``pads`` must be
  ``≥ 0``) follows onnxruntime: nothing is cropped, ``SAME_*`` then give ``F + op``
  (not ``i·s``, which jtconv's ``"same"`` gives), and an ``output_shape`` up to
  ``s·i + d·(k − 1)`` is reached by extending the end (with ``output_padding``).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["conv_transpose_arguments"]

_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "output_padding", "output_shape", "pads", "strides")
_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _ints(attributes: Mapping[str, Any], name: str, length: int, minimum: int) -> tuple[int, ...] | None:
    """Attribute ``name`` as ``length`` ints ``≥ minimum``, or ``None`` when absent."""
    value = attributes.get(name)
    if value is None:
        return None
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != length
        or not all(_is_int(v) and v >= minimum for v in value)
    ):
        raise ValueError(f"{name} must be a list of {length} ints >= {minimum}, got {value!r}")
    return tuple(int(v) for v in value)


def conv_transpose_arguments(
    attributes: Mapping[str, Any], x_shape: Sequence[int], w_shape: Sequence[int]
) -> dict[str, Any]:
    """Keyword arguments of :func:`jtconv.conv_transpose` for an ONNX ``ConvTranspose`` node.

    ``jtconv.conv_transpose(x, w, b, **conv_transpose_arguments(attributes, x.shape, w.shape))``
    computes the node's output ``Y`` from its inputs ``X``, ``W`` and ``B``.

    Args:
      attributes: the node's attributes by name (``auto_pad`` as ``str`` or
        ``bytes``, the others as ints or lists of ints), e.g.
        ``{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}``.
      x_shape: ``X``'s shape ``(N, C, *spatial)``.
      w_shape: ``W``'s shape ``(C, M / group, *kernel_shape)``.

    Returns:
      ``stride``, ``padding`` (per-side pairs), ``output_padding``, ``dilation``
      and ``groups``, one entry per spatial dimension (see the module's docstring
      for the arithmetic).

    Raises:
      ValueError: naming the attribute, for an unknown attribute, a list of the
        wrong length or with out-of-range values, ``kernel_shape`` other than
        ``W``'s, ``pads`` with an ``auto_pad`` other than ``NOTSET``,
        ``output_padding ≥ max(s, d)`` or an ``output_shape`` beyond
        ``s·i + d·(k − 1)``.
    """
    unknown = sorted(set(attributes) - set(_ATTRIBUTES))
    if unknown:
        raise ValueError(
            f"{unknown[0]!r} is not a ConvTranspose attribute; the attributes are {', '.join(_ATTRIBUTES)}"
        )
    ndim = len(w_shape) - 2
    if ndim < 1 or len(x_shape) != ndim + 2:
        raise ValueError(
            f"x_shape (N, C, *spatial) and w_shape (C, M / group, *kernel) must have the same rank >= 3, "
            f"got {tuple(x_shape)} and {tuple(w_shape)}"
        )
    inputs, kernel = tuple(x_shape[2:]), tuple(w_shape[2:])
    strides = _ints(attributes, "strides", ndim, 1) or (1,) * ndim
    dilations = _ints(attributes, "dilations", ndim, 1) or (1,) * ndim
    output_padding = _ints(attributes, "output_padding", ndim, 0) or (0,) * ndim
    pads = _ints(attributes, "pads", 2 * ndim, 0) or (0,) * (2 * ndim)
    output_shape = _ints(attributes, "output_shape", ndim, 1)
    kernel_shape = _ints(attributes, "kernel_shape", ndim, 1)
    if kernel_shape is not None and kernel_shape != kernel:
        raise ValueError(f"kernel_shape {list(kernel_shape)} must equal W's spatial shape {list(kernel)}")
    group = attributes.get("group", 1)
    if not _is_int(group) or group < 1:
        raise ValueError(f"group must be an int >= 1, got {group!r}")
    auto_pad = attributes.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in _AUTO_PADS:
        raise ValueError(f"auto_pad must be one of {', '.join(_AUTO_PADS)}, got {auto_pad!r}")
    if attributes.get("pads") is not None and auto_pad != "NOTSET":
        raise ValueError(f"pads cannot be used together with auto_pad={auto_pad!r}")
    if any(op >= max(s, d) for op, s, d in zip(output_padding, strides, dilations)):
        raise ValueError(
            f"output_padding {list(output_padding)} must be smaller than max(stride, dilation) in every dimension, "
            f"got strides {list(strides)} and dilations {list(dilations)}"
        )

    padding = tuple(zip(pads[:ndim], pads[ndim:]))
    targets = output_shape
    if targets is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        targets = tuple(i * s for i, s in zip(inputs, strides))
    if targets is not None:
        pairs, extended = [], []
        for i, k, s, d, op, target in zip(inputs, kernel, strides, dilations, output_padding, targets):
            full = s * (i - 1) + d * (k - 1) + 1
            total = full + op - target
            if total >= 0:
                start = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
                pairs.append((start, total - start))
                extended.append(op)
                continue
            if output_shape is not None and target > s * i + d * (k - 1):
                raise ValueError(
                    f"output_shape {list(output_shape)} is too large: at most stride·input + dilation·(kernel − 1) "
                    f"= {s * i + d * (k - 1)} in a dimension with input {i}, kernel {k}, stride {s}, dilation {d}"
                )
            pairs.append((0, 0))
            extended.append(op if output_shape is None else target - full)
        padding, output_padding = tuple(pairs), tuple(extended)
    return {
        "stride": strides,
        "padding": padding,
        "output_padding": output_padding,
        "dilation": dilations,
        "groups": int(group),
    }
