"""The planner: which :class:`~jtconv.lowering.plan.Plan` runs for a layer.

Every decision about *what* computes a layer lives here; the methods
(:mod:`jtconv.lowering.methods`) only know *how*. The estimate is a set of
rules over the layer's geometry, batch and dtype, with every threshold in one
table, :data:`THRESHOLDS`. Each threshold names what it measures, its unit
and the benchmark command that reproduces the measurement behind it
(``benchmarks/RESULTS*.md`` hold the recorded runs). Sizes in bytes use the
layer's real dtype size.

* GPU/TPU: torch's decomposition, ``forward=xla dx=xla dw=xla-wgrad`` — the
  three convolution patterns XLA maps to cuDNN's backward-data, forward and
  backward-filter.
* CPU: the rules of :func:`cpu_algorithm` pick an algorithm (``split``,
  ``conv``, ``phase`` or ``matmul``), and :func:`algorithm_plan` turns its name
  into the full plan, deciding each transpose and the scheduling.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping

import jax.numpy as jnp

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering import phase, split, tiled
from jtconv.lowering.common import MMAP_THRESHOLD_BYTES, accumulation_dtype, tap_product_bytes
from jtconv.lowering.methods import METHODS, ROLES, method, methods_for
from jtconv.lowering.plan import Plan

__all__ = [
    "ALGORITHMS",
    "THRESHOLDS",
    "Threshold",
    "algorithm_plan",
    "candidates",
    "cpu_algorithm",
    "backend_of",
    "estimate",
    "scheduled_plan",
    "validate",
    "with_changes",
]

ALGORITHMS: tuple[str, ...] = ("reference", "matmul", "conv", "split", "phase", "tiled", "xla")
"""Names accepted by ``algorithm=``, each meaning a full plan (:func:`algorithm_plan`):

