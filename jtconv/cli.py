"""The ``jtconv`` command: one subcommand per module in :mod:`jtconv.commands`, each with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int`` (the exit status), imported only when its subcommand runs (so
``jtconv explain`` never imports torch)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from jtconv import __version__

COMMANDS: dict[str, str] = {
    "check": "jtconv.commands.check",
    "explain": "jtconv.commands.explain",
    "tune": "jtconv.commands.tune",
}


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``jtconv`` parser; with ``command``, only that subcommand's module is imported."""
    parser = _ArgumentParser(prog="jtconv", description="PyTorch-exact transposed convolution for JAX.")
    parser.add_argument("--version", action="version", version=f"jtconv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    for name, module_name in COMMANDS.items():
        if command in COMMANDS and name != command:
            sub.add_parser(name)
            continue
        module = importlib.import_module(module_name)
        parser_for_command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(parser_for_command)
        parser_for_command.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
