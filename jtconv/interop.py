"""PyTorch ⇄ jtconv: single layers, safe checkpoint loading and Flax's kernel layout.

jtconv keeps ``ConvTranspose`` kernels in PyTorch's layout
``(in_channels, out_channels // groups, *kernel_size)``, so moving weights is a
copy: ``torch weight`` ↔ ``params["kernel"]``, ``torch bias`` ↔ ``params["bias"]``.
Whole state dicts (every layer kind) convert with :mod:`jtconv.state_dict`.
torch (and safetensors) are imported only inside the functions that need them.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx as flax_nnx
from flax import traverse_util

from jtconv import linen as jtconv_linen
from jtconv import nnx as jtconv_nnx
from jtconv import torch_keys
from jtconv.geometry import normalize_padding, normalize_tuple

__all__ = [
    "from_torch",
    "kernel_from_flax_layout",
    "kernel_to_flax_layout",
    "layer_weight",
    "load_state_dict",
    "to_numpy",
    "to_tensor",
    "to_torch",
]


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy copy of a torch tensor, JAX array or array-like (bfloat16 included)."""
    if type(array).__module__.startswith("torch"):
        import torch

        tensor = array.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.to(torch.float32).numpy().astype(jnp.bfloat16)
        return tensor.numpy().copy()
    return np.array(array)


def to_tensor(array: Any):
    """A torch tensor copy of an array (bfloat16 included)."""
    import torch

    values = np.asarray(array)
    if values.dtype == jnp.bfloat16:
        return torch.from_numpy(values.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(values))


def layer_weight(module) -> jax.Array:
    """The weight a torch layer's forward uses, computed from what the layer stores
    (:mod:`jtconv.torch_keys`): under weight norm ``v · g / ‖v‖``, under spectral norm
    ``w_orig / (uᵀ · W · v)``, torch's eval-mode forward (a module in training mode warns).
    ``module.weight`` of a reparametrized layer is never read: the old hook API
    recomputes it only in forward, so after ``load_state_dict`` it is stale.

    Raises:
      ValueError: for any other forward pre-hook or parametrization (it could
        change the weight in ways jtconv cannot know), or a reparametrized bias.
    """
    from torch.nn.utils import parametrizations, parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    hooks = list(module._forward_pre_hooks.values())
    parametrized = sorted(module.parametrizations) if parametrize.is_parametrized(module) else []
    norms = hooks + (list(module.parametrizations.weight) if "weight" in parametrized else [])
    known = (WeightNorm, SpectralNorm, parametrizations._WeightNorm, parametrizations._SpectralNorm)
    supported = [isinstance(norm, known) and getattr(norm, "name", "weight") == "weight" for norm in norms]
    if parametrized not in ([], ["weight"]) or supported not in ([], [True]):
        found = {name: [type(p).__name__ for p in module.parametrizations[name]] for name in parametrized}
        raise ValueError(
            "module must have at most one weight reparametrization: its weight parametrized by one weight_norm or "
            f"spectral_norm, as a forward pre-hook or a parametrization; got forward pre-hooks "
            f"{[type(h).__name__ for h in hooks]} and parametrizations {found}. jtconv cannot know how others "
            "change the weight: remove them (e.g. torch.nn.utils.remove_weight_norm) before converting"
        )
    spectral = norms and isinstance(norms[0], SpectralNorm | parametrizations._SpectralNorm)
    if spectral and getattr(norms[0], "training", module.training):
        api = "torch.nn.utils." + ("parametrizations." if parametrized else "") + "spectral_norm"
        warnings.warn(
            f"{api} in training mode: jtconv uses the stored u and v, as torch's eval-mode forward does; torch's "
            "training-mode forward first runs power iterations that change them (call .eval() to compare)",
            stacklevel=3,
        )
    values = {key: to_numpy(value) for key, value in module.state_dict().items()}
    form = torch_keys.weight_form(values) or "plain"
    return torch_keys.read_weight(form, values, spectral_dim=norms[0].dim if norms else 0)