* ``"reference"``: XLA's lhs-dilated convolution and the gradients JAX derives;
* ``"matmul"``: GEMM + col2im forward, im2col + GEMM transposes;
* ``"conv"``: XLA's convolution forward and input transpose (fast on CPU at stride 1);
* ``"split"``: one-axis im2cols around one GEMM (1d/2d stride-1, one group);
* ``"phase"``: sub-pixel GEMMs over block shifts;
* ``"tiled"``: one GEMM and a depth-to-space, for kernels that tile their strides;
* ``"xla"``: torch's decomposition into three convolution patterns (the GPU/TPU default).
"""


@dataclasses.dataclass(frozen=True)
class Threshold:
    """One number the estimate compares a layer against.

    Attributes:
      value: the threshold.
      unit: what ``value`` counts.
      measures: what the layer's quantity is and which rule uses it.
      evidence: the benchmark command whose output motivates ``value``.
    """

    value: int
    unit: str
    measures: str
    evidence: str


_MIB = 2**20
_RUN = "python benchmarks/run.py --algorithms auto,matmul,conv,split,phase"

THRESHOLDS: Mapping[str, Threshold] = {
    "large_kernel": Threshold(
        5,
        "taps on every spatial axis",
        "a kernel is large when every axis has at least this many taps, small otherwise (no kernel is "
        "neither); split, conv's forward and XLA's weight gradient need large kernels, XLA's concurrent "
        "transposes small ones",
        f"{_RUN} --shapes stride1,stride1k5 and --suite random --layer-seed 2034 (r04)",
    ),
    "split_max_in_channels": Threshold(
        128,
        "input channels",
        "2d stride-1 layers with large kernels and at most this many input channels run split",
        f"{_RUN} --shapes stride1k5,stride1",
    ),
    "few_in_channels": Threshold(
        32,
        "input channels",
        "stride-1 1d/2d layers with at most this many input channels run XLA's convolutions "
        "(forward with large kernels, weight transpose, or both transposes with small kernels)",
        f"{_RUN} --suite random --layer-seed 2034 and --layer-seed 2028",
    ),
    "output_channel_ratio": Threshold(
        2,
        "× output channels ≥ input channels",
        "split and XLA's concurrent transposes need this many times as many output as input "
        "channels (shorter GEMM rows lose)",
        f"{_RUN} --suite random --layer-seed 2028",
    ),
    "conv_min_tap_bytes": Threshold(
        MMAP_THRESHOLD_BYTES,
        "bytes of N·S·T·Cout tap products",
        "stride-1 1d/2d one-group layers whose tap products reach this size run conv: XLA's blocked "
        "convolution never holds them all; glibc serves larger blocks with fresh pages on every call",
        f"{_RUN} --shapes stride1 --suite random --layer-seed 2031",
    ),
    "phase_min_tap_bytes": Threshold(
        MMAP_THRESHOLD_BYTES,
        "bytes of N·S·T·Cout tap products",
        "strided layers whose kernels tile their strides run phase once matmul's tap products reach this size",
        f"{_RUN} --shapes dcgan,conv3d,hifigan and --suite random --layer-seed 2033",
    ),
    "phase_conv_min_bytes": Threshold(
        MMAP_THRESHOLD_BYTES,
        "bytes of the phase GEMM's P and Z together",
        "phase computes its products with an XLA convolution (phase-conv) from this size on",
        f"{_RUN} --suite random --layer-seed 2033 (r13)",
    ),
    "xla_weight_transpose_min_tap_bytes": Threshold(
        32 * _MIB,
        "bytes of the cotangent's N·S·T·Cout im2col",
        "few-channel large-kernel layers with fewer output than input channels take XLA's weight "
        "transpose only from this size on",
        f"{_RUN} --suite random --layer-seed 2028",
    ),
    "xla_transposes_min_tap_bytes": Threshold(
        8 * _MIB,
        "bytes of the cotangent's N·S·T·Cout im2col",
        "few-channel small-kernel stride-1 layers take both transposes (and the forward) from XLA's "
        "convolutions, run concurrently, from this size on",
        f"{_RUN} --suite random --layer-seed 2034 (r04)",
    ),
    "waits_min_tap_bytes": Threshold(
        12 * _MIB,
        "bytes of the cotangent's N·S·T·Cout im2col",
        "the transposes wait for the forward's output from this size on (two concurrent GEMMs on two "
        "cores are slower than the two in turn)",
        f"{_RUN} --loss dot --shapes dcgan,vae,unet2d,conv3d,stride1",
    ),
    "tiled_min_taps": Threshold(
        256,
        "kernel taps (Πk)",
        "layers whose kernels tile their strides leave matmul from this many taps on (its per-tap program "
        "compiles in time growing with the tap count; FCN-32s k64 s32: minutes): phase where some k > s "
        "(FCN-8s/32s: phase 1.7× faster forward, 2.5× forward + backward than tiled), else tiled",
        "python benchmarks/compile_time.py; python benchmarks/run.py --suite large --shapes fcn8s,fcn32s "
        "--algorithms auto,phase,tiled",
    ),
    "cache_resident_bytes": Threshold(
        2 * _MIB,
        "bytes of the matmul forward's tap products Z",
        "up to this size Z is read back from cache, so the GEMM may leave the weight in place (gemm_layout weight_rhs)",
        f"{_RUN} --suite holdout --shapes biggan,pix2pix",
    ),
}
"""The estimate's thresholds by name (see :class:`Threshold`)."""


_BACKENDS = {"cuda": "gpu", "rocm": "gpu"}


def backend_of(platform: str) -> str:
    """The backend whose rules a platform follows: ``cuda`` and ``rocm`` are ``gpu``;
    ``cpu``, ``gpu``, ``tpu`` and any other name are themselves."""
    return _BACKENDS.get(platform, platform)


def _t(name: str) -> int:
    return THRESHOLDS[name].value


def _large_kernel(geom: ConvTransposeGeometry) -> bool:
    return min(geom.kernel_size) >= _t("large_kernel")


def _enough_outputs(geom: ConvTransposeGeometry) -> bool:
    return _t("output_channel_ratio") * geom.out_channels >= geom.in_channels


def phase_tiles(geom: ConvTransposeGeometry) -> bool:
    """Whether ``geom``'s kernels tile its strides: on every axis stride ≥ 2,
    no dilation and ``k`` a multiple of ``s``, on some axis ``k > s``.

    Then every phase has ``k / s`` taps and the phase GEMM multiplies no
    zeros (k3 s2 computes 4 products for 3 taps per axis); with ``k = s`` the
    tap products are the output and there is nothing to save.
    """
    axes = list(zip(geom.kernel_size, geom.stride, geom.dilation))
    return (
        phase.supports(geom)
        and all(s >= 2 and d == 1 and k % s == 0 for k, s, d in axes)
        and any(k > s for k, s, _ in axes)
    )


