"""The fast lowerings as one JAX primitive with its own transpose rules.

Automatic differentiation of the GEMM + col2im forward (:mod:`.matmul`) is
correct but slow on XLA CPU: the transposed col2im becomes 16 single-threaded
slice loops, an unfused concatenate and a transposing copy (about 20 ms of the
DCGAN layer's 31 ms backward), and XLA's own weight gradient of an
lhs-dilated convolution is a huge-window convolution (seconds). So the fast
lowerings bind one primitive, ``jtconv_conv_transpose``, bilinear in
``(x, w)`` like ``lax.conv_general_dilated``, whose ``forward`` parameter
picks the forward computation:

* ``"matmul"``: :func:`jtconv.lowering.matmul.matmul_forward` (GEMM + col2im);
* ``"split"``: :func:`jtconv.lowering.split.split_forward` (1d/2d stride-1
  layers with one group: one GEMM between one-axis im2cols; the ``"split"``
  algorithm binds ``"matmul"`` for every other layer, and so does a vmap that
  folds a batch of weights into groups);
* ``"phase"``: :func:`jtconv.lowering.phase.phase_forward` (one GEMM, or a
  stride-1 XLA convolution, per block of output phases; depthwise layers bind
  ``"matmul"``);
* ``"conv"``: :func:`jtconv.lowering.reference.conv_transpose_reference`
  (XLA's convolution; fast on CPU only at stride 1, where no zeros are inserted).

All are lowered with ``mlir.lower_fun``, so XLA sees plain HLO and sharding
propagates. The rules:

* jvp: ``ẏ = f(ẋ, w) + f(x, ẇ)`` (the same primitive again, so jvp of jvp works);
* transposes of ``"split"``: :func:`.split.transpose_input` and
  :func:`.split.transpose_weight` (the cotangent's im2col along H, two GEMMs);
* transposes of ``"phase"``: :func:`.phase.transpose_input` and
  :func:`.phase.transpose_weight` (the cotangent split into phases, two GEMMs);
* transpose, input: ``"matmul"``: :func:`.matmul_transpose.transpose_input`
  (im2col of the cotangent + one GEMM); ``"conv"``: the transpose XLA derives
  for its convolution (a strided convolution of the cotangent, no zeros);
* transpose, weight: :func:`.matmul_transpose.transpose_weight` (im2col + one
  GEMM), except for stride-1 1d/2d layers of at most
  :data:`XLA_WEIGHT_GRAD_MAX_CIN` input channels with kernels of at least
  :data:`XLA_WEIGHT_GRAD_MIN_KERNEL` taps per axis and either as many output
  channels or an im2col of at least :data:`XLA_WEIGHT_GRAD_MIN_COLUMN_BYTES`,
  where XLA's convolution weight gradient is faster (its own blocked im2col
  stays in cache, ours is ``T`` times the cotangent);
* both transposes XLA's, run concurrently with each other and the forward,
  for stride-1 1d/2d layers with few channels and kernels below
  :data:`XLA_WEIGHT_GRAD_MIN_KERNEL` taps once their im2col would reach
  :data:`XLA_TRANSPOSES_MIN_COLUMN_BYTES`;
* depthwise layers (one input channel per group) keep the transposes JAX derives
  from the matmul forward (``jax.linear_transpose``): elementwise loops XLA
  fuses well, unlike a GEMM with a contraction of length ``T``;
* vmap: a batched ``x`` folds into the batch axis, a batched weight into
  the groups (``B`` stacked layers are one layer with ``B·G`` groups).

The transposes are ordinary JAX code, so second-order reverse mode
differentiates them.

Under differentiation the jvp stores the matmul and split forwards' primal output
once (:func:`_stored`; the phase forward's last step is a transpose, cheap to
recompute), so that XLA does not recompute the col2im inside
every backward fusion that reads ``y``.

A third operand, ``after``, carries no data: the transposes wait for it and the
jvp passes one element of the primal output there (for large layers, see
:data:`ORDER_MIN_BYTES`). XLA's CPU runtime otherwise starts the backward GEMMs
while the forward GEMM still runs whenever the loss's cotangent does not depend
on ``y`` (as in ``sum(y · c)``); on two cores the concurrent GEMMs took 29 ms
where running them in turn takes 17 ms (DCGAN layer). When the cotangent
depends on ``y`` the order is the same anyway.
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
from jtconv.lowering.common import tap_product_bytes
from jtconv.lowering.matmul import accumulation_dtype, matmul_forward, output_dtype
from jtconv.lowering import phase, split
from jtconv.lowering.matmul_transpose import transpose_input, transpose_weight
from jtconv.lowering.reference import conv_transpose_reference

FORWARDS = {
    "matmul": matmul_forward,
    "conv": conv_transpose_reference,
    "split": split.split_forward,
    "phase": phase.phase_forward,
}

EXPRESSES = {"split": split.supports, "phase": phase.supports}
"""Forwards that express only some layers: name → test; other layers bind ``"matmul"``."""

GEMM_TRANSPOSES = {
    "gemm": (transpose_input, transpose_weight),
    "split": (split.transpose_input, split.transpose_weight),
    "phase": (phase.transpose_input, phase.transpose_weight),
}
"""Transpose methods written as GEMMs: name → (input transpose, weight transpose)."""

XLA_WEIGHT_GRAD_MAX_CIN = 32
"""XLA's convolution weight gradient is considered only for stride-1 1d/2d
layers (one group) with at most this many input channels and kernels of at
least :data:`XLA_WEIGHT_GRAD_MIN_KERNEL` taps per axis. Measured on two cores,
im2col + GEMM vs XLA, default malloc: 2d k5 32→32 channels 5.1 vs 4.9 ms, k7
23 vs 6.7 ms; 1d k5 32→32 2.4 vs 2.3 ms; but 2d k3 64→64 2.7 vs 3.2 ms,
128→128 25 vs 42 ms."""

XLA_WEIGHT_GRAD_MIN_KERNEL = 5
"""Below this kernel size the im2col stays small and the GEMM wins: 2d k3,
16 channels 2.0 vs 4.2 ms (XLA), 32 channels 1.9 vs 2.3 ms; 3d k3, 16 channels
2.5 vs 25 ms (XLA's 3d convolutions are slow on CPU at every size measured)."""

XLA_WEIGHT_GRAD_MIN_COLUMN_BYTES = 32 * 2**20
"""With fewer output than input channels, XLA's weight gradient is slow (2d k7
16→8 channels: GEMM 2.2 vs XLA 14 ms; k5 32→16: 1.4 vs 4.0 ms; k7 16→16 at
24.5 MiB of im2col: 3.6 vs 12 ms) unless the im2col ``N·S·T·Cout`` reaches
this size, where glibc serves it with fresh pages on every call and the GEMM
path pays a page fault per 4 KiB (k7 16→16 at 49 MiB: 29 vs 14 ms; 5.8 vs
8.6 ms once freed memory is kept, see :mod:`jtconv.cpu_memory`)."""


XLA_TRANSPOSES_MIN_COLUMN_BYTES = 8 * 2**20
"""Stride-1 1d/2d layers (one group) with at most :data:`XLA_WEIGHT_GRAD_MAX_CIN`
input channels, ``2·Cout ≥ Cin`` and kernels below
:data:`XLA_WEIGHT_GRAD_MIN_KERNEL` taps take *both* transposes from XLA's
convolution (and let them run concurrently, see :data:`ORDER_MIN_BYTES`)
once the cotangent's im2col ``N·S·T·Cout`` would reach this size: XLA's
stride-1 convolutions run on one core each, and the three of a
forward + backward overlap, while the im2col grows with ``T·Cout``.
Measured on two cores, ``matmul`` forward, forward + backward with GEMM
transposes vs XLA's (torch): 2d k3 16→16 x(8, 16, 64, 64) (19 MiB) 10.6 vs
6.0 ms (5.5); 2d k3 d2 x(12, 16, 64, 64) 17.6 vs 8.8 ms (7.0); 1d k3
x(16, 16, 4096) 9.6 vs 4.5 ms (6.4); 1d k3 d2 32→32 x(16, 32, 4096) 26.9
vs 15.9 ms (16.7)."""


conv_transpose_p = Primitive("jtconv_conv_transpose")


def _forward(x, w, after, *, forward, geom, precision, preferred_element_type):
    del after
    return FORWARDS[forward](x, w, geom, precision=precision, preferred_element_type=preferred_element_type)


def _abstract_eval(x, w, after, *, forward, geom, precision, preferred_element_type):
    del w, after, precision, forward
    shape = (x.shape[0], geom.out_channels) + geom.output_size
    # ``update`` keeps x's manual-axis (shard_map) type, which _bind made w's and after's too.
    return x.update(shape=shape, dtype=output_dtype(x.dtype, preferred_element_type), weak_type=False)


conv_transpose_p.def_abstract_eval(_abstract_eval)
conv_transpose_p.def_impl(
    lambda *args, **params: jax.jit(functools.partial(_forward, **params))(*args)
)
mlir.register_lowering(conv_transpose_p, mlir.lower_fun(_forward, multiple_results=False))


def _varying_axes(value) -> frozenset:
    """The ``shard_map`` axes ``value`` varies over (empty outside ``shard_map``)."""
    return _aval_varying_axes(jax.typeof(value))


def _aval_varying_axes(aval) -> frozenset:
    manual = getattr(aval, "mat", None)
    if manual is not None:
        return frozenset(manual.varying)
    return frozenset(getattr(aval, "vma", ()))


def _bind(x, w, after, **params):
    """Bind the primitive after making all operands vary over the same
    ``shard_map`` axes (what JAX does for its own primitives; the transposes of
    the casts are the ``psum``s a replicated operand's gradient needs).

    A ``"split"`` or ``"phase"`` forward on a layer it cannot express (see
    :data:`EXPRESSES`; e.g. a vmap that folded weights into groups, for
    ``"split"``) binds ``"matmul"``.
    """
    expresses = EXPRESSES.get(params["forward"])
    if expresses is not None and not expresses(params["geom"]):
        params = dict(params, forward="matmul")
    operands = (x, w, after)
    varying = frozenset().union(*(_varying_axes(a) for a in operands))
    if varying:
        operands = tuple(
            lax.pcast(a, tuple(sorted(varying - _varying_axes(a))), to="varying")
            if varying - _varying_axes(a)
            else a
            for a in operands
        )
    return conv_transpose_p.bind(*operands, **params)


def _marker(y: jax.Array) -> jax.Array:
    """One element of ``y`` (none if ``y`` is empty): something the backward can wait for."""
    flat = y.reshape(-1)
    return flat[: min(1, flat.shape[0])]


def _no_marker(dtype) -> jax.Array:
    return jnp.zeros((0,), dtype)


ORDER_MIN_BYTES = 12 * 2**20
"""Transposes whose cotangent im2col (``N·S·T·Cout`` values) is at least this
large wait for the primal output (see the module docstring). Smaller ones gain
from running concurrently with the forward. Measured on two cores, ``sum(y·c)``
loss, in turn vs concurrent: DCGAN 16 MiB 16.3 vs 28.2 ms, VAE 18 MiB 14.3 vs
27.0 ms; U-Net 8 MiB 12.7 vs 11.1 ms, 3d 8 MiB 6.5 vs 5.0 ms, stride-1 9 MiB
8.2 vs 6.5 ms."""


def _backward_waits(x, forward: str, geom: ConvTransposeGeometry) -> bool:
    batch, itemsize = x.shape[0], jnp.dtype(x.dtype).itemsize
    if _xla_transposes(forward, geom, batch, itemsize):
        return False
    return tap_product_bytes(geom, batch, itemsize) >= ORDER_MIN_BYTES


def _xla_transposes(forward: str, geom: ConvTransposeGeometry, batch: int, itemsize: int) -> bool:
    """Whether both transposes are XLA's convolutions (see :data:`XLA_TRANSPOSES_MIN_COLUMN_BYTES`)."""
    return forward in ("matmul", "conv") and xla_convolutions_win(geom, batch, itemsize)


def xla_convolutions_win(geom: ConvTransposeGeometry, batch: int, itemsize: int) -> bool:
    """Stride-1 1d/2d layers with few channels and small kernels whose im2col
    would reach :data:`XLA_TRANSPOSES_MIN_COLUMN_BYTES`: XLA's convolutions,
    run concurrently, beat the GEMM transposes (and, forward + backward,
    the matmul forward, whose tap products then join the backward's
    temporaries past glibc's mmap threshold)."""
    return (
        split.supports(geom)  # 1d/2d, stride 1, one group
        and geom.in_channels <= XLA_WEIGHT_GRAD_MAX_CIN
        and 2 * geom.out_channels >= geom.in_channels
        and max(geom.kernel_size) < XLA_WEIGHT_GRAD_MIN_KERNEL
        and tap_product_bytes(geom, batch, itemsize) >= XLA_TRANSPOSES_MIN_COLUMN_BYTES
    )


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
    Measured on two cores, ``grad`` of ``sum(y²)`` for a stride-1 k3 layer
    (21, 16, 32, 32) → 16 channels: 45 ms with the duplication, 9 ms without;
    the split forward's col2im along H likewise (``sum(y·c)``, 2d k7
    (2, 16, 64, 64) → 16: 13.2 ms without storing ``y``, 5.6 ms with).
    The loop runs zero times (its count, ``isnan(anchor[0]) − 1``, is −1 or
    0), which XLA cannot prove, so it keeps the loop and stores ``y`` once.
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
    if params["forward"] in ("matmul", "split"):
        y = _stored(y, x)
    marker = _marker(y) if _backward_waits(x, params["forward"], params["geom"]) else _no_marker(y.dtype)
    terms = []
    if type(x_dot) is not ad.Zero:
        terms.append(_bind(x_dot, w, marker, **params))
    if type(w_dot) is not ad.Zero:
        terms.append(_bind(x, w_dot, marker, **params))
    if not terms:
        return y, ad.Zero(jax.typeof(y).to_tangent_aval())
    return y, functools.reduce(jnp.add, terms)


