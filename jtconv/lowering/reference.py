"""The reference lowering: the direct-convolution view, as written.

A transposed convolution equals a stride-1 convolution of the input with
``s − 1`` zeros inserted between elements (``lhs_dilation = s``), padded by
``d·(k − 1) − lo`` at the low end and ``d·(k − 1) − hi + op`` at the high end
(negative padding crops), with the kernel flipped spatially, its in/out
channel axes swapped within each group, ``rhs_dilation = d`` and
``feature_group_count = groups``. This is one ``lax.conv_general_dilated``.

Correct on every backend; on GPU XLA maps it onto cuDNN's backward-data
kernel. On CPU it multiplies the inserted zeros, so it is slow there.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import conv_dimension_numbers
from jtconv.lowering.varying import varying_axes, zeros_varying


def flip_and_swap_kernel(weight: jax.Array, groups: int) -> jax.Array:
    """``(Cin, Cout/G, *K)`` → ``(Cout, Cin/G, *K)`` flipped spatially.

    Within group ``g``: ``out[g·Cg + co, ci, *t] = weight[g·Cin/G + ci, co, *(K − 1 − t)]``.
    """
    cin, cout_g, *kernel = weight.shape
    w = weight.reshape(groups, cin // groups, cout_g, *kernel)
    w = jnp.swapaxes(w, 1, 2).reshape(groups * cout_g, cin // groups, *kernel)
    return jnp.flip(w, axis=tuple(range(2, 2 + len(kernel))))


def _needs_explicit_zeros(geom: ConvTransposeGeometry, platform: str) -> bool:
    """Whether to insert the zeros with ``lax.pad`` instead of ``lhs_dilation``.

    XLA's CPU compiler (jaxlib 0.10.2) aborts the whole process, in its
    algebraic simplifier ("Window dimensions do not match RHS shape"), on some
    lhs-dilated convolutions with a stride above 1 in two or more dimensions,
    e.g. input (1, 1, 2, 4), kernel (1, 1, 3, 2), stride 2, padding (2, 1).
    Interior padding followed by an undilated convolution is the same
    arithmetic and compiles; the CPU planner never picks this lowering for
    strided shapes, so its speed there does not matter.
    """
    return platform == "cpu" and sum(s > 1 for s in geom.stride) >= 2


def _split_groups(geom: ConvTransposeGeometry, platform: str) -> bool:
    """Whether a grouped layer runs one ungrouped convolution per group (see
    :func:`conv_transpose_reference` and :func:`backward_filter_weight`)."""
    return platform == "cpu" and geom.groups > 1 and geom.in_per_group > 1


def conv_transpose_reference(
    x: jax.Array,
    weight: jax.Array,
    geom: ConvTransposeGeometry,
    *,
    precision=None,
    preferred_element_type=None,
    platform: str = "cpu",
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)`` via
    ``lax.conv_general_dilated`` with ``lhs_dilation = stride``, for a
    program lowered for ``platform`` (``"cpu"``, the default, is correct on every platform).

    On CPU, groups with more than one input channel each are run as one
    ungrouped convolution per group: XLA's sharding propagation all-gathers
    the operands of such grouped convolutions (openxla/xla#47945), which
    would put collectives into every batch- or group-sharded program, and
    XLA:CPU has no faster grouped kernel. On GPU and TPU a grouped layer is
    one grouped convolution (cuDNN's and the TPU's grouped kernels), as
    torch runs it. Depthwise (one input channel per group) is a single
    grouped convolution everywhere. Sharding the channel axis *across*
    groups (one group per device) still makes XLA move data with this
    lowering; the matmul lowering has no collectives there.
    """
    options = dict(precision=precision, preferred_element_type=preferred_element_type, platform=platform)
    if _split_groups(geom, platform):
        per_group = dataclasses.replace(geom, groups=1, in_channels=geom.in_per_group, out_channels=geom.out_per_group)
        outputs = [
            _lhs_dilated_conv(xg, wg, per_group, **options)
            for xg, wg in zip(jnp.split(x, geom.groups, axis=1), jnp.split(weight, geom.groups, axis=0))
        ]
        return jnp.concatenate(outputs, axis=1)
    return _lhs_dilated_conv(x, weight, geom, **options)