def xla_convolutions_win(geom: ConvTransposeGeometry, batch: int, itemsize: int) -> bool:
    """Stride-1 1d/2d one-group layers with few input channels, enough output
    channels and small kernels whose im2col would reach
    ``xla_transposes_min_tap_bytes``: XLA's stride-1 convolutions run on one
    core each, and the three of a forward + backward overlap, while the
    im2col grows with ``T·Cout``."""
    return (
        split.supports(geom)  # 1d/2d, stride 1, one group
        and geom.in_channels <= _t("few_in_channels")
        and _enough_outputs(geom)
        and not _large_kernel(geom)
        and tap_product_bytes(geom, batch, itemsize) >= _t("xla_transposes_min_tap_bytes")
    )


def cpu_algorithm(geom: ConvTransposeGeometry, batch: int, itemsize: int) -> str:
    """The algorithm (a name in :data:`ALGORITHMS`) the CPU estimate runs.

    * ``"split"``: 2d, stride 1, one group, a large kernel, at most
      ``split_max_in_channels`` input channels and enough output channels —
      its intermediates hold ``k·(Cin + Cout)`` values per position instead
      of ``k²·Cout``.
    * ``"conv"``: 1d/2d, stride 1, one group, and either XLA's concurrent
      convolutions win (:func:`xla_convolutions_win`), or few input channels
      with a large kernel (in 1d only with ``Cout ≥ Cin``), or tap products
      of at least ``conv_min_tap_bytes`` — with no zeros to insert, XLA's own
      convolution beats a GEMM + col2im whose intermediate is ``T`` times the
      output.
    * ``"phase"`` or ``"tiled"``: kernels that tile their strides
      (``tiled.supports``) with at least ``tiled_min_taps`` taps: ``phase``
      where some ``k > s`` (:func:`phase_tiles`), else ``tiled`` (``k = s``:
      one GEMM and a depth-to-space).
    * ``"phase"``: kernels that tile their strides (:func:`phase_tiles`) with
      tap products of at least ``phase_min_tap_bytes``.
    * ``"matmul"`` otherwise: XLA's CPU convolutions multiply the inserted
      zeros, and their automatic gradients are far slower than GEMMs.
    """
    if tiled.supports(geom) and math.prod(geom.kernel_size) >= _t("tiled_min_taps"):
        return "phase" if phase_tiles(geom) else "tiled"
    if split.supports(geom):  # 1d/2d, stride 1, one group
        if (
            geom.ndim == 2
            and _large_kernel(geom)
            and geom.in_channels <= _t("split_max_in_channels")
            and _enough_outputs(geom)
        ):
            return "split"
        if xla_convolutions_win(geom, batch, itemsize):
            return "conv"
        few_channels = geom.in_channels <= _t("few_in_channels") and _large_kernel(geom)
        if geom.ndim == 1:
            few_channels = few_channels and geom.out_channels >= geom.in_channels
        if few_channels or tap_product_bytes(geom, batch, itemsize) >= _t("conv_min_tap_bytes"):
            return "conv"
    elif phase_tiles(geom) and tap_product_bytes(geom, batch, itemsize) >= _t("phase_min_tap_bytes"):
        return "phase"
    return "matmul"


def gemm_layout(rows: int, inner: int, cols: int, groups: int, itemsize: int, full_precision: bool) -> str:
    """The ``matmul`` forward's GEMM layout (see
    :func:`jtconv.lowering.matmul.tap_products`) for ``rows = N·S`` input
    positions, ``inner = Cin/G``, ``cols = Cg·T``.

    The weight copy is the default; when the weight is the larger operand
    (``cols ≥ rows``) its copy can cost more than the GEMM's neighbours, so
    the weight stays in place as the right-hand side while ``Z`` stays in
    cache (``cache_resident_bytes``) or the weight is at least twice ``Z``,
    and otherwise is contracted in place where XLA has a kernel for it (full
    precision).
    """
    if cols < rows:
        return "weight_copy"
    z_bytes = groups * rows * cols * itemsize
    w_bytes = groups * inner * cols * itemsize
    if z_bytes <= _t("cache_resident_bytes") or w_bytes >= 2 * z_bytes:
        return "weight_rhs"
    return "weight_lhs_in_place" if full_precision else "weight_copy"


