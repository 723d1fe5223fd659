"""Errors that name the argument and the rule, for inputs no other test gives."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jtconv
from jtconv import testing
from jtconv.lowering import common, methods
from jtconv.lowering.plan import Plan
from jtconv.matrix import convolution_matrix
from jtconv.plans import estimate as planner


def test_plan_values_of_the_wrong_kind():
    geom = jtconv.make_geometry((1, 4, 5), (4, 2, 3), stride=2)
    with pytest.raises(ValueError, match="role must be one of"):
        methods.methods_for("backward", geom)
    with pytest.raises(TypeError, match="must be a dict"):
        Plan.from_dict("forward=matmul")
    with pytest.raises(TypeError, match="algorithm must be a str, a Plan or a dict"):
        planner.validate(("matmul", "gemm", "gemm"), geom)
    with pytest.raises(ValueError, match="gemm_layout must be None or one of"):
        Plan("matmul", "gemm", "gemm", gemm_layout="sideways")
    x, w = jnp.ones((1, 4, 5)), jnp.ones((4, 2, 3))
    with pytest.raises(ValueError, match=r"unknown Plan fields \['speed'\]"):
        jtconv.conv_transpose(x, w, stride=2, algorithm={"speed": "fast"})


def test_shifted_sum_needs_a_part():
    with pytest.raises(ValueError, match="at least one part"):
        common.shifted_sum(jnp.zeros((0, 3)), axis=1, starts=[], length=3)


def test_bias_with_a_wider_accumulation_dtype_is_added_before_the_cast():
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 4, 5), (4, 3, 3), (3,)))
    y = jtconv.conv_transpose(
        jnp.asarray(x, jnp.bfloat16),
        jnp.asarray(w, jnp.bfloat16),
        jnp.asarray(b, jnp.bfloat16),
        stride=2,
        preferred_element_type=jnp.float32,
    )
    assert y.dtype == jnp.float32
    to_bf16 = [torch.tensor(a).bfloat16().float() for a in (x, w, b)]
    want = torch.nn.functional.conv_transpose1d(*to_bf16, stride=2).numpy()
    np.testing.assert_allclose(
        np.asarray(y), want, rtol=0, atol=testing.relative_tolerance(np.float32) * np.abs(want).max()
    )


def test_geometry_rules_for_shapes_and_sizes():
    x2, w2 = (1, 4, 5, 5), (4, 2, 3, 3)
    assert jtconv.make_geometry(x2, w2, stride=(2,)).stride == (2, 2)  # one value for every axis
    with pytest.raises(ValueError, match="per-side pairs must be 2 pairs"):
        jtconv.make_geometry(x2, w2, padding=((1, 2), (1,)))
    with pytest.raises(ValueError, match="weight must have shape"):
        jtconv.make_geometry((1, 4, 5), (4, 2))
    with pytest.raises(ValueError, match=r"weight.shape\[1\] \(out_channels // groups\) must be >= 1"):
        jtconv.make_geometry((1, 4, 5), (4, 0, 3))
    with pytest.raises(ValueError, match="output_size must have 2 .spatial. or 4 elements"):
        jtconv.make_geometry(x2, w2, stride=2, output_size=(9, 9, 9))
    with pytest.raises(ValueError, match="weight must have shape"):
        convolution_matrix(np.ones((4, 2)), (5,))
