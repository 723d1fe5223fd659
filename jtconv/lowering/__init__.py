"""How a transposed convolution is computed: methods, plans and the planner.

* :mod:`~jtconv.lowering.methods`: the registry, one record per method;
* :mod:`~jtconv.lowering.plan`: :class:`Plan`, the methods and scheduling of one layer;
* :mod:`~jtconv.lowering.planner`: the estimate's rules and their thresholds;
* :mod:`~jtconv.lowering.planning`: planning modes (estimate / measure);
* :mod:`~jtconv.lowering.primitive`: the JAX primitive that carries a plan out.
"""

from __future__ import annotations

from jtconv.lowering.methods import METHODS, Method
from jtconv.lowering.plan import Plan
from jtconv.lowering.planner import ALGORITHMS, THRESHOLDS, algorithm_plan, candidates, estimate, resolve

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