def _matmul_layout(geom: ConvTransposeGeometry, batch: int, dtype, preferred_element_type) -> str | None:
    if geom.in_per_group == 1:  # depthwise: no GEMM
        return None
    acc = accumulation_dtype(dtype, preferred_element_type)
    rows = batch * math.prod(geom.input_size)
    cols = geom.out_per_group * math.prod(geom.kernel_size)
    return gemm_layout(rows, geom.in_per_group, cols, geom.groups, acc.itemsize, jnp.dtype(dtype) == acc)


def _waits(forward: str, geom: ConvTransposeGeometry, batch: int, itemsize: int) -> bool:
    """Whether the transposes wait for the forward's output (:attr:`Plan.waits`)."""
    if forward in ("matmul", "xla") and xla_convolutions_win(geom, batch, itemsize):
        return False  # XLA's convolutions gain from running concurrently
    return tap_product_bytes(geom, batch, itemsize) >= _t("waits_min_tap_bytes")


def scheduled_plan(
    forward: str, dx: str, dw: str, geom: ConvTransposeGeometry, batch: int, dtype, preferred_element_type, backend: str
) -> Plan:
    """The plan with these methods and the estimate's scheduling for them:
    on CPU, waiting for the forward and storing its output as the rules say;
    on other backends neither."""
    layout = _matmul_layout(geom, batch, dtype, preferred_element_type) if forward == "matmul" else None
    if backend != "cpu":
        return Plan(forward, dx, dw, gemm_layout=layout)
    itemsize = jnp.dtype(dtype).itemsize
    return Plan(
        forward,
        dx,
        dw,
        waits=_waits(forward, geom, batch, itemsize),
        stores_output=forward in ("matmul", "split"),
        gemm_layout=layout,
    )


def _cpu_weight_transpose(geom: ConvTransposeGeometry, batch: int, itemsize: int) -> str:
    """XLA's weight gradient for few-channel large-kernel stride-1 layers with
    as many output channels or a large im2col; im2col + GEMM otherwise."""
    few_channel_large_kernel = (
        split.supports(geom) and geom.in_channels <= _t("few_in_channels") and _large_kernel(geom)
    )
    if not few_channel_large_kernel:
        return "gemm"
    columns = tap_product_bytes(geom, batch, itemsize)
    if geom.out_channels >= geom.in_channels or columns >= _t("xla_weight_transpose_min_tap_bytes"):
        return "xla"
    return "gemm"


def algorithm_plan(
    algorithm: str,
    geom: ConvTransposeGeometry,
    batch: int,
    dtype="float32",
    preferred_element_type=None,
    backend: str = "cpu",
) -> Plan:
    """The full plan that the algorithm name ``algorithm`` means for a layer.

    ``"reference"`` and ``"xla"`` are fixed plans. The others fix the forward
    (falling back to ``matmul`` where ``split``/``phase`` cannot express the
    layer; ``phase`` becomes ``phase-conv`` from ``phase_conv_min_bytes``)
    and decide the transposes:

    * depthwise layers: the transposes JAX derives from the matmul forward
      (elementwise loops XLA fuses well, unlike a GEMM contracting ``T`` terms);
    * ``split``/``phase``: their own; ``phase-conv``: its own in 1d, the phase
      GEMMs in 2d/3d;
    * ``matmul``/``conv``: both of XLA's where :func:`xla_convolutions_win`;
      else the input transpose im2col + GEMM (``matmul``) or XLA's (``conv``)
      and the weight transpose by :func:`_cpu_weight_transpose`.
    """
    if algorithm == "reference":
        return Plan("xla", "xla", "xla")
    if algorithm == "xla":
        return scheduled_plan("xla", "xla", "xla-wgrad", geom, batch, dtype, preferred_element_type, backend)
    forwards = {"matmul": "matmul", "conv": "xla", "split": "split", "phase": "phase", "tiled": "tiled"}
    if algorithm not in forwards:
        raise ValueError(f"algorithm must be 'auto', a Plan, or one of {ALGORITHMS}, got {algorithm!r}")
    forward = forwards[algorithm]
    itemsize = jnp.dtype(dtype).itemsize
    if not METHODS[forward].supports(geom):
        forward = "matmul"
    if forward == "phase" and phase.gemm_temporary_bytes(geom, batch, itemsize) >= _t("phase_conv_min_bytes"):
        forward = "phase-conv"
    if forward == "tiled":
        dx = dw = "tiled"
    elif geom.in_per_group == 1:
        dx = dw = "matmul-ad"
    elif forward in ("split", "phase"):
        dx = dw = forward
    elif forward == "phase-conv":
        dx = dw = "phase-conv" if geom.ndim == 1 else "phase"
    elif xla_convolutions_win(geom, batch, itemsize):
        dx = dw = "xla"
    else:
        dx = "gemm" if forward == "matmul" else "xla"
        dw = _cpu_weight_transpose(geom, batch, itemsize)
    return scheduled_plan(forward, dx, dw, geom, batch, dtype, preferred_element_type, backend)


