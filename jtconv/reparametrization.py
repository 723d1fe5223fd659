"""torch's weight reparametrizations as array math: weight norm and spectral norm.

A layer under ``torch.nn.utils.weight_norm`` or ``spectral_norm`` (old-style
forward pre-hooks) or their ``torch.nn.utils.parametrizations`` versions does
not store its weight: it stores factors and recomputes the weight in forward.
These functions compute that weight from the factors, as torch's forward does,
so that a converted layer never depends on a possibly stale ``module.weight``:

* weight norm: ``w = v · g / ‖v‖``, the 2-norm taken over every axis but
  ``dim`` (``torch.norm_except_dim``); ``dim=None`` (or ``-1``, which torch
  treats the same way) takes the norm over the whole tensor and ``g`` is a
  scalar. ``g`` keeps ``v``'s rank with size 1 on the reduced axes.
* spectral norm (eval mode): ``w = w_orig / σ``, ``σ = uᵀ · W · v`` with the
  stored vectors ``u``, ``v`` and ``W`` = ``w_orig`` with axis ``dim`` moved
  first and flattened to a matrix. Nothing is iterated: torch's training-mode
  forward first runs power iterations that update ``u`` and ``v``; its
  eval-mode forward computes exactly this.

Everything is shape-static JAX code, so it also runs under ``jit`` and is
differentiable (gradients with respect to ``g``, ``v`` or ``w_orig``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "norm_except_dim",
    "spectral_norm_matrix",
    "weight_from_spectral_norm",
    "weight_from_weight_norm",
    "weight_norm_dim",
    "weight_norm_factors",
]


def _normalized_dim(dim: int | None, ndim: int) -> int | None:
    """torch's reading of weight norm's ``dim``: ``None`` and ``-1`` mean the
    whole tensor; any other value indexes an axis (negative from the end)."""
    if dim is None or dim == -1:
        return None
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"dim must be an int or None, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim must be in [-{ndim}, {ndim}) for a weight of rank {ndim}, got {dim}")
    return dim % ndim


def _compute_dtype(dtype) -> jnp.dtype:
    """Half-precision weights are normalised in float32 (torch does the same)."""
    return jnp.promote_types(dtype, jnp.float32)


def norm_except_dim(v: jax.typing.ArrayLike, dim: int | None = 0) -> jax.Array:
    """``‖v‖₂`` over every axis but ``dim``, keeping ``v``'s rank (size 1 on
    the reduced axes); ``dim=None`` or ``-1``: the norm of the whole tensor,
    as a 0-d array. Equal to ``torch.norm_except_dim(v, 2, dim)``."""
    v = jnp.asarray(v)
    axis = _normalized_dim(dim, v.ndim)
    values = v.astype(_compute_dtype(v.dtype))
    if axis is None:
        return jnp.sqrt(jnp.sum(values * values)).astype(v.dtype)
    reduced = tuple(a for a in range(v.ndim) if a != axis)
    return jnp.sqrt(jnp.sum(values * values, axis=reduced, keepdims=True)).astype(v.dtype)


def weight_norm_dim(g_shape: Sequence[int], v_shape: Sequence[int]) -> int | None:
    """The ``dim`` a weight-norm pair ``(g, v)`` was made with, read from the shapes.

    ``g`` is 0-d for ``dim=None``; otherwise it has ``v``'s rank, ``v``'s size
    on axis ``dim`` and 1 elsewhere. When ``g`` is all ones and ``v`` has size 1
    on some axis, every consistent ``dim`` gives the same weight (the norm runs
    over the whole tensor) and the first such axis is returned.

    Raises:
      ValueError: if ``g``'s shape fits no ``dim``.
    """
    g_shape, v_shape = tuple(g_shape), tuple(v_shape)
    if g_shape == ():
        return None
    if len(g_shape) == len(v_shape):
        kept = [a for a, (gs, vs) in enumerate(zip(g_shape, v_shape)) if gs == vs and vs != 1]
        singleton = all(gs == 1 for a, gs in enumerate(g_shape) if a not in kept)
        if len(kept) == 1 and singleton:
            return kept[0]
        if not kept and all(gs == 1 for gs in g_shape) and 1 in v_shape:
            return v_shape.index(1)
    raise ValueError(
        f"weight_g must have shape () (dim=None) or v's shape with 1 on every axis but one, "
        f"got weight_g {g_shape} for weight_v {v_shape}"
    )


def weight_from_weight_norm(
    g: jax.typing.ArrayLike, v: jax.typing.ArrayLike, dim: int | None | str = "infer"
) -> jax.Array:
    """``w = v · (g / ‖v‖)``, the norm over every axis of ``v`` but ``dim``.

    Args:
      g: the magnitude (``weight_g`` / ``parametrizations.weight.original0``).
      v: the direction (``weight_v`` / ``parametrizations.weight.original1``).
      dim: the ``dim`` given to torch's ``weight_norm`` (``None`` or ``-1``:
        the whole tensor); ``"infer"`` reads it from ``g``'s shape
        (:func:`weight_norm_dim`).

    Returns the weight in ``v``'s dtype, computed in float32 or wider.

    Raises:
      ValueError: if ``g``'s shape does not match ``dim``.
    """
    g, v = jnp.asarray(g), jnp.asarray(v)
    if isinstance(dim, str):
        if dim != "infer":
            raise ValueError(f"dim must be an int, None or 'infer', got {dim!r}")
        dim = weight_norm_dim(g.shape, v.shape)
    axis = _normalized_dim(dim, v.ndim)
    expected = () if axis is None else tuple(size if a == axis else 1 for a, size in enumerate(v.shape))
    if g.shape != expected:
        raise ValueError(f"weight_g must have shape {expected} for weight_v {v.shape} and dim={dim}, got {g.shape}")
    compute = _compute_dtype(v.dtype)
    norm = norm_except_dim(v.astype(compute), dim)
    return (v.astype(compute) * (g.astype(compute) / norm)).astype(v.dtype)


def weight_norm_factors(weight: jax.typing.ArrayLike, dim: int | None = 0) -> tuple[jax.Array, jax.Array]:
    """``(g, v)`` with ``weight_from_weight_norm(g, v, dim) == weight`` (up to
    rounding): ``g = ‖weight‖`` over every axis but ``dim``, ``v = weight``.
    This is torch's own ``right_inverse`` of weight norm."""
    weight = jnp.asarray(weight)
    return norm_except_dim(weight, dim), weight


