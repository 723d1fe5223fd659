"""Whole-model state dicts: torch ⇄ Flax variables for the layers a ported decoder has.

:func:`torch_to_flax` turns a torch ``state_dict`` (torch tensors, NumPy or JAX
arrays: a :func:`jtconv.interop.load_state_dict` of a safetensors file needs no
torch) into Flax variables; :func:`flax_to_torch` writes one back. Per kind
(:data:`LAYER_KINDS`), torch's ``weight`` becomes ``kernel`` (``conv_transpose``:
the same ``(in, out/g, *k)``, as :mod:`jtconv.linen` holds it; ``conv``:
``(out, in/g, *k)`` → ``(*k, in/g, out)``; ``linear``: transposed), ``embedding``
or a norm's ``scale``; ``bias`` stays ``bias``; ``running_mean`` and
``running_var`` become batch_stats ``mean`` and ``var`` (``num_batches_tracked``
is dropped). A weight stored under weight norm or spectral norm
(:mod:`jtconv.torch_keys`) becomes the weight torch's eval-mode forward computes.

A layer's kind comes from ``kinds``, else from keys only one kind has (running
statistics: ``batch_norm``; a 1-d weight: a norm's scale; a 2-d weight with a
bias: ``linear``), else from the ``template`` (the target's shapes). A layer
none of these decides is reported, never guessed; so is every key that converts
to nothing and every template leaf nothing fills (``strict=True``: ``ValueError``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from jtconv import torch_keys

__all__ = [
    "LAYER_KINDS",
    "FlaxConversion",
    "LayerConversion",
    "TorchConversion",
    "flax_to_torch",
    "linen_path",
    "torch_layer_kinds",
    "torch_to_flax",
]

LAYER_KINDS = (
    "conv_transpose",
    "conv",
    "linear",
    "embedding",
    "batch_norm",
    "group_norm",
    "layer_norm",
    "instance_norm",
    "norm",
)
_KERNEL_KINDS = ("conv_transpose", "conv", "linear")
_KIND_OF_LEAF = {"embedding": "embedding", "mean": "batch_norm", "var": "batch_norm", "scale": "norm"}

Names = Callable[[str], "str | None"] | Mapping[str, str]
Shape = tuple[int, ...]


# --- names and kinds ----------------------------------------------------------------


def linen_path(torch_name: str) -> str:
    """The Flax linen path of a torch module name under linen's list naming.

    A list attribute ``self.ups = [...]`` names its layers ``ups_0, ups_1, …``;
    ``nn.Sequential`` names its layers ``layers_0, …``. So an index joins the
    name before it (``"resblocks.3.convs1.2"`` → ``"resblocks_3/convs1_2"``),
    and an index that follows an index or starts the name is a Sequential's
    (``"0.1"`` → ``"layers_0/layers_1"``).
    """
    parts: list[str] = []
    previous_was_name = False
    for part in torch_name.split(".") if torch_name else []:
        if part.isdigit() and previous_was_name:
            parts[-1] = f"{parts[-1]}_{part}"
        else:
            parts.append(f"layers_{part}" if part.isdigit() else part)
        previous_was_name = not part.isdigit()
    return "/".join(parts)


def _name_function(names: Names) -> Callable[[str], str | None]:
    """``names`` as a function; a dict maps the longest matching prefix."""
    if callable(names):
        return names
    if not isinstance(names, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()):
        raise TypeError(
            "names must be a function torch layer name -> Flax path (e.g. jtconv.state_dict.linen_path) "
            f"or a dict of torch prefixes -> Flax prefixes, got {type(names).__name__}"
        )
    prefixes = sorted(names, key=len, reverse=True)

    def by_prefix(name: str) -> str | None:
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        return None if prefix is None else names[prefix] + name[len(prefix) :].replace(".", "/")

    return by_prefix


def _kind_function(kinds: Mapping[str, str] | None) -> Callable[[str], str | None]:
    """Exact names first, then glob patterns (``fnmatch``) in the dict's order."""
    kinds = dict(kinds or {})
    for pattern, kind in kinds.items():
        if kind not in LAYER_KINDS:
            raise ValueError(f"kinds[{pattern!r}] must be one of {LAYER_KINDS}, got {kind!r}")

    def kind_of(name: str) -> str | None:
        if name in kinds:
            return kinds[name]
        return next((kind for pattern, kind in kinds.items() if fnmatch.fnmatchcase(name, pattern)), None)

    return kind_of


