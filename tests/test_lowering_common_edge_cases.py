"""jtconv.lowering.common / varying: a stack of more than 64 arrays, and the
varying axes of an abstract value of an older JAX (``vma``)."""

from __future__ import annotations

import types

import jax.numpy as jnp
import numpy as np

from jtconv.lowering.common import MAX_FUSED_OPERANDS, fusable_stack
from jtconv.lowering.varying import aval_varying_axes


def test_fusable_stack_of_more_than_64_arrays_equals_stack():
    count = MAX_FUSED_OPERANDS**2 + 3
    arrays = [jnp.full((2,), float(n)) for n in range(count)]
    stacked = fusable_stack(arrays, 1)
    np.testing.assert_array_equal(np.asarray(stacked), np.asarray(jnp.stack(arrays, 1)))
    assert stacked.shape == (2, count)


def test_varying_axes_from_vma():
    assert aval_varying_axes(types.SimpleNamespace(vma={"data", "model"})) == frozenset({"data", "model"})
    assert aval_varying_axes(types.SimpleNamespace()) == frozenset()
    manual = types.SimpleNamespace(mat=types.SimpleNamespace(varying=("i",)), vma={"ignored"})
    assert aval_varying_axes(manual) == frozenset({"i"})
