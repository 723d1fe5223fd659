"""Which plan runs for a layer: the estimate's rules, measurement, and ``algorithm=`` resolved per platform.

Imports run one way, each module using only those before it:

* :mod:`~jtconv.plans.estimate`: the estimate's rules and their thresholds;
* :mod:`~jtconv.plans.wisdom`: measured plans kept on disk, one file per layer and device;
* :mod:`~jtconv.plans.measure`: measured planning (timing on a device, kept as wisdom);
* :mod:`~jtconv.plans.resolve`: planning modes, and ``algorithm=`` resolved per platform;
* :mod:`~jtconv.plans.layer_plans`: :func:`jtconv.plan_for` and :func:`jtconv.candidate_plans`.
"""