def estimate(
    geom: ConvTransposeGeometry, batch: int, dtype="float32", backend: str = "cpu", preferred_element_type=None
) -> Plan:
    """The plan the rules pick (``planning="estimate"``): torch's convolution
    patterns on GPU/TPU, :func:`cpu_algorithm`'s algorithm on CPU."""
    if backend != "cpu":
        return algorithm_plan("xla", geom, batch, dtype, preferred_element_type, backend)
    algorithm = cpu_algorithm(geom, batch, jnp.dtype(dtype).itemsize)
    return algorithm_plan(algorithm, geom, batch, dtype, preferred_element_type, backend)


def candidates(
    geom: ConvTransposeGeometry, batch: int, dtype="float32", backend: str = "cpu", preferred_element_type=None
) -> tuple[Plan, ...]:
    """Every valid plan for the layer: the cross product of the methods that
    support it in each role, each with the estimate's scheduling for its forward."""
    roles = [methods_for(role, geom) for role in ROLES]
    return tuple(
        scheduled_plan(f, dx, dw, geom, batch, dtype, preferred_element_type, backend)
        for f, dx, dw in itertools.product(*roles)
    )


def validate(plan: Plan, geom: ConvTransposeGeometry) -> Plan:
    """``plan`` if every part names a method that fills its role and supports
    the layer; ``ValueError`` naming the part and the layer otherwise."""
    if not isinstance(plan, Plan):
        raise TypeError(f"algorithm must be a str, a Plan or a dict of Plan fields, got {type(plan).__name__}")
    for role in ROLES:
        name = getattr(plan, role)
        record = method(name, role)
        if not record.supports(geom):
            supported = methods_for(role, geom)
            raise ValueError(
                f"Plan.{role}={name!r} does not support this layer ({describe_layer(geom)}); "
                f"methods supporting it as {role}: {supported}"
            )
    return plan


def describe_layer(geom: ConvTransposeGeometry) -> str:
    """``"2d 16→8 channels, kernel (3, 3), stride (2, 2), groups 1, dilation (1, 1)"``."""
    return (
        f"{geom.ndim}d {geom.in_channels}→{geom.out_channels} channels, kernel {geom.kernel_size}, "
        f"stride {geom.stride}, groups {geom.groups}, dilation {geom.dilation}"
    )


def with_changes(
    plan: Plan, changes: Mapping, geom: ConvTransposeGeometry, batch: int, dtype="float32", preferred_element_type=None
) -> Plan:
    """``plan`` with the Plan fields in ``changes`` replaced, validated for the
    layer; a new ``forward`` without a ``gemm_layout`` takes the estimate's
    layout for it."""
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(Plan)})
    if unknown:
        raise ValueError(f"algorithm= dict has unknown Plan fields {unknown}")
    changes = dict(changes)
    if "forward" in changes and changes["forward"] != plan.forward and "gemm_layout" not in changes:
        matmul = changes["forward"] == "matmul"
        changes["gemm_layout"] = _matmul_layout(geom, batch, dtype, preferred_element_type) if matmul else None
    return validate(plan.replace(**changes) if changes else plan, geom)