def from_torch(module, api: str = "linen", *, channels_first: bool = True, algorithm: str = "auto"):
    """Convert a ``torch.nn.ConvTranspose{1,2,3}d`` into a jtconv Flax module with the same weights.

    Args:
      module: the torch module (``padding_mode='zeros'``, the only mode torch
        allows for transposed convolutions).
      api: ``"linen"`` → ``(jtconv.linen.ConvTranspose, variables)`` with
        ``variables = {"params": {"kernel", "bias"?}}``; ``"nnx"`` →
        a :class:`jtconv.nnx.ConvTranspose`.
      channels_first: ``True`` (default) takes the same ``(N, C, *spatial)``
        input as torch; ``False`` gives a channels-last module with the very
        same parameters.
      algorithm: the converted module's lowering.

    The parameter dtype is the torch weight's dtype; stride, padding,
    output_padding, dilation and groups are copied. A weight-normed or
    spectral-normed layer converts to the weight its forward computes
    (:func:`layer_weight`).
    """
    import torch

    if not isinstance(module, torch.nn.modules.conv._ConvTransposeNd) or isinstance(
        module, torch.nn.modules.lazy.LazyModuleMixin
    ):
        raise ValueError(
            "module must be a torch.nn.ConvTranspose1d, ConvTranspose2d or ConvTranspose3d "
            f"(with initialised parameters), got {type(module).__name__}"
        )
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise ValueError(
            f"module must use padding_mode='zeros' and integer padding, got padding_mode="
            f"{module.padding_mode!r}, padding={module.padding!r}"
        )
    if api not in ("linen", "nnx"):
        raise ValueError(f"api must be 'linen' or 'nnx', got {api!r}")
    kernel = layer_weight(module)
    bias = None if module.bias is None else jnp.asarray(to_numpy(module.bias))
    options: dict[str, Any] = dict(
        kernel_size=tuple(module.kernel_size),
        strides=tuple(module.stride),
        padding=tuple(module.padding),
        output_padding=tuple(module.output_padding),
        kernel_dilation=tuple(module.dilation),
        feature_group_count=module.groups,
        use_bias=bias is not None,
        channels_first=channels_first,
        param_dtype=kernel.dtype,
        algorithm=algorithm,
    )
    if api == "linen":
        params = {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}
        return jtconv_linen.ConvTranspose(features=module.out_channels, **options), {"params": params}
    return jtconv_nnx.ConvTranspose(
        module.in_channels,
        module.out_channels,
        kernel_init=lambda *_: kernel,
        bias_init=None if bias is None else lambda *_: bias,
        rngs=flax_nnx.Rngs(0),
        **options,
    )


