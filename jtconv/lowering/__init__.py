"""How a transposed convolution is computed: the methods and the primitive that runs a plan.

* :mod:`~jtconv.lowering.plan`: :class:`~jtconv.lowering.plan.Plan`, the methods and scheduling of one layer;
* :mod:`~jtconv.lowering.methods`: the registry, one record per method, and the
  modules that implement them (``matmul``, ``split``, ``phase``, ``tiled``, ``reference``, …);
* :mod:`~jtconv.lowering.primitive`: the JAX primitive that carries a plan out,
  asking for it per platform when the program is lowered.

What plan a layer gets is decided in :mod:`jtconv.plans`.
"""
