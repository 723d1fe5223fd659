"""Lowerings of a transposed convolution and the planner that picks one.

Every lowering has the signature of :class:`jtconv.lowering.common.Lowering`;
:data:`LOWERINGS` maps the names accepted by ``algorithm=`` to them.
"""

from __future__ import annotations

from jtconv.lowering.common import Lowering
from jtconv.lowering.planner import ALGORITHMS, LOWERINGS, choose_algorithm, get_lowering

__all__ = ["ALGORITHMS", "LOWERINGS", "Lowering", "choose_algorithm", "get_lowering"]
