"""Numbers, shapes and per-dimension parameters as short text (for the commands and pictures)."""

from __future__ import annotations

from collections.abc import Sequence


def format_number(value: float) -> str:
    """``value`` as short text: an integer (below 10¹⁵) without a decimal point, else 4 significant digits."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def format_shape(shape: Sequence[int]) -> str:
    """``(4, 5)`` as ``4×5``."""
    return "×".join(map(str, shape))


def format_index(index: Sequence[int]) -> str:
    """``(0, 1)`` as ``0,1`` (written inside ``x[…]``)."""
    return ",".join(map(str, index))


def format_param(values: Sequence[int]) -> str:
    """A per-dimension parameter as typed on the command line: ``2`` when uniform, else ``2,3``."""
    return str(values[0]) if len(set(values)) == 1 else ",".join(map(str, values))
