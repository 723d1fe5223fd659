"""Subcommands of the ``jtconv`` console script (see :mod:`jtconv.cli`), and what they share: the install hint of
an optional module and a console printing through rich when it is installed, plain text otherwise."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence

# The pip requirement of each optional module, where it differs from the module's name.
REQUIREMENTS = {"PIL": "Pillow", "torch": "torch==2.13.0"}


def missing_module_hint(*modules: str) -> str | None:
    """None when every one of ``modules`` imports; else ``"NAME, which is not installed: pip install ..."``
    for the first that does not, installing all of them by their package names (so the line works from a
    clone as well as from an installed jtconv)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            missing = (error.name or module).split(".")[0]
            name = REQUIREMENTS.get(missing, missing).split("==")[0]
            requirements = " ".join(dict.fromkeys(REQUIREMENTS.get(m, m) for m in (*modules, missing)))
            return f"{name}, which is not installed: pip install {requirements}"
    return None


class Console:
    """Lines, tables and progress: through rich when it is installed (160 columns wide when not on a terminal),
    plain text otherwise."""

    def __init__(self) -> None:
        try:
            import rich.console
        except ImportError:
            self.rich = None
        else:
            self.rich = rich.console.Console()
            if not self.rich.is_terminal:
                self.rich = rich.console.Console(width=160)

    def line(self, text: str) -> None:
        if self.rich is None:
            print(text)
        else:
            self.rich.print(text, highlight=False, markup=False, soft_wrap=True)

    def table(self, title: str, columns: Sequence[str], rows: list[list[str]]) -> None:
        """``rows`` under ``columns``; with rich, a row whose last cell is ``FAIL`` in red."""
        if self.rich is None:
            widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
            print(title)
            for cells in (columns, *rows):
                print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
            return
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold")
        for cells in rows:
            table.add_row(*cells, style="red" if cells[-1] == "FAIL" else None)
        self.rich.print(table)

    @contextlib.contextmanager
    def progress(self, total: int | None, description: str, transient: bool = False) -> Iterator[Callable[[int], None]]:
        """``advance(n)``, counting ``n`` more of ``total`` (``None``: unknown) on a bar, or without rich in a line
        on stderr at every tenth of ``total`` (at every step when it is unknown)."""
        if self.rich is None:
            done, shown = 0, -1

            def advance(n: int) -> None:
                nonlocal done, shown
                done += n
                tenth = done if total is None else 10 * done // max(total, 1)
                if tenth != shown:
                    shown = tenth
                    print(f"{description}: {done}/{'?' if total is None else total}", file=sys.stderr)

            yield advance
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.rich, transient=transient) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task, n)
