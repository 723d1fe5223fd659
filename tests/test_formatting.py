"""jtconv.formatting: the one number, shape and parameter formatter of the commands and pictures."""

from __future__ import annotations

from jtconv.formatting import format_number, format_param, format_shape


def test_numbers_integers_without_a_point_else_four_significant_digits():
    values = (3.0, -0.0, 2.5, 1 / 3, -2.0 / 3, 123456789.0, 1e15, -3.5e-7)
    assert [format_number(v) for v in values] == [
        "3",
        "0",
        "2.5",
        "0.3333",
        "-0.6667",
        "123456789",
        "1e+15",
        "-3.5e-07",
    ]


def test_shapes_and_per_dimension_parameters():
    assert format_shape((4, 5)) == "4×5" and format_shape((8,)) == "8"
    assert format_param((2, 2)) == "2" and format_param((2, 3)) == "2,3" and format_param([0]) == "0"