def spectral_norm_matrix(weight: jax.typing.ArrayLike, dim: int) -> jax.Array:
    """``weight`` with axis ``dim`` moved first, flattened to ``(size[dim], -1)``
    (torch's ``reshape_weight_to_matrix``)."""
    weight = jnp.asarray(weight)
    if weight.ndim < 2:
        raise ValueError(f"weight must have at least 2 dimensions for spectral norm, got shape {weight.shape}")
    if not -weight.ndim <= dim < weight.ndim:
        raise ValueError(
            f"dim must be in [-{weight.ndim}, {weight.ndim}) for a weight of rank {weight.ndim}, got {dim}"
        )
    moved = jnp.moveaxis(weight, dim, 0)
    return moved.reshape(moved.shape[0], -1)


def weight_from_spectral_norm(
    weight_orig: jax.typing.ArrayLike, u: jax.typing.ArrayLike, v: jax.typing.ArrayLike, dim: int
) -> jax.Array:
    """``w = w_orig / σ`` with ``σ = uᵀ · W · v`` (torch's eval-mode spectral norm).

    Args:
      weight_orig: ``weight_orig`` / ``parametrizations.weight.original``.
      u: ``weight_u`` / ``parametrizations.weight.0._u``, length ``size[dim]``.
      v: ``weight_v`` / ``parametrizations.weight.0._v``, length
        ``numel / size[dim]``.
      dim: the output axis torch normalised: 0, except 1 for
        ``ConvTranspose{1,2,3}d`` (torch's default).

    Raises:
      ValueError: if ``u`` or ``v`` do not fit ``weight_orig`` and ``dim``.
    """
    weight_orig, u, v = jnp.asarray(weight_orig), jnp.asarray(u), jnp.asarray(v)
    matrix = spectral_norm_matrix(weight_orig, dim)
    if u.shape != (matrix.shape[0],) or v.shape != (matrix.shape[1],):
        raise ValueError(
            f"spectral norm vectors must have shapes u {(matrix.shape[0],)} and v {(matrix.shape[1],)} for "
            f"weight_orig {weight_orig.shape} with dim={dim}, got u {u.shape} and v {v.shape}"
        )
    compute = _compute_dtype(weight_orig.dtype)
    sigma = jnp.dot(
        u.astype(compute), jnp.dot(matrix.astype(compute), v.astype(compute), precision="highest"), precision="highest"
    )
    return (weight_orig.astype(compute) / sigma).astype(weight_orig.dtype)
