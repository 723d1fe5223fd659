"""Subcommands of the ``jtconv`` console script (see :mod:`jtconv.cli`), and the install hint they share."""

from __future__ import annotations

import importlib

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
