"""torch state-dict keys: which layer each key belongs to, and how a layer stores its weight.

A key is ``f"{layer}.{parameter}"`` (``layer`` may be empty for a bare
module's state dict). The parameters jtconv understands:

* ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``;
* the weight, in one of five forms (:data:`WEIGHT_FORMS`):

  ==================  ====================================================================
  ``plain``           ``weight``
  ``weight_norm``     ``weight_g``, ``weight_v`` (``torch.nn.utils.weight_norm``)
  ``weight_norm_p``   ``parametrizations.weight.original0`` / ``original1``
                      (``torch.nn.utils.parametrizations.weight_norm``)
  ``spectral_norm``   ``weight_orig``, ``weight_u``, ``weight_v`` (``torch.nn.utils.spectral_norm``)
  ``spectral_norm_p`` ``parametrizations.weight.original``, ``parametrizations.weight.0._u``,
                      ``parametrizations.weight.0._v``
  ==================  ====================================================================

The weight each form stands for is what torch's (eval-mode) forward computes
(:mod:`jtconv.reparametrization`). Anything else is left for the caller to
report as unused. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax

from jtconv.reparametrization import (
    weight_from_spectral_norm,
    weight_from_weight_norm,
    weight_norm_dim,
    weight_norm_factors,
)

__all__ = [
    "OTHER_PARAMETERS",
    "WEIGHT_FORMS",
    "group_by_layer",
    "read_weight",
    "weight_form",
    "weight_shape",
    "write_weight",
]

_G, _V = "parametrizations.weight.original0", "parametrizations.weight.original1"
_ORIGINAL, _U, _SV = "parametrizations.weight.original", "parametrizations.weight.0._u", "parametrizations.weight.0._v"

WEIGHT_FORMS: dict[str, tuple[str, ...]] = {
    "plain": ("weight",),
    "weight_norm": ("weight_g", "weight_v"),
    "weight_norm_p": (_G, _V),
    "spectral_norm": ("weight_orig", "weight_u", "weight_v"),
    "spectral_norm_p": (_ORIGINAL, _U, _SV),
}
OTHER_PARAMETERS = ("bias", "running_mean", "running_var", "num_batches_tracked")
_WEIGHT_KEYS = sorted({key for keys in WEIGHT_FORMS.values() for key in keys})
# Longest first, so that "parametrizations.weight.original0" is not read as "…original".
_PARAMETERS = sorted((*_WEIGHT_KEYS, *OTHER_PARAMETERS), key=len, reverse=True)


def split_key(key: str) -> tuple[str, str] | None:
    """``(layer, parameter)`` of a state-dict key, or ``None`` if its last part is no known parameter."""
    for parameter in _PARAMETERS:
        if key == parameter:
            return "", parameter
        if key.endswith("." + parameter):
            return key[: -len(parameter) - 1], parameter
    return None


def group_by_layer(keys: Iterable[str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """``({layer: {parameter: key}}, unknown keys)``, layers in first-seen order."""
    layers: dict[str, dict[str, str]] = {}
    unknown = []
    for key in keys:
        split = split_key(key)
        if split is None:
            unknown.append(key)
        else:
            layers.setdefault(split[0], {})[split[1]] = key
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
    return tuple(shapes[WEIGHT_FORMS[form][0 if form in ("plain", "spectral_norm", "spectral_norm_p") else 1]])


def read_weight(form: str, values: Mapping[str, Any], spectral_dim: int) -> jax.Array:
    """The weight torch's eval-mode forward uses, from a layer's ``{parameter: array}``.

    ``spectral_dim``: the axis spectral norm normalised (0, or 1 for transposed
    convolutions: torch's default), used only by the spectral forms.

    Raises:
      ValueError: if the factors' shapes do not fit together.
    """
    keys = WEIGHT_FORMS[form]
    if form == "plain":
        return jax.numpy.asarray(values["weight"])
    if form in ("weight_norm", "weight_norm_p"):
        return weight_from_weight_norm(values[keys[0]], values[keys[1]], "infer")
    return weight_from_spectral_norm(values[keys[0]], values[keys[1]], values[keys[2]], spectral_dim)


def write_weight(form: str, weight: jax.Array, shapes: Mapping[str, Any]) -> dict[str, jax.Array]:
    """``{parameter: array}`` storing ``weight`` in ``form``; ``shapes`` are the
    target's key shapes (a weight norm's ``dim`` is read from ``g``'s shape).

    Raises:
      ValueError: for the spectral forms: ``w_orig / σ(w_orig)`` cannot hold an
        arbitrary weight (torch's forward rescales whatever is stored).
    """
    keys = WEIGHT_FORMS[form]
    if form == "plain":
        return {"weight": weight}
    if form in ("weight_norm", "weight_norm_p"):
        g, v = weight_norm_factors(weight, weight_norm_dim(shapes[keys[0]], shapes[keys[1]]))
        return {keys[0]: g, keys[1]: v}
    raise ValueError(
        f"a spectral-normed weight ({', '.join(keys)}) cannot be written from a plain weight: torch's forward "
        "divides whatever is stored by its spectral norm; load the weight into a layer without spectral norm "
        "(or apply spectral_norm after loading)"
    )
