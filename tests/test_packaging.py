"""What the installed package carries: one version everywhere, the console script,
and ``py.typed`` so that users' type checkers read jtconv's annotations."""

from __future__ import annotations

import ast
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


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The jtconv modules ``module`` imports (inside functions too), with the packages above each."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    with_parents = {".".join(m.split(".")[:i]) for m in found & modules for i in range(1, m.count(".") + 2)}
    return {m for m in with_parents if m in modules and m != module and not module.startswith(m + ".")}


def test_no_import_cycle_among_the_modules_even_inside_functions():
    package = Path(jtconv.__file__).parent
    paths = {".".join(p.relative_to(package.parent).with_suffix("").parts): p for p in package.rglob("*.py")}
    paths = {name.removesuffix(".__init__"): path for name, path in paths.items()}
    graph = {name: _imports(path, name, set(paths)) for name, path in paths.items()}
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            assert state.get(target) != "open", "import cycle: " + " -> ".join(trail + [name, target])
            if target not in state:
                visit(target, trail + [name])
        state[name] = "done"
        order.append(name)

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert len(order) == len(graph)
