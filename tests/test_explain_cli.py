"""The ``jtconv explain`` command: printed values against torch, --png, --gif, clean errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jtconv.cli import main
from jtconv.commands import explain as explain_command
from jtconv.explain import explain

CLASSIC = ["explain", "--input-size", "4", "--kernel-size", "4", "--stride", "2", "--padding", "1"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _printed_grid(out: str, heading: str) -> np.ndarray:
    """The number grid printed under the line starting with ``heading``."""
    lines = out.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        rows.append([float(v) for v in line.split()])
    return np.array(rows)


def _torch(x, w, **kwargs) -> np.ndarray:
    fn = torch.nn.functional.conv_transpose2d if x.ndim == 2 else torch.nn.functional.conv_transpose1d
    y = fn(torch.tensor(x, dtype=torch.float64)[None, None], torch.tensor(w, dtype=torch.float64)[None, None], **kwargs)
    return y[0, 0].numpy()


def test_classic_example(capsys):
    status, out, _ = _run(capsys, CLASSIC)
    assert status == 0 and "output: 8×8" in out  # all single values: the classic 2-d example
    status, out, err = _run(capsys, CLASSIC + ["--at", "0,1", "--at", "0,0"])
    assert status == 0 and err == ""
    assert "(4 − 1)·2 − 2·1 + 1·(4 − 1) + 0 + 1 = 8" in out
    assert "output: 8×8" in out
    expected = _torch(np.ones((4, 4)), np.arange(1.0, 17.0).reshape(4, 4), stride=2, padding=1)
    np.testing.assert_array_equal(_printed_grid(out, "Output y (8×8)"), expected)
    assert "y[0,1] = 12: the terms" in out
    assert "  x[0,0] · w[1,2] = 1 · 7 = 7\n  x[0,1] · w[1,0] = 1 · 5 = 5\n  sum = 7 + 5 = 12" in out
    assert "y[0,0] = 6: the terms" in out and "  x[0,0] · w[1,1] = 1 · 6 = 6" in out
    overlap = _printed_grid(out, "Overlap map")
    assert overlap.shape == (8, 8) and overlap[0, 0] == 1 and overlap[3, 4] == 4
    assert "Even overlap" in out
    padded = out.split("zero-inserted, padded input (11×11")[1].splitlines()[1]
    assert padded.split() == ["·"] * 11


def test_one_d_with_values_and_matrix(capsys):
    argv = [
        "explain",
        "--ndim",
        "1",
        "--input-size",
        "5",
        "--kernel-size",
        "3",
        "--stride",
        "2",
        "--padding",
        "1",
        "--output-padding",
        "1",
        "--input-values",
        "1,-2,0.5,3,4",
        "--kernel-values",
        "2,0,-1",
        "--at",
        "9",
        "--matrix",
    ]
    status, out, err = _run(capsys, argv)
    assert status == 0 and err == ""
    x, w = np.array([1, -2, 0.5, 3, 4]), np.array([2.0, 0, -1])
    expected = _torch(x, w, stride=2, padding=1, output_padding=1)
    np.testing.assert_allclose(_printed_grid(out, "Output y (10)")[0], expected, rtol=0, atol=1e-12)
    assert f"y[9] = {expected[9]:g}" in out
    assert "Uneven overlap: kernel size 3 is not divisible by stride 2" in out
    assert "output_padding 1 keeps 1 of the 1 high-end positions" in out
    assert "Cᵀ · x equals the output above: yes" in out
    matrix = out.split("· = no kernel tap\n")[1].splitlines()[:5]
    assert matrix[0].split() == ["0", "-1", "·", "·", "·", "·", "·", "·", "·", "·"]


def test_per_dimension_values_infer_2d(capsys):
    status, out, _ = _run(
        capsys, ["explain", "--input-size", "3,4", "--kernel-size", "3", "--stride", "2,1", "--dilation", "1,2"]
    )
    assert status == 0
    expected = _torch(np.ones((3, 4)), np.arange(1.0, 10.0).reshape(3, 3), stride=(2, 1), dilation=(1, 2))
    assert expected.shape == (7, 8)
    np.testing.assert_array_equal(_printed_grid(out, "Output y (7×8)"), expected)


@pytest.mark.parametrize("ndim_args", [[], ["--ndim", "1"]], ids=["2d", "1d"])
def test_png_is_written(capsys, tmp_path, ndim_args):
    path = tmp_path / "explain.png"
    status, out, err = _run(capsys, CLASSIC + ndim_args + ["--png", str(path)])
    assert status == 0 and err == ""
    assert ("Output y (8)\n" if ndim_args else "Output y (8×8)\n") in out
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 20_000
    assert f"wrote {path}" in out


@pytest.mark.parametrize(
    "extra,argument",
    [
        (["--stride", "0"], "stride"),
        (["--input-size", "-3"], "input_size"),
        (["--output-padding", "2"], "output_padding"),
        (["--stride", "two"], "--stride"),
        (["--input-values", "1,2,x"], "--input-values"),
        (["--input-values", "1,2,3"], "input_values must have 16 values"),
        (["--kernel-values", "1,2"], "kernel_values must have 16 values"),
        (["--stride", "2,2,2"], "stride has 3 values"),
        (["--ndim", "1", "--stride", "2,2"], "stride"),
        (["--at", "8,0"], "outside the output"),
        (["--at", "1"], "at must have 2 indices"),
        (["--padding", "9"], "output size"),
        (["--gif", "never.gif", "--gif-frame-ms", "5"], "frame_ms must be between 20 and 60000 milliseconds, got 5"),
        (["--gif", "never.gif", "--gif-width", "50"], "width must be between 400 and 2000 pixels, got 50"),
        (["--gif", "never.gif", "--gif-frame-ms", "fast"], "--gif-frame-ms"),
        (["--gif", "never.gif", "--input-size", "13"], "input_size 13×13 has 169 values"),
        (["--png", "never.out"], "--png must name a .png file, got 'never.out'"),
        (["--gif", "never.png"], "--gif must name a .gif file, got 'never.png'"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(capsys, extra, argument):
    status, out, err = _run(capsys, CLASSIC + extra)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("jtconv explain: error: ")
    assert argument in err
    assert "Traceback" not in err
    assert not any(Path(name).exists() for name in ("never.gif", "never.out", "never.png"))


def test_gif_is_written_with_one_frame_per_input_value(capsys, tmp_path):
    path = tmp_path / "explain.gif"
    argv = [
        "explain",
        "--ndim",
        "1",
        "--input-size",
        "3",
        "--kernel-size",
        "3",
        "--stride",
        "2",
        "--padding",
        "1",
        "--output-padding",
        "1",
        "--at",
        "2",
        "--gif",
        str(path),
        "--gif-frame-ms",
        "250",
        "--gif-width",
        "480",
    ]
    status, out, err = _run(capsys, argv)
    assert status == 0 and err == ""
    assert "Output y (6)\n" in out and f"wrote {path} (6 frames)" in out
    with Image.open(path) as gif:
        assert gif.n_frames == 3 + 3 and gif.size[0] == 480
        durations = []
        for n in range(gif.n_frames):
            gif.seek(n)
            durations.append(gif.info["duration"])
    assert durations == [250] * 5 + [750]


BLOCK_AND_RUN = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # import raises ModuleNotFoundError, as when the package is not installed
from jtconv.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    "option,blocked,named",
    [
        ("--png", "matplotlib", "matplotlib"),
        ("--gif", "matplotlib", "matplotlib"),
        ("--gif", "PIL", "Pillow"),
        ("--png", "PIL", "Pillow"),  # matplotlib needs Pillow
    ],
)
def test_missing_plot_packages_give_the_install_hint(tmp_path, option, blocked, named):
    path = tmp_path / f"out{option.replace('--', '.')}"
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_AND_RUN, blocked, *CLASSIC, "--at", "0,1", option, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"jtconv explain: error: {option} needs {named}, which is not installed: pip install matplotlib Pillow"
    ]
    assert not path.exists()


def test_module_entry_point_runs_and_fails_cleanly():
    ok = subprocess.run(
        [sys.executable, "-m", "jtconv", *CLASSIC, "--at", "0,1"], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert "output: 8×8" in ok.stdout and "sum = 7 + 5 = 12" in ok.stdout

    bad = subprocess.run(
        [sys.executable, "-m", "jtconv", *CLASSIC, "--stride", "0"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "jtconv explain: error: stride must be >= 1 in every dimension, got (0, 0)"
    ]


def test_non_finite_values_are_refused(capsys):
    status, out, err = _run(capsys, ["explain", "--input-size", "2", "--kernel-size", "2", "--input-values", "1,nan"])
    assert status == 2 and out == ""
    assert "expected finite numbers, got '1,nan'" in err


def test_large_grids_and_many_copies_are_summarised(capsys):
    argv = ["explain", "--input-size", "9", "--kernel-size", "2", "--max-grid", "5", "--matrix"]
    status, out, err = _run(capsys, argv)
    assert status == 0 and err == ""
    assert "  … and 49 more copies" in out  # 81 copies, 32 listed
    assert "    (grid of 9×9 omitted: larger than --max-grid 5)" in out
    assert "    (grid of 10×10 omitted: larger than --max-grid 5)" in out
    assert "    (matrix of 81×100 omitted: more than 64 rows or columns)" in out


def test_1d_picture_is_omitted_past_max_grid(capsys):
    argv = ["explain", "--ndim", "1", "--input-size", "20", "--kernel-size", "3", "--max-grid", "8"]
    status, out, _ = _run(capsys, argv)
    assert status == 0
    assert "    (picture of 22 positions omitted: larger than --max-grid 8)" in out
    assert "one row per copy" not in out


@pytest.mark.parametrize(
    ("padding", "output_padding", "sentence"),
    [
        (
            0,
            1,
            "padding 0 crops nothing at the low end, output_padding 1 adds 1 position(s) past the full result "
            "(no kernel copy reaches there: zeros)",
        ),
        (
            1,
            2,
            "padding 1 crops 1 at the low end (position -1), output_padding 2 keeps the 1 high-end positions "
            "padding would crop and adds 1 position(s) past the full result",
        ),
    ],
)
def test_output_padding_past_the_crop_is_explained(padding, output_padding, sentence):
    result = explain(4, 2, stride=3, padding=padding, output_padding=output_padding, ndim=1)
    assert result.output[-1] == 0
    assert explain_command._crop_sentence(result, 0).startswith(sentence)


def test_at_a_position_no_tap_reaches(capsys):
    argv = ["explain", "--ndim", "1", "--input-size", "3", "--kernel-size", "3", "--stride", "3"]
    argv += ["--output-padding", "2", "--dilation", "2", "--at", "12"]
    status, out, _ = _run(capsys, argv)
    assert status == 0
    assert "y[12] = 0: the terms x[i]·w[t] with o = i·s − p + t·d\n" in out
    assert "  no (input, kernel tap) pair satisfies o = i·s − p + t·d here, so the value is 0" in out


@pytest.mark.parametrize("option", ["--png", "--gif"])
def test_unwritable_picture_exits_1(option, capsys, tmp_path):
    path = tmp_path / "no such directory" / f"picture.{option[2:]}"
    argv = ["explain", "--input-size", "2", "--kernel-size", "2", option, str(path)]
    status, out, err = _run(capsys, argv)
    assert status == 1
    assert "Output y (3×3)" in out  # the text is printed before the picture fails
    assert err.startswith(f"jtconv explain: error: {option} could not write {str(path)!r}: ")
    assert not path.exists()