def _torch_geometry(module, kernel_size: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """torch's ``stride``, ``padding``, ``output_padding`` and ``dilation`` for a jtconv module, if they exist.

    jtconv crops ``(lo, hi − op)`` from the full result; torch crops
    ``(p, p − op')``. So ``p = lo`` and ``op' = op + lo − hi``, which torch
    accepts when ``0 ≤ op' < max(s, d)``.
    """
    ndim = len(kernel_size)
    strides = normalize_tuple(module.strides, ndim, "strides")
    dilations = normalize_tuple(module.kernel_dilation, ndim, "kernel_dilation")
    crops = normalize_padding(module.padding, ndim, kernel_size, strides, dilations)
    extra = normalize_tuple(module.output_padding, ndim, "output_padding")
    padding = tuple(lo for lo, _ in crops)
    output_padding = tuple(op + lo - hi for (lo, hi), op in zip(crops, extra))
    if any(not 0 <= op < max(s, d) for op, s, d in zip(output_padding, strides, dilations)):
        raise ValueError(
            f"padding={module.padding!r} with output_padding={module.output_padding!r} has no torch equivalent: "
            f"torch crops p from both ends and adds 0 <= output_padding < max(stride, dilation), which would need "
            f"padding={padding}, output_padding={output_padding}"
        )
    return dict(stride=strides, padding=padding, output_padding=output_padding, dilation=dilations)


def _kernel_and_bias(module, variables) -> tuple[Any, Any]:
    """Kernel and bias of a jtconv linen (with variables) or nnx module."""
    if isinstance(module, jtconv_nnx.ConvTranspose):
        if variables is not None:
            raise ValueError("variables must be None with an nnx module (it holds its parameters)")
        return module.kernel[...], None if module.bias is None else module.bias[...]
    if not isinstance(module, jtconv_linen.ConvTranspose):
        raise ValueError(
            f"module must be a jtconv.linen.ConvTranspose or jtconv.nnx.ConvTranspose, got {type(module).__name__}"
        )
    if variables is None:
        raise ValueError("variables must be given with a linen module: to_torch(module, variables)")
    params = variables.get("params", variables) if isinstance(variables, Mapping) else None
    if not isinstance(params, Mapping) or "kernel" not in params:
        raise ValueError("variables must be {'params': {'kernel': ..., 'bias': ...}} (or that params dict)")
    if module.use_bias != (params.get("bias") is not None):
        raise ValueError(f"variables must {'' if module.use_bias else 'not '}hold a bias (use_bias={module.use_bias})")
    return params["kernel"], params.get("bias")


def to_torch(
    module, variables: Mapping[str, Any] | None = None, *, weight_norm: bool = False, weight_norm_dim: int | None = 0
):
    """Build the ``torch.nn.ConvTranspose{1,2,3}d`` equal to a jtconv module.

    ``to_torch(linen_module, variables)`` or ``to_torch(nnx_module)``: the weight
    and bias are copies of ``kernel`` and ``bias``; the torch module takes
    channels-first input whatever the jtconv module's ``channels_first``.
    ``weight_norm=True`` returns it under ``torch.nn.utils.parametrizations.weight_norm(
    layer, dim=weight_norm_dim)`` (``g = ‖kernel‖``, ``v = kernel``: ``g · v / ‖v‖``
    is the kernel up to rounding), which also loads old ``weight_g`` / ``weight_v`` checkpoints.

    Raises:
      ValueError: if the module's padding has no torch equivalent (torch
        crops the same amount from both ends; per-side or ``"SAME"`` padding
        translates only when the difference fits in ``output_padding``), or
        ``weight_norm_dim`` is not an axis of the kernel.
      TypeError: if ``weight_norm`` is not a bool.
    """
    import torch

    if not isinstance(weight_norm, bool):
        raise TypeError(f"weight_norm must be a bool, got {type(weight_norm).__name__}")
    kernel, bias = _kernel_and_bias(module, variables)
    kernel_size = tuple(kernel.shape[2:])
    geometry = _torch_geometry(module, kernel_size)  # raises before anything is built
    weight, groups = to_tensor(kernel), module.feature_group_count
    torch_module = getattr(torch.nn, f"ConvTranspose{len(kernel_size)}d")(
        kernel.shape[0],
        kernel.shape[1] * groups,
        kernel_size,
        groups=groups,
        bias=bias is not None,
        dtype=weight.dtype,
        **geometry,
    )
    with torch.no_grad():
        torch_module.weight.copy_(weight)
        if bias is not None:
            torch_module.bias.copy_(to_tensor(bias))
    if not weight_norm:
        return torch_module
    rank = kernel.ndim
    if weight_norm_dim is not None and (
        not isinstance(weight_norm_dim, int) or isinstance(weight_norm_dim, bool) or not -rank <= weight_norm_dim < rank
    ):
        raise ValueError(f"weight_norm_dim must be None or an axis of the rank-{rank} kernel, got {weight_norm_dim!r}")
    return torch.nn.utils.parametrizations.weight_norm(torch_module, dim=weight_norm_dim)  # type: ignore[arg-type]  # torch's stubs say int; None is documented


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint into a flat ``{name: np.ndarray}`` dict, never unpickling arbitrary objects.

    ``*.safetensors`` files are read with ``safetensors.numpy``, anything else with
    ``torch.load(path, map_location="cpu", weights_only=True)`` (tensors and plain
    containers only). Nested dicts (``{"model": state_dict, "epoch": 3}``) are
    flattened with dotted keys; other leaves (numbers, strings) are kept as they are.

    Raises:
      ValueError: naming ``path`` when the file holds anything else.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return dict(load_file(path))
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"path {path!r} is not a weights-only checkpoint: it holds objects other than tensors and "
            f"plain containers, and jtconv never unpickles arbitrary objects ({str(err).splitlines()[0]})"
        ) from err
    flat = traverse_util.flatten_dict(checkpoint) if isinstance(checkpoint, dict) else {(): checkpoint}
    return {
        ".".join(map(str, key)): to_numpy(value) if isinstance(value, torch.Tensor) else value
        for key, value in flat.items()
    }


def kernel_to_flax_layout(kernel: jax.typing.ArrayLike, *, transpose_kernel: bool = False) -> jax.Array:
    """A jtconv/torch kernel ``(in, out, *K)`` as a ``flax.linen.ConvTranspose`` kernel (no groups).

    * ``transpose_kernel=False`` (Flax's default): ``(*K, in, out)`` with the
      spatial axes flipped, ``flax[t, ci, co] = torch[ci, co, K − 1 − t]``;
    * ``transpose_kernel=True``: ``(*K, out, in)``, ``flax[t, co, ci] = torch[ci, co, t]``.

    Flax's padding pads the dilated input: ``padding="VALID"`` with
    ``k_eff ≥ s`` equals torch's ``padding=0``.
    """
    kernel = jnp.asarray(kernel)
    spatial = tuple(range(2, kernel.ndim))
    if transpose_kernel:
        return jnp.transpose(kernel, (*spatial, 1, 0))
    return jnp.flip(jnp.transpose(kernel, (*spatial, 0, 1)), axis=tuple(range(len(spatial))))


def kernel_from_flax_layout(kernel: jax.typing.ArrayLike, *, transpose_kernel: bool = False) -> jax.Array:
    """The inverse of :func:`kernel_to_flax_layout`: Flax ``(*K, …)`` → jtconv/torch ``(in, out, *K)``."""
    kernel = jnp.asarray(kernel)
    n = kernel.ndim - 2
    if transpose_kernel:
        return jnp.transpose(kernel, (n + 1, n, *range(n)))
    return jnp.transpose(jnp.flip(kernel, axis=tuple(range(n))), (n, n + 1, *range(n)))
