"""jtconv.plans.wisdom: the persistent store of measured plans, one file per entry.

Every test gets its own empty cache directory (``JTCONV_CACHE_DIR``) and a
forgotten store. Cross-process behaviour (a fresh process reads what another
wrote; concurrent writers leave whole files) runs real subprocesses.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import platform
import subprocess
import sys
import threading
import time

import jax
import platformdirs
import pytest

import jtconv
from jtconv.plans import wisdom


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The wisdom directory of an empty cache that the store uses, and a store with nothing in memory."""
    monkeypatch.setenv("JTCONV_CACHE_DIR", str(tmp_path / "cache"))
    wisdom.forget_wisdom()
    yield tmp_path / "cache" / "wisdom-v2"
    wisdom.forget_wisdom()


@pytest.fixture
def logged_warnings(caplog):
    caplog.set_level(logging.WARNING, logger="jtconv")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "jtconv" and r.levelno == logging.WARNING]


FOREIGN = {"backend": "tpu", "device_kind": "TPU v5 lite", "device_count": 4, "cpu_count": 96, "os": "linux"}


def _document(key: str, entry: dict, environment: dict | None = None) -> dict:
    environment = wisdom.environment_key() if environment is None else environment
    return {"format": "jtconv-wisdom", "version": 2, "environment": environment, "key": key, "entry": entry}


