"""PyTorch ⇄ jtconv: modules, weights, state dicts and safe checkpoint loading.

jtconv keeps ``ConvTranspose`` kernels in PyTorch's layout
``(in_channels, out_channels // groups, *kernel_size)``, so moving weights is a
copy: ``torch weight`` ↔ ``params["kernel"]``, ``torch bias`` ↔ ``params["bias"]``.

* :func:`from_torch` / :func:`to_torch` convert one ``torch.nn.ConvTranspose{1,2,3}d``
  to a :mod:`jtconv.linen` or :mod:`jtconv.nnx` module and back.
* :func:`state_dict_to_params` / :func:`params_to_state_dict` convert the
  ``ConvTranspose`` entries of a whole state dict; :func:`conv_transpose_layer_names`
  lists them for a torch model. :mod:`jtconv.state_dict` converts whole models
  (convolutions, linear, normalisation and embedding layers too).
* Weight-normed and spectral-normed layers (both torch APIs) convert to the
  weight torch's forward computes from the stored factors (:func:`layer_weight`).
* :func:`load_state_dict` reads a checkpoint without unpickling arbitrary
  objects (``torch.load(..., weights_only=True)`` or safetensors).
* :func:`kernel_to_flax_layout` / :func:`kernel_from_flax_layout` convert to and
  from ``flax.linen.ConvTranspose``'s ``(*kernel_size, in, out)`` kernels.

torch (and safetensors) are imported only inside the functions that need them.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx as flax_nnx

from jtconv import linen as jtconv_linen
from jtconv import nnx as jtconv_nnx
from jtconv.geometry import normalize_padding, normalize_tuple
from jtconv.reparametrization import weight_from_spectral_norm, weight_from_weight_norm

__all__ = [
    "conv_transpose_layer_names",
    "from_torch",
    "kernel_from_flax_layout",
    "kernel_to_flax_layout",
    "layer_weight",
    "load_state_dict",
    "params_to_state_dict",
    "state_dict_to_params",
    "to_numpy",
    "to_torch",
]


# --- arrays ------------------------------------------------------------------


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy copy of a torch tensor, JAX array or array-like (bfloat16 included)."""
    if type(array).__module__.startswith("torch"):
        import torch

        tensor = array.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.to(torch.float32).numpy().astype(jnp.bfloat16)
        return tensor.numpy().copy()
    return np.array(array)


def _to_tensor(array: Any):
    import torch

    values = np.asarray(array)
    if values.dtype == jnp.bfloat16:
        return torch.from_numpy(values.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(values))


# --- one module ----------------------------------------------------------------


def _conv_transpose_classes():
    import torch

    return {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}


def _check_torch_module(module) -> None:
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


def _constant_init(value: jax.Array):
    """An initializer that returns ``value`` (checked against the requested shape)."""

    def init(key, shape, dtype=None):
        del key
        if tuple(shape) != value.shape:
            raise ValueError(f"shape {tuple(shape)} does not match the copied parameter's shape {value.shape}")
        return value if dtype is None else value.astype(dtype)

    return init


def layer_weight(module) -> jax.Array:
    """The weight a torch layer's forward uses, computed from what the layer stores.

    * plain layer: ``module.weight``;
    * ``torch.nn.utils.weight_norm`` (forward pre-hook): ``v · g / ‖v‖`` from
      ``weight_g``, ``weight_v`` and the hook's ``dim``. ``module.weight`` is
      never read: the hook recomputes it only in forward, so after
      ``load_state_dict`` it still holds the previous weight;
    * ``torch.nn.utils.parametrizations.weight_norm``: the same from
      ``parametrizations.weight.original0`` / ``original1``;
    * ``torch.nn.utils.spectral_norm`` / ``parametrizations.spectral_norm``:
      ``w_orig / (uᵀ · W · v)`` with the stored ``u``, ``v`` and ``dim``,
      which is torch's eval-mode forward (see :mod:`jtconv.reparametrization`).
      A module in training mode warns: its forward first runs power
      iterations that change ``u`` and ``v``.

    Raises:
      ValueError: for any other forward pre-hook or parametrization (it could
        change the weight in ways jtconv cannot know), or a reparametrized bias.
    """
    from torch.nn.utils import parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    hooks = list(module._forward_pre_hooks.values())
    parametrized = sorted(module.parametrizations.keys()) if parametrize.is_parametrized(module) else []
    if parametrized and hooks or len(hooks) > 1 or parametrized not in ([], ["weight"]):
        raise ValueError(
            f"module must have at most one weight reparametrization (weight norm or spectral norm), got "
            f"forward pre-hooks {[type(h).__name__ for h in hooks]} and parametrizations of {parametrized}"
        )
    if parametrized:
        return _parametrized_weight(module.parametrizations.weight)
    if not hooks:
        return jnp.asarray(to_numpy(module.weight))
    hook = hooks[0]
    if isinstance(hook, WeightNorm) and hook.name == "weight":
        return weight_from_weight_norm(to_numpy(module.weight_g), to_numpy(module.weight_v), hook.dim)
    if isinstance(hook, SpectralNorm) and hook.name == "weight":
        _warn_if_training(module, "torch.nn.utils.spectral_norm")
        return weight_from_spectral_norm(
            to_numpy(module.weight_orig), to_numpy(module.weight_u), to_numpy(module.weight_v), hook.dim
        )
    raise ValueError(
        f"module has a forward pre-hook {type(hook).__name__} (name={getattr(hook, 'name', None)!r}) that jtconv does "
        "not know: it may change the weight before forward. Supported: weight_norm and spectral_norm of 'weight'; "
        "remove the hook (e.g. torch.nn.utils.remove_weight_norm) before converting"
    )


def _parametrized_weight(parametrizations) -> jax.Array:
    """The weight of a ``ParametrizationList`` holding one weight or spectral norm."""
    from torch.nn.utils import parametrizations as torch_parametrizations

    kinds = [type(p).__name__ for p in parametrizations]
    if len(parametrizations) == 1 and isinstance(parametrizations[0], torch_parametrizations._WeightNorm):
        g, v = to_numpy(parametrizations.original0), to_numpy(parametrizations.original1)
        return weight_from_weight_norm(g, v, parametrizations[0].dim)
    if len(parametrizations) == 1 and isinstance(parametrizations[0], torch_parametrizations._SpectralNorm):
        spectral = parametrizations[0]
        _warn_if_training(spectral, "torch.nn.utils.parametrizations.spectral_norm")
        return weight_from_spectral_norm(
            to_numpy(parametrizations.original), to_numpy(spectral._u), to_numpy(spectral._v), spectral.dim
        )
    raise ValueError(
        f"module's weight must be parametrized by one weight_norm or spectral_norm, got {kinds}: jtconv cannot "
        "know what other parametrizations compute"
    )


def _warn_if_training(module, api: str) -> None:
    if module.training:
        warnings.warn(
            f"{api} in training mode: jtconv uses the stored u and v, as torch's eval-mode forward does; torch's "
            "training-mode forward first runs power iterations that change them (call .eval() to compare)",
            stacklevel=4,
        )


def from_torch(module, api: str = "linen", *, channels_first: bool = True, algorithm: str = "auto"):
    """Convert a ``torch.nn.ConvTranspose{1,2,3}d`` into a jtconv Flax module with the same weights.

    Args:
      module: the torch module (``padding_mode='zeros'``, the only mode torch
        allows for transposed convolutions).
      api: ``"linen"`` → ``(jtconv.linen.ConvTranspose, variables)`` with
        ``variables = {"params": {"kernel", "bias"?}}``; ``"nnx"`` →
        a :class:`jtconv.nnx.ConvTranspose`.
      channels_first: layout of the converted module's data. ``True``
        (default) takes the same ``(N, C, *spatial)`` input as torch and returns
        the same output; ``False`` gives a Flax-style channels-last module with
        the very same parameters.
      algorithm: the converted module's lowering.

    The parameter dtype is the torch weight's dtype; stride, padding,
    output_padding, dilation and groups are copied. A weight-normed or
    spectral-normed layer (either torch API) converts to the weight its
    forward computes, from the stored factors (see :func:`layer_weight`).
    """
    _check_torch_module(module)
    if api not in ("linen", "nnx"):
        raise ValueError(f"api must be 'linen' or 'nnx', got {api!r}")
    kernel = layer_weight(module)
    bias = None if module.bias is None else jnp.asarray(to_numpy(module.bias))
    options = dict(
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
        kernel_init=_constant_init(kernel),
        bias_init=None if bias is None else _constant_init(bias),
        rngs=flax_nnx.Rngs(0),
        **options,
    )


