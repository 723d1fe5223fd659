"""jtconv.reparametrization: argument errors naming ``dim`` and the weight's shape."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jtconv import reparametrization as rp

V = jnp.arange(1.0, 13.0).reshape(2, 3, 2)


def test_weight_norm_dim_must_be_an_axis():
    with pytest.raises(TypeError, match="dim must be an int or None, got float"):
        rp.norm_except_dim(V, 1.0)
    with pytest.raises(TypeError, match="dim must be an int or None, got bool"):
        rp.norm_except_dim(V, True)
    with pytest.raises(ValueError, match=r"dim must be in \[-3, 3\) for a weight of rank 3, got 3"):
        rp.norm_except_dim(V, 3)
    norms = rp.norm_except_dim(V, -3)  # negative from the end: axis 0
    np.testing.assert_array_equal(np.asarray(norms), np.asarray(rp.norm_except_dim(V, 0)))
    assert norms.shape == (2, 1, 1)


def test_weight_from_weight_norm_refuses_an_unknown_dim_word():
    g = rp.norm_except_dim(V, 0)
    with pytest.raises(ValueError, match="dim must be an int, None or 'infer', got 'guess'"):
        rp.weight_from_weight_norm(g, V, "guess")
    np.testing.assert_array_equal(np.asarray(rp.weight_from_weight_norm(g, V, "infer")), np.asarray(V))


def test_spectral_norm_matrix_needs_a_matrix_and_an_axis():
    with pytest.raises(ValueError, match=r"at least 2 dimensions for spectral norm, got shape \(4,\)"):
        rp.spectral_norm_matrix(jnp.ones(4), 0)
    with pytest.raises(ValueError, match=r"dim must be in \[-3, 3\) for a weight of rank 3, got -4"):
        rp.spectral_norm_matrix(V, -4)
    matrix = rp.spectral_norm_matrix(V, 1)
    np.testing.assert_array_equal(np.asarray(matrix), np.moveaxis(np.asarray(V), 1, 0).reshape(3, 4))
