"""Where jtconv keeps files it can rebuild: the per-user cache directory.

``$JTCONV_CACHE_DIR`` wins when set (``~`` is expanded). Otherwise the
platform's user cache directory, the same places ``platformdirs`` picks:

* Linux and the BSDs: ``$XDG_CACHE_HOME/jtconv``, or ``~/.cache/jtconv`` when
  ``XDG_CACHE_HOME`` is unset, empty or relative (the XDG Base Directory
  specification says to ignore relative values);
* macOS: ``~/Library/Caches/jtconv``;
* Windows: ``%LOCALAPPDATA%\\jtconv\\Cache``, or
  ``~\\AppData\\Local\\jtconv\\Cache`` when ``LOCALAPPDATA`` is unset.

Nothing here creates the directory or touches the disk: callers create it
when they first write, and cope with it being unwritable.
"""

from __future__ import annotations

import os
import pathlib
import sys

CACHE_DIR_VARIABLE = "JTCONV_CACHE_DIR"
"""The environment variable that moves jtconv's cache directory."""

APP_NAME = "jtconv"


def cache_dir() -> pathlib.Path:
    """The directory for jtconv's cache files, read from the environment on every call.

    Returns ``$JTCONV_CACHE_DIR`` when it is set and non-empty, else the
    platform's user cache directory for ``jtconv`` (see the module docstring).
    The directory may not exist yet.
    """
    override = os.environ.get(CACHE_DIR_VARIABLE, "")
    if override:
        return pathlib.Path(override).expanduser()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA", "")
        root = pathlib.Path(local) if local else pathlib.Path.home() / "AppData" / "Local"
        return root / APP_NAME / "Cache"
    if sys.platform == "darwin":
        return pathlib.Path.home() / "Library" / "Caches" / APP_NAME
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = pathlib.Path(xdg) if xdg and os.path.isabs(xdg) else pathlib.Path.home() / ".cache"
    return root / APP_NAME