def _torch_padding(padding, output_padding, kernel_size, stride, dilation) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """torch's ``(padding, output_padding)`` for jtconv's padding, if one exists.

    jtconv crops ``(lo, hi − op)`` from the full result; torch crops
    ``(p, p − op')``. So ``p = lo`` and ``op' = op + lo − hi``, which torch
    accepts when ``0 ≤ op' < max(s, d)``.
    """
    ndim = len(kernel_size)
    strides = normalize_tuple(stride, ndim, "strides")
    dilations = normalize_tuple(dilation, ndim, "kernel_dilation")
    crops = normalize_padding(padding, ndim, kernel_size, strides, dilations)
    extra = normalize_tuple(output_padding, ndim, "output_padding")
    torch_padding = tuple(lo for lo, _ in crops)
    torch_output_padding = tuple(op + lo - hi for (lo, hi), op in zip(crops, extra))
    if any(not 0 <= op < max(s, d) for op, s, d in zip(torch_output_padding, strides, dilations)):
        raise ValueError(
            f"padding={padding!r} with output_padding={output_padding!r} has no torch equivalent: torch crops "
            f"p from both ends and adds 0 <= output_padding < max(stride, dilation), which would need "
            f"padding={torch_padding}, output_padding={torch_output_padding}"
        )
    return torch_padding, torch_output_padding


def _module_parts(module, variables) -> tuple[dict[str, Any], Any, Any]:
    """Hyperparameters, kernel and bias of a jtconv linen (with variables) or nnx module."""
    if isinstance(module, jtconv_linen.ConvTranspose):
        if variables is None:
            raise ValueError("variables must be given with a linen module: to_torch(module, variables)")
        params = variables.get("params", variables) if isinstance(variables, Mapping) else None
        if not isinstance(params, Mapping) or "kernel" not in params:
            raise ValueError("variables must be {'params': {'kernel': ..., 'bias': ...}} (or that params dict)")
        kernel, bias = params["kernel"], params.get("bias")
        if module.use_bias != (bias is not None):
            raise ValueError(
                f"variables must {'' if module.use_bias else 'not '}hold a bias (use_bias={module.use_bias})"
            )
    elif isinstance(module, jtconv_nnx.ConvTranspose):
        if variables is not None:
            raise ValueError("variables must be None with an nnx module (it holds its parameters)")
        kernel = module.kernel[...]
        bias = None if module.bias is None else module.bias[...]
    else:
        raise ValueError(
            f"module must be a jtconv.linen.ConvTranspose or jtconv.nnx.ConvTranspose, got {type(module).__name__}"
        )
    hyper = dict(
        strides=module.strides,
        padding=module.padding,
        output_padding=module.output_padding,
        kernel_dilation=module.kernel_dilation,
        feature_group_count=module.feature_group_count,
    )
    return hyper, kernel, bias


def to_torch(
    module, variables: Mapping[str, Any] | None = None, *, weight_norm: bool = False, weight_norm_dim: int | None = 0
):
    """Build the ``torch.nn.ConvTranspose{1,2,3}d`` equal to a jtconv module.

    ``to_torch(linen_module, variables)`` or ``to_torch(nnx_module)``. The
    weight and bias are copies of ``kernel`` and ``bias`` (same layout, same
    dtype). The torch module takes channels-first input whatever the jtconv
    module's ``channels_first``.

    With ``weight_norm=True`` the layer comes back weight-normed with
    ``torch.nn.utils.parametrizations.weight_norm(layer, dim=weight_norm_dim)``:
    torch sets ``g = ‖kernel‖`` (over every axis but ``weight_norm_dim``;
    ``None``: the whole tensor) and ``v = kernel``, so ``g · v / ‖v‖``
    reproduces the kernel up to float rounding. Its state dict holds
    ``parametrizations.weight.original0`` / ``original1``, and it also loads
    old-style ``weight_g`` / ``weight_v`` checkpoints (torch converts them).

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
    hyper, kernel, bias = _module_parts(module, variables)
    kernel_size = tuple(kernel.shape[2:])
    padding, output_padding = _torch_padding(
        hyper["padding"], hyper["output_padding"], kernel_size, hyper["strides"], hyper["kernel_dilation"]
    )
    weight = _to_tensor(kernel)
    groups = hyper["feature_group_count"]
    torch_module = _conv_transpose_classes()[len(kernel_size)](
        kernel.shape[0],
        kernel.shape[1] * groups,
        kernel_size,
        stride=normalize_tuple(hyper["strides"], len(kernel_size), "strides"),
        padding=padding,
        output_padding=output_padding,
        groups=groups,
        bias=bias is not None,
        dilation=normalize_tuple(hyper["kernel_dilation"], len(kernel_size), "kernel_dilation"),
        dtype=weight.dtype,
    )
    with torch.no_grad():
        torch_module.weight.copy_(weight)
        if bias is not None:
            torch_module.bias.copy_(_to_tensor(bias))
    if weight_norm:
        rank = kernel.ndim
        if weight_norm_dim is not None and (
            not isinstance(weight_norm_dim, int)
            or isinstance(weight_norm_dim, bool)
            or not -rank <= weight_norm_dim < rank
        ):
            raise ValueError(
                f"weight_norm_dim must be None or an axis of the rank-{rank} kernel, got {weight_norm_dim!r}"
            )
        torch_module = torch.nn.utils.parametrizations.weight_norm(torch_module, dim=weight_norm_dim)  # type: ignore[arg-type]  # torch's stubs say int; None is documented
    return torch_module


# --- whole state dicts -------------------------------------------------------------


def conv_transpose_layer_names(torch_model) -> list[str]:
    """Names (as in ``state_dict`` keys, without ``.weight``) of a torch model's ConvTranspose layers."""
    import torch

    return [
        name for name, sub in torch_model.named_modules() if isinstance(sub, torch.nn.modules.conv._ConvTransposeNd)
    ]


def _name_map(names: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(names, Mapping):
        return dict(names)
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"names must be a sequence of layer names or a mapping torch name -> Flax name, got {names!r}")
    return {name: name for name in names}


def state_dict_to_params(
    state_dict: Mapping[str, Any], names: Mapping[str, str] | Sequence[str]
) -> dict[str, dict[str, jax.Array]]:
    """jtconv parameters of the ConvTranspose layers of a torch state dict.

    For each torch layer name ``t`` (a list, or a mapping ``t → flax_name``),
    the weight becomes ``kernel`` and ``f"{t}.bias"`` (if present) ``bias``,
    in torch's layout (jtconv's). The weight may be stored plainly
    (``f"{t}.weight"``), weight-normed (``weight_g``/``weight_v``, or
    ``parametrizations.weight.original0/1``: ``kernel = v · g / ‖v‖``) or
    spectral-normed (``kernel`` as torch's eval-mode forward computes it).
    Values may be torch tensors or arrays. Returns
    ``{flax_name: {"kernel": ..., "bias": ...}}``. For whole models with other
    layers, see :func:`jtconv.state_dict.torch_to_flax`.

    Raises:
      ValueError: naming ``state_dict`` when a layer's weight is missing or
        is not a transposed-conv weight (fewer than 3 dimensions).
    """
    from jtconv import torch_keys

    layers, _ = torch_keys.group_by_layer(state_dict)
    params = {}
    for torch_name, flax_name in _name_map(names).items():
        parameters = layers.get(torch_name, {})
        try:
            form = torch_keys.weight_form(parameters)
        except ValueError as error:
            raise ValueError(f"state_dict layer {torch_name!r}: {error}") from None
        if form is None:
            forms = " or ".join(f"{torch_name}.{keys[0]}" for keys in torch_keys.WEIGHT_FORMS.values())
            raise ValueError(
                f"state_dict has no {torch_name + '.weight'!r} (nor {forms}; layers present: {sorted(layers)})"
            )
        values = {p: to_numpy(state_dict[k]) for p, k in parameters.items() if state_dict[k] is not None}
        shape = torch_keys.weight_shape(form, {p: v.shape for p, v in values.items()})
        if len(shape) < 3:
            raise ValueError(
                f"state_dict[{parameters[torch_keys.WEIGHT_FORMS[form][0]]!r}] must be a ConvTranspose weight "
                f"(in, out // groups, *kernel_size), got shape {shape}"
            )
        layer = {"kernel": torch_keys.read_weight(form, values, spectral_dim=1)}
        if "bias" in values:
            layer["bias"] = jnp.asarray(values["bias"])
        params[flax_name] = layer
    return params


def params_to_state_dict(
    params: Mapping[str, Mapping[str, Any]], names: Mapping[str, str] | Sequence[str]
) -> dict[str, np.ndarray]:
    """The inverse of :func:`state_dict_to_params`: ``{f"{t}.weight": kernel, f"{t}.bias": bias}`` as NumPy.

    ``names`` lists torch layer names (or maps torch name → Flax name, as for
    :func:`state_dict_to_params`). Load the result with
    ``model.load_state_dict({k: torch.from_numpy(v) ...}, strict=False)``.
    """
    state_dict = {}
    for torch_name, flax_name in _name_map(names).items():
        if flax_name not in params or "kernel" not in params[flax_name]:
            raise ValueError(f"params has no {flax_name!r} layer with a 'kernel'")
        state_dict[f"{torch_name}.weight"] = to_numpy(params[flax_name]["kernel"])
        if params[flax_name].get("bias") is not None:
            state_dict[f"{torch_name}.bias"] = to_numpy(params[flax_name]["bias"])
    return state_dict


def _flatten(tree: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif type(tree).__module__.startswith("torch") or isinstance(tree, np.ndarray):
        out[prefix] = to_numpy(tree)
    else:
        out[prefix] = tree


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint into a flat ``{name: np.ndarray}`` dict, never unpickling arbitrary objects.

    ``*.safetensors`` files are read with ``safetensors.numpy``; anything
    else with ``torch.load(path, map_location="cpu", weights_only=True)``,
    which only rebuilds tensors and plain containers. Nested dicts (e.g.
    ``{"model": state_dict, "epoch": 3}``) are flattened with dotted keys;
    non-tensor leaves (numbers, strings) are kept as they are.

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
    flat: dict[str, Any] = {}
    _flatten(checkpoint, "", flat)
    return flat


# --- Flax's own ConvTranspose layout ---------------------------------------------------


def kernel_to_flax_layout(kernel: jax.typing.ArrayLike, *, transpose_kernel: bool = False) -> jax.Array:
    """A jtconv/torch kernel ``(in, out, *K)`` as a ``flax.linen.ConvTranspose`` kernel.

    ``flax.linen.ConvTranspose`` (``lax.conv_transpose``) has no groups, so
    this is for ``feature_group_count = 1``:

    * ``transpose_kernel=False`` (Flax's default): ``(*K, in, out)`` with the
      spatial axes flipped, ``flax[t, ci, co] = torch[ci, co, K − 1 − t]``;
    * ``transpose_kernel=True``: ``(*K, out, in)``, ``flax[t, co, ci] = torch[ci, co, t]``.

    Flax's padding means something else than torch's (it pads the dilated
    input): with ``padding="VALID"`` and ``k_eff ≥ s`` both equal torch's
    ``padding=0``.
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
