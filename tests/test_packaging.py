"""What the installed package carries: one version everywhere, the console script,
and ``py.typed`` so that users' type checkers read jtconv's annotations."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

import jtconv
from jtconv.cli import main
from jtconv.commands import REQUIREMENTS


def test_version_is_single_sourced():
    assert importlib.metadata.version("jtconv") == jtconv.__version__
    assert jtconv.__version__.count(".") >= 2


def test_cli_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"jtconv {jtconv.__version__}\n"


def test_console_script_runs_the_cli():
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="jtconv")
    assert script.value == "jtconv.cli:main"


def test_py_typed_ships_with_the_package():
    """Run against an installed wheel (``.ci/run``), this checks the wheel's contents."""
    assert (Path(jtconv.__file__).parent / "py.typed").is_file()


def test_dir_lists_the_public_names_the_lazy_ones_included():
    names = dir(jtconv)
    assert {"from_torch", "to_torch", "linen", "nnx", "state_dict", "conv_transpose2d"} <= set(names)
    assert set(jtconv.__all__) <= set(names) and names == sorted(names)
    assert [name for name in names if name.startswith("_")] == ["__version__"]
    assert all(getattr(jtconv, name) is not None for name in names)


def test_install_hints_ask_for_what_the_extras_require():
    extras = [r.split(";")[0].strip() for r in importlib.metadata.requires("jtconv") or []]
    names = {re.split("[=<>]", r)[0].lower() for r in extras}
    for requirement in REQUIREMENTS.values():
        assert requirement in extras if "==" in requirement else requirement.lower() in names
