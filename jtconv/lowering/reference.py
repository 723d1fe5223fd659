"""The reference lowering: the direct-convolution view, as written.

A transposed convolution is a stride-1 convolution of the input with ``s − 1`` zeros inserted between elements
(``lhs_dilation = s``), padded by :attr:`~jtconv.geometry.ConvTransposeGeometry.conv_padding` (negative amounts
crop), with the kernel flipped spatially, its channel axes swapped within each group, ``rhs_dilation = d`` and
``feature_group_count = groups``: one ``lax.conv_general_dilated``. Correct on every backend (on GPU, cuDNN's
backward-data kernel); on CPU it multiplies the inserted zeros.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from jtconv.geometry import ConvTransposeGeometry
from jtconv.lowering.common import conv_dimension_numbers, pad
from jtconv.lowering.varying import varying_axes, zeros_varying


def flip_and_swap_kernel(weight: jax.Array, groups: int) -> jax.Array:
    """``(Cin, Cout/G, *K)`` → ``(Cout, Cin/G, *K)``: ``out[g·Cg + co, ci, *t] = w[g·Cin/G + ci, co, *(K − 1 − t)]``."""
    cin, cout_g, *kernel = weight.shape
    w = weight.reshape(groups, cin // groups, cout_g, *kernel)
    w = jnp.swapaxes(w, 1, 2).reshape(groups * cout_g, cin // groups, *kernel)
    return jnp.flip(w, axis=tuple(range(2, 2 + len(kernel))))


def _one_group(geom: ConvTransposeGeometry, platform: str) -> ConvTransposeGeometry | None:
    """The geometry of one group where a grouped layer runs as one ungrouped convolution per group: on CPU, with
    more than one input channel per group. XLA's sharding propagation all-gathers the operands of grouped
    convolutions (openxla/xla#47945), and XLA:CPU has no faster grouped kernel; on GPU and TPU (cuDNN's and the
    TPU's grouped kernels, as torch) and for depthwise layers, one grouped convolution."""
    if platform != "cpu" or geom.groups == 1 or geom.in_per_group == 1:
        return None
    return dataclasses.replace(geom, groups=1, in_channels=geom.in_per_group, out_channels=geom.out_per_group)


def conv_transpose_reference(
    x: jax.Array,
    weight: jax.Array,
    geom: ConvTransposeGeometry,
    *,
    precision=None,
    preferred_element_type=None,
    platform: str = "cpu",
) -> jax.Array:
    """``(N, Cin, *S) × (Cin, Cout/G, *K) → (N, Cout, *O)`` via ``lax.conv_general_dilated`` with
    ``lhs_dilation = stride``, for a program lowered for ``platform`` (``"cpu"`` is correct on every platform)."""
    per_group = _one_group(geom, platform)
    if per_group is not None:
        outputs = [
            conv_transpose_reference(
                xg, wg, per_group, precision=precision, preferred_element_type=preferred_element_type
            )
            for xg, wg in zip(jnp.split(x, geom.groups, axis=1), jnp.split(weight, geom.groups, axis=0))
        ]
        return jnp.concatenate(outputs, axis=1)
    lhs_dilation = geom.stride
    if platform == "cpu" and sum(s > 1 for s in geom.stride) >= 2:
        # XLA's CPU compiler (jaxlib 0.10.2) aborts the process ("Window dimensions do not match RHS shape") on some
        # lhs-dilated convolutions strided in two or more dimensions; interior padding is the same arithmetic.
        x = pad(x, [(0, 0, s - 1) for s in geom.stride])
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
    """The convolution whose adjoint the layer is, ``(N, Cout, *O) → (N, Cin, *S)``, with the weight in its own
    layout read as ``(O, I, *K)``, so that ``⟨f(x, w), u⟩ = ⟨x, c(u, w)⟩``::

        c(u, w)[n, g·Cin/G + ci, i] = Σ_{co, t} w[g·Cin/G + ci, co, t] · u_pad[n, g·Cg + co, i·s + t·d]

    (cuDNN's forward convolution applied to the cotangent: torch's input transpose).
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
    x: jax.Array, ct: jax.Array, geom: ConvTransposeGeometry, *, precision=None, acc_dtype, out_dtype, platform="cpu"
) -> jax.Array:
    """``w̄`` of shape ``(Cin, Cout/G, *K)`` in torch's pattern, ``w̄ = ∂⟨c(ȳ, w), x⟩/∂w`` for
    :func:`strided_convolution` ``c``: XLA recognises it as a convolution's backward-filter (cuDNN's on NVIDIA
    GPUs), which the automatic weight gradient of the lhs-dilated forward is not."""
    per_group = _one_group(geom, platform)
    if per_group is not None:
        parts = [
            backward_filter_weight(xg, cg, per_group, precision=precision, acc_dtype=acc_dtype, out_dtype=out_dtype)
            for xg, cg in zip(jnp.split(x, geom.groups, axis=1), jnp.split(ct, geom.groups, axis=1))
        ]
        return jnp.concatenate(parts, axis=0)
    zeros = zeros_varying(
        (geom.in_channels, geom.out_per_group) + geom.kernel_size, ct.dtype, varying_axes(ct) | varying_axes(x)
    )
    conv = functools.partial(strided_convolution, ct, geom=geom, precision=precision, preferred_element_type=acc_dtype)
    _, pullback = jax.vjp(conv, zeros)
    return pullback(x.astype(acc_dtype))[0].astype(out_dtype)