def torch_layer_kinds(model) -> dict[str, str]:
    """``{module name: kind}`` for every layer of a torch model that this module converts (needs torch)."""
    import torch.nn as tnn

    table = [
        ((tnn.ConvTranspose1d, tnn.ConvTranspose2d, tnn.ConvTranspose3d), "conv_transpose"),
        ((tnn.Conv1d, tnn.Conv2d, tnn.Conv3d), "conv"),
        ((tnn.Linear,), "linear"),
        ((tnn.Embedding,), "embedding"),
        ((tnn.modules.batchnorm._BatchNorm,), "batch_norm"),
        ((tnn.GroupNorm,), "group_norm"),
        ((tnn.LayerNorm,), "layer_norm"),
        ((tnn.modules.instancenorm._InstanceNorm,), "instance_norm"),
    ]
    kinds = {}
    for name, module in model.named_modules():
        kind = next((kind for types, kind in table if isinstance(module, types)), None)
        if kind is not None:
            kinds[name] = kind
    return kinds


# --- arrays, trees, kernels ---------------------------------------------------------------


def _as_array(value: Any) -> Any:
    """A torch tensor as NumPy; arrays and tracers unchanged."""
    if type(value).__module__.startswith("torch"):
        from jtconv.interop import to_numpy

        return to_numpy(value)
    return value


def _shape_of(value: Any) -> Shape | None:
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return value
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


def _flax_leaves(tree: Any, what: str) -> dict[tuple[str, ...], tuple[tuple, Any]]:
    """``{path as strings: (original path, leaf)}`` of a Flax variables tree or nnx state."""
    if isinstance(tree, nnx.State):
        tree = nnx.to_pure_dict(tree)
    if not isinstance(tree, Mapping):
        raise TypeError(f"{what} must be a nested dict of arrays (or an nnx State), got {type(tree).__name__}")
    return {tuple(map(str, path)): (path, leaf) for path, leaf in traverse_util.flatten_dict(dict(tree)).items()}


def _layer_leaves(keys, layout: str, path: tuple[str, ...]) -> dict[str, tuple]:
    """``{leaf name: key}`` of the Flax layer at ``path`` (linen: in params and batch_stats)."""
    if layout == "linen":
        return {key[-1]: key for key in keys if key[0] in ("params", "batch_stats") and key[1:-1] == path}
    return {key[-1]: key for key in keys if key[:-1] == path}


