"""jtconv.plans.resolve: ``algorithm=`` dicts overriding parts of the ``"auto"`` plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jtconv
from jtconv import testing
from jtconv.geometry import make_geometry
from jtconv.plans import estimate as planner
from jtconv.plans import resolve as planning

RNG = np.random.default_rng(0)
X = RNG.standard_normal((1, 2, 5)).astype(np.float32)
W = RNG.standard_normal((2, 3, 3)).astype(np.float32)


def test_algorithm_dict_with_unknown_plan_fields_is_refused():
    with pytest.raises(ValueError, match=r"algorithm= dict has unknown Plan fields \['bogus', 'speed'\]"):
        jtconv.conv_transpose(X, W, algorithm={"speed": "fast", "bogus": 1, "waits": True})


def test_overriding_the_forward_sets_the_gemm_layout_it_needs():
    geom = make_geometry(X.shape, W.shape, stride=2)
    base = planning.resolve("auto", geom, 1, "float32", "cpu")
    forward = "phase" if base.forward == "matmul" else "matmul"
    layout = planner._matmul_layout(geom, 1, "float32", None) if forward == "matmul" else None
    plan = planning.resolve({"forward": forward}, geom, 1, "float32", "cpu")
    assert plan == base.replace(forward=forward, gemm_layout=layout)
    y = jtconv.conv_transpose(X, W, stride=2, algorithm={"forward": forward})
    want = torch.nn.functional.conv_transpose1d(torch.tensor(X), torch.tensor(W), stride=2).numpy()
    assert np.max(np.abs(np.asarray(y) - want)) <= testing.relative_tolerance(np.float32) * np.max(np.abs(want))
