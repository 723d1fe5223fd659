"""Wisdom: measured plans remembered across processes, in one JSON file per user.

A measured plan is only valid for the machine and software that measured it,
so every entry is filed under an *environment*: the dict
:func:`environment_key` returns (backend, device kind, device count, usable
CPU cores, OS, CPU architecture, jax / jaxlib / jtconv versions). Entries are
looked up by the current environment and a *layer key*, a string the planner
builds from everything else that changes the answer (geometry, batch, dtype,
precision). :func:`lookup` only ever returns entries of the current
environment; the others stay in the file untouched.

File format (``cache_dir() / "wisdom-v1.json"``; strict JSON, UTF-8)::

    {
      "format": "jtconv-wisdom",
      "version": 1,
      "environments": {
        "<environment id>": {
          "environment": {"backend": "cpu", "device_kind": "cpu", ...},
          "entries": {"<layer key>": {...one JSON object per layer...}}
        }
      }
    }

The environment id is :func:`environment_id` of the group's
``"environment"``: the first 16 hex digits of the SHA-256 of its canonical
JSON. A reader recomputes it, so a group is found by its environment, never
by its label.

Reading never trusts the file. A file that is not UTF-8 JSON, has another
``format`` or ``version``, or the wrong structure at the top is ignored as a
whole; a group whose environment is not a dict of strings and integers, and an
entry that is not a JSON object, are dropped one by one. Either is reported
once per file and process on the ``jtconv`` logger at WARNING, and the next
write replaces the file with valid content. A file that cannot be read or
written is also reported once; entries are then kept in memory for the rest of
the process. No content of the file can raise out of this module.

Writes are atomic and lose no one's entries. Every write takes an exclusive
lock on the sibling file ``wisdom-v1.json.lock`` (``fcntl.flock`` on POSIX,
``msvcrt.locking`` on Windows), re-reads the file, merges the new entries into
what is there, writes the result to a temporary file in the same directory,
``fsync``\\ s it and ``os.replace``\\ s it over the old one. A lock that cannot be
taken within :data:`LOCK_TIMEOUT_S` (a stuck process, a file system without
locks) is reported once and the write goes ahead without it: the file is still
never half-written, but an entry another process writes at the same instant
may be lost. Reads take no lock: a reader sees either the old or the new file.

Within a process the store is a dict behind one ``threading.RLock``. The file
is read on the first use in a process, and again when a lookup misses and the
file changed since (another process recorded something), so a lookup that hits
costs no file access.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import logging
import os
import pathlib
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeGuard, Union

from jtconv.cache_dir import cache_dir

FORMAT_NAME = "jtconv-wisdom"
FORMAT_VERSION = 1
WISDOM_FILENAME = f"wisdom-v{FORMAT_VERSION}.json"

MAX_FILE_BYTES = 64 * 2**20
"""A wisdom file larger than this is rejected unread (entries are a few hundred bytes each)."""

LOCK_TIMEOUT_S = 10.0
"""How long a write waits for another process's lock before writing without it."""

_log = logging.getLogger("jtconv")

EnvironmentKey = dict[str, str | int]
Entry = dict[str, Any]
PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass
class _Group:
    """The entries of one environment."""

    environment: EnvironmentKey
    entries: dict[str, Entry]


Groups = dict[str, _Group]


class _Rejected(Exception):
    """A wisdom document unusable as a whole; the message says why."""


def wisdom_path() -> pathlib.Path:
    """The wisdom file: ``cache_dir() / "wisdom-v1.json"`` (the name carries the format version)."""
    return cache_dir() / WISDOM_FILENAME


def environment_key(device=None) -> EnvironmentKey:
    """Everything about a device and this process that can change which plan is fastest.

    ``backend`` (the device's platform: ``cpu``, ``gpu``, ``tpu``), ``device_kind``
    and ``device_count`` of its platform's devices, ``cpu_count`` (the cores this
    process may run on), ``os`` (``sys.platform``), ``machine``
    (``platform.machine()``), and the ``jax``, ``jaxlib`` and ``jtconv``
    versions. ``device`` defaults to JAX's first default device; the value is
    computed once per device.
    """
    import jax

    return dict(_environment(jax.devices()[0] if device is None else device))


@functools.cache
def _environment(device) -> EnvironmentKey:
    import jax
    import jaxlib

    from jtconv.version import __version__

    return {
        "backend": str(device.platform),
        "device_kind": str(device.device_kind),
        "device_count": len(jax.devices(device.platform)),
        "cpu_count": _usable_cpu_count(),
        "os": sys.platform,
        "machine": platform.machine(),
        "jax": jax.__version__,
        "jaxlib": str(getattr(jaxlib, "__version__", "unknown")),
        "jtconv": __version__,
    }


