"""The methods as one JAX primitive, ``jtconv_conv_transpose``, with its own
transpose rules.

Automatic differentiation of the GEMM forwards is correct but slow on XLA
CPU (the transposed col2im becomes single-threaded slice loops and unfused
copies), and XLA's automatic weight gradient of an lhs-dilated convolution is
a huge-window convolution. So every plan binds one primitive, bilinear in
``(x, w)`` like ``lax.conv_general_dilated``, whose ``plan`` parameter (a
:class:`~jtconv.lowering.plan.Plan`) names the method of each role
(:mod:`jtconv.lowering.methods`). This module carries out a plan; it decides
nothing (the planner does, :mod:`jtconv.lowering.planner`).

The forward is lowered with ``mlir.lower_fun``, so XLA sees plain HLO and
sharding propagates. The rules:

* jvp: ``ẏ = f(ẋ, w) + f(x, ẇ)`` (the same primitive again, so jvp of jvp works);
* transposes: the plan's ``input_transpose`` and ``weight_transpose``
  methods, written out (GEMMs, convolutions) or derived by JAX from a
  forward (``jax.vjp`` of a linear map);
* vmap: a batched ``x`` folds into the batch axis, a batched weight into
  the groups (``B`` stacked layers are one layer with ``B·G`` groups; parts
  of the plan that cannot express the folded layer take their method's
  fallback, :func:`~jtconv.lowering.planner.adapt`).

The transposes are ordinary JAX code, so second-order reverse mode
differentiates them.

With ``plan.stores_output`` the jvp stores the primal output once
(:func:`_stored`), so that XLA does not recompute the col2im inside every
backward fusion that reads ``y``.

A third operand, ``after``, carries no data: with ``plan.waits`` the
transposes wait for it and the jvp passes one element of the primal output
there. XLA's CPU runtime otherwise starts the backward GEMMs while the
forward GEMM still runs whenever the loss's cotangent does not depend on
``y`` (as in ``sum(y · c)``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import accumulation_dtype, output_dtype
from jtconv.lowering.methods import METHODS
from jtconv.lowering.plan import Plan
from jtconv.lowering.planner import adapt
from jtconv.lowering.varying import aval_varying_axes, vary_over, varying_axes, zeros_varying

conv_transpose_p = Primitive("jtconv_conv_transpose")


def _forward(x, w, after, *, plan, geom, precision, preferred_element_type):
    del after
    return _run_forward(
        plan.forward, x, w, plan=plan, geom=geom, precision=precision, preferred_element_type=preferred_element_type
    )


def _run_forward(name: str, x, w, *, plan: Plan, geom, precision, preferred_element_type):
    forward = METHODS[name].forward
    if forward is None:
        raise ValueError(f"method {name!r} has no forward")
    return forward(
        x, w, geom, precision=precision, preferred_element_type=preferred_element_type, layout=plan.gemm_layout
    )


def _abstract_eval(x, w, after, *, plan, geom, precision, preferred_element_type):
    del w, after, precision, plan
    shape = (x.shape[0], geom.out_channels) + geom.output_size
    # ``update`` keeps x's manual-axis (shard_map) type, which _bind made w's and after's too.
    return x.update(shape=shape, dtype=output_dtype(x.dtype, preferred_element_type), weak_type=False)


conv_transpose_p.def_abstract_eval(_abstract_eval)
conv_transpose_p.def_impl(lambda *args, **params: jax.jit(functools.partial(_forward, **params))(*args))
mlir.register_lowering(conv_transpose_p, mlir.lower_fun(_forward, multiple_results=False))


def _bind(x, w, after, **params):
    """Bind the primitive after making all operands vary over the same
    ``shard_map`` axes (what JAX does for its own primitives; the transposes of
    the casts are the ``psum``s a replicated operand's gradient needs).

    The plan is adapted to the layer (:func:`~jtconv.lowering.planner.adapt`):
    a vmap that folded weights into groups can leave a method without the
    layer it was planned for.
    """
    params = dict(params, plan=adapt(params["plan"], params["geom"]))
    operands = (x, w, after)
    varying = frozenset().union(*(varying_axes(a) for a in operands))
    operands = tuple(vary_over(a, varying) for a in operands)
    return conv_transpose_p.bind(*operands, **params)


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


def _jvp(primals, tangents, **params):
    x, w, after = primals
    x_dot, w_dot, _ = tangents
    y = conv_transpose_p.bind(x, w, after, **params)
    plan = params["plan"]
    if plan.stores_output:
        y = _stored(y, x)
    marker = _marker(y) if plan.waits else _no_marker(y.dtype)
    terms = []
    if type(x_dot) is not ad.Zero:
        terms.append(_bind(x_dot, w, marker, **params))
    if type(w_dot) is not ad.Zero:
        terms.append(_bind(x, w_dot, marker, **params))
    if not terms:
        return y, ad.Zero(jax.typeof(y).to_tangent_aval())
    return y, functools.reduce(jnp.add, terms)


def _transpose(ct, x, w, after, *, plan, geom, precision, preferred_element_type):
    if ad.is_undefined_primal(after):
        raise ValueError("jtconv_conv_transpose: the ordering operand is not differentiable")
    if type(ct) is ad.Zero:
        return None, None, None
    ct = _wait_for(ct, after)
    run = dict(plan=plan, geom=geom, precision=precision, preferred_element_type=preferred_element_type)
    if ad.is_undefined_primal(x):
        aval = x.aval
        record = METHODS[plan.input_transpose]
        if record.derived_from is not None:
            linear = functools.partial(_forward_in_x, w=w, name=record.derived_from, **run)
            return _linear_transpose(linear, aval, ct), None, None
        acc_dtype = accumulation_dtype(aval.dtype, preferred_element_type)
        dx = record.transpose_input(ct, w, geom, precision=precision, acc_dtype=acc_dtype, out_dtype=aval.dtype)
        return dx, None, None
    aval = w.aval
    record = METHODS[plan.weight_transpose]
    if record.derived_from is not None:
        linear = functools.partial(_forward_in_w, x=x, name=record.derived_from, **run)
        return None, _linear_transpose(linear, aval, ct), None
    acc_dtype = accumulation_dtype(jax.typeof(x).dtype, preferred_element_type)
    dw = record.transpose_weight(x, ct, geom, precision=precision, acc_dtype=acc_dtype, out_dtype=aval.dtype)
    return None, dw, None


def _linear_transpose(linear, aval, ct: jax.Array) -> jax.Array:
    """The transpose of the linear map ``linear`` (input ``aval``) applied to ``ct``.

    ``jax.vjp`` at a zero point (its primal result is dead code XLA drops)
    rather than ``jax.linear_transpose``, so that the input keeps the
    ``shard_map`` varying axes of ``aval``.
    """
    zeros = zeros_varying(aval.shape, aval.dtype, aval_varying_axes(aval))
    _, pullback = jax.vjp(linear, zeros)
    return pullback(ct)[0]


def _forward_in_x(x, *, w, name, **run):
    return _run_forward(name, x, w, **run)


def _forward_in_w(w, *, x, name, **run):
    return _run_forward(name, x, w, **run)


ad.primitive_jvps[conv_transpose_p] = _jvp
ad.primitive_transposes[conv_transpose_p] = _transpose


def _batch(args, dims, *, plan, geom: ConvTransposeGeometry, precision, preferred_element_type):
    x, w, after = args
    bx, bw, b_after = dims
    if b_after is not None:
        after = _marker(after)
    params = dict(plan=plan, precision=precision, preferred_element_type=preferred_element_type)
    if bw is None:
        x = jnp.moveaxis(x, bx, 0)
        b, n = x.shape[:2]
        y = _bind(x.reshape((b * n,) + x.shape[2:]), w, after, geom=geom, **params)
        return y.reshape((b, n) + y.shape[1:]), 0
    # A batch of weights is one layer with B·G groups.
    w = jnp.moveaxis(w, bw, 0)
    b = w.shape[0]
    if bx is None:
        x = jnp.broadcast_to(x, (b,) + x.shape)
    else:
        x = jnp.moveaxis(x, bx, 0)
    n = x.shape[1]
    x = jnp.swapaxes(x, 0, 1).reshape((n, b * geom.in_channels) + x.shape[3:])
    w = w.reshape((b * geom.in_channels,) + w.shape[2:])
    folded = dataclasses.replace(
        geom, groups=b * geom.groups, in_channels=b * geom.in_channels, out_channels=b * geom.out_channels
    )
    y = _bind(x, w, after, geom=folded, **params)
    return y.reshape((n, b, geom.out_channels) + y.shape[2:]), 1


batching.primitive_batchers[conv_transpose_p] = _batch


def conv_transpose_planned(
    x: jax.Array,
    weight: jax.Array,
    geom: ConvTransposeGeometry,
    plan: Plan,
    *,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)`` (no bias) as ``plan`` says."""
    if isinstance(precision, list):  # primitive parameters must be hashable
        precision = tuple(precision)
    if preferred_element_type is not None:
        preferred_element_type = jnp.dtype(preferred_element_type)
    return _bind(
        x,
        weight,
        _no_marker(x.dtype),
        plan=plan,
        geom=geom,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
