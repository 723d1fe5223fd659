"""Property sweep against torch: 2,000 seeded random configurations per lowering.

Torch accepts → same shape and values within ``relative_tolerance`` (float32:
``1e-5 · max|torch|``); torch rejects → jtconv raises ``ValueError`` before
XLA. About 15% of the configurations request an ``output_size`` (compared
with ``nn.ConvTransposeNd.forward(x, output_size=...)``) and about 10% break
one of torch's rules. The full tier (``--full``) checks all of them, in chunks
that pytest-xdist shares out; the quick tier checks a seeded sample of
``QUICK_SAMPLE`` per lowering (``tests/tiers.py``).
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

import jtconv
from jtconv import testing

import tiers

SWEEP_SEED = 20240501
SWEEP_SIZE = 2000
CHUNK = 100
QUICK_SAMPLE = 25
CONFIGS = testing.sweep_configs(SWEEP_SIZE, seed=SWEEP_SEED)


@pytest.mark.parametrize("algorithm", jtconv.ALGORITHMS)
@pytest.mark.parametrize("chunk", tiers.chunks(SWEEP_SIZE, CHUNK, quick=QUICK_SAMPLE), ids=str)
def test_sweep_matches_torch(chunk, algorithm):
    failures = []
    indices = chunk.indices(salt=algorithm)
    for i in indices:
        result = testing.check_config(CONFIGS[i], algorithm=algorithm)
        if not result.passed:
            failures.append(f"[{i}] {result.report()}")
    assert not failures, (
        f"{len(failures)} of {len(indices)} configurations differ from torch ([i]: index in CONFIGS;"
        f" {chunk.reproducer()}):\n" + "\n".join(failures[:10])
    )


def _coverage() -> collections.Counter:
    """Count what the sweep exercises, with torch deciding validity."""
    counts: collections.Counter = collections.Counter()
    for config in CONFIGS:
        valid = testing.torch_rejection(config) is None
        counts["valid" if valid else "rejected"] += 1
        if not valid:
            continue
        n = config.ndim
        stride, padding, output_padding, dilation = (
            testing._per_dim(v, n) for v in (config.stride, config.padding, config.output_padding, config.dilation)
        )
        counts[f"{n}d"] += 1
        counts["unbatched"] += not config.batched
        counts["empty batch"] += config.batched and config.input_shape[0] == 0
        counts["groups > 1"] += config.groups > 1
        counts["bias"] += config.bias_shape is not None
        counts["output_size"] += config.output_size is not None
        counts["empty output"] += min(testing._predicted_output_size(config)) == 0
        counts["padding > d(k-1)"] += any(p > d * (k - 1) for p, d, k in zip(padding, dilation, config.kernel_size))
        counts["stride <= output_padding < dilation"] += any(
            s <= op < d for s, op, d in zip(stride, output_padding, dilation)
        )
        counts["output_padding > 0"] += any(op > 0 for op in output_padding)
        counts["per-dimension values differ"] += any(len(set(v)) > 1 for v in (stride, padding, dilation))
    return counts


@pytest.mark.slow  # asks torch about all 2,000 configurations: a property of the full tier's sweep
def test_sweep_covers_every_argument_and_both_verdicts():
    counts = _coverage()
    assert counts["valid"] + counts["rejected"] == SWEEP_SIZE
    minimums = {
        "rejected": 100,
        "1d": 300,
        "2d": 300,
        "3d": 200,
        "unbatched": 200,
        "empty batch": 10,
        "groups > 1": 400,
        "bias": 500,
        "output_size": 150,
        "empty output": 20,
        "padding > d(k-1)": 200,
        "stride <= output_padding < dilation": 50,
        "output_padding > 0": 400,
        "per-dimension values differ": 500,
    }
    short = {name: counts[name] for name, minimum in minimums.items() if counts[name] < minimum}
    assert not short, f"sweep coverage below minimum: {short} (all counts: {dict(counts)})"


def test_sweep_breaks_every_rule():
    """Each kind of invalid argument is drawn, and torch rejects each kind at least once."""
    rng = np.random.default_rng(7)
    for kind in testing.INVALID_KINDS:
        base = testing.random_config(rng, invalid_probability=0.0, output_size_probability=0.0)
        broken = testing.break_rule(base, rng, kind)
        assert testing.torch_rejection(broken) is not None, f"torch accepts the {kind} mutation: {broken}"
        result = testing.check_config(broken)
        assert result.expected == "rejection" and result.passed, result.report()


def test_sweep_is_deterministic():
    assert testing.sweep_configs(50, seed=SWEEP_SEED) == CONFIGS[:50]
    assert testing.sweep_configs(50, seed=SWEEP_SEED + 1) != CONFIGS[:50]


@pytest.mark.parametrize("batch", [2, 3])
def test_torch_onednn_path_returns_empty_outputs(batch):
    """Anchor for the empty-output rule in ``testing.torch_conv_transpose``: torch's
    oneDNN path (float32, batch > 1) returns an empty tensor when an output size is
    exactly 0, and jtconv returns the same shape."""
    config = testing.ConvTransposeConfig(
        (batch, 2, 2, 1), (2, 3, 2, 2), stride=2, padding=(3, 1), output_padding=1, dilation=2
    )
    x, w = testing.make_inputs(config)
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), stride=2, padding=(3, 1), output_padding=1, dilation=2
    )
    assert tuple(expected.shape) == (batch, 3, 0, 2)
    for algorithm in jtconv.ALGORITHMS:
        y = jtconv.conv_transpose(x, w, stride=2, padding=(3, 1), output_padding=1, dilation=2, algorithm=algorithm)
        assert y.shape == (batch, 3, 0, 2)


def test_native_torch_kernel_rejects_empty_outputs_that_jtconv_returns():
    """torch's native kernel (float64) raises for the same geometry; jtconv follows
    oneDNN (documented deviation), and testing's oracle says so."""
    config = testing.ConvTransposeConfig(
        (1, 2, 2, 1), (2, 3, 2, 2), stride=2, padding=(3, 1), output_padding=1, dilation=2
    )
    x, w = testing.make_inputs(config, "float64")
    with pytest.raises(RuntimeError, match="Output size is too small"):
        torch.nn.functional.conv_transpose2d(
            torch.from_numpy(x), torch.from_numpy(w), stride=2, padding=(3, 1), output_padding=1, dilation=2
        )
    assert testing.torch_rejection(config, (x, w)) is None
    assert testing.check_config(config).passed