def _transpose(ct, x, w, after, *, forward, geom, precision, preferred_element_type):
    if ad.is_undefined_primal(after):
        raise ValueError("jtconv_conv_transpose: the ordering operand is not differentiable")
    if type(ct) is ad.Zero:
        return None, None, None
    ct = _wait_for(ct, after)
    options = dict(precision=precision, preferred_element_type=preferred_element_type)
    if ad.is_undefined_primal(x):
        aval = x.aval
        method = _input_transpose_method(forward, geom, ct.shape[0], jnp.dtype(aval.dtype).itemsize)
        if method in GEMM_TRANSPOSES:
            acc_dtype = accumulation_dtype(aval.dtype, preferred_element_type)
            gemm = GEMM_TRANSPOSES[method][0]
            dx = gemm(ct, w, geom, precision=precision, acc_dtype=acc_dtype, out_dtype=aval.dtype)
        else:
            linear = functools.partial(_forward_in_x, w=w, lowering=FORWARDS[method], geom=geom, **options)
            dx = _linear_transpose(linear, aval, ct)
        return dx, None, None
    aval = w.aval
    method = _weight_transpose_method(forward, geom, x.shape[0], jnp.dtype(jax.typeof(x).dtype).itemsize)
    if method in GEMM_TRANSPOSES:
        acc_dtype = accumulation_dtype(jax.typeof(x).dtype, preferred_element_type)
        gemm = GEMM_TRANSPOSES[method][1]
        dw = gemm(x, ct, geom, precision=precision, acc_dtype=acc_dtype, out_dtype=aval.dtype)
    else:
        linear = functools.partial(_forward_in_w, x=x, lowering=FORWARDS[method], geom=geom, **options)
        dw = _linear_transpose(linear, aval, ct)
    return None, dw, None


