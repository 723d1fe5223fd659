"""``jtconv explain``: the text sections and errors the main CLI tests do not reach
(omitted grids, long copy lists, output_padding past the crop, unwritable files)."""

from __future__ import annotations

import pytest

from jtconv.cli import main
from jtconv.commands import explain as explain_command
from jtconv.explain import explain


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


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
