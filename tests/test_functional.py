"""jtconv.functional against torch's own test cases: the sample inputs of torch's
``nn.functional.conv_transpose{1,2,3}d`` OpInfos, in every dtype torch's CPU kernel
computes that jtconv computes alike (int64 exactly, float64 and float32)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import jtconv
from jtconv import testing

common_methods_invocations = pytest.importorskip(
    "torch.testing._internal.common_methods_invocations", reason="torch's test internals need expecttest"
)
OPS = {op.name[-2]: op for op in common_methods_invocations.op_db if op.name.startswith("nn.functional.conv_transpose")}
FUNCTIONS = {"1": jtconv.conv_transpose1d, "2": jtconv.conv_transpose2d, "3": jtconv.conv_transpose3d}


def _numpy(value):
    return value.detach().numpy() if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64, torch.float32])
@pytest.mark.parametrize("rank", sorted(OPS))
def test_torch_opinfo_samples(rank, dtype):
    samples = list(OPS[rank].sample_inputs("cpu", dtype))
    assert samples
    with jax.enable_x64(True):
        for sample in samples:
            expected = OPS[rank].op(sample.input, *sample.args, **sample.kwargs).detach().numpy()
            args = [_numpy(a) for a in sample.args]
            kwargs = {k: _numpy(v) for k, v in sample.kwargs.items()}
            got = np.asarray(FUNCTIONS[rank](_numpy(sample.input), *args, **kwargs))
            assert got.shape == expected.shape and got.dtype == expected.dtype, sample
            if dtype == torch.int64:
                np.testing.assert_array_equal(got, expected)
            else:
                tolerance = testing.relative_tolerance(expected.dtype) * max(1.0, float(np.abs(expected).max()))
                assert float(np.abs(got - expected).max(initial=0.0)) <= tolerance, sample