def _write(document: dict) -> pathlib.Path:
    """Write ``document`` where the store looks for its environment and key, as another process would."""
    path = wisdom._file(document["environment"], document["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def _files(directory: pathlib.Path) -> dict[str, dict]:
    """The documents of every file in ``directory``, by layer key; fails on a leftover temporary file."""
    names = [path.name for path in directory.iterdir()]
    assert not [name for name in names if not name.endswith(".json")], names
    documents = [json.loads((directory / name).read_text()) for name in names]
    return {document["key"]: document for document in documents}


# ----------------------------------------------------------------------------- location


def test_the_cache_dir_variable_moves_the_store_and_expands_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("JTCONV_CACHE_DIR", "~/somewhere/else")
    assert wisdom.wisdom_dir() == tmp_path / "somewhere" / "else" / "wisdom-v2"


def test_without_the_variable_the_store_is_in_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("JTCONV_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = pathlib.Path(platformdirs.user_cache_dir("jtconv", appauthor=False)) / "wisdom-v2"
    assert wisdom.wisdom_dir() == expected
    if sys.platform == "linux":
        assert expected == tmp_path / "xdg" / "jtconv" / "wisdom-v2"


# ----------------------------------------------------------------------------- environment


def test_environment_key_names_what_changes_the_answer():
    import jaxlib

    key = wisdom.environment_key()
    assert key["backend"] == jax.default_backend()
    assert key["device_kind"] == jax.devices()[0].device_kind
    assert key["device_count"] == jax.device_count()
    assert isinstance(key["cpu_count"], int) and 1 <= key["cpu_count"] <= (os.cpu_count() or 1)
    assert key["machine"] == platform.machine()
    assert key["os"] == sys.platform
    assert key["jax"] == jax.__version__
    assert key["jaxlib"] == jaxlib.__version__
    assert key["jtconv"] == jtconv.__version__
    assert all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in key.values())
    key["backend"] = "changed"
    assert wisdom.environment_key()["backend"] == jax.default_backend()


def test_environment_id_is_a_stable_hash_of_the_sorted_key():
    key = wisdom.environment_key()
    assert wisdom.environment_id() == wisdom.environment_id(key)
    assert wisdom.environment_id(dict(reversed(list(key.items())))) == wisdom.environment_id(key)
    assert wisdom.environment_id({**key, "device_count": 99}) != wisdom.environment_id(key)
    assert len(wisdom.environment_id()) == 16 and int(wisdom.environment_id(), 16) >= 0
    assert wisdom.environment_id({"a": 1}) == "015abd7f5cc57a2d"  # sha256 of '{"a":1}'


def test_usable_cpu_count_prefers_process_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "process_cpu_count", lambda: 3, raising=False)
    assert wisdom._usable_cpu_count() == 3
    monkeypatch.setattr(os, "process_cpu_count", lambda: None, raising=False)
    assert wisdom._usable_cpu_count() == 1


def test_usable_cpu_count_uses_the_affinity_mask_else_cpu_count(monkeypatch):
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert wisdom._usable_cpu_count() == 2
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert wisdom._usable_cpu_count() == 5
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert wisdom._usable_cpu_count() == 1


# ----------------------------------------------------------------------------- record and lookup


def test_record_then_lookup_and_the_file_it_writes(cache, logged_warnings):
    assert wisdom.lookup("layer-a") is None
    assert not cache.exists(), "a lookup never writes"
    entry = {"forward": "phase", "times_ms": (1.5, 2.0), "nested": {"k": [1, 2]}}
    wisdom.record("layer-a", entry)
    expected = {"forward": "phase", "times_ms": [1.5, 2.0], "nested": {"k": [1, 2]}}
    assert wisdom.lookup("layer-a") == expected
    assert wisdom.lookup("layer-b") is None

    (path,) = cache.iterdir()
    assert path == wisdom._file(wisdom.environment_key(), "layer-a")
    assert path.name == wisdom._file(dict(reversed(list(wisdom.environment_key().items()))), "layer-a").name
    assert path.name != wisdom._file(FOREIGN, "layer-a").name
    assert path.name != wisdom._file(wisdom.environment_key(), "layer-b").name
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document == _document("layer-a", expected)
    assert list(document) == ["format", "version", "environment", "key", "entry"]
    assert logged_warnings() == []


def test_lookup_and_record_copy_entries(cache, monkeypatch):
    entry = {"plan": {"forward": "phase"}}
    wisdom.record("k", entry)
    entry["plan"]["forward"] = "changed after recording"
    found = wisdom.lookup("k")
    assert found == {"plan": {"forward": "phase"}}
    found["plan"]["forward"] = "changed after lookup"
    assert wisdom.lookup("k") == {"plan": {"forward": "phase"}}
    monkeypatch.setattr(os, "replace", _refuse)  # kept in memory: still copied
    wisdom.record("m", {"plan": {"forward": "phase"}})
    wisdom.lookup("m")["plan"]["forward"] = "changed"
    assert wisdom.lookup("m") == {"plan": {"forward": "phase"}}


def test_a_later_record_replaces_the_entry(cache):
    wisdom.record("k", {"plan": "a"})
    wisdom.record("k", {"plan": "b"})
    assert wisdom.lookup("k") == {"plan": "b"}
    assert {key: d["entry"] for key, d in _files(cache).items()} == {"k": {"plan": "b"}}


@pytest.mark.parametrize(
    ("key", "entry", "error", "match"),
    [
        (3, {}, TypeError, "key must be a str"),
        ("", {}, ValueError, "key must be a non-empty"),
        ("k", ["plan"], TypeError, "entry must be a dict"),
        ("k", {"t": float("nan")}, ValueError, "entry must be strict JSON: Out of range float"),
        ("k", {"t": float("inf")}, ValueError, "entry must be strict JSON: Out of range float"),
        ("k", {"t": object()}, TypeError, "entry must be strict JSON: Object of type object"),
        ("k", {(1, 2): "tuple key"}, TypeError, "entry must be strict JSON: keys must be"),
    ],
)
def test_record_rejects_bad_arguments_and_stores_nothing(cache, key, entry, error, match):
    with pytest.raises(error, match=match):
        wisdom.record(key, entry)
    assert wisdom.lookup("k") is None
    assert not cache.exists()


def test_lookup_rejects_a_non_string_key(cache):
    with pytest.raises(TypeError, match="key must be a str"):
        wisdom.lookup(("layer",))  # type: ignore[arg-type]  # the wrong type on purpose


def test_lookup_returns_only_the_current_environment_and_records_keep_the_others(cache):
    foreign = _write(_document("k", {"plan": "tpu"}, FOREIGN))
    assert wisdom.lookup("k") is None
    wisdom.record("k", {"plan": "cpu"})
    assert wisdom.lookup("k") == {"plan": "cpu"}
    assert json.loads(foreign.read_text()) == _document("k", {"plan": "tpu"}, FOREIGN)
    assert len(list(cache.iterdir())) == 2


def test_lookup_backend_finds_an_entry_of_any_environment_of_the_backend(cache):
    gpus = [{"backend": "gpu", "device_kind": kind, "device_count": 1} for kind in ("NVIDIA H100", "NVIDIA A100")]
    for environment in gpus:
        _write(_document("k", {"plan": environment["device_kind"]}, environment))
    _write(_document("other", {"plan": "gpu"}, gpus[0]))
    _write(_document("k", {"plan": "tpu"}, FOREIGN))
    first = min(gpus, key=wisdom.environment_id)
    assert wisdom.lookup_backend("k", "gpu") == {"plan": first["device_kind"]}
    assert wisdom.lookup_backend("k", "tpu") == {"plan": "tpu"}
    assert wisdom.lookup_backend("k", "rocm") is None and wisdom.lookup_backend("absent", "gpu") is None
    found = wisdom.lookup_backend("k", "gpu")
    found["plan"] = "changed"
    assert wisdom.lookup_backend("k", "gpu") == {"plan": first["device_kind"]}


def test_a_fresh_process_sees_what_another_recorded(cache):
    wisdom.record("k", {"plan": "a"})
    assert wisdom.lookup("later") is None
    _write(_document("later", {"plan": "from another process"}))
    assert wisdom.lookup("later") == {"plan": "from another process"}


# ----------------------------------------------------------------------------- bad files


def _valid() -> dict:
    return _document("old", {"plan": "x"})


def _changed(**fields) -> bytes:
    return json.dumps({**_valid(), **fields}).encode()


BAD_FILES = {
    "empty": lambda: b"",
    "truncated": lambda: json.dumps(_valid()).encode()[:40],
    "not json": lambda: b"this is not json",
    "not utf-8": lambda: b'{"format": "\xff\xfe"}',
    "a list": lambda: b"[]",
    "null": lambda: b"null",
    "deeply nested": lambda: b"[" * 200_000 + b"]" * 200_000,
    "NaN in the entry": lambda: json.dumps(_valid()).replace('"x"', "NaN").encode(),
    "no format": lambda: json.dumps({k: v for k, v in _valid().items() if k != "format"}).encode(),
    "another format": lambda: _changed(format="fftw"),
    "an older version": lambda: _changed(version=1),
    "a newer version": lambda: _changed(version=3),
    "version as text": lambda: _changed(version="2"),
    "version as float": lambda: _changed(version=2.0),
    "version as bool": lambda: _changed(version=True),
    "another environment": lambda: _changed(environment=FOREIGN),
    "another key": lambda: _changed(key="new"),
    "key not a string": lambda: _changed(key=["old"]),
    "environment empty": lambda: _changed(environment={}),
    "environment not a dict": lambda: _changed(environment="cpu"),
    "environment with a float": lambda: _changed(environment={**wisdom.environment_key(), "cpu_count": 2.5}),
    "environment with a bool": lambda: _changed(environment={**wisdom.environment_key(), "cpu_count": True}),
    "entry a list": lambda: _changed(entry=["plan"]),
    "entry null": lambda: _changed(entry=None),
}


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_ignored_with_one_warning_and_replaced_by_the_next_record(
    cache, tmp_path, logged_warnings, content
):
    path = _write(_valid())
    path.write_bytes(content())
    assert wisdom.lookup("old") is None
    assert wisdom.export_wisdom(tmp_path / "exported.json") == 0
    reported = logged_warnings()
    assert len(reported) == 1 and f"ignoring the wisdom file {path}" in reported[0]

    path.write_bytes(b"{ still broken, and changed")
    assert wisdom.lookup("old") is None
    assert len(logged_warnings()) == 1, "the same file is reported once per process"
    wisdom.record("old", {"plan": "y"})
    assert wisdom.lookup("old") == {"plan": "y"}
    assert _files(cache) == {"old": _document("old", {"plan": "y"})}
    assert len(logged_warnings()) == 1


def test_a_directory_in_place_of_a_file_never_crashes(cache, tmp_path, logged_warnings):
    wisdom._file(wisdom.environment_key(), "a").mkdir(parents=True)
    assert wisdom.lookup("a") is None
    wisdom.record("a", {"plan": 1})
    wisdom.record("b", {"plan": 2})
    assert wisdom.lookup("a") == {"plan": 1} and wisdom.lookup("b") == {"plan": 2}
    messages = logged_warnings()
    assert len(messages) == 2
    assert "ignoring the wisdom file" in messages[0] and "cannot write wisdom" in messages[1]
    assert wisdom.export_wisdom(tmp_path / "out.json") == 2 and len(logged_warnings()) == 2


def test_an_unreadable_file_is_ignored_with_one_warning(cache, logged_warnings, monkeypatch):
    path = _write(_valid())
    real_read_bytes = pathlib.Path.read_bytes

    def read_bytes(self):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    assert wisdom.lookup("old") is None and wisdom.lookup("old") is None
    assert len(logged_warnings()) == 1 and "Permission denied" in logged_warnings()[0]


# ----------------------------------------------------------------------------- unwritable caches


def _refuse(source, target):
    raise PermissionError(13, "Permission denied", str(target))


@pytest.mark.parametrize("where", ["the cache dir is a file", "a parent is a file"])
def test_an_unwritable_cache_warns_once_and_keeps_entries_in_memory(tmp_path, monkeypatch, logged_warnings, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    monkeypatch.setenv("JTCONV_CACHE_DIR", str(blocker if where == "the cache dir is a file" else blocker / "sub"))
    wisdom.forget_wisdom()
    try:
        wisdom.record("a", {"plan": 1})
        wisdom.record("b", {"plan": 2})
        assert wisdom.lookup("a") == {"plan": 1} and wisdom.lookup("b") == {"plan": 2}
        reported = logged_warnings()
        assert len(reported) == 1 and "cannot write wisdom" in reported[0] and "kept in memory" in reported[0]
        assert blocker.read_text() == "a file, not a directory"
        assert wisdom.export_wisdom(tmp_path / "out.json") == 2
        monkeypatch.setenv("JTCONV_CACHE_DIR", str(tmp_path / "elsewhere"))
        assert wisdom.lookup("a") is None, "entries kept in memory stay with their directory"
        assert wisdom.export_wisdom(tmp_path / "out.json") == 0
    finally:
        wisdom.forget_wisdom()


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root and Windows ignore a read-only mode")
def test_a_read_only_cache_dir_warns_once_and_keeps_entries_in_memory(cache, logged_warnings):
    cache.mkdir(parents=True)
    cache.chmod(0o500)
    try:
        wisdom.record("a", {"plan": 1})
        wisdom.record("b", {"plan": 2})
        assert wisdom.lookup("a") == {"plan": 1}
        assert len(logged_warnings()) == 1
    finally:
        cache.chmod(0o700)


def test_a_failed_write_leaves_the_old_file_whole(cache, logged_warnings, monkeypatch):
    wisdom.record("a", {"plan": 1})
    (path,) = cache.iterdir()
    before = path.read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", _refuse)
        wisdom.record("a", {"plan": 2})
    assert path.read_bytes() == before
    assert list(cache.iterdir()) == [path], "no temporary file is left"
    assert wisdom.lookup("a") == {"plan": 2}
    assert len(logged_warnings()) == 1 and "Permission denied" in logged_warnings()[0]
    wisdom.record("a", {"plan": 3})
    assert wisdom.lookup("a") == {"plan": 3} and json.loads(path.read_text())["entry"] == {"plan": 3}


# ----------------------------------------------------------------------------- concurrency

_WRITER = """
import pathlib, sys, time
from jtconv.plans import wisdom
name, count, directory = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
wisdom.environment_key()
seen_parent = wisdom.lookup("parent") == {"plan": "from the parent"}
(directory / f"ready-{name}").touch()
deadline = time.monotonic() + 60
while not (directory / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.005)
for i in range(count):
    wisdom.record(f"{name}-{i}", {"writer": name, "i": i})
    wisdom.record("shared", {"writer": name, "i": i, "padding": name * 1000})
sys.exit(0 if seen_parent else 3)
"""


def test_concurrent_processes_leave_whole_files_and_see_each_other(cache, tmp_path):
    wisdom.record("parent", {"plan": "from the parent"})
    signals = tmp_path / "signals"
    signals.mkdir()
    writers, count = 3, 20
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, f"w{n}", str(count), str(signals)],
            env={**os.environ, "JTCONV_CACHE_DIR": str(cache.parent)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for n in range(writers)
    ]
    deadline = time.monotonic() + 120
    while len(list(signals.glob("ready-*"))) < writers and time.monotonic() < deadline:
        assert all(p.poll() is None for p in processes), [p.communicate()[0] for p in processes]
        time.sleep(0.01)
    (signals / "go").touch()
    for process in processes:
        output = process.communicate(timeout=120)[0].decode()
        assert process.returncode == 0, f"a fresh process did not see the parent's entry or failed:\n{output}"

    files = _files(cache)
    expected = {f"w{n}-{i}": {"writer": f"w{n}", "i": i} for n in range(writers) for i in range(count)}
    assert {key: d["entry"] for key, d in files.items() if key != "shared"} == {
        "parent": {"plan": "from the parent"},
        **expected,
    }
    shared = files["shared"]["entry"]
    assert shared == {"writer": shared["writer"], "i": count - 1, "padding": shared["writer"] * 1000}
    for key, entry in expected.items():
        assert wisdom.lookup(key) == entry
    assert wisdom.lookup("shared") == shared


def test_concurrent_threads_lose_no_entries(cache):
    threads, count = 6, 15
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def write(name: str) -> None:
        try:
            start.wait()
            for i in range(count):
                wisdom.record(f"{name}-{i}", {"i": i})
                wisdom.record("shared", {"i": i})
                assert wisdom.lookup(f"{name}-{i}") == {"i": i}
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    workers = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    expected = {f"t{n}-{i}": {"i": i} for n in range(threads) for i in range(count)}
    assert {key: d["entry"] for key, d in _files(cache).items()} == {**expected, "shared": {"i": count - 1}}


# ----------------------------------------------------------------------------- export, import, forget


def test_export_then_import_moves_every_environment(cache, tmp_path):
    _write(_document("k", {"plan": "tpu"}, FOREIGN))  # another machine's, or another process's
    wisdom.record("a", {"plan": 1})
    wisdom.record("b", {"plan": 2})
    exported = tmp_path / "exported.json"
    assert wisdom.export_wisdom(exported) == 3
    documents = json.loads(exported.read_text())
    assert sorted(documents, key=lambda d: d["key"]) == [
        _document("a", {"plan": 1}),
        _document("b", {"plan": 2}),
        _document("k", {"plan": "tpu"}, FOREIGN),
    ]
    files = sorted(cache.iterdir())
    assert [wisdom._file(d["environment"], d["key"]) for d in documents] == files, "in file name order"

    wisdom.forget_wisdom()
    assert list(cache.iterdir()) == []
    assert wisdom.lookup("a") is None
    assert wisdom.import_wisdom(str(exported)) == 3
    assert wisdom.lookup("a") == {"plan": 1} and wisdom.lookup("b") == {"plan": 2}
    assert wisdom.lookup_backend("k", "tpu") == {"plan": "tpu"}
    assert sorted(cache.iterdir()) == files


def test_an_imported_entry_replaces_the_stored_one_and_malformed_items_are_skipped(cache, tmp_path, logged_warnings):
    wisdom.record("shared", {"plan": "old"})
    wisdom.record("local", {"plan": "mine"})
    source = tmp_path / "other-machine.json"
    good = _document("shared", {"plan": "new"})
    bad = [[1], {**good, "version": 1}, {**good, "entry": [1]}, {**good, "key": ""}, {**good, "environment": {}}]
    source.write_text(json.dumps([good, *bad]))
    assert wisdom.import_wisdom(source) == 1
    assert wisdom.lookup("shared") == {"plan": "new"} and wisdom.lookup("local") == {"plan": "mine"}
    assert len(logged_warnings()) == 1 and f"skipped 5 malformed wisdom entries in {source}" in logged_warnings()[0]


BAD_IMPORTS = {
    "not json": b"{not json",
    "not utf-8": b'["\xff"]',
    "NaN": b'[{"t": NaN}]',
    "an object": json.dumps({"format": "jtconv-wisdom", "version": 1, "environments": {}}).encode(),
    "null": b"null",
}


@pytest.mark.parametrize("content", BAD_IMPORTS.values(), ids=BAD_IMPORTS.keys())
def test_importing_a_bad_file_warns_and_imports_nothing(cache, tmp_path, logged_warnings, content):
    wisdom.record("kept", {"plan": 1})
    before = _files(cache)
    source = tmp_path / "bad.json"
    source.write_bytes(content)
    assert wisdom.import_wisdom(source) == 0
    assert len(logged_warnings()) == 1 and f"not importing wisdom from {source}" in logged_warnings()[0]
    assert _files(cache) == before
    assert wisdom.lookup("kept") == {"plan": 1}


def test_importing_a_missing_file_raises(cache, tmp_path):
    with pytest.raises(FileNotFoundError):
        wisdom.import_wisdom(tmp_path / "nowhere.json")


def test_exporting_to_a_missing_directory_raises(cache, tmp_path):
    wisdom.record("a", {})
    with pytest.raises(FileNotFoundError):
        wisdom.export_wisdom(tmp_path / "no such dir" / "out.json")


def test_forget_clears_memory_and_disk(cache, logged_warnings, monkeypatch):
    _write(_document("k", {"plan": "tpu"}, FOREIGN))
    wisdom.record("a", {"plan": 1})
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", _refuse)
        wisdom.record("b", {"plan": 2})  # kept in memory
    logged = len(logged_warnings())
    wisdom.forget_wisdom()
    assert list(cache.iterdir()) == []
    assert wisdom.lookup("a") is None and wisdom.lookup("b") is None and wisdom.lookup_backend("k", "tpu") is None
    assert len(logged_warnings()) == logged == 1


def test_forget_with_no_cache_creates_nothing(cache, logged_warnings):
    wisdom.forget_wisdom()
    assert not cache.exists()
    assert logged_warnings() == []


def test_forget_warns_about_a_file_it_cannot_remove(cache, logged_warnings):
    path = wisdom._file(wisdom.environment_key(), "a")
    path.mkdir(parents=True)
    wisdom.forget_wisdom()
    assert len(logged_warnings()) == 1 and f"could not remove the wisdom file {path}" in logged_warnings()[0]
    path.rmdir()


def test_forget_resets_the_once_only_warnings(cache, logged_warnings):
    path = _write(_valid())
    path.write_text("broken")
    assert wisdom.lookup("old") is None
    wisdom.forget_wisdom()
    _write(_valid()).write_text("broken again")
    assert wisdom.lookup("old") is None
    assert len(logged_warnings()) == 2
