"""dtypes: float32, bfloat16, float16 against torch (values and gradients), float64
with x64 enabled (inside ``jax.enable_x64``, so it does not leak into other tests),
and JAX dtype promotion of mixed inputs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jtconv
from jtconv import testing

import tiers

CONFIGS = {
    "2d-grouped": testing.ConvTransposeConfig(
        (2, 4, 5, 5), (4, 2, 3, 3), stride=2, padding=1, output_padding=1, groups=2, bias_shape=(4,)
    ),
    "1d-dilated": testing.ConvTransposeConfig(
        (2, 3, 7), (3, 4, 3), stride=3, padding=2, output_padding=2, dilation=2, bias_shape=(4,)
    ),
    "3d": testing.ConvTransposeConfig((1, 2, 3, 3, 3), (2, 2, 2, 2, 2), stride=2, padding=(0, 1, 0)),
    "wide-reduction": testing.ConvTransposeConfig((2, 32, 4, 4), (32, 4, 3, 3), stride=2, padding=1),
}


@pytest.mark.parametrize(
    *tiers.product(
        {"name": list(CONFIGS), "dtype": ["float32", "bfloat16", "float16"], "algorithm": jtconv.ALGORITHMS},
        every=("dtype", "algorithm"),
    )
)
def test_dtype_values_and_gradients_match_torch(name, dtype, algorithm):
    config = CONFIGS[name]
    result = testing.check_config(config, algorithm=algorithm, dtype=dtype, grads=True)
    assert result.passed, result.report()
    for leaf in result.comparison.leaves:
        assert leaf.jax_dtype == leaf.torch_dtype == dtype, leaf.report()


@pytest.mark.parametrize(*tiers.product({"name": list(CONFIGS), "algorithm": jtconv.ALGORITHMS}, every=("algorithm",)))
def test_float64_with_x64_enabled(name, algorithm):
    config = CONFIGS[name]
    with jax.enable_x64(True):
        result = testing.check_config(config, algorithm=algorithm, dtype="float64", grads=True)
        assert result.passed, result.report()
        assert {leaf.jax_dtype for leaf in result.comparison.leaves} == {"float64"}
        assert max(leaf.relative_error for leaf in result.comparison.leaves) < 1e-12
    assert not jax.config.jax_enable_x64


@pytest.mark.parametrize(
    *tiers.product(
        {
            "x_dtype, w_dtype": [("bfloat16", "float32"), ("float16", "bfloat16"), ("float32", "float16")],
            "algorithm": jtconv.ALGORITHMS,
        },
        every=("x_dtype, w_dtype",),
    )
)
def test_mixed_dtypes_follow_jax_promotion(x_dtype, w_dtype, algorithm):
    x = jnp.ones((1, 2, 3, 3), x_dtype)
    w = jnp.ones((2, 1, 2, 2), w_dtype)
    y = jtconv.conv_transpose(x, w, stride=2, algorithm=algorithm)
    assert y.dtype == jnp.result_type(x, w)
    np.testing.assert_array_equal(
        np.asarray(y, np.float32),
        np.asarray(jtconv.conv_transpose(x.astype("float32"), w.astype("float32"), stride=2, algorithm=algorithm)),
    )


def test_tolerances_follow_the_documented_rule():
    assert testing.relative_tolerance("float32") == 1e-5
    assert testing.relative_tolerance("float64") == 1e-12
    assert testing.relative_tolerance("float32", 1500) == 1e-5  # the fixed bound covers R ≤ ~1,500
    # beyond that, 4 unit roundoffs per √R (a weight gradient over 61,440 positions)
    assert testing.relative_tolerance("float32", 61440) == pytest.approx(4 * 2.0**-24 * math.sqrt(61440))
    assert testing.relative_tolerance("bfloat16", 100) == pytest.approx(2.0**-7 * 12)
    assert testing.relative_tolerance("float16", 16) == pytest.approx(2.0**-10 * 6)
    with pytest.raises(ValueError, match="dtype"):
        testing.relative_tolerance("int32")
