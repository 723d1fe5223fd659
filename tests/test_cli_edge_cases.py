"""jtconv.cli run as a script (``python -m jtconv.cli``)."""

from __future__ import annotations

import runpy
import sys

import pytest


def test_cli_module_as_main_exits_with_the_command_status(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["jtconv", "explain", "--input-size", "2", "--kernel-size", "2"])
    monkeypatch.delitem(sys.modules, "jtconv.cli", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("jtconv.cli", run_name="__main__")
    assert exit_info.value.code == 0
    assert "Output y (3×3)" in capsys.readouterr().out
