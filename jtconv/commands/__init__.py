"""Subcommands of the ``jtconv`` console script (see :mod:`jtconv.cli`)."""
