"""examples/port_hifigan.py: the worked port of docs/porting.md is equal to torch end to end,
and its JAX side (safetensors file → Flax variables → audio) runs with torch unimportable."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "port_hifigan.py"


def test_port_hifigan_is_equal_to_torch_and_writes_back(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--channels",
            "32",
            "--frames",
            "8",
            "--checkpoint",
            str(tmp_path / "g.safetensors"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "41 layers (weight_norm) -> Flax, 0 keys unused, 0 leaves missing" in out
    assert "audio (2, 1, 256) (torch) / (2, 1, 256) (Flax + jtconv)" in out
    difference, tolerance = map(
        float, re.search(r"= ([0-9.e+-]+)  \(float32 tolerance .* = ([0-9.e+-]+)\)", out).groups()
    )
    assert difference <= tolerance
    assert "equal end to end: True" in out and "equal: True" in out


def test_port_needs_no_torch(tmp_path):
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import port_hifigan
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    config = port_hifigan.Config(initial_channels=16, upsample_rates=(4, 2), upsample_kernels=(8, 4))
    path = tmp_path / "g.safetensors"
    model = port_hifigan.write_checkpoint(config, str(path), seed=3)
    mel = torch.randn(1, config.mels, 6)
    np.save(tmp_path / "mel.npy", mel.numpy().transpose(0, 2, 1))
    script = f"""
import sys
sys.modules["torch"] = None  # any import of torch fails
sys.path.insert(0, {str(EXAMPLE.parent)!r})
import numpy as np
import port_hifigan
config = port_hifigan.Config(initial_channels=16, upsample_rates=(4, 2), upsample_kernels=(8, 4))
flax_model, variables, _ = port_hifigan.port({str(path)!r}, config, frames=6)
mel = np.load({str(tmp_path / "mel.npy")!r})
np.save({str(tmp_path / "audio.npy")!r}, np.asarray(flax_model.apply(variables, mel)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        expected = model(mel).numpy()
    audio = np.load(tmp_path / "audio.npy").transpose(0, 2, 1)
    assert audio.shape == expected.shape == (1, 1, 48)
    np.testing.assert_allclose(audio, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))
