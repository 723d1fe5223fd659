"""The functional API: ``conv_transpose`` and the ``torch.nn.functional`` look-alikes.

For every input position ``i``, kernel tap ``t`` and output position
``o = i·s − p + t·d`` (per spatial dimension)::

    y[n, g·Cg + co, o] += x[n, ci, i] · w[ci, co, t]

for ``ci`` in group ``g`` and ``co < Cg = out_channels / groups``, then
``bias[c]`` is added to every position of channel ``c``. The output size is
``(i − 1)·s − 2p + d·(k − 1) + op + 1``. See :mod:`jtconv.geometry`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from jtconv.geometry import ConvTransposeGeometry, IntOrTuple, PaddingLike, make_geometry
from jtconv.lowering.plan import Plan
from jtconv.lowering.primitive import conv_transpose_planned
from jtconv.operand_types import check_operand_dtypes
from jtconv.plans.resolve import request

AlgorithmLike = str | Plan | Mapping[str, Any]
"""What ``algorithm=`` accepts: ``"auto"``, a name in :data:`jtconv.ALGORITHMS`, a
:class:`~jtconv.lowering.plan.Plan` or its text, or a dict of Plan fields."""

__all__ = ["conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]


def conv_transpose(
    x: jax.typing.ArrayLike,
    weight: jax.typing.ArrayLike,
    bias: jax.typing.ArrayLike | None = None,
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    output_size: Sequence[int] | None = None,
    channels_last: bool = False,
    precision: jax.lax.PrecisionLike = None,
    preferred_element_type: jax.typing.DTypeLike | None = None,
    algorithm: AlgorithmLike = "auto",
) -> jax.Array:
    """N-d transposed convolution with PyTorch's ``ConvTransposeNd`` semantics.

    The spatial rank ``n`` comes from ``weight``.

    Args:
      x: input, ``(N, Cin, *spatial)`` or unbatched ``(Cin, *spatial)``;
        with ``channels_last=True``, ``(N, *spatial, Cin)`` or ``(*spatial, Cin)``.
      weight: ``(Cin, Cout // groups, *kernel_size)`` (PyTorch's layout).
      bias: optional ``(Cout,)``, added to every output position.
      stride: ``s ≥ 1``, int or one per spatial dimension.
      padding: ``p ≥ 0`` cropped from both ends of every spatial dimension
        (int or tuple); or per-side pairs ``((lo, hi), …)``; or ``"same"``
        (``out = i·s``) / ``"valid"`` (``out = i·s + max(d·(k−1)+1 − s, 0)``),
        as in Keras/TF (not ONNX's: see :mod:`jtconv.onnx`). See
        :func:`jtconv.geometry.normalize_padding`.
      output_padding: ``0 ≤ op < max(s, d)`` extra positions at the high end.
      groups: ``G``; ``Cin`` must be divisible by it.
      dilation: ``d ≥ 1``, spacing between kernel taps.
      output_size: requested spatial output size (or full output shape),
        which picks ``output_padding`` like ``nn.ConvTransposeNd.forward``.
      channels_last: input and output are ``(N, *spatial, C)``.
      precision: passed to XLA (``jax.lax.Precision``).
      preferred_element_type: accumulation/result dtype passed to XLA.
      algorithm: what computes the layer: ``"auto"`` (the planner, see
        :func:`jtconv.plan_for`), an algorithm name in :data:`jtconv.ALGORITHMS`,
        a :class:`jtconv.Plan` (or its ``str``), or a dict of Plan fields that
        override parts of the ``"auto"`` plan, e.g.
        ``{"weight_transpose": "xla-wgrad"}``. All but a Plan are resolved
        when the program is lowered, per platform: a program compiled or
        exported for GPU or TPU runs that platform's plan, whatever the
        default backend (see the Platforms page of the docs).

    Returns:
      ``(N, Cout, *out)`` (or the unbatched / channels-last equivalent) with
      ``out = (i − 1)·s − 2p + d·(k − 1) + op + 1``. The dtype follows JAX
      promotion of ``x``, ``weight`` and ``bias`` (or
      ``preferred_element_type``).

    Raises:
      ValueError: for any argument PyTorch rejects, naming it and the rule,
        before XLA sees anything (also under ``jit``: shapes are static).
      TypeError: for operand dtypes torch does not compute (integers other
        than int64 input and weight together, booleans, int64 mixed with a
        floating dtype), naming the operand and its dtype
        (:mod:`jtconv.operand_types`).
    """
    x = jnp.asarray(x)
    weight = jnp.asarray(weight)
    bias = None if bias is None else jnp.asarray(bias)
    check_operand_dtypes(x, weight, bias)
    geom = make_geometry(
        x.shape,
        weight.shape,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        output_size=output_size,
        bias_shape=None if bias is None else bias.shape,
        channels_last=channels_last,
    )
    batched = x.ndim == geom.ndim + 2
    dtype = jnp.result_type(x, weight)
    plan = request(algorithm, geom, x.shape[0] if batched else 1, dtype, preferred_element_type, precision)

    def apply(x, weight, bias):
        x = x if batched else x[None]
        x = jnp.moveaxis(x, -1, 1) if channels_last else x
        y = conv_transpose_planned(
            x.astype(dtype),
            weight.astype(dtype),
            geom,
            plan,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
        if bias is not None:
            y = y + bias.reshape((1, -1) + (1,) * geom.ndim)
            if preferred_element_type is not None:
                y = y.astype(preferred_element_type)
        y = jnp.moveaxis(y, 1, -1) if channels_last else y
        return y if batched else y[0]

    out_sharding = _explicit_out_sharding(x, weight, geom, channels_last)
    if out_sharding is not None:
        # Explicit mesh axes type-check every reshape; the lowerings reshape
        # freely, so run them with automatic propagation and type the result.
        apply = jax.sharding.auto_axes(apply, out_sharding=out_sharding)
    return apply(x, weight, bias)


def _explicit_out_sharding(x, weight, geom: ConvTransposeGeometry, channels_last: bool):
    """Output sharding when ``x`` or ``weight`` lives on a mesh with explicit axes (``None`` otherwise): the batch
    axis keeps the input's sharding and (for ``groups == 1``) the channel axis the weight's output-channel
    sharding, unless that uses a mesh axis the batch already does; spatial axes are replicated."""
    shardings = [jax.typeof(a).sharding for a in (x, weight)]
    meshes = [s.mesh for s in shardings if isinstance(s, NamedSharding) and not s.mesh.empty]
    if not any(AxisType.Explicit in m.axis_types for m in meshes):
        return None
    x_spec, w_spec = (
        (tuple(s.spec) if isinstance(s, NamedSharding) else ()) + (None,) * a.ndim
        for s, a in zip(shardings, (x, weight))
    )
    batch = (x_spec[0],) if x.ndim == geom.ndim + 2 else ()
    channel = w_spec[1] if geom.groups == 1 else None

    def mesh_axes(entry) -> set[str]:
        return set() if entry is None else {entry} if isinstance(entry, str) else set(entry)

    if batch and mesh_axes(channel) & mesh_axes(batch[0]):
        channel = None  # a mesh axis shards one output axis at most: the batch keeps it
    spatial = (None,) * geom.ndim
    spec = batch + (spatial + (channel,) if channels_last else (channel,) + spatial)
    return NamedSharding(meshes[0], PartitionSpec(*spec))


def _fixed_rank(ndim: int):
    def conv_transpose_nd(
        input: jax.typing.ArrayLike,
        weight: jax.typing.ArrayLike,
        bias: jax.typing.ArrayLike | None = None,
        stride: IntOrTuple = 1,
        padding: PaddingLike = 0,
        output_padding: IntOrTuple = 0,
        groups: int = 1,
        dilation: IntOrTuple = 1,
        *,
        algorithm: AlgorithmLike = "auto",
    ) -> jax.Array:
        weight_ndim = jnp.ndim(weight)
        if weight_ndim != ndim + 2:
            raise ValueError(
                f"weight for conv_transpose{ndim}d must have {ndim + 2} dimensions "
                f"(in_channels, out_channels // groups, *kernel_size), got {weight_ndim}"
            )
        return conv_transpose(
            input,
            weight,
            bias,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            groups=groups,
            dilation=dilation,
            algorithm=algorithm,
        )

    conv_transpose_nd.__name__ = conv_transpose_nd.__qualname__ = f"conv_transpose{ndim}d"
    conv_transpose_nd.__doc__ = f"""{ndim}-d transposed convolution with the signature of
    ``torch.nn.functional.conv_transpose{ndim}d``.

    ``input``: ``(N, Cin, {_SPATIAL[ndim]})`` or unbatched ``(Cin, {_SPATIAL[ndim]})``;
    ``weight``: ``(Cin, Cout // groups, {_KERNEL[ndim]})``; ``bias``: ``(Cout,)``.
    Arguments mean what they mean in :func:`conv_transpose` (which also offers
    ``output_size``, channels-last layout and ``precision``); ``algorithm``
    (keyword-only, after torch's positional arguments) picks the plan.
    """
    return conv_transpose_nd


_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}
_KERNEL = {1: "kL", 2: "kH, kW", 3: "kD, kH, kW"}

conv_transpose1d = _fixed_rank(1)
conv_transpose2d = _fixed_rank(2)
conv_transpose3d = _fixed_rank(3)
