"""How torch stores a layer's weight in a state dict, and the weight its (eval-mode) forward computes from that.

A key is ``f"{layer}.{parameter}"`` (``layer`` may be empty). A layer holds its
weight in one of the forms of :data:`WEIGHT_FORMS`: plainly, under weight norm
or under spectral norm, each through torch's old forward-pre-hook API
(``torch.nn.utils.weight_norm``, ``spectral_norm``) or its parametrizations
(``torch.nn.utils.parametrizations``: the ``_p`` forms). The math is
shape-static JAX (it runs under ``jit`` and is differentiable); half-precision
weights are normalised in float32, as torch does. No torch here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "WEIGHT_FORMS",
    "group_by_layer",
    "norm_except_dim",
    "read_weight",
    "weight_form",
    "weight_from_spectral_norm",
    "weight_from_weight_norm",
    "weight_norm_dim",
    "weight_shape",
    "write_weight",
]

_P = "parametrizations.weight."
WEIGHT_FORMS: dict[str, tuple[str, ...]] = {
    "plain": ("weight",),
    "weight_norm": ("weight_g", "weight_v"),
    "weight_norm_p": (_P + "original0", _P + "original1"),
    "spectral_norm": ("weight_orig", "weight_u", "weight_v"),
    "spectral_norm_p": (_P + "original", _P + "0._u", _P + "0._v"),
}
_WEIGHT_KEYS = sorted({key for keys in WEIGHT_FORMS.values() for key in keys})
# Longest first, so that "parametrizations.weight.original0" is not read as "…original".
_PARAMETERS = sorted(
    (*_WEIGHT_KEYS, "bias", "running_mean", "running_var", "num_batches_tracked"), key=len, reverse=True
)


def group_by_layer(keys: Iterable[str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """``({layer: {parameter: key}}, keys whose last part is no known parameter)``, layers in first-seen order."""
    layers: dict[str, dict[str, str]] = {}
    unknown = []
    for key in keys:
        parameter = next((p for p in _PARAMETERS if key == p or key.endswith("." + p)), None)
        if parameter is None:
            unknown.append(key)
        else:
            layers.setdefault(key[: -len(parameter) - 1] if key != parameter else "", {})[parameter] = key
    return layers, unknown


def weight_form(parameters: Iterable[str]) -> str | None:
    """The form of a layer's weight keys; ``None`` when it has none.

    Raises:
      ValueError: if its weight keys are no (or more than one) complete form.
    """
    present = sorted(set(parameters) & set(_WEIGHT_KEYS))
    if not present:
        return None
    for form, keys in WEIGHT_FORMS.items():
        if sorted(keys) == present:
            return form
    forms = "; ".join(f"{form}: {', '.join(keys)}" for form, keys in WEIGHT_FORMS.items())
    raise ValueError(f"weight keys {present} are no supported weight form ({forms})")


def weight_shape(form: str, shapes: Mapping[str, Any]) -> tuple[int, ...]:
    """Shape of the weight a form stands for, from the shapes of its keys."""
    return tuple(shapes[WEIGHT_FORMS[form][1 if form.startswith("weight_norm") else 0]])


def read_weight(form: str, values: Mapping[str, Any], spectral_dim: int) -> jax.Array:
    """The weight torch's eval-mode forward uses, from a layer's ``{parameter: array}``.

    ``spectral_dim``: the axis spectral norm normalised (torch's default: 1 for
    transposed convolutions, else 0); weight norm's ``dim`` is read from ``g``.

    Raises:
      ValueError: if the factors' shapes do not fit together.
    """
    factors = [values[key] for key in WEIGHT_FORMS[form]]
    if form == "plain":
        return jnp.asarray(factors[0])
    if form.startswith("weight_norm"):
        return weight_from_weight_norm(factors[0], factors[1])
    return weight_from_spectral_norm(factors[0], factors[1], factors[2], spectral_dim)


def write_weight(form: str, weight: jax.Array, shapes: Mapping[str, Any]) -> dict[str, jax.Array]:
    """``{parameter: array}`` storing ``weight`` in a weight-norm form, whose ``dim`` is read from
    ``shapes`` (the target's): ``g = ‖weight‖`` over every axis but ``dim`` and ``v = weight``
    (torch's own ``right_inverse``).

    Raises:
      ValueError: for the spectral forms: torch's forward divides whatever is
        stored by its spectral norm, so no stored value gives an arbitrary weight.
    """
    g, v = WEIGHT_FORMS[form][:2]
    if form.startswith("weight_norm"):
        return {g: norm_except_dim(weight, weight_norm_dim(shapes[g], shapes[v])), v: weight}
    raise ValueError(
        f"a spectral-normed weight ({', '.join(WEIGHT_FORMS[form])}) cannot be written from a plain weight: torch's "
        "forward divides whatever is stored by its spectral norm; load the weight into a layer without spectral "
        "norm (or apply spectral_norm after loading)"
    )


def norm_except_dim(v: jax.typing.ArrayLike, dim: int | None) -> jax.Array:
    """``torch.norm_except_dim(v, 2, dim)``: ``‖v‖₂`` over every axis but ``dim``, keeping
    ``v``'s rank; ``dim=None``: the norm of the whole tensor, 0-d."""
    v = jnp.asarray(v)
    values = v.astype(jnp.promote_types(v.dtype, jnp.float32))
    axes = None if dim is None else tuple(a for a in range(v.ndim) if a != dim)
    return jnp.sqrt(jnp.sum(values * values, axis=axes, keepdims=dim is not None)).astype(v.dtype)


def weight_norm_dim(g_shape: Sequence[int], v_shape: Sequence[int]) -> int | None:
    """The ``dim`` a weight-norm pair ``(g, v)`` was made with, read from the shapes.

    When ``g`` is all ones and ``v`` has size 1 on some axis, every fitting
    ``dim`` gives the same weight and the first is returned.

    Raises:
      ValueError: if ``g``'s shape fits no ``dim``.
    """
    g_shape, v_shape = tuple(g_shape), tuple(v_shape)
    if g_shape == ():
        return None
    if len(g_shape) == len(v_shape):
        kept = [a for a, (gs, vs) in enumerate(zip(g_shape, v_shape)) if gs == vs and vs != 1]
        if len(kept) == 1 and all(gs == 1 for a, gs in enumerate(g_shape) if a != kept[0]):
            return kept[0]
        if not kept and all(gs == 1 for gs in g_shape) and 1 in v_shape:
            return v_shape.index(1)
    raise ValueError(
        f"weight_g must have shape () (dim=None) or v's shape with 1 on every axis but one, "
        f"got weight_g {g_shape} for weight_v {v_shape}"
    )


def weight_from_weight_norm(g: jax.typing.ArrayLike, v: jax.typing.ArrayLike) -> jax.Array:
    """``w = v · g / ‖v‖₂`` in ``v``'s dtype, the norm over every axis but the
    ``dim`` that ``g``'s shape shows (:func:`weight_norm_dim`)."""
    g, v = jnp.asarray(g), jnp.asarray(v)
    compute = v.astype(jnp.promote_types(v.dtype, jnp.float32))
    norm = norm_except_dim(compute, weight_norm_dim(g.shape, v.shape))
    return (compute * (g.astype(compute.dtype) / norm)).astype(v.dtype)


def weight_from_spectral_norm(
    weight_orig: jax.typing.ArrayLike, u: jax.typing.ArrayLike, v: jax.typing.ArrayLike, dim: int
) -> jax.Array:
    """``w = w_orig / σ``, ``σ = uᵀ · W · v`` with ``W`` = ``w_orig`` with axis ``dim`` moved first,
    flattened to a matrix: torch's eval-mode spectral norm (its training-mode forward first runs
    power iterations that update ``u`` and ``v``).

    Raises:
      ValueError: if ``dim`` is no axis of ``weight_orig`` or ``u``, ``v`` do not fit.
    """
    weight_orig, u, v = jnp.asarray(weight_orig), jnp.asarray(u), jnp.asarray(v)
    if not -weight_orig.ndim <= dim < weight_orig.ndim:
        raise ValueError(
            f"dim must be in [-{weight_orig.ndim}, {weight_orig.ndim}) for a weight of rank {weight_orig.ndim}, "
            f"got {dim}"
        )
    compute = jnp.promote_types(weight_orig.dtype, jnp.float32)
    matrix = jnp.moveaxis(weight_orig.astype(compute), dim, 0)
    matrix = matrix.reshape(matrix.shape[0], -1)
    if u.shape != (matrix.shape[0],) or v.shape != (matrix.shape[1],):
        raise ValueError(
            f"spectral norm vectors must have shapes u {(matrix.shape[0],)} and v {(matrix.shape[1],)} for "
            f"weight_orig {weight_orig.shape} with dim={dim}, got u {u.shape} and v {v.shape}"
        )
    sigma = jnp.dot(u.astype(compute), jnp.dot(matrix, v.astype(compute), precision="highest"), precision="highest")
    return (weight_orig.astype(compute) / sigma).astype(weight_orig.dtype)