def _linear_transpose(linear, aval, ct: jax.Array) -> jax.Array:
    """The transpose of the linear map ``linear`` (input ``aval``) applied to ``ct``.

    ``jax.vjp`` at a zero point (its primal result is dead code XLA drops)
    rather than ``jax.linear_transpose``, so that the input keeps the
    ``shard_map`` varying axes of ``aval``.
    """
    zeros = jnp.zeros(aval.shape, aval.dtype)
    varying = _aval_varying_axes(aval)
    if varying:
        zeros = lax.pcast(zeros, tuple(sorted(varying)), to="varying")
    _, pullback = jax.vjp(linear, zeros)
    return pullback(ct)[0]


def _input_transpose_method(forward: str, geom: ConvTransposeGeometry, batch: int, itemsize: int) -> str:
    """``"gemm"`` (im2col + GEMM), ``"split"``, ``"phase"`` or the forward whose derived transpose to use."""
    if geom.in_per_group == 1:
        return "matmul"
    if forward in EXPRESSES:
        return forward
    if forward == "matmul" and not _xla_transposes(forward, geom, batch, itemsize):
        return "gemm"
    return "conv"


def _weight_transpose_method(forward: str, geom: ConvTransposeGeometry, batch: int, itemsize: int) -> str:
    """``"gemm"`` (im2col + GEMM), ``"split"``, ``"phase"`` or the forward whose derived transpose to use."""
    if geom.in_per_group == 1:
        return "matmul"
    if forward in EXPRESSES:
        return forward
    if _xla_transposes(forward, geom, batch, itemsize):
        return "conv"
    xla_candidate = (
        split.supports(geom)  # 1d/2d, stride 1, one group
        and geom.in_channels <= XLA_WEIGHT_GRAD_MAX_CIN
        and min(geom.kernel_size) >= XLA_WEIGHT_GRAD_MIN_KERNEL
    )
    if not xla_candidate:
        return "gemm"
    columns = tap_product_bytes(geom, batch, itemsize)
    if geom.out_channels >= geom.in_channels or columns >= XLA_WEIGHT_GRAD_MIN_COLUMN_BYTES:
        return "conv"
    return "gemm"