def _lhs_dilated_conv(
    x, weight, geom: ConvTransposeGeometry, *, precision, preferred_element_type, platform: str
) -> jax.Array:
    lhs_dilation = geom.stride
    if _needs_explicit_zeros(geom, platform):
        zero = jnp.zeros((), x.dtype)
        x = lax.pad(x, zero, [(0, 0, 0)] * 2 + [(0, 0, s - 1) for s in geom.stride])
        lhs_dilation = (1,) * geom.ndim
    return lax.conv_general_dilated(
        x,
        flip_and_swap_kernel(weight, geom.groups),
        window_strides=(1,) * geom.ndim,
        padding=geom.conv_padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=geom.dilation,
        dimension_numbers=conv_dimension_numbers(geom.ndim),
        feature_group_count=geom.groups,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def strided_convolution(
    u: jax.Array, weight: jax.Array, geom: ConvTransposeGeometry, *, precision=None, preferred_element_type=None
) -> jax.Array:
    """The convolution whose adjoint the layer is: ``c(u, w)`` maps
    ``(N, Cout, *O)`` to ``(N, Cin, *S)`` with stride ``s``, dilation ``d``,
    padding the layer's crop ``(lo, hi)`` and ``w`` in its own layout
    ``(Cin, Cout/G, *K)`` read as ``(O, I, *K)``::

        c(u, w)[n, g·Cin/G + ci, i] = Σ_{co, t} w[g·Cin/G + ci, co, t] · u_pad[n, g·Cg + co, i·s + t·d]

    so that ``⟨f(x, w), u⟩ = ⟨x, c(u, w)⟩`` for the transposed convolution
    ``f``. It is the input transpose in torch's decomposition (cuDNN's
    *forward* convolution applied to the cotangent: no inserted zeros).
    """
    return lax.conv_general_dilated(
        u,
        weight,
        window_strides=geom.stride,
        padding=geom.crop,  # negative amounts crop (output_padding past the full result)
        rhs_dilation=geom.dilation,
        dimension_numbers=conv_dimension_numbers(geom.ndim),
        feature_group_count=geom.groups,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def backward_filter_weight(
    x: jax.Array,
    ct: jax.Array,
    geom: ConvTransposeGeometry,
    *,
    precision=None,
    acc_dtype,
    out_dtype,
    platform: str = "cpu",
) -> jax.Array:
    """``w̄`` of shape ``(Cin, Cout/G, *K)`` in torch's pattern: the weight
    gradient of :func:`strided_convolution` with the cotangent ``ȳ`` as its
    input and ``x`` as its output cotangent, ``w̄ = ∂⟨c(ȳ, w), x⟩/∂w``.

    XLA recognises this as a convolution's backward-filter (cuDNN's on
    NVIDIA GPUs), which the automatic weight gradient of the lhs-dilated
    forward is not. On CPU, groups with more than one input channel each run
    one ungrouped backward-filter per group, as :func:`conv_transpose_reference`
    does for its forward (XLA's CPU backend rewrites a grouped one into an
    lhs-dilated convolution).
    """
    if _split_groups(geom, platform):
        per_group = dataclasses.replace(geom, groups=1, in_channels=geom.in_per_group, out_channels=geom.out_per_group)
        parts = [
            backward_filter_weight(
                xg, cg, per_group, precision=precision, acc_dtype=acc_dtype, out_dtype=out_dtype, platform=platform
            )
            for xg, cg in zip(jnp.split(x, geom.groups, axis=1), jnp.split(ct, geom.groups, axis=1))
        ]
        return jnp.concatenate(parts, axis=0)
    cin, cout_g = geom.in_channels, geom.out_per_group
    zeros = zeros_varying((cin, cout_g) + geom.kernel_size, ct.dtype, varying_axes(ct) | varying_axes(x))
    conv = functools.partial(strided_convolution, ct, geom=geom, precision=precision, preferred_element_type=acc_dtype)
    _, pullback = jax.vjp(conv, zeros)
    return pullback(x.astype(acc_dtype))[0].astype(out_dtype)
