"""The methods as one JAX primitive, ``jtconv_conv_transpose``, whose plan is
resolved per platform when the program is lowered.

A transposed convolution ``y = f(x, w)`` is bilinear, and so are its two
transposes, the input gradient ``x̄ = dx(ȳ, w)`` and the weight gradient
``w̄ = dw(x, ȳ)``. The primitive computes one of the three (its ``role``
parameter); the three are closed under differentiation, as convolutions are in
``lax``:

* ``f(x, w)``: jvp ``f(ẋ, w) + f(x, ẇ)``; transposes ``dx(ȳ, w)`` and ``dw(x, ȳ)``;
* ``dx(u, w)``: jvp ``dx(u̇, w) + dx(u, ẇ)``; since ``⟨dx(u, w), a⟩ = ⟨f(a, w), u⟩``,
  transposes ``f(a, w)`` (in ``u``) and ``dw(a, u)`` (in ``w``);
* ``dw(x, u)``: jvp ``dw(ẋ, u) + dw(x, u̇)``; since ``⟨dw(x, u), b⟩ = ⟨f(x, b), u⟩``,
  transposes ``dx(u, b)`` (in ``x``) and ``f(x, b)`` (in ``u``).

So grad, jvp, and any order of either, bind this primitive again, and nothing
about the plan is decided while JAX traces. The ``plan`` parameter is a
:class:`~jtconv.lowering.plan.Plan` or a *plan source* (anything with
``plan_on(platform) -> Plan``, such as :class:`jtconv.plans.resolve.PlanRequest`),
asked when the program is lowered: once per platform it is lowered for, with
one lowering rule registered per platform (``cpu``, ``cuda``, ``rocm``,
``tpu`` and a default), the way ``lax`` primitives have them. A ``jax.jit``
on CPU devices in a GPU process, a ``jax.export`` for ``cuda`` from a CPU
host and each branch of a multi-platform export therefore run the plan of
their own platform. This module carries a plan out; it decides nothing.

Each role lowers with ``mlir.lower_fun`` to the plan's method for it
(:mod:`jtconv.lowering.methods`), so XLA sees plain HLO and sharding
propagates. vmap folds a batched operand into the batch axis, or a batch of
weights into the groups (``B`` stacked layers are one layer with ``B·G``
groups; a method that cannot express the folded layer takes its fallback,
:func:`~jtconv.lowering.methods.adapt`).

Two scheduling choices of a plan are lowered here:

* ``stores_output``: the forward of a differentiated layer stores its output
  once (:func:`_stored`), so that XLA does not recompute the col2im inside
  every backward fusion that reads ``y``;
* ``waits``: the transposes wait for their third operand, ``after``, one
  element of the forward's output (:func:`_wait_for`). XLA's CPU runtime
  otherwise starts the backward GEMMs while the forward GEMM still runs
  whenever the loss's cotangent does not depend on ``y`` (as in
  ``sum(y · c)``). Plans that do not wait leave ``after`` dead.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Protocol, cast

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import accumulation_dtype, output_dtype
from jtconv.lowering.methods import METHODS, adapt
from jtconv.lowering.plan import Plan
from jtconv.lowering.varying import aval_varying_axes, vary_over, varying_axes, zeros_varying

__all__ = ["PLATFORMS", "PlanSource", "conv_transpose_p", "conv_transpose_planned"]

conv_transpose_p = Primitive("jtconv_conv_transpose")

PLATFORMS: tuple[str, ...] = ("cpu", "cuda", "rocm", "tpu")
"""Platforms with a lowering rule of their own; any other platform lowers like ``cuda``."""

FORWARD, INPUT_TRANSPOSE, WEIGHT_TRANSPOSE = "forward", "input_transpose", "weight_transpose"


class PlanSource(Protocol):
    """What the primitive's ``plan`` parameter may be besides a :class:`Plan`:
    a hashable value that names the plan for a platform (``"cpu"``,
    ``"cuda"``, ``"rocm"``, ``"tpu"``, …) when the program is lowered."""

    def plan_on(self, platform: str) -> Plan: ...


def plan_on(source: Plan | PlanSource, platform: str, geom: ConvTransposeGeometry) -> Plan:
    """The plan ``source`` names for ``platform``, adapted to the layer ``geom``."""
    plan = source if isinstance(source, Plan) else source.plan_on(platform)
    return adapt(plan, geom)


# ----------------------------------------------------------------------------- the three computations


def _run_forward(name: str, x, w, *, platform: str, plan: Plan, geom, precision, preferred_element_type):
    return cast(Callable, METHODS[name].forward)(
        x,
        w,
        geom,
        precision=precision,
        preferred_element_type=preferred_element_type,
        layout=plan.gemm_layout,
        platform=platform,
    )


def _compute(role: str, plan: Plan, platform: str, a, b, after, *, out_aval, geom, precision, preferred_element_type):
    """``role`` of ``plan`` on its operands: ``(x, w)``, ``(ȳ, w)`` or ``(x, ȳ)``."""
    run = dict(
        platform=platform, plan=plan, geom=geom, precision=precision, preferred_element_type=preferred_element_type
    )
    if role == FORWARD:
        return _run_forward(plan.forward, a, b, **run)
    if role == INPUT_TRANSPOSE:
        ct, w = (_wait_for(a, after) if plan.waits else a), b
    else:
        x, ct = a, (_wait_for(b, after) if plan.waits else b)
    record = METHODS[getattr(plan, role)]
    if record.derived_from is not None:
        name = record.derived_from
        if role == INPUT_TRANSPOSE:
            return _linear_transpose(lambda x: _run_forward(name, x, w, **run), out_aval, ct)
        return _linear_transpose(lambda w: _run_forward(name, x, w, **run), out_aval, ct)
    options = dict(
        precision=precision,
        acc_dtype=accumulation_dtype(out_aval.dtype, preferred_element_type),
        out_dtype=out_aval.dtype,
        platform=platform,
    )
    if role == INPUT_TRANSPOSE:
        return cast(Callable, record.transpose_input)(ct, w, geom, **options)
    return cast(Callable, record.transpose_weight)(x, ct, geom, **options)


def _linear_transpose(linear, aval, ct: jax.Array) -> jax.Array:
    """The transpose of the linear map ``linear`` (input ``aval``) applied to ``ct``.

    ``jax.vjp`` at a zero point (its primal result is dead code XLA drops)
    rather than ``jax.linear_transpose``, so that the input keeps the
    ``shard_map`` varying axes of ``aval``.
    """
    zeros = zeros_varying(aval.shape, aval.dtype, aval_varying_axes(aval))
    return jax.linear_transpose(linear, zeros)(ct)[0]


def _abstract_eval(a, b, after, *, role, plan, geom, precision, preferred_element_type, differentiated):
    del after, plan, precision, differentiated
    batch = (a.shape[0],)
    if role == FORWARD:
        shape, dtype = batch + (geom.out_channels,) + geom.output_size, output_dtype(a.dtype, preferred_element_type)
    elif role == INPUT_TRANSPOSE:
        shape, dtype = batch + (geom.in_channels,) + geom.input_size, b.dtype
    else:
        shape, dtype = (geom.in_channels, geom.out_per_group) + geom.kernel_size, a.dtype
    # ``update`` keeps a's manual-axis (shard_map) type, which _bind made every operand's.
    return a.update(shape=shape, dtype=dtype, weak_type=False)


def _lowering(platform: str):
    def rule(ctx, a, b, after, *, role, plan, geom, precision, preferred_element_type, differentiated):
        chosen = plan_on(plan, platform, geom)
        options = dict(geom=geom, precision=precision, preferred_element_type=preferred_element_type)

        def compute(a, b, after):
            out = _compute(role, chosen, platform, a, b, after, out_aval=ctx.avals_out[0], **options)
            if role == FORWARD and differentiated and chosen.stores_output:
                out = _stored(out, a)
            return out

        return mlir.lower_fun(compute, multiple_results=False)(ctx, a, b, after)

    return rule


conv_transpose_p.def_abstract_eval(_abstract_eval)
conv_transpose_p.def_impl(lambda *args, **params: jax.jit(functools.partial(conv_transpose_p.bind, **params))(*args))
mlir.register_lowering(conv_transpose_p, _lowering("cuda"))
for _platform in PLATFORMS:
    mlir.register_lowering(conv_transpose_p, _lowering(_platform), platform=_platform)


# ----------------------------------------------------------------------------- scheduling helpers


def _marker(y: jax.Array) -> jax.Array:
    """One element of ``y`` (none if ``y`` is empty): something the backward can wait for."""
    flat = y.reshape(-1)
    return flat[: min(1, flat.shape[0])]


def _no_marker(dtype) -> jax.Array:
    return jnp.zeros((0,), dtype)


def _wait_for(ct: jax.Array, after: jax.Array) -> jax.Array:
    """``ct`` unchanged, but computed only once ``after`` exists.

    ``after`` (one element of the primal output) enters as an exact zero,
    ``where(isfinite(a), a, 0)·0``, which XLA cannot fold away (unlike an
    ``optimization_barrier`` whose second output is unused: XLA drops it).
    """
    if after.size == 0:
        return ct
    a = after.reshape(-1)[0]
    zero = jnp.where(jnp.isfinite(a), a, jnp.zeros_like(a)) * jnp.zeros_like(a)
    return ct + zero.astype(ct.dtype)


@jax.custom_jvp
def _stored(y: jax.Array, anchor: jax.Array) -> jax.Array:
    """``y`` unchanged, but written to memory once, as the carry of a loop.

    XLA's CPU fusion otherwise duplicates the matmul forward's col2im (a sum
    of shifted tap products) into every fusion that reads the primal output
    in the backward, e.g. the cotangent's im2col when the loss depends on
    ``y``, which then recomputes each output value once per kernel tap.
    The loop runs zero times (its count, ``isnan(anchor[0]) − 1``, is −1 or
    0), which XLA cannot prove, so it keeps the loop and stores ``y`` once.
    ``benchmarks/run.py --loss square`` measures what it saves.
    ``anchor`` (the input) is used so that the count does not split the
    col2im fusion that produces ``y``.
    """
    count = jnp.isnan(anchor.reshape(-1)[:1]).sum(dtype=jnp.int32) - 1
    out, _ = lax.while_loop(lambda c: c[1] > 0, lambda c: (c[0] + c[0], c[1] - 1), (y, count))
    return out


@_stored.defjvp
def _stored_jvp(primals, tangents):
    y, anchor = primals
    return _stored(y, anchor), tangents[0]


marker_p = Primitive("jtconv_backward_marker")
"""``marker(y)``: what a plan's transposes wait for: one element of ``y`` where
the plan of the platform being lowered for waits (:attr:`Plan.waits`), else
zeros, so that nothing orders the backward after the forward."""


def _marker_lowering(platform: str):
    def rule(ctx, y, *, plan, geom):
        waits = plan_on(plan, platform, geom).waits
        aval = ctx.avals_out[0]
        return mlir.lower_fun(lambda y: _marker(y) if waits else jnp.zeros(aval.shape, aval.dtype), False)(ctx, y)

    return rule


marker_p.def_abstract_eval(lambda y, *, plan, geom: y.update(shape=(min(1, y.size),), weak_type=False))
marker_p.def_impl(lambda y, **params: jax.jit(functools.partial(marker_p.bind, **params))(y))


def _marker_jvp(primals, tangents, **params):
    marker = marker_p.bind(*primals, **params)
    return marker, ad.Zero(jax.typeof(marker).to_tangent_aval())


ad.primitive_jvps[marker_p] = _marker_jvp
batching.primitive_batchers[marker_p] = lambda args, dims, **params: (marker_p.bind(args[0], **params), None)
mlir.register_lowering(marker_p, _marker_lowering("cuda"))
for _platform in PLATFORMS:
    mlir.register_lowering(marker_p, _marker_lowering(_platform), platform=_platform)


# ----------------------------------------------------------------------------- binding and the rules


def _bind(role: str, a, b, after, **params):
    """Bind the primitive after making all operands vary over the same
    ``shard_map`` axes (what JAX does for its own primitives; the transposes of
    the casts are the ``psum``s a replicated operand's gradient needs)."""
    params.setdefault("differentiated", False)
    varying = frozenset().union(*(varying_axes(v) for v in (a, b, after)))
    return conv_transpose_p.bind(*(vary_over(v, varying) for v in (a, b, after)), role=role, **params)


def _jvp(primals, tangents, *, role, differentiated, **params):
    a, b, after = primals
    a_dot, b_dot, _ = tangents
    y = _bind(role, a, b, after, differentiated=role == FORWARD, **params)
    # Transposes of the tangent map wait for the forward's output if their plan says so.
    # The same for every plan, so that a program's text does not depend on how its plan was named.
    marker = marker_p.bind(y, plan=params["plan"], geom=params["geom"]) if role == FORWARD else after
    terms = []
    if type(a_dot) is not ad.Zero:
        terms.append(_bind(role, a_dot, b, marker, **params))
    if type(b_dot) is not ad.Zero:
        terms.append(_bind(role, a, b_dot, marker, **params))
    if not terms:
        return y, ad.Zero(jax.typeof(y).to_tangent_aval())
    return y, functools.reduce(jnp.add, terms)


# Which computation is the transpose of ``role`` in its first or second operand,
# and in which order it takes (the cotangent, the other operand).
_TRANSPOSES = {
    (FORWARD, 0): (INPUT_TRANSPOSE, "ct_first"),  # x̄ = dx(ȳ, w)
    (FORWARD, 1): (WEIGHT_TRANSPOSE, "ct_second"),  # w̄ = dw(x, ȳ)
    (INPUT_TRANSPOSE, 0): (FORWARD, "ct_first"),  # ū = f(a, w)
    (INPUT_TRANSPOSE, 1): (WEIGHT_TRANSPOSE, "ct_first"),  # w̄ = dw(a, u)
    (WEIGHT_TRANSPOSE, 0): (INPUT_TRANSPOSE, "ct_second"),  # x̄ = dx(u, b)
    (WEIGHT_TRANSPOSE, 1): (FORWARD, "ct_second"),  # ū = f(x, b)
}


def _transpose(ct, a, b, after, *, role, differentiated, **params):
    del differentiated
    if ad.is_undefined_primal(after):
        raise ValueError("jtconv_conv_transpose: the ordering operand is not differentiable")
    if type(ct) is ad.Zero:
        return None, None, None
    position = 0 if ad.is_undefined_primal(a) else 1
    other = b if position == 0 else a
    target, order = _TRANSPOSES[(role, position)]
    operands = (ct, other) if order == "ct_first" else (other, ct)
    wait = after if target != FORWARD else _no_marker(jax.typeof(ct).dtype)
    result = _bind(target, *operands, wait, **params)
    return (result, None, None) if position == 0 else (None, result, None)


ad.primitive_jvps[conv_transpose_p] = _jvp
ad.primitive_transposes[conv_transpose_p] = _transpose


def _channels_into_groups(v: jax.Array, dim: int | None, size: int) -> jax.Array:
    """``(…B at dim…, N, C, *S)`` → ``(N, B·C, *S)`` (broadcast first if ``dim`` is None)."""
    v = jnp.broadcast_to(v, (size,) + v.shape) if dim is None else jnp.moveaxis(v, dim, 0)
    return jnp.swapaxes(v, 0, 1).reshape((v.shape[1], size * v.shape[2]) + v.shape[3:])


def _batch(args, dims, *, role, geom: ConvTransposeGeometry, **params):
    a, b, after = args  # ``after`` is never batched: the marker of a batch is one element of it
    da, db, _ = dims
    if role != WEIGHT_TRANSPOSE and db is None:
        # A batch of activations is a larger batch.
        a = jnp.moveaxis(a, da, 0)
        size, n = a.shape[:2]
        y = _bind(role, a.reshape((size * n,) + a.shape[2:]), b, after, geom=geom, **params)
        return y.reshape((size, n) + y.shape[1:]), 0
    # Otherwise a batch of layers is one layer with B·G groups.
    size = next(v.shape[d] for v, d in ((a, da), (b, db)) if d is not None)
    folded = dataclasses.replace(
        geom, groups=size * geom.groups, in_channels=size * geom.in_channels, out_channels=size * geom.out_channels
    )
    if role == WEIGHT_TRANSPOSE:
        x, ct = _channels_into_groups(a, da, size), _channels_into_groups(b, db, size)
        dw = _bind(role, x, ct, after, geom=folded, **params)
        return dw.reshape((size, geom.in_channels) + dw.shape[1:]), 0
    w = jnp.moveaxis(b, db, 0)
    w = w.reshape((size * geom.in_channels,) + w.shape[2:])
    y = _bind(role, _channels_into_groups(a, da, size), w, after, geom=folded, **params)
    return y.reshape((y.shape[0], size, -1) + y.shape[2:]), 1


batching.primitive_batchers[conv_transpose_p] = _batch


def conv_transpose_planned(
    x: jax.Array,
    weight: jax.Array,
    geom: ConvTransposeGeometry,
    plan: Plan | PlanSource,
    *,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)`` (no bias) as
    ``plan`` (a :class:`Plan`, or a :class:`PlanSource` asked per platform at
    lowering) says."""
    if isinstance(precision, list):  # primitive parameters must be hashable
        precision = tuple(precision)
    if preferred_element_type is not None:
        preferred_element_type = jnp.dtype(preferred_element_type)
    return _bind(
        FORWARD,
        x,
        weight,
        _no_marker(x.dtype),
        plan=plan,
        geom=geom,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