def _forward_in_x(x, *, w, lowering, geom, precision, preferred_element_type):
    return lowering(x, w, geom, precision=precision, preferred_element_type=preferred_element_type)


def _forward_in_w(w, *, x, lowering, geom, precision, preferred_element_type):
    return lowering(x, w, geom, precision=precision, preferred_element_type=preferred_element_type)


ad.primitive_jvps[conv_transpose_p] = _jvp
ad.primitive_transposes[conv_transpose_p] = _transpose


def _batch(args, dims, *, forward, geom: ConvTransposeGeometry, precision, preferred_element_type):
    x, w, after = args
    bx, bw, b_after = dims
    if b_after is not None:
        after = _marker(after)
    params = dict(forward=forward, precision=precision, preferred_element_type=preferred_element_type)
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


def _lowering(forward: str):
    def lowering(
        x: jax.Array,
        weight: jax.Array,
        geom: ConvTransposeGeometry,
        *,
        precision=None,
        preferred_element_type=None,
    ) -> jax.Array:
        if isinstance(precision, list):  # primitive parameters must be hashable
            precision = tuple(precision)
        if preferred_element_type is not None:
            preferred_element_type = jnp.dtype(preferred_element_type)
        return _bind(
            x,
            weight,
            _no_marker(x.dtype),
            forward=forward,
            geom=geom,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )

    return lowering


