"""Wisdom: measured plans kept across processes, one file per entry as in jax's persistent compilation cache.

Each file of :func:`wisdom_dir` is named by a hash of its *environment* (:func:`environment_key`) and *layer key*,
is replaced atomically, and holds ``{"format": "jtconv-wisdom", "version": 2, "environment": {...}, "key": ...,
"entry": {...}}``. Unusable files are ignored (reported once per process); entries that cannot be written stay in
memory for the rest of the process.
"""

import copy
import functools
import hashlib
import json
import logging
import os
import pathlib
import platform
import sys
import tempfile
from collections.abc import Mapping
from typing import Any, TypeGuard

import jax
import jaxlib
import platformdirs

from jtconv.version import __version__

FORMAT_NAME = "jtconv-wisdom"
FORMAT_VERSION = 2

_log = logging.getLogger("jtconv")
_unsaved: dict[pathlib.Path, dict[str, Any]] = {}
_reported: set[tuple[str, pathlib.Path]] = set()


def wisdom_dir() -> pathlib.Path:
    """``wisdom-v2`` in ``$JTCONV_CACHE_DIR`` if set and non-empty (``~`` expanded), else in
    ``platformdirs.user_cache_dir("jtconv")``; read on every call, created by the first write."""
    override = os.environ.get("JTCONV_CACHE_DIR", "")
    root = pathlib.Path(override).expanduser() if override else platformdirs.user_cache_path("jtconv", appauthor=False)
    return root / f"wisdom-v{FORMAT_VERSION}"


def environment_key(device=None) -> dict[str, str | int]:
    """What about ``device`` (default: JAX's first) and this process can change which plan is fastest:
    ``backend`` (``cpu``, ``gpu``, ``tpu``), ``device_kind`` and ``device_count`` of its platform, ``cpu_count``
    (cores this process may use), ``os``, ``machine``, and the ``jax``, ``jaxlib`` and ``jtconv`` versions."""
    return dict(_environment(jax.devices()[0] if device is None else device))


