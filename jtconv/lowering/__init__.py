"""How a transposed convolution is computed: methods, plans and the planner.

* :mod:`~jtconv.lowering.methods`: the registry, one record per method;
* :mod:`~jtconv.lowering.plan`: :class:`Plan`, the methods and scheduling of one layer;
* :mod:`~jtconv.lowering.primitive`: the JAX primitive that carries a plan out,
  asking for it per platform when the program is lowered;
* :mod:`~jtconv.lowering.planner`: the estimate's rules and their thresholds;
* :mod:`~jtconv.lowering.measure`: measured planning;
* :mod:`~jtconv.lowering.planning`: planning modes, and ``algorithm=`` resolved per platform.

Imports run one way, in that order.
"""

from __future__ import annotations

from jtconv.lowering.methods import METHODS, Method
from jtconv.lowering.plan import Plan
from jtconv.lowering.planner import ALGORITHMS, THRESHOLDS, algorithm_plan, candidates, estimate
from jtconv.lowering.planning import resolve

__all__ = [
    "ALGORITHMS",
    "METHODS",
    "THRESHOLDS",
    "Method",
    "Plan",
    "algorithm_plan",
    "candidates",
    "estimate",
    "resolve",
]