def _usable_cpu_count() -> int:
    process_cpu_count = getattr(os, "process_cpu_count", None)
    if process_cpu_count is not None:
        return int(process_cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def environment_id(environment: Mapping[str, str | int] | None = None) -> str:
    """The label of an environment's group: 16 hex digits of the SHA-256 of its sorted, compact JSON.

    ``environment`` defaults to :func:`environment_key`.
    """
    env = environment_key() if environment is None else environment
    canonical = json.dumps(dict(env), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def lookup(key: str, device=None) -> Entry | None:
    """The entry recorded under layer key ``key`` for ``device``'s environment
    (default: JAX's default device), or None.

    Returns a copy: changing it does not change the store.
    """
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    return _STORE.lookup(environment_id(environment_key(device)), key)


def lookup_backend(key: str, backend: str) -> Entry | None:
    """An entry recorded under layer key ``key`` on any device of ``backend``
    (``gpu``, ``tpu``, …), for programs compiled for a platform this process
    has no devices of; the environment with the smallest id wins, so the
    choice does not depend on the order entries were recorded in."""
    for _, group in sorted(_STORE.snapshot().items()):
        if group.environment.get("backend") == backend and key in group.entries:
            return copy.deepcopy(group.entries[key])
    return None


def record(key: str, entry: Mapping[str, Any], device=None) -> None:
    """Store ``entry`` under layer key ``key`` for ``device``'s environment
    (default: JAX's default device) and write it to disk now.

    ``entry`` must be a JSON object: str keys, and values that strict JSON can
    hold (no NaN or infinity). It is stored as its JSON round trip (tuples
    become lists, integer keys strings), exactly what a later process reads back. An unwritable
    cache is reported once and the entry kept in memory.

    Raises:
      TypeError: ``key`` is not a str, or ``entry`` is not a mapping or holds
        a value JSON cannot represent.
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
    except ValueError as error:
        raise ValueError(f"entry must hold only finite numbers (strict JSON): {error}") from None
    except TypeError as error:
        raise TypeError(f"entry must be JSON-serialisable: {error}") from None
    environment = environment_key(device)
    _STORE.record(environment_id(environment), environment, {key: json.loads(text)})


def export_wisdom(path: PathLike) -> int:
    """Write every stored entry, of every environment, to the wisdom file ``path``; return how many.

    The file has the format of the cache file (see the module docstring) and is
    written atomically. It includes entries of other environments found in the
    cache, and entries this process could not write to an unwritable cache.
    :func:`import_wisdom` on another machine uses those of its own environment.

    Raises:
      OSError: ``path`` cannot be written (its directory must exist).
    """
    groups = _STORE.snapshot()
    target = pathlib.Path(path)
    _atomic_write(target, _document(groups))
    return _count(groups)


def import_wisdom(path: PathLike) -> int:
    """Merge the entries of the wisdom file ``path`` into the cache; return how many were imported.

    An imported entry replaces a stored one with the same environment and
    layer key. A file with unusable content is reported at WARNING and
    imports nothing (returns 0); malformed entries are skipped one by one.

    Raises:
      FileNotFoundError: there is no file at ``path``.
      OSError: ``path`` cannot be read.
    """
    source = pathlib.Path(path)
    try:
        groups, dropped = _parse(_read_text(source))
    except _Rejected as reason:
        _log.warning("jtconv: not importing wisdom from %s: %s", source, reason)
        return 0
    if dropped:
        _log.warning("jtconv: skipped %d malformed wisdom entries in %s", dropped, source)
    for group_id, group in groups.items():
        _STORE.record(group_id, group.environment, group.entries)
    return _count(groups)


def forget_wisdom() -> None:
    """Delete every stored entry, in memory and on disk (the wisdom file is removed).

    The lock file stays: removing it could let two writers hold different
    locks. Also resets which problems were already reported.
    """
    _STORE.forget()


class _Store:
    """The process's view of the wisdom file, plus entries it has not managed to write."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._path: pathlib.Path | None = None
        self._groups: Groups = {}
        self._unsaved: Groups = {}
        self._stamp: tuple[int, int, int] | None = None
        self._reported: set[tuple[str, str]] = set()

    def lookup(self, group_id: str, key: str) -> Entry | None:
        with self._lock:
            self._follow_path()
            entry = self._find(group_id, key)
            if entry is None and _stamp(self._current_path()) != self._stamp:
                self._load()
                entry = self._find(group_id, key)
            return copy.deepcopy(entry)

    def record(self, group_id: str, environment: EnvironmentKey, entries: dict[str, Entry]) -> None:
        update = {group_id: _Group(dict(environment), dict(entries))}
        with self._lock:
            self._follow_path()
            self._groups = _merge(self._groups, update)
            self._unsaved = _merge(self._unsaved, update)
            self._save()

    def snapshot(self) -> Groups:
        with self._lock:
            self._follow_path()
            if _stamp(self._current_path()) != self._stamp:
                self._load()
            return _merge({}, self._groups)

    def forget(self) -> None:
        with self._lock:
            path = wisdom_path()
            try:
                with _locked(path):
                    path.unlink()
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as error:
                _log.warning("jtconv: could not remove the wisdom file %s: %s", path, error)
            self._path = None
            self._groups, self._unsaved, self._stamp = {}, {}, None
            self._reported.clear()

    def _current_path(self) -> pathlib.Path:
        assert self._path is not None
        return self._path

    def _follow_path(self) -> None:
        """Load the file on first use, and start over when JTCONV_CACHE_DIR points elsewhere."""
        path = wisdom_path()
        if path != self._path:
            self._path = path
            self._groups, self._unsaved, self._stamp = {}, {}, None
            self._load()

    def _find(self, group_id: str, key: str) -> Entry | None:
        group = self._groups.get(group_id)
        return None if group is None else group.entries.get(key)

    def _load(self) -> None:
        path = self._current_path()
        self._stamp = _stamp(path)
        self._groups = _merge(self._read_or_report(path), self._unsaved)

    def _read_or_report(self, path: pathlib.Path) -> Groups:
        """The valid groups of the file at ``path``; {} (and one report) when it is missing, bad or unreadable."""
        try:
            groups, dropped = _parse(_read_text(path))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except _Rejected as reason:
            message = "jtconv: ignoring the wisdom file %s: %s; it is replaced on the next write"
            self._report_once("rejected", path, message, path, reason)
            return {}
        except OSError as error:
            self._report_once("unreadable", path, "jtconv: cannot read the wisdom file %s: %s", path, error)
            return {}
        if dropped:
            message = "jtconv: dropped %s malformed entries of the wisdom file %s"
            self._report_once("dropped", path, message, dropped, path)
        return groups

    def _save(self) -> None:
        path = self._current_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(path, on_timeout=lambda: self._report_lock_timeout(path)):
                merged = _merge(self._read_or_report(path), self._unsaved)
                _atomic_write(path, _document(merged))
                self._stamp = _stamp(path)
        except OSError as error:
            self._report_once(
                "unwritable",
                path,
                "jtconv: cannot write the wisdom file %s: %s; measured plans are kept in memory for this process",
                path,
                error,
            )
            return
        self._groups, self._unsaved = merged, {}

    def _report_lock_timeout(self, path: pathlib.Path) -> None:
        self._report_once(
            "unlocked",
            path,
            "jtconv: could not lock %s (held elsewhere for over %s s, or the file system has no locks); "
            "writing the wisdom file without the lock",
            path.with_name(path.name + ".lock"),
            LOCK_TIMEOUT_S,
        )

    def _report_once(self, kind: str, path: pathlib.Path, message: str, *args: object) -> None:
        """Log ``message % args`` at WARNING unless a problem of this kind was already reported for ``path``."""
        if (kind, str(path)) in self._reported:
            return
        self._reported.add((kind, str(path)))
        _log.warning(message, *args)


_STORE = _Store()


def _read_text(path: pathlib.Path) -> str:
    """The UTF-8 text of ``path``. Raises OSError when unreadable, _Rejected when too large or not UTF-8."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise _Rejected(f"it is {size} bytes, more than the {MAX_FILE_BYTES} a wisdom file may have")
        data = file.read(MAX_FILE_BYTES + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Rejected("it is not UTF-8 text") from None


def _parse(text: str) -> tuple[Groups, int]:
    """The valid groups of a wisdom document and the number of entries dropped as malformed.

    Raises _Rejected when the document as a whole is unusable.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise _Rejected(f"it is not valid JSON ({_short(error)})") from None
    if not isinstance(data, dict):
        raise _Rejected("its top level is not a JSON object")
    if data.get("format") != FORMAT_NAME:
        raise _Rejected(f"its 'format' is {_short(data.get('format'))}, not {FORMAT_NAME!r}")
    version = data.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise _Rejected(f"its format version is {_short(version)}; this jtconv reads version {FORMAT_VERSION}")
    environments = data.get("environments")
    if not isinstance(environments, dict):
        raise _Rejected("its 'environments' is not a JSON object")
    groups: Groups = {}
    dropped = 0
    for group in environments.values():
        environment = group.get("environment") if isinstance(group, dict) else None
        entries = group.get("entries") if isinstance(group, dict) else None
        if not isinstance(entries, dict):
            dropped += 1
            continue
        if not _is_environment(environment):
            dropped += len(entries)
            continue
        kept = {key: entry for key, entry in entries.items() if _is_entry(key, entry)}
        dropped += len(entries) - len(kept)
        groups = _merge(groups, {environment_id(environment): _Group(dict(environment), kept)})
    return groups, dropped


def _is_environment(value: object) -> TypeGuard[EnvironmentKey]:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(name, str) and type(item) in (str, int) for name, item in value.items())
    )