conv_transpose_matmul = _lowering("matmul")
conv_transpose_matmul.__name__ = conv_transpose_matmul.__qualname__ = "conv_transpose_matmul"
conv_transpose_matmul.__doc__ = """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: GEMM + col2im
forward, im2col + GEMM transposes (see the module docstring)."""

conv_transpose_split = _lowering("split")
conv_transpose_split.__name__ = conv_transpose_split.__qualname__ = "conv_transpose_split"
conv_transpose_split.__doc__ = """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: for 1d/2d stride-1
layers with one group, one GEMM between one-axis im2cols, forward and
transposes (see :mod:`jtconv.lowering.split`); every other layer has no axis
to split and runs the matmul lowering."""

conv_transpose_phase = _lowering("phase")
conv_transpose_phase.__name__ = conv_transpose_phase.__qualname__ = "conv_transpose_phase"
conv_transpose_phase.__doc__ = """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: one GEMM between
the input's im2col over block shifts and the output's phases, forward and
transposes (see :mod:`jtconv.lowering.phase`); depthwise layers run the matmul
lowering."""

conv_transpose_conv = _lowering("conv")
conv_transpose_conv.__name__ = conv_transpose_conv.__qualname__ = "conv_transpose_conv"
conv_transpose_conv.__doc__ = """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)``: XLA's convolution
forward and input transpose, im2col + GEMM (or, at stride 1 with few channels,
XLA's) weight transpose (see the module docstring)."""
