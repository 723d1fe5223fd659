"""What a new user trips over: a Flax-layout kernel, the
``jtconv check --quick`` output, the sharded example's wording on one device."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jtconv
from jtconv import testing
from jtconv.cli import build_parser, main
from jtconv.commands import check as check_command
from jtconv.interop import kernel_from_flax_layout

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sharded_training.py"

# --- a Flax-layout kernel: the hint names the expected layout and the converter -----------------


def test_flax_layout_kernel_error_names_the_layout_and_the_converter():
    x = jnp.ones((1, 4, 5, 5))
    flax_kernel = jnp.ones((3, 3, 4, 8))  # (kh, kw, in, out)
    with pytest.raises(ValueError) as raised:
        jtconv.conv_transpose2d(x, flax_kernel, stride=2)
    message = str(raised.value)
    assert message.startswith("input channels (4) must equal weight.shape[0] (in_channels = 3)")
    assert "(*kernel_size, in_features, out_features)" in message
    assert "(in_channels, out_channels // groups, *kernel_size)" in message
    assert "jtconv.interop.kernel_from_flax_layout" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match="kernel_from_flax_layout"):
        jtconv.conv_transpose(jnp.ones((1, 5, 5, 4)), flax_kernel, stride=2, channels_last=True)
    with pytest.raises(ValueError, match="kernel_from_flax_layout"):
        jtconv.conv_transpose1d(jnp.ones((2, 4, 7)), jnp.ones((5, 4, 6)))


def test_other_channel_mismatches_get_no_layout_hint():
    with pytest.raises(ValueError) as raised:
        jtconv.conv_transpose2d(jnp.ones((1, 4, 5, 5)), jnp.ones((3, 2, 3, 3)))
    assert "Flax" not in str(raised.value)


def test_the_suggested_conversion_computes_flax_s_conv_transpose():
    """Following the hint gives the result of the ``flax.linen.ConvTranspose`` the kernel came from."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 5, 5, 4)), jnp.float32)
    layer = nn.ConvTranspose(features=8, kernel_size=(3, 3), strides=(2, 2), padding="VALID", use_bias=False)
    variables = layer.init(jax.random.key(0), x)
    kernel = variables["params"]["kernel"]
    expected = layer.apply(variables, x)
    y = jtconv.conv_transpose(x, kernel_from_flax_layout(kernel), stride=2, padding="valid", channels_last=True)
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-5, atol=1e-5)


# --- jtconv check --quick: counts agree, the table is summarised, the help states a time --------


def _small_sweep(quick: bool, seed: int = 0):
    named = testing.named_configs()
    valid = [c for c in named if testing.torch_rejection(c) is None][:2]
    invalid = [c for c in named if testing.torch_rejection(c) is not None][:2]
    return valid + invalid


def test_check_counts_agree_and_the_table_is_summarised(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(testing, "check_configs", _small_sweep)
    totals, advanced = [], []

    def counting_progress(self, total, description):
        totals.append(total)
        return advanced.append

    monkeypatch.setattr(check_command._Console, "progress", counting_progress)
    path = tmp_path / "report.json"
    argv = ["check", "--quick", "--no-grads", "--dtype", "float32,bfloat16", "--algorithm", "matmul,reference"]
    assert main([*argv, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    # 2 valid configs × 2 lowerings × 2 dtypes = 8 comparisons; 2 invalid × 2 lowerings = 4 rejection checks.
    assert "12 checks = 8 comparisons with torch + 4 rejection checks" in out
    assert totals == [12] and sum(advanced) == 12
    assert "OK: 8/8 comparisons passed, 4/4 rejection checks passed" in out
    report = json.loads(path.read_text())
    assert len(report["results"]) == 8 and len(report["rejections"]) == 4
    labels = {row["label"] for row in report["results"] + report["rejections"]}
    assert not any(label in out for label in labels)  # one row per lowering and dtype, not per check
    rows = re.findall(r"(matmul|reference)\s*\S*\s*(float32|bfloat16)\s*\S*\s*(\d+)/(\d+)", out)
    assert sorted((a, d, n, m) for a, d, n, m in rows) == sorted(
        (a, d, "2", "2") for a in ("matmul", "reference") for d in ("float32", "bfloat16")
    )

    assert main([*argv, "--verbose"]) == 0
    verbose = capsys.readouterr().out
    assert all(label in verbose for label in labels)


def test_check_quick_help_states_a_measured_time(capsys):
    with pytest.raises(SystemExit):
        build_parser("check").parse_args(["check", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "about a minute" not in help_text
    assert re.search(r"--quick a short sweep \(about \d+ to \d+ minutes on a 2-core CPU\)", help_text)


# --- the sharded example on one device names one PartitionSpec -----------------------------------


def test_sharded_example_on_one_device_prints_one_partition_spec():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "1", "--json"], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["devices"] == 1
    assert summary["output_sharding"] == summary["batch_sharding"] == ["data"]
    specs = re.findall(r"sharded (P\([^)]*\))", done.stdout)
    assert specs == ["P('data',)", "P('data',)"], done.stdout
    assert lines[0].startswith("1 device (cpu)")