def _is_entry(key: object, entry: object) -> bool:
    if not (isinstance(key, str) and key and isinstance(entry, dict)):
        return False
    try:
        json.dumps(entry, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return False
    return True


def _short(value: object, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, BaseException) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _merge(base: Groups, overlay: Groups) -> Groups:
    """``base`` with every entry of ``overlay`` added or replacing; neither argument changes."""
    merged = {group_id: _Group(group.environment, dict(group.entries)) for group_id, group in base.items()}
    for group_id, group in overlay.items():
        if group_id in merged:
            merged[group_id].entries.update(group.entries)
        else:
            merged[group_id] = _Group(group.environment, dict(group.entries))
    return merged


def _count(groups: Groups) -> int:
    return sum(len(group.entries) for group in groups.values())


def _document(groups: Groups) -> str:
    """The wisdom file's text: format and version first, groups and their entries in sorted order."""
    environments = {
        group_id: {
            "environment": dict(sorted(groups[group_id].environment.items())),
            "entries": dict(sorted(groups[group_id].entries.items())),
        }
        for group_id in sorted(groups)
    }
    document = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "environments": environments}
    return json.dumps(document, indent=1, allow_nan=False) + "\n"


def _stamp(path: pathlib.Path) -> tuple[int, int, int] | None:
    """What changes when the file is replaced or rewritten: inode, size, modification time."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _atomic_write(path: pathlib.Path, text: str) -> None:
    """Replace ``path`` by a file holding ``text``: written and fsync'ed beside it, then renamed over it."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        _replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _replace(source: str, target: pathlib.Path) -> None:
    # Windows refuses to replace a file another process has open; readers hold it for milliseconds.
    retries = 19 if sys.platform == "win32" else 0
    for _ in range(retries):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            time.sleep(0.05)
    os.replace(source, target)