@functools.cache
def _environment(device) -> dict[str, str | int]:
    return {
        "backend": str(device.platform),
        "device_kind": str(device.device_kind),
        "device_count": len(jax.devices(device.platform)),
        "cpu_count": _usable_cpu_count(),
        "os": sys.platform,
        "machine": platform.machine(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "jtconv": __version__,
    }


def _usable_cpu_count() -> int:
    if hasattr(os, "process_cpu_count"):  # Python >= 3.13
        return os.process_cpu_count() or 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def environment_id(environment: Mapping[str, str | int] | None = None) -> str:
    """16 hex digits of the SHA-256 of an environment's sorted, compact JSON (default: :func:`environment_key`)."""
    env = environment_key() if environment is None else environment
    canonical = json.dumps(dict(env), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def lookup(key: str, device=None) -> dict[str, Any] | None:
    """A copy of the entry recorded under ``key`` for ``device``'s environment (default: JAX's first), or None."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    path = _file(environment_key(device), key)
    return (copy.deepcopy(_unsaved.get(path)) or _read(path) or {}).get("entry")


def lookup_backend(key: str, backend: str) -> dict[str, Any] | None:
    """An entry recorded under layer key ``key`` on any device of ``backend`` (``gpu``, ``tpu``, …), for
    programs compiled for a platform without local devices; the environment with the smallest id wins."""
    found = [d for d in _documents() if d["key"] == key and d["environment"].get("backend") == backend]
    return min(found, key=lambda d: environment_id(d["environment"]))["entry"] if found else None


def record(key: str, entry: Mapping[str, Any], device=None) -> None:
    """Store ``entry`` under layer key ``key`` for ``device``'s environment (default: JAX's first device)
    and write its file now, as its strict-JSON round trip (tuples become lists), what a later process reads.

    Raises:
      TypeError: ``key`` is not a str, or ``entry`` is not a mapping or holds a value JSON cannot represent.
      ValueError: ``key`` is empty, or ``entry`` holds NaN or infinity.
    """
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    if not key:
        raise ValueError("key must be a non-empty string")
    if not isinstance(entry, Mapping):
        raise TypeError(f"entry must be a dict (a JSON object), got {type(entry).__name__}")
    try:
        text = json.dumps(dict(entry), allow_nan=False)
    except (TypeError, ValueError) as error:  # NaN and infinity raise ValueError, other values TypeError
        raise type(error)(f"entry must be strict JSON: {error}") from None
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "environment": environment_key(device), "key": key}
    _store({**header, "entry": json.loads(text)})


def export_wisdom(path: str | os.PathLike[str]) -> int:
    """Write every stored entry of every environment (also those kept in memory) to ``path`` as one
    JSON list of entry documents; return how many. Raises OSError when ``path`` cannot be written."""
    documents = _documents()
    _write_atomically(pathlib.Path(path), json.dumps(documents, indent=1) + "\n")
    return len(documents)


def import_wisdom(path: str | os.PathLike[str]) -> int:
    """Store the entries of a file :func:`export_wisdom` wrote (replacing those of the same environment and
    layer key); return how many. Malformed items are skipped, and a file that is not a JSON list imports
    nothing, with a warning. Raises OSError (FileNotFoundError) when ``path`` cannot be read."""
    items = _load(pathlib.Path(path))
    if isinstance(items, OSError):
        raise items
    if not isinstance(items, list):
        reason = items if isinstance(items, Exception) else "it is not a JSON list"
        _log.warning("jtconv: not importing wisdom from %s: %s", path, reason)
        return 0
    documents = [item for item in items if _is_document(item)]
    if len(documents) < len(items):
        _log.warning("jtconv: skipped %d malformed wisdom entries in %s", len(items) - len(documents), path)
    for document in documents:
        _store(document)
    return len(documents)


def forget_wisdom() -> None:
    """Delete every stored entry, on disk and in memory, and forget which files were reported."""
    for path in wisdom_dir().glob("*.json"):
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            _log.warning("jtconv: could not remove the wisdom file %s: %s", path, error)
    _unsaved.clear()
    _reported.clear()


def _file(environment: Mapping[str, str | int], key: str) -> pathlib.Path:
    return wisdom_dir() / f"{hashlib.sha256(json.dumps([environment_id(environment), key]).encode()).hexdigest()}.json"


def _store(document: dict[str, Any]) -> None:
    path = _file(document["environment"], document["key"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, json.dumps(document, indent=1) + "\n")
        _unsaved.pop(path, None)
    except OSError as error:
        _warn_once("jtconv: cannot write wisdom to %s: %s; kept in memory for this process", path.parent, error)
        _unsaved[path] = document


def _read(path: pathlib.Path) -> dict[str, Any] | None:
    """The valid entry document in ``path`` if named for its environment and key, else None (reported once)."""
    document = _load(path)
    if _is_document(document) and _file(document["environment"], document["key"]).name == path.name:
        return document
    if not isinstance(document, (FileNotFoundError, NotADirectoryError)):
        reason = document if isinstance(document, Exception) else "wrong format, version, environment or key"
        _warn_once("jtconv: ignoring the wisdom file %s: %s", path, reason)
    return None


def _load(path: pathlib.Path) -> object:
    """The strict JSON value (UTF-8, no NaN or infinity) in ``path``, or the error that says why there is none."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=int)  # int("NaN") raises ValueError
    except (OSError, ValueError, RecursionError) as error:
        return error


def _documents() -> list[dict[str, Any]]:
    """Every valid entry document of the wisdom directory and of this process's memory, by file name."""
    directory = wisdom_dir()
    found = {path: document for path in directory.glob("*.json") if (document := _read(path)) is not None}
    found.update(copy.deepcopy([(path, doc) for path, doc in list(_unsaved.items()) if path.parent == directory]))
    return [found[path] for path in sorted(found)]


def _is_document(data: object) -> TypeGuard[dict[str, Any]]:
    types = {"format": str, "version": int, "environment": dict, "key": str, "entry": dict}
    if not (isinstance(data, dict) and all(type(data.get(name)) is kind for name, kind in types.items())):
        return False
    environment = data["environment"]
    valid = environment and data["key"] and all(type(value) in (str, int) for value in environment.values())
    return bool(valid) and (data["format"], data["version"]) == (FORMAT_NAME, FORMAT_VERSION)


def _warn_once(message: str, path: pathlib.Path, reason: object) -> None:
    if (message, path) not in _reported:
        _reported.add((message, path))
        _log.warning(message, path, reason)


def _write_atomically(path: pathlib.Path, text: str) -> None:
    """Replace ``path`` by a file holding ``text``, written beside it and renamed over it."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise
