"""The examples run, and say what they should: the port is exact, the loss falls."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_port_generator_is_equal_to_torch_end_to_end():
    out = run_example("port_generator.py", "--batch", "2", "--ngf", "8", "--nz", "16")
    assert "equal end to end: True" in out
    assert "(2, 3, 64, 64) (torch) / (2, 3, 64, 64) (Flax + jtconv)" in out
    difference, tolerance = map(
        float, re.search(r"= ([0-9.e+-]+)  \(float32 tolerance .* = ([0-9.e+-]+)\)", out).groups()
    )
    assert difference <= tolerance


@pytest.mark.slow  # a training loop; the sharded training example runs in the quick tier
def test_train_decoder_loss_falls():
    out = run_example("train_decoder.py", "--steps", "60", "--batch", "16")
    before = float(re.search(r"held-out loss before training: ([0-9.]+)", out).group(1))
    after = float(re.search(r"held-out loss after 60 steps: ([0-9.]+)", out).group(1))
    assert after < 0.5 * before, out
    assert "fell from" in out


def test_sharded_example_on_one_device_prints_one_partition_spec():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "sharded_training.py"), "--steps", "1", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["devices"] == 1
    assert summary["output_sharding"] == summary["batch_sharding"] == ["data"]
    specs = re.findall(r"sharded (P\([^)]*\))", done.stdout)
    assert specs == ["P('data',)", "P('data',)"], done.stdout
    assert lines[0].startswith("1 device (cpu)")
