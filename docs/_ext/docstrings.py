"""Griffe extension for the API reference: jtconv's docstrings as mkdocstrings renders them.

jtconv's docstrings are Google style with reStructuredText inline markup.
This extension, loaded by ``mkdocs.yml``, makes them render as Markdown:

* a function a module builds at import time (``conv_transpose2d =
  _fixed_rank(2)``) is documented from the runtime object, so it shows its
  signature and docstring instead of an attribute;
* ``:func:`name``` and the other Sphinx roles become inline code
  (``~a.b.c`` shows ``c``), and a paragraph's closing ``::`` a colon;
* ``a, b: meaning`` in an ``Args:`` section becomes one entry per name;
* a reStructuredText simple table becomes a Markdown table;
* a run of ``>>>`` lines and their output becomes a ``pycon`` code block.
"""

from __future__ import annotations

import importlib
import inspect
import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|data|attr|obj|exc|const|term|ref):`(~?)([^`]+)`")


def _role_to_code(match: re.Match) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _doctest_blocks(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].lstrip().startswith(">>>"):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].strip())
                i += 1
            out += [f"{indent}```pycon", *(indent + line for line in block), f"{indent}```"]
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


_GROUPED_ARGUMENTS = re.compile(r"^(\s+)(\w+(?:, \w+)+): (.*)$")


def _split_grouped_arguments(text: str) -> str:
    """``a, b: meaning`` in an ``Args:`` section becomes one entry per name."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        match = _GROUPED_ARGUMENTS.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, names, first = match.groups()
        i += 1
        more = []
        while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > len(indent):
            more.append(lines[i])
            i += 1
        for name in names.split(", "):
            out += [f"{indent}{name}: {first}", *more]
    return "\n".join(out)


_TABLE_BORDER = re.compile(r"^\s*=+(?: +=+)+\s*$")


def _columns(border: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"=+", border)]


def _table_rows(lines: list[str], columns: list[tuple[int, int]]) -> list[list[str]]:
    """Rows of a simple table's body; a line with an empty first column continues the row above."""
    rows: list[list[str]] = []
    for line in lines:
        starts = [start for start, _ in columns] + [None]
        cells = [line[starts[j] : starts[j + 1]].strip() for j in range(len(columns))]
        if rows and not cells[0]:
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    return rows


def _simple_tables(text: str) -> str:
    """reStructuredText simple tables (``===  ===`` borders, one header row) become Markdown tables."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        if not _TABLE_BORDER.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        columns = _columns(lines[i][len(indent) :])
        sections: list[list[str]] = [[]]
        i += 1
        while i < len(lines) and len(sections) < 3:
            if _TABLE_BORDER.match(lines[i]):
                sections.append([])
            else:
                sections[-1].append(lines[i][len(indent) :])
            i += 1
        header, body = _table_rows(sections[0], columns), _table_rows(sections[1] if len(sections) > 1 else [], columns)
        for row in header + [["---"] * len(columns)] + body:
            out.append(indent + "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        out.append("")
    return "\n".join(out)


def markdown_docstring(text: str) -> str:
    """``text`` with Sphinx roles, ``::`` paragraph ends, grouped ``Args:``
    entries and doctest runs turned into what mkdocstrings renders."""
    text = _split_grouped_arguments(_ROLE.sub(_role_to_code, _simple_tables(text)))
    text = re.sub(r"(\S)::[ \t]*$", r"\1:", text, flags=re.MULTILINE)
    text = re.sub(r"^([ \t]*)::[ \t]*$", "", text, flags=re.MULTILINE)
    return _doctest_blocks(text)


class MarkdownDocstrings(griffe.Extension):
    """Runtime-built functions documented from the runtime object; docstrings as Markdown."""

    def on_module_members(self, *, mod: griffe.Module, **kwargs) -> None:
        inspected = None
        for name, member in list(mod.members.items()):
            if member.is_alias or not member.is_attribute or name.startswith("_"):
                continue
            try:
                value = getattr(importlib.import_module(mod.path), name)
            except Exception:  # a module that cannot be imported keeps its static view
                continue
            if inspect.isfunction(value) and value.__module__ == mod.path:
                inspected = inspected or griffe.inspect(mod.path)
                function = inspected[name]
                if function.docstring is not None:
                    function.docstring.value = markdown_docstring(function.docstring.value)
                mod.set_member(name, function)

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
