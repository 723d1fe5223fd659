"""The API reference (docs/api/*.md) covers every public name, and its directives resolve;
every table in docs/ has a header.

A name counts as covered when a ``::: path`` directive renders it: either the
directive's path imports to the very same object (``::: jtconv.interop.from_torch``
covers ``jtconv.from_torch``), or it renders the whole module (``::: jtconv.linen``
with no ``members:`` list, or one that names it). ``mkdocs build --strict`` (CI's
docs step) then checks that every directive renders.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "docs" / "api"
PUBLIC_MODULES = ["jtconv", "jtconv.linen", "jtconv.nnx", "jtconv.interop", "jtconv.onnx", "jtconv.testing"]

_DIRECTIVE = re.compile(r"^::: (?P<path>[\w.]+)[ \t]*\n(?P<options>(?:[ \t]+.*\n?)*)", re.MULTILINE)


def directives() -> list[tuple[str, list[str] | None, Path]]:
    """``(path, members or None, page)`` for every ``:::`` directive of the API pages."""
    found = []
    for page in sorted(API_DIR.glob("*.md")):
        for match in _DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            members = re.search(r"^\s+members:\s*\[([^\]]*)\]", match.group("options"), re.MULTILINE)
            listed = None if members is None else [m.strip().strip("'\"") for m in members.group(1).split(",")]
            found.append((match.group("path"), listed, page))
    return found


def resolve(path: str):
    """The object a dotted path names: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def test_the_api_pages_have_directives():
    assert len(directives()) >= len(PUBLIC_MODULES)


@pytest.mark.parametrize("path, members, page", directives(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_directive_resolves(path, members, page):
    obj = resolve(path)
    for name in members or []:
        assert hasattr(obj, name), f"{page.name}: ::: {path} lists member {name!r}, which it does not have"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_in_the_api_reference(module_name):
    module = importlib.import_module(module_name)
    rendered_ids = set()
    whole_modules: dict[str, list[str] | None] = {}
    for path, members, _ in directives():
        obj = resolve(path)
        rendered_ids.add(id(obj))
        if getattr(obj, "__name__", None) == path and hasattr(obj, "__all__"):
            whole_modules[path] = members
            rendered_ids.update(id(getattr(obj, name)) for name in (members or obj.__all__))
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if id(obj) in rendered_ids:
            continue
        if module_name in whole_modules and (whole_modules[module_name] is None or name in whole_modules[module_name]):
            continue
        missing.append(name)
    assert not missing, f"{module_name}.__all__ names missing from docs/api/*.md: {missing}"


def test_every_api_page_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in API_DIR.glob("*.md"):
        assert f"api/{page.name}" in config, f"docs/api/{page.name} is not in mkdocs.yml's nav"


def test_every_algorithm_name_is_in_the_functional_page():
    import jtconv

    page = (ROOT / "docs" / "functional.md").read_text(encoding="utf-8")
    missing = [name for name in ("auto", *jtconv.ALGORITHMS) if f'| `"{name}"` |' not in page]
    assert not missing, f"docs/functional.md's algorithm= table lacks {missing}"


def test_readme_links_point_into_the_repository():
    """Every relative link of README.md names a file of the repository."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = {link.split("#")[0] for link in re.findall(r"\]\(([^)]+)\)", readme) if "://" not in link}
    assert targets, "README.md has no relative links"
    missing = sorted(target for target in targets if target and not (ROOT / target).exists())
    assert not missing, f"README.md links to files that are not in the repository: {missing}"


# --- the griffe extension that turns the docstrings' reStructuredText markup into Markdown ---


@pytest.fixture(scope="module")
def docstrings():
    pytest.importorskip("griffe")
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_docstrings", ROOT / "docs" / "_ext" / "docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_roles_become_inline_code(docstrings):
    text = "See :func:`jtconv.conv_transpose`, :class:`~jtconv.lowering.plan.Plan` and :data:`ALGORITHMS`."
    assert docstrings.markdown_docstring(text) == "See `jtconv.conv_transpose`, `Plan` and `ALGORITHMS`."


def test_literal_block_markers_and_doctests(docstrings):
    text = (
        "Per dimension::\n\n    y = x\n\n>>> import jtconv\n"
        ">>> jtconv.output_size(4, 4, stride=2, padding=1)\n8\n\nEnd."
    )
    assert docstrings.markdown_docstring(text) == (
        "Per dimension:\n\n    y = x\n\n```pycon\n>>> import jtconv\n"
        ">>> jtconv.output_size(4, 4, stride=2, padding=1)\n8\n```\n\nEnd."
    )


def test_grouped_arguments_are_split(docstrings):
    text = "Args:\n  stride, padding: an int or\n    one per dimension.\n  ndim: 1 or 2."
    assert docstrings.markdown_docstring(text) == (
        "Args:\n  stride: an int or\n    one per dimension.\n"
        "  padding: an int or\n    one per dimension.\n  ndim: 1 or 2."
    )


def test_simple_tables_become_markdown_tables(docstrings):
    text = (
        "Kinds:\n\n"
        "====  =========\n"
        "kind  torch\n"
        "====  =========\n"
        "conv  ``weight``,\n"
        "      ``bias``\n"
        "lin   :class:`~a.B`\n"
        "====  =========\n\n"
        "After."
    )
    assert docstrings.markdown_docstring(text) == (
        "Kinds:\n\n| kind | torch |\n| --- | --- |\n| conv | ``weight``, ``bias`` |\n| lin | `B` |\n\n\nAfter."
    )


@pytest.mark.parametrize("page", sorted((ROOT / "docs").rglob("*.md")), ids=lambda p: p.name)
def test_every_table_has_a_header(page):
    lines = page.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines[1:], start=2):
        if re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", line.strip()):
            header = [cell.strip() for cell in lines[number - 2].strip().strip("|").split("|")]
            assert all(header), f"{page.name}:{number - 1}: a table header cell is empty: {lines[number - 2]!r}"
