"""The ``jtconv`` console script (:mod:`jtconv.cli`) and what its commands share (:mod:`jtconv.commands`): the
console printing through rich or, without it, plain text."""

from __future__ import annotations

import runpy
import sys

import pytest

from jtconv.commands import Console


def test_cli_module_as_main_exits_with_the_command_status(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["jtconv", "explain", "--input-size", "2", "--kernel-size", "2"])
    monkeypatch.delitem(sys.modules, "jtconv.cli", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("jtconv.cli", run_name="__main__")
    assert exit_info.value.code == 0
    assert "Output y (3×3)" in capsys.readouterr().out


@pytest.fixture
def plain(monkeypatch) -> Console:
    monkeypatch.setitem(sys.modules, "rich.console", None)  # `import rich.console` raises ImportError
    console = Console()
    assert console.rich is None
    return console


def test_plain_console_prints_lines_and_padded_tables(plain, capsys):
    plain.line("hello")
    plain.table("numbers", ("name", "value"), [["one", "1"], ["three", "333333"]])
    assert capsys.readouterr().out.splitlines() == [
        "hello",
        "numbers",
        "name   value ",
        "one    1     ",
        "three  333333",
    ]


def test_plain_progress_reports_every_tenth_on_stderr(plain, capsys):
    with plain.progress(20, "checking") as advance:
        for _ in range(20):
            advance(1)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == ["checking: 1/20"] + [f"checking: {n}/20" for n in range(2, 21, 2)]
    with plain.progress(None, "measuring") as advance:
        advance(1)
        advance(2)
    assert capsys.readouterr().err == "measuring: 1/?\nmeasuring: 3/?\n"


def test_rich_console_on_a_terminal_keeps_its_width(monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "97")
    console = Console()
    assert console.rich.is_terminal and console.rich.width == 97
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    assert Console().rich.width == 160


def test_rich_progress_counts_and_stops_when_the_block_ends(monkeypatch, capsys):
    import rich.progress

    stopped = []
    original = rich.progress.Progress.stop

    def stop(self):
        stopped.append(self)
        original(self)

    monkeypatch.setattr(rich.progress.Progress, "stop", stop)
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    with Console().progress(2, "two") as advance:
        advance(1)
        advance(1)
        assert stopped == []
    assert len(stopped) == 1 and stopped[0].tasks[0].completed == 2
    assert "two ━" in capsys.readouterr().out  # off a terminal, the finished bar is printed once
    with pytest.raises(KeyError), Console().progress(None, "measuring", transient=True):
        raise KeyError
    assert len(stopped) == 2 and capsys.readouterr().out.strip() == ""  # stopped on an error too; transient: no bar


def test_rich_table_marks_failures_red(monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    console = Console()
    printed = []
    monkeypatch.setattr(console.rich, "print", printed.append)
    console.table("t", ("a", "result"), [["x", "pass"], ["y", "FAIL"]])
    (table,) = printed
    assert table.title == "t" and [row.style for row in table.rows] == [None, "red"]