def _fsync_directory(directory: pathlib.Path) -> None:
    """Make the rename durable (POSIX); best effort, some file systems refuse."""
    if sys.platform == "win32":
        return
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def _locked(path: pathlib.Path, on_timeout: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the exclusive lock of the sibling ``<name>.lock`` file while the block runs.

    Raises OSError when the lock file cannot be opened (a missing or read-only
    directory). When the lock cannot be taken within LOCK_TIMEOUT_S, calls
    ``on_timeout`` and runs the block unlocked.
    """
    descriptor = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        held = _acquire(descriptor)
        if not held and on_timeout is not None:
            on_timeout()
        try:
            yield
        finally:
            if held:
                _release(descriptor)
    finally:
        os.close(descriptor)


def _acquire(descriptor: int) -> bool:
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    pause = 0.001
    while True:
        try:
            _try_lock(descriptor)
            return True
        except BlockingIOError:
            pass
        except OSError:
            if sys.platform != "win32":
                return False  # a file system without flock (some network mounts)
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


if sys.platform == "win32":  # pragma: no cover - Windows only (msvcrt); CI runs on Linux
    import msvcrt

    def _try_lock(descriptor: int) -> None:
        os.lseek(descriptor, 0, os.SEEK_SET)
        msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)

    def _release(descriptor: int) -> None:
        os.lseek(descriptor, 0, os.SEEK_SET)
        msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(descriptor: int) -> None:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _release(descriptor: int) -> None:
        fcntl.flock(descriptor, fcntl.LOCK_UN)


__all__ = [
    "environment_id",
    "environment_key",
    "export_wisdom",
    "forget_wisdom",
    "import_wisdom",
    "lookup",
    "record",
    "wisdom_path",
]