def _key_text(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def _kernel_axes(kind: str, ndim: int) -> tuple[int, ...]:
    """The torch weight's axes in the order of the Flax kernel's: a conv's ``(out, in, *k)``
    becomes ``(*k, in, out)``, a linear's ``(out, in)`` ``(in, out)``; a transposed conv's stays."""
    return tuple(range(ndim)) if kind == "conv_transpose" else (*range(2, ndim), 1, 0)


def _flax_kernel_shape(kind: str, torch_shape: Shape) -> Shape:
    return tuple(torch_shape[a] for a in _kernel_axes(kind, len(torch_shape)))


def _conv_kind(name: str, weight: Shape, kernel: Shape | None, subject: str) -> tuple[str | None, str]:
    """``conv`` or ``conv_transpose``: the kind whose layout turns the torch ``weight`` shape into ``kernel``."""
    fits = []
    if kernel is not None and len(kernel) == len(weight) >= 2:
        fits = [kind for kind in ("conv", "conv_transpose") if _flax_kernel_shape(kind, weight) == kernel]
    moved = [axis for axis in _kernel_axes("conv", len(weight)) if weight[axis] != 1] if len(fits) == 2 else []
    if moved != sorted(moved):  # both fit; unless both layouts keep the elements in the same order:
        return None, f"{subject} both as a conv and as a conv_transpose: pass kinds={{{name!r}: ...}}"
    if not fits:
        return None, f"{subject} neither as a conv nor as a conv_transpose"
    return fits[-1], "template"


def _rank_problem(kind: str, rank: int) -> str | None:
    if kind in ("conv", "conv_transpose") and rank < 3:
        return f"a {kind} weight has rank >= 3, got rank {rank}"
    if kind in ("linear", "embedding") and rank != 2:
        return f"a {kind} weight has rank 2, got rank {rank}"
    if kind == "batch_norm" and rank != 1:
        return f"a batch_norm weight has rank 1, got rank {rank}"
    return None


# --- reports ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerConversion:
    """How one torch layer was converted: its kind (and how that was decided),
    its Flax path and the form its weight was stored in."""

    kind: str
    decided_by: str
    flax_path: str
    weight_form: str | None


@dataclasses.dataclass(frozen=True)
class _Conversion:
    layers: dict[str, LayerConversion]
    unused: dict[str, tuple[Shape | None, str]]
    missing: dict[str, tuple[Shape | None, str]]

    @property
    def complete(self) -> bool:
        """Nothing unused, nothing missing."""
        return not self.unused and not self.missing

    def report(self) -> str:
        """Every converted layer, unused key and missing leaf, one per line."""
        lines = [f"{len(self.layers)} layers converted, {len(self.unused)} unused, {len(self.missing)} missing"]
        for name, layer in self.layers.items():
            form = f", weight stored as {layer.weight_form}" if layer.weight_form not in (None, "plain") else ""
            lines.append(
                f"  {name or '<root>'} -> {layer.flax_path or '<root>'}: {layer.kind} ({layer.decided_by}{form})"
            )
        for title, entries in (("unused", self.unused), ("missing", self.missing)):
            for key, (shape, reason) in entries.items():
                lines.append(f"  {title} {key!r} {'' if shape is None else shape}: {reason}")
        return "\n".join(lines)

    def _raise_if_incomplete(self, strict: bool, direction: str) -> None:
        if strict and not self.complete:
            raise ValueError(
                f"{direction} is incomplete (strict=True; pass strict=False to get the partial result and "
                f"its report):\n{self.report()}"
            )


@dataclasses.dataclass(frozen=True)
class FlaxConversion(_Conversion):
    """Result of :func:`torch_to_flax`: ``variables`` plus the report.

    ``unused``: torch keys that went nowhere, ``{key: (shape, reason)}``;
    ``missing``: template leaves (``"params/up0/kernel"``) that nothing filled.
    """

    variables: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TorchConversion(_Conversion):
    """Result of :func:`flax_to_torch`: a torch-style ``state_dict`` plus the report.

    ``unused``: Flax leaves that went nowhere; ``missing``: template keys that
    nothing filled, ``{key: (shape, reason)}``.
    """

    state_dict: dict = dataclasses.field(default_factory=dict)


# --- torch -> Flax -----------------------------------------------------------------------


def _decide_kind(
    name: str, parameters: Mapping[str, str], weight: Shape | None, explicit: str | None, target: dict | None
) -> tuple[str | None, str]:
    """``(kind, how it was decided)``, or ``(None, why not)``; ``target``: the template layer's leaf shapes."""
    if explicit is not None:
        return explicit, "kinds"
    if "running_mean" in parameters or "running_var" in parameters:
        return "batch_norm", "running statistics"
    if weight is not None and len(weight) == 1:
        return "norm", "1-d weight: a norm's scale"
    if weight is None and "bias" in parameters and target is None:
        return None, "a bias without a weight: pass kinds= or template="
    if target:
        kind = next((kind for leaf, kind in _KIND_OF_LEAF.items() if leaf in target), None)
        if kind is not None:
            return kind, "template"
        if "kernel" in target and weight is not None:
            if len(weight) == 2:
                return "linear", "template"
            subject = f"weight {weight} fits the template's kernel {target['kernel']}"
            return _conv_kind(name, weight, target["kernel"], subject)
    if weight is not None and len(weight) == 2 and "bias" in parameters:
        return "linear", "2-d weight with a bias"
    return None, (
        f"cannot tell which kind of layer this is (weight {weight}): pass kinds={{{name!r}: ...}} "
        "(torch_layer_kinds(model) lists them) or template= (the Flax variables' shapes)"
    )


def torch_to_flax(
    state_dict: Mapping[str, Any],
    names: Names,
    *,
    kinds: Mapping[str, str] | None = None,
    template: Any = None,
    spectral_norm_dims: Mapping[str, int] | None = None,
    layout: str = "linen",
    strict: bool = True,
) -> FlaxConversion:
    """Flax variables from a torch ``state_dict`` (see the module docstring).

    Args:
      state_dict: ``{key: array}``, torch tensors, NumPy or JAX arrays (JAX
        arrays may be tracers: the conversion is differentiable and jittable).
      names: torch layer name → Flax path: a function (``None``: leave the layer
        out; :func:`linen_path` is linen's list naming), or a dict of prefixes
        (the longest prefix a name starts with is replaced, the rest's dots
        become ``/``: ``{"ups.": "ups_"}`` maps ``ups.0`` to ``ups_0``).
      kinds: ``{torch layer name or glob pattern: kind}`` (:data:`LAYER_KINDS`);
        :func:`torch_layer_kinds` reads them off a torch model.
      template: the target's shapes (``jax.eval_shape(model.init, …)`` for linen,
        ``nnx.state(model)`` for nnx): decides kinds the keys leave open,
        checks every shape, and reports its leaves nothing fills.
      spectral_norm_dims: ``{torch layer name: dim}`` for a non-default spectral
        norm ``dim`` (default 0, 1 for ``conv_transpose``).
      layout: ``"linen"`` → ``{"params": …, "batch_stats": …}``; ``"nnx"`` → one
        tree by layer path (digit parts become int keys, as ``nnx.List``
        indices) for ``nnx.replace_by_pure_dict(nnx.state(model), …)``.
      strict: raise, with the report, when anything is unused or missing.

    Raises:
      ValueError: if ``strict`` and the result is incomplete; for a bad ``kinds`` or ``layout``.
      TypeError: for a bad ``names``, ``state_dict`` or ``template``.
    """
    if layout not in ("linen", "nnx"):
        raise ValueError(f"layout must be 'linen' or 'nnx', got {layout!r}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of key -> array, got {type(state_dict).__name__}")
    name_of, kind_of = _name_function(names), _kind_function(kinds)
    template_leaves = None if template is None else _flax_leaves(template, "template")
    template_shapes = {key: _shape_of(leaf) for key, (_, leaf) in (template_leaves or {}).items()}
    dims = dict(spectral_norm_dims or {})
    values = {key: _as_array(value) for key, value in state_dict.items()}
    shapes = {key: _shape_of(value) for key, value in values.items()}
    layers, unknown = torch_keys.group_by_layer(values)
    unsupported = "not a parameter of a supported layer (weight, bias, running statistics, weight norm, spectral norm)"
    unused: dict[str, tuple[Shape | None, str]] = {key: (shapes[key], unsupported) for key in unknown}
    produced: dict[tuple, Any] = {}
    converted: dict[str, LayerConversion] = {}

    def leave(parameters: Mapping[str, str], reason: str) -> None:
        for key in parameters.values():
            unused[key] = (shapes[key], reason)

    for name, parameters in layers.items():
        flax_name = name_of(name)
        if flax_name is None:
            leave(parameters, f"names maps layer {name!r} to nothing")
            continue
        path = tuple(part for part in flax_name.split("/") if part)
        try:
            form = torch_keys.weight_form(parameters)
        except ValueError as error:
            leave(parameters, f"layer {name!r}: {error}")
            continue
        weight = None if form is None else torch_keys.weight_shape(form, {p: shapes[k] for p, k in parameters.items()})
        target = None
        if template_leaves is not None:
            target = {leaf: template_shapes[key] for leaf, key in _layer_leaves(template_leaves, layout, path).items()}
        kind, decided = _decide_kind(name, parameters, weight, kind_of(name), target)
        if kind is None:
            leave(parameters, f"layer {name!r}: {decided}")
            continue
        problem = None if weight is None else _rank_problem(kind, len(weight))
        if problem is None and kind == "instance_norm" and "running_mean" in parameters:
            problem = "Flax's InstanceNorm has no running statistics (torch uses them in eval mode): use batch_norm"
        if problem is not None:
            leave(parameters, f"layer {name!r} ({kind}): {problem}")
            continue
        layer_values = {p: values[k] for p, k in parameters.items()}
        try:
            leaves = _layer_to_flax(kind, form, layer_values, dims.get(name, int(kind == "conv_transpose")))
        except ValueError as error:
            leave(parameters, f"layer {name!r} ({kind}): {error}")
            continue
        consumed = set(torch_keys.WEIGHT_FORMS.get(form or "", ()))
        if kind == "batch_norm":
            consumed.add("num_batches_tracked")
        for leaf, (sources, value) in leaves.items():
            collection = () if layout == "nnx" else ("batch_stats" if leaf in ("mean", "var") else "params",)
            key = (*collection, *path, leaf)
            source_keys = {s: parameters[s] for s in sources}
            if template_leaves is None:  # nnx.List indices are ints
                produced[tuple(int(p) if layout == "nnx" and p.isdigit() else p for p in key)] = value
            elif key not in template_leaves:
                leave(source_keys, f"the template has no {_key_text(key)!r}")
                continue
            elif template_shapes[key] != tuple(value.shape):
                shapes_text = f"of shape {tuple(value.shape)}, the template's is {template_shapes[key]}"
                leave(source_keys, f"converts to {_key_text(key)!r} {shapes_text}")
                continue
            else:
                produced[template_leaves[key][0]] = value
            consumed |= set(sources)
        extra = {p: k for p, k in parameters.items() if p not in consumed and k not in unused}
        leave(extra, f"a {kind} layer has no {', '.join(sorted(extra))}")
        converted[name] = LayerConversion(kind, decided, flax_name, form)

    filled = {tuple(map(str, key)) for key in produced}
    missing = {
        _key_text(key): (shape, "no torch key converts to it")
        for key, shape in template_shapes.items()
        if key not in filled
    }
    result = FlaxConversion(converted, unused, missing, variables=traverse_util.unflatten_dict(produced))
    result._raise_if_incomplete(strict, "torch_to_flax")
    return result


def _leaf_names(kind: str) -> dict[str, str]:
    """``{torch parameter: Flax leaf}`` of a layer of ``kind``."""
    if kind == "embedding":
        return {"weight": "embedding"}
    names = {"weight": "kernel" if kind in _KERNEL_KINDS else "scale", "bias": "bias"}
    return names | ({"running_mean": "mean", "running_var": "var"} if kind == "batch_norm" else {})


def _layer_to_flax(
    kind: str, form: str | None, values: Mapping[str, Any], spectral_dim: int
) -> dict[str, tuple[tuple[str, ...], jax.Array]]:
    """``{Flax leaf: (torch parameters it comes from, value)}`` for one layer."""
    leaves = {}
    for parameter, leaf in _leaf_names(kind).items():
        if parameter == "weight" and form is not None:
            weight = torch_keys.read_weight(form, values, spectral_dim)
            if leaf == "kernel":
                weight = jnp.transpose(weight, _kernel_axes(kind, weight.ndim))
            leaves[leaf] = (torch_keys.WEIGHT_FORMS[form], weight)
        elif parameter != "weight" and parameter in values:
            leaves[leaf] = ((parameter,), jnp.asarray(values[parameter]))
    return leaves


# --- Flax -> torch -----------------------------------------------------------------------


def _torch_layers_to_write(
    template: Mapping[str, Any] | None, kinds: Mapping[str, str] | None
) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """``({layer: {parameter: key}}, {key: template value})`` of the torch side; without a
    template, ``kinds`` names the layers, each with the plain keys of its kind."""
    if template is None:
        if not kinds:
            raise ValueError(
                "flax_to_torch needs the torch layer names: template= (the torch state dict, or {key: shape}) "
                "or kinds={torch layer name: kind}"
            )
        for name in kinds:
            if any(c in name for c in "*?["):
                raise ValueError(f"kinds must name layers exactly when no template is given, got pattern {name!r}")
        return {name: {p: f"{name}.{p}" if name else p for p in _leaf_names(kind)} for name, kind in kinds.items()}, {}
    if not isinstance(template, Mapping):
        raise TypeError(f"template must be a torch state dict or {{key: shape}}, got {type(template).__name__}")
    values = {key: _as_array(value) for key, value in template.items()}
    return torch_keys.group_by_layer(values)[0], values


def flax_to_torch(
    variables: Any,
    names: Names,
    *,
    template: Mapping[str, Any] | None = None,
    kinds: Mapping[str, str] | None = None,
    layout: str = "linen",
    strict: bool = True,
    tensors: bool = False,
) -> TorchConversion:
    """A torch-style ``state_dict`` from Flax variables: the inverse of :func:`torch_to_flax`.

    Args:
      variables: linen ``{"params": …, "batch_stats": …}`` or (``layout="nnx"``)
        an nnx state or its pure dict.
      names: torch layer name → Flax path, as for :func:`torch_to_flax`.
      template: the torch model's ``state_dict`` (values, or just shapes): it
        names the keys to write, fixes their shapes, decides conv against
        conv_transpose, and says how each weight is stored (a weight-norm pair
        gets ``g = ‖w‖``, over every axis but the ``dim`` ``g``'s shape shows,
        and ``v = w``; a spectral-normed weight cannot be written and is
        reported missing). Its ``num_batches_tracked`` values are copied.
      kinds: ``{torch layer name (or, with a template, a glob pattern): kind}``;
        without a template it lists the layers, written as plain keys.
      strict: raise, with the report, when a Flax leaf is unused or a template key missing.
      tensors: return torch tensors (needs torch) instead of NumPy arrays.

    Raises:
      ValueError: if ``strict`` and the result is incomplete; without ``template`` and ``kinds``.
    """
    if layout not in ("linen", "nnx"):
        raise ValueError(f"layout must be 'linen' or 'nnx', got {layout!r}")
    name_of, kind_of = _name_function(names), _kind_function(kinds)
    leaves = _flax_leaves(variables, "variables")
    source = {key: leaf for key, (_, leaf) in leaves.items()}
    layers, template_values = _torch_layers_to_write(template, kinds)
    template_shapes = {key: _shape_of(value) for key, value in template_values.items()}
    used: set[tuple[str, ...]] = set()
    written: dict[str, Any] = {}
    missing: dict[str, tuple[Shape | None, str]] = {}
    converted: dict[str, LayerConversion] = {}

    def lack(keys, reason: str) -> None:
        for key in keys:
            missing[key] = (template_shapes.get(key), reason)

    for name, parameters in layers.items():
        layer_keys = list(parameters.values()) if template is not None else [name or "<root>"]
        flax_name = name_of(name)
        if flax_name is None:
            lack(layer_keys, f"names maps layer {name!r} to nothing")
            continue
        flax_layer = _layer_leaves(source, layout, tuple(part for part in flax_name.split("/") if part))
        if not flax_layer:
            lack(layer_keys, f"variables have no layer at {flax_name!r}")
            continue
        try:
            form = torch_keys.weight_form(parameters) if template is not None else "plain"
        except ValueError as error:
            lack(layer_keys, f"layer {name!r}: {error}")
            continue
        shapes = {p: template_shapes.get(k) for p, k in parameters.items()}
        weight = torch_keys.weight_shape(form, shapes) if form is not None and template is not None else None
        kind, decided = _decide_torch_kind(name, flax_layer, source, kind_of(name), weight)
        if kind is None:
            lack(layer_keys, f"layer {name!r}: {decided}")
            continue
        outputs = _layer_to_torch(kind, {leaf: source[key] for leaf, key in flax_layer.items()})
        if "weight" in outputs and form not in (None, "plain"):
            leaf, value = outputs.pop("weight")
            try:
                outputs.update({p: (leaf, v) for p, v in torch_keys.write_weight(form, value, shapes).items()})
            except ValueError as error:
                lack([parameters[p] for p in torch_keys.WEIGHT_FORMS[form]], f"layer {name!r}: {error}")
        for parameter, (leaf, value) in outputs.items():
            key = parameters.get(parameter)
            if key is None:
                continue
            if template is not None and shapes[parameter] != tuple(value.shape):
                original = _key_text(leaves[flax_layer[leaf]][0])
                lack([key], f"{original!r} converts to shape {tuple(value.shape)}")
                continue
            written[key] = value
            used.add(flax_layer[leaf])
        if "num_batches_tracked" in parameters:
            key = parameters["num_batches_tracked"]
            if kind == "batch_norm" and isinstance(template_values[key], np.ndarray | jax.Array):
                written[key] = template_values[key]
            else:
                lack([key], "Flax keeps no batch count: copied from the template, which gives no value for it")
        converted[name] = LayerConversion(kind, decided, flax_name, form)

    for key, shape in template_shapes.items():
        if key not in written and key not in missing:
            missing[key] = (shape, "no Flax leaf converts to it")
    unused = {
        _key_text(original): (_shape_of(leaf), "no torch key takes it")
        for key, (original, leaf) in leaves.items()
        if key not in used
    }
    if tensors:
        from jtconv.interop import to_tensor
    # np.array: a writable copy (torch.from_numpy warns on read-only arrays); to_tensor copies too
    state_dict = {key: to_tensor(value) if tensors else np.array(value) for key, value in written.items()}
    result = TorchConversion(converted, unused, missing, state_dict=state_dict)
    result._raise_if_incomplete(strict, "flax_to_torch")
    return result


def _decide_torch_kind(
    name: str, flax_layer: Mapping[str, tuple], source: Mapping[tuple, Any], explicit: str | None, weight: Shape | None
) -> tuple[str | None, str]:
    """``(kind, how it was decided)`` of the Flax layer going to torch layer ``name``,
    or ``(None, why not)``; ``weight`` is the template's torch weight shape."""
    if explicit is not None:
        return explicit, "kinds"
    leaf = next((leaf for leaf in _KIND_OF_LEAF if leaf in flax_layer), None)
    if leaf is not None:
        return _KIND_OF_LEAF[leaf], "Flax batch statistics" if leaf in ("mean", "var") else f"Flax leaf {leaf!r}"
    if "kernel" not in flax_layer:
        return None, f"Flax leaves {sorted(flax_layer)} are no supported layer"
    kernel = _shape_of(source[flax_layer["kernel"]])
    if kernel is None:
        return None, "the Flax kernel is no array"
    if len(kernel) == 2:
        return "linear", "2-d kernel"
    if weight is None:
        return None, f"cannot tell a conv from a conv_transpose (kernel {kernel}): pass kinds={{{name!r}: ...}}"
    return _conv_kind(name, weight, kernel, f"kernel {kernel} fits the template's weight {weight}")


def _layer_to_torch(kind: str, leaves: Mapping[str, Any]) -> dict[str, tuple[str, jax.Array]]:
    """``{torch parameter: (Flax leaf it comes from, value)}``; leaves that do not
    belong to ``kind`` are left out (and so reported unused)."""
    outputs = {}
    for parameter, leaf in _leaf_names(kind).items():
        if leaf not in leaves:
            continue
        value = jnp.asarray(leaves[leaf])
        if leaf == "kernel":
            if _rank_problem(kind, value.ndim):
                continue
            value = jnp.transpose(value, [int(a) for a in np.argsort(_kernel_axes(kind, value.ndim))])
        outputs[parameter] = (leaf, value)
    return outputs
