"""jtconv.wisdom and jtconv.cache_dir: the persistent store of measured plans.

Every test gets its own empty cache directory (``JTCONV_CACHE_DIR``) and a
forgotten store. Cross-process behaviour (a fresh process reads what another
wrote; concurrent writers lose nothing) runs real subprocesses.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import platform
import subprocess
import sys
import threading
import time
import types

import jax
import pytest

import jtconv
from jtconv import wisdom
from jtconv.cache_dir import cache_dir


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache directory that the store uses, and a store with nothing in memory."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("JTCONV_CACHE_DIR", str(directory))
    wisdom.forget_wisdom()
    yield directory
    wisdom.forget_wisdom()


@pytest.fixture
def logged_warnings(caplog):
    caplog.set_level(logging.WARNING, logger="jtconv")
    return lambda: [r for r in caplog.records if r.name == "jtconv" and r.levelno == logging.WARNING]


def _read_document(path: pathlib.Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_document(path: pathlib.Path, groups: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": "jtconv-wisdom", "version": 1, "environments": groups}
    path.write_text(json.dumps(document), encoding="utf-8")


FOREIGN = {"backend": "tpu", "device_kind": "TPU v5 lite", "device_count": 4, "cpu_count": 96, "os": "linux"}


def _leftover_temporaries(directory: pathlib.Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- location


def test_cache_dir_follows_the_override_and_expands_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("JTCONV_CACHE_DIR", "~/somewhere/else")
    assert cache_dir() == tmp_path / "somewhere" / "else"
    assert wisdom.wisdom_path() == tmp_path / "somewhere" / "else" / "wisdom-v1.json"


@pytest.mark.parametrize(
    ("system", "variables", "expected"),
    [
        ("linux", {"XDG_CACHE_HOME": "/xdg/cache"}, "/xdg/cache/jtconv"),
        ("linux", {"XDG_CACHE_HOME": "relative/cache"}, "{home}/.cache/jtconv"),
        ("linux", {"XDG_CACHE_HOME": ""}, "{home}/.cache/jtconv"),
        ("linux", {}, "{home}/.cache/jtconv"),
        ("freebsd14", {"XDG_CACHE_HOME": "/xdg/cache"}, "/xdg/cache/jtconv"),
        ("darwin", {"XDG_CACHE_HOME": "/xdg/cache"}, "{home}/Library/Caches/jtconv"),
        ("win32", {"LOCALAPPDATA": "/users/me/AppData/Local"}, "/users/me/AppData/Local/jtconv/Cache"),
        ("win32", {}, "{home}/AppData/Local/jtconv/Cache"),
    ],
)
def test_cache_dir_is_the_platform_user_cache(monkeypatch, tmp_path, system, variables, expected):
    monkeypatch.delenv("JTCONV_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("LOCALAPPDATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "platform", system)
    assert cache_dir() == pathlib.Path(expected.format(home=tmp_path))


def test_empty_override_means_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("JTCONV_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert cache_dir() == tmp_path / "xdg" / "jtconv"


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


# ----------------------------------------------------------------------------- record and lookup


def test_record_then_lookup_and_the_file_it_writes(cache, logged_warnings):
    assert wisdom.lookup("layer-a") is None
    assert not cache.exists(), "a lookup never writes"
    entry = {"forward": "phase", "times_ms": (1.5, 2.0), "nested": {"k": [1, 2]}}
    wisdom.record("layer-a", entry)
    expected = {"forward": "phase", "times_ms": [1.5, 2.0], "nested": {"k": [1, 2]}}
    assert wisdom.lookup("layer-a") == expected
    assert wisdom.lookup("layer-b") is None

    document = _read_document(cache / "wisdom-v1.json")
    assert document["format"] == "jtconv-wisdom" and document["version"] == 1
    group = document["environments"][wisdom.environment_id()]
    assert group["environment"] == wisdom.environment_key()
    assert group["entries"] == {"layer-a": expected}
    assert list(document)[:2] == ["format", "version"]
    assert _leftover_temporaries(cache) == []
    assert logged_warnings() == []


def test_lookup_and_record_copy_entries(cache):
    entry = {"plan": {"forward": "phase"}}
    wisdom.record("k", entry)
    entry["plan"]["forward"] = "changed after recording"
    found = wisdom.lookup("k")
    assert found == {"plan": {"forward": "phase"}}
    found["plan"]["forward"] = "changed after lookup"
    assert wisdom.lookup("k") == {"plan": {"forward": "phase"}}


def test_a_later_record_replaces_the_entry(cache):
    wisdom.record("k", {"plan": "a"})
    wisdom.record("k", {"plan": "b"})
    assert wisdom.lookup("k") == {"plan": "b"}
    assert _read_document(cache / "wisdom-v1.json")["environments"][wisdom.environment_id()]["entries"] == {
        "k": {"plan": "b"}
    }


@pytest.mark.parametrize(
    ("key", "entry", "error", "match"),
    [
        (3, {}, TypeError, "key must be a str"),
        ("", {}, ValueError, "key must be a non-empty"),
        ("k", ["plan"], TypeError, "entry must be a dict"),
        ("k", {"t": float("nan")}, ValueError, "entry must hold only finite"),
        ("k", {"t": float("inf")}, ValueError, "entry must hold only finite"),
        ("k", {"t": object()}, TypeError, "entry must be JSON-serialisable"),
        ("k", {(1, 2): "tuple key"}, TypeError, "entry must be JSON-serialisable"),
    ],
)
def test_record_rejects_bad_arguments_and_stores_nothing(cache, key, entry, error, match):
    with pytest.raises(error, match=match):
        wisdom.record(key, entry)
    assert wisdom.lookup("k") is None
    assert not (cache / "wisdom-v1.json").exists()


def test_lookup_rejects_a_non_string_key(cache):
    with pytest.raises(TypeError, match="key must be a str"):
        wisdom.lookup(("layer",))  # type: ignore[arg-type]  # the wrong type on purpose


def test_lookup_returns_only_the_current_environment_and_writes_keep_the_others(cache):
    _write_document(
        cache / "wisdom-v1.json",
        {wisdom.environment_id(FOREIGN): {"environment": FOREIGN, "entries": {"k": {"plan": "tpu"}}}},
    )
    assert wisdom.lookup("k") is None
    wisdom.record("mine", {"plan": "cpu"})
    groups = _read_document(cache / "wisdom-v1.json")["environments"]
    assert groups[wisdom.environment_id(FOREIGN)] == {"environment": FOREIGN, "entries": {"k": {"plan": "tpu"}}}
    assert groups[wisdom.environment_id()]["entries"] == {"mine": {"plan": "cpu"}}


def test_a_group_is_found_by_its_environment_not_its_label(cache):
    _write_document(
        cache / "wisdom-v1.json",
        {"a wrong label": {"environment": wisdom.environment_key(), "entries": {"k": {"plan": "found"}}}},
    )
    assert wisdom.lookup("k") == {"plan": "found"}


def test_lookup_reads_the_file_once_and_rereads_only_after_it_changed(cache, monkeypatch):
    wisdom.record("k", {"plan": "a"})
    wisdom.forget_wisdom()
    _write_document(
        cache / "wisdom-v1.json",
        {wisdom.environment_id(): {"environment": wisdom.environment_key(), "entries": {"k": {"plan": "a"}}}},
    )
    reads = []
    real_read_text = wisdom._read_text
    monkeypatch.setattr(wisdom, "_read_text", lambda path: reads.append(path) or real_read_text(path))
    for _ in range(5):
        assert wisdom.lookup("k") == {"plan": "a"}
        assert wisdom.lookup("absent") is None
    assert len(reads) == 1
    _write_document(  # another process adds an entry
        cache / "wisdom-v1.json",
        {
            wisdom.environment_id(): {
                "environment": wisdom.environment_key(),
                "entries": {"k": {"plan": "a"}, "new": {"plan": "b"}, "padding to change the size": {}},
            }
        },
    )
    assert wisdom.lookup("new") == {"plan": "b"}
    assert len(reads) == 2


# ----------------------------------------------------------------------------- bad files


def _valid_text() -> str:
    return json.dumps(
        {
            "format": "jtconv-wisdom",
            "version": 1,
            "environments": {
                wisdom.environment_id(): {"environment": wisdom.environment_key(), "entries": {"old": {"plan": "x"}}}
            },
        }
    )


BAD_FILES = {
    "empty": lambda: b"",
    "truncated": lambda: _valid_text()[: len(_valid_text()) // 2].encode(),
    "not json": lambda: b"this is not json",
    "not utf-8": lambda: b"\xff\xfe\x00{",
    "a list": lambda: b"[]",
    "null": lambda: b"null",
    "no format": lambda: json.dumps({"version": 1, "environments": {}}).encode(),
    "another format": lambda: json.dumps({"format": "fftw", "version": 1, "environments": {}}).encode(),
    "a newer version": lambda: _valid_text().replace('"version": 1', '"version": 2').encode(),
    "version as text": lambda: _valid_text().replace('"version": 1', '"version": "1"').encode(),
    "version as bool": lambda: _valid_text().replace('"version": 1', '"version": true').encode(),
    "environments a list": lambda: json.dumps({"format": "jtconv-wisdom", "version": 1, "environments": []}).encode(),
    "deeply nested": lambda: b"[" * 200_000 + b"]" * 200_000,
}


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_ignored_with_one_warning_and_rewritten(cache, logged_warnings, content):
    path = cache / "wisdom-v1.json"
    cache.mkdir()
    path.write_bytes(content())
    assert wisdom.lookup("old") is None
    assert wisdom.lookup("other") is None
    reported = logged_warnings()
    assert len(reported) == 1 and str(path) in reported[0].getMessage()
    assert "ignoring the wisdom file" in reported[0].getMessage()

    path.write_bytes(b"{ still broken, and changed")
    assert wisdom.lookup("yet another") is None
    wisdom.record("new", {"plan": "y"})
    wisdom.record("newer", {"plan": "z"})
    assert len(logged_warnings()) == 1, "the same file is reported once per process"
    document = _read_document(path)
    assert document["environments"][wisdom.environment_id()]["entries"] == {
        "new": {"plan": "y"},
        "newer": {"plan": "z"},
    }
    assert _leftover_temporaries(cache) == []


def test_a_file_over_the_size_limit_is_ignored(cache, logged_warnings, monkeypatch):
    monkeypatch.setattr(wisdom, "MAX_FILE_BYTES", 100)
    cache.mkdir()
    (cache / "wisdom-v1.json").write_text(_valid_text() + " " * 200)
    assert wisdom.lookup("old") is None
    assert len(logged_warnings()) == 1 and "bytes" in logged_warnings()[0].getMessage()


def test_malformed_entries_are_dropped_one_by_one(cache, logged_warnings):
    mine = wisdom.environment_key()
    path = cache / "wisdom-v1.json"
    _write_document(
        path,
        {
            "good": {
                "environment": mine,
                "entries": {
                    "kept": {"plan": "a"},
                    "a list": ["plan"],
                    "a number": 3,
                    "null": None,
                    "": {"plan": "empty key"},
                },
            },
            "environment with a float": {"environment": {**FOREIGN, "cpu_count": 2.5}, "entries": {"x": {}}},
            "environment with a bool": {"environment": {**FOREIGN, "cpu_count": True}, "entries": {"y": {}}},
            "environment not a dict": {"environment": "cpu", "entries": {"z": {}}},
            "no entries": {"environment": FOREIGN},
            "not a group": 7,
        },
    )
    text = path.read_text().replace('"kept": {"plan": "a"}', '"kept": {"plan": "a"}, "nan": {"t": NaN}')
    path.write_text(text)
    assert wisdom.lookup("kept") == {"plan": "a"}
    for key in ("a list", "a number", "null", "", "nan"):
        assert wisdom.lookup(key) is None
    reported = logged_warnings()
    assert len(reported) == 1 and "dropped 10 malformed entries" in reported[0].getMessage()

    wisdom.record("added", {"plan": "b"})
    document = _read_document(path)
    assert document["environments"] == {
        wisdom.environment_id(): {"environment": mine, "entries": {"added": {"plan": "b"}, "kept": {"plan": "a"}}}
    }
    assert len(logged_warnings()) == 1


# ----------------------------------------------------------------------------- unwritable caches


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
        assert len(reported) == 1 and "cannot write the wisdom file" in reported[0].getMessage()
        assert blocker.read_text() == "a file, not a directory"
    finally:
        wisdom.forget_wisdom()


def test_a_directory_in_place_of_the_file_never_crashes(cache, logged_warnings):
    (cache / "wisdom-v1.json").mkdir(parents=True)
    assert wisdom.lookup("a") is None
    wisdom.record("a", {"plan": 1})
    wisdom.record("b", {"plan": 2})
    assert wisdom.lookup("a") == {"plan": 1}
    messages = [r.getMessage() for r in logged_warnings()]
    assert sum("cannot read" in m for m in messages) == 1
    assert sum("cannot write" in m for m in messages) == 1
    assert len(messages) == 2
    assert _leftover_temporaries(cache) == []


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root and Windows ignore a read-only mode")
def test_a_read_only_cache_dir_warns_once_and_keeps_entries_in_memory(cache, logged_warnings):
    cache.mkdir()
    cache.chmod(0o500)
    try:
        wisdom.record("a", {"plan": 1})
        wisdom.record("b", {"plan": 2})
        assert wisdom.lookup("a") == {"plan": 1}
        assert len(logged_warnings()) == 1
    finally:
        cache.chmod(0o700)


def test_entries_kept_in_memory_are_written_once_the_cache_is_writable(cache, logged_warnings, monkeypatch):
    real_replace = os.replace

    def refuse(source, target):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(os, "replace", refuse)
    wisdom.record("a", {"plan": 1})
    assert not (cache / "wisdom-v1.json").exists()
    monkeypatch.setattr(os, "replace", real_replace)
    wisdom.record("b", {"plan": 2})
    entries = _read_document(cache / "wisdom-v1.json")["environments"][wisdom.environment_id()]["entries"]
    assert entries == {"a": {"plan": 1}, "b": {"plan": 2}}
    assert len(logged_warnings()) == 1


def test_a_failed_write_leaves_the_old_file_whole(cache, logged_warnings, monkeypatch):
    wisdom.record("a", {"plan": 1})
    before = (cache / "wisdom-v1.json").read_bytes()

    def fail_midway(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail_midway)
    wisdom.record("b", {"plan": 2})
    assert (cache / "wisdom-v1.json").read_bytes() == before
    assert _leftover_temporaries(cache) == []
    assert wisdom.lookup("b") == {"plan": 2}
    assert len(logged_warnings()) == 1 and "No space left" in logged_warnings()[0].getMessage()


# ----------------------------------------------------------------------------- concurrency

_WRITER = """
import os, pathlib, sys, time
from jtconv import wisdom
name, count, directory = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
wisdom.environment_key()
seen_parent = wisdom.lookup("parent") == {"plan": "from the parent"}
(directory / f"ready-{name}").touch()
deadline = time.monotonic() + 60
while not (directory / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.005)
for i in range(count):
    wisdom.record(f"{name}-{i}", {"writer": name, "i": i})
sys.exit(0 if seen_parent else 3)
"""


def test_concurrent_processes_lose_no_entries_and_see_each_other(cache, tmp_path):
    wisdom.record("parent", {"plan": "from the parent"})
    signals = tmp_path / "signals"
    signals.mkdir()
    writers, count = 3, 20
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, f"w{n}", str(count), str(signals)],
            env={**os.environ, "JTCONV_CACHE_DIR": str(cache)},
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

    entries = _read_document(cache / "wisdom-v1.json")["environments"][wisdom.environment_id()]["entries"]
    expected = {f"w{n}-{i}": {"writer": f"w{n}", "i": i} for n in range(writers) for i in range(count)}
    assert entries == {"parent": {"plan": "from the parent"}, **expected}
    for key, entry in expected.items():  # this process loaded the file before the writers ran
        assert wisdom.lookup(key) == entry
    assert _leftover_temporaries(cache) == []


def test_concurrent_threads_lose_no_entries(cache):
    threads, count = 6, 15
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def write(name: str) -> None:
        try:
            start.wait()
            for i in range(count):
                wisdom.record(f"{name}-{i}", {"i": i})
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
    entries = _read_document(cache / "wisdom-v1.json")["environments"][wisdom.environment_id()]["entries"]
    assert entries == expected


@pytest.mark.skipif(sys.platform == "win32", reason="holds the lock with fcntl")
def test_a_write_waits_for_the_lock(cache):
    import fcntl

    wisdom.record("first", {})
    holder = os.open(cache / "wisdom-v1.json.lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    writer = threading.Thread(target=wisdom.record, args=("second", {}))
    try:
        writer.start()
        time.sleep(0.3)
        entries = _read_document(cache / "wisdom-v1.json")["environments"][wisdom.environment_id()]["entries"]
        assert "second" not in entries, "the write went ahead while another process held the lock"
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
        writer.join()
    entries = _read_document(cache / "wisdom-v1.json")["environments"][wisdom.environment_id()]["entries"]
    assert set(entries) == {"first", "second"}


@pytest.mark.skipif(sys.platform == "win32", reason="holds the lock with fcntl")
def test_a_lock_held_too_long_is_reported_and_the_write_still_happens(cache, logged_warnings, monkeypatch):
    import fcntl

    monkeypatch.setattr(wisdom, "LOCK_TIMEOUT_S", 0.05)
    wisdom.record("first", {})
    holder = os.open(cache / "wisdom-v1.json.lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        wisdom.record("second", {})
        wisdom.record("third", {})
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    entries = _read_document(cache / "wisdom-v1.json")["environments"][wisdom.environment_id()]["entries"]
    assert set(entries) == {"first", "second", "third"}
    assert len(logged_warnings()) == 1 and "without the lock" in logged_warnings()[0].getMessage()


# ----------------------------------------------------------------------------- export, import, forget


def test_export_then_import_moves_every_environment(cache, tmp_path):
    _write_document(
        cache / "wisdom-v1.json",
        {wisdom.environment_id(FOREIGN): {"environment": FOREIGN, "entries": {"k": {"plan": "tpu"}}}},
    )
    wisdom.record("a", {"plan": 1})
    wisdom.record("b", {"plan": 2})
    exported = tmp_path / "exported.json"
    assert wisdom.export_wisdom(exported) == 3
    assert _read_document(exported) == _read_document(cache / "wisdom-v1.json")

    wisdom.forget_wisdom()
    assert not (cache / "wisdom-v1.json").exists()
    assert wisdom.lookup("a") is None
    assert wisdom.import_wisdom(str(exported)) == 3
    assert wisdom.lookup("a") == {"plan": 1} and wisdom.lookup("b") == {"plan": 2}
    groups = _read_document(cache / "wisdom-v1.json")["environments"]
    assert groups[wisdom.environment_id(FOREIGN)]["entries"] == {"k": {"plan": "tpu"}}
    assert groups[wisdom.environment_id()]["entries"] == {"a": {"plan": 1}, "b": {"plan": 2}}


def test_export_includes_entries_another_process_wrote(cache, tmp_path):
    wisdom.record("mine", {})
    _write_document(
        cache / "wisdom-v1.json",
        {
            wisdom.environment_id(): {
                "environment": wisdom.environment_key(),
                "entries": {"mine": {}, "theirs": {"plan": "other process"}},
            }
        },
    )
    assert wisdom.export_wisdom(tmp_path / "out.json") == 2


def test_an_imported_entry_replaces_the_stored_one_and_keeps_the_rest(cache, tmp_path):
    wisdom.record("shared", {"plan": "old"})
    wisdom.record("local", {"plan": "mine"})
    source = tmp_path / "other-machine.json"
    _write_document(
        source,
        {
            wisdom.environment_id(): {
                "environment": wisdom.environment_key(),
                "entries": {"shared": {"plan": "new"}, "bad": [1]},
            }
        },
    )
    assert wisdom.import_wisdom(source) == 1
    assert wisdom.lookup("shared") == {"plan": "new"} and wisdom.lookup("local") == {"plan": "mine"}


@pytest.mark.parametrize("content", [b"{not json", b'{"format": "jtconv-wisdom", "version": 99, "environments": {}}'])
def test_importing_a_bad_file_warns_and_imports_nothing(cache, tmp_path, logged_warnings, content):
    wisdom.record("kept", {"plan": 1})
    before = (cache / "wisdom-v1.json").read_bytes()
    source = tmp_path / "bad.json"
    source.write_bytes(content)
    assert wisdom.import_wisdom(source) == 0
    assert len(logged_warnings()) == 1 and "not importing wisdom" in logged_warnings()[0].getMessage()
    assert (cache / "wisdom-v1.json").read_bytes() == before
    assert wisdom.lookup("kept") == {"plan": 1}


def test_importing_a_missing_file_raises(cache, tmp_path):
    with pytest.raises(FileNotFoundError):
        wisdom.import_wisdom(tmp_path / "nowhere.json")


def test_exporting_to_a_missing_directory_raises(cache, tmp_path):
    wisdom.record("a", {})
    with pytest.raises(FileNotFoundError):
        wisdom.export_wisdom(tmp_path / "no such dir" / "out.json")


def test_forget_clears_memory_and_disk(cache, logged_warnings):
    wisdom.record("a", {"plan": 1})
    wisdom.forget_wisdom()
    assert not (cache / "wisdom-v1.json").exists()
    assert wisdom.lookup("a") is None
    assert logged_warnings() == []


def test_forget_with_no_cache_creates_nothing(cache, logged_warnings):
    wisdom.forget_wisdom()
    assert not cache.exists()
    assert logged_warnings() == []


def test_forget_resets_the_once_only_warnings(cache, logged_warnings):
    cache.mkdir()
    (cache / "wisdom-v1.json").write_text("broken")
    assert wisdom.lookup("a") is None
    wisdom.forget_wisdom()
    (cache / "wisdom-v1.json").write_text("broken again")
    assert wisdom.lookup("a") is None
    assert len(logged_warnings()) == 2


# --- other platforms' fallbacks (Python ≥ 3.13, macOS, Windows, file systems without flock),
# reached by replacing what the store asks the operating system


def windows(monkeypatch) -> None:
    """``sys.platform == "win32"`` as the wisdom module sees it (nothing else changes)."""
    monkeypatch.setattr(wisdom, "sys", types.SimpleNamespace(platform="win32"))


def test_usable_cpu_count_prefers_process_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "process_cpu_count", lambda: 3, raising=False)
    assert wisdom._usable_cpu_count() == 3
    monkeypatch.setattr(os, "process_cpu_count", lambda: None, raising=False)
    assert wisdom._usable_cpu_count() == 1


def test_usable_cpu_count_without_affinity_uses_cpu_count(monkeypatch):
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert wisdom._usable_cpu_count() == 5
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert wisdom._usable_cpu_count() == 1


def test_replace_retries_a_file_held_open_on_windows(monkeypatch, tmp_path):
    windows(monkeypatch)
    real_replace = os.replace
    calls = []

    def held_twice(source, target):
        calls.append(target)
        if len(calls) <= 2:
            raise PermissionError(errno.EACCES, "held by another process")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", held_twice)
    monkeypatch.setattr(wisdom.time, "sleep", lambda seconds: None)
    source, target = tmp_path / "new", tmp_path / "old"
    source.write_text("new")
    target.write_text("old")
    wisdom._replace(str(source), target)
    assert len(calls) == 3 and target.read_text() == "new" and not source.exists()


def test_replace_gives_up_after_the_last_attempt(monkeypatch, tmp_path):
    windows(monkeypatch)
    calls = []

    def always_held(source, target):
        calls.append(target)
        raise PermissionError(errno.EACCES, "held by another process")

    monkeypatch.setattr(os, "replace", always_held)
    monkeypatch.setattr(wisdom.time, "sleep", lambda seconds: None)
    with pytest.raises(PermissionError, match="held by another process"):
        wisdom._replace(str(tmp_path / "new"), tmp_path / "old")
    assert len(calls) == 20


def test_directory_is_not_fsynced_on_windows(monkeypatch, tmp_path):
    windows(monkeypatch)
    opened = []
    monkeypatch.setattr(os, "open", lambda *args, **kwargs: opened.append(args) or pytest.fail("os.open called"))
    wisdom._fsync_directory(tmp_path)
    assert opened == []


def test_a_file_system_without_flock_writes_unlocked_and_warns_once(cache, monkeypatch, caplog):
    def no_locks(descriptor):
        raise OSError(errno.ENOLCK, "no locks available")

    monkeypatch.setattr(wisdom, "_try_lock", no_locks)
    released = []
    monkeypatch.setattr(wisdom, "_release", released.append)
    caplog.set_level(logging.WARNING, logger="jtconv")
    wisdom.record("first", {"plan": 1})
    wisdom.record("second", {"plan": 2})
    document = json.loads((cache / "wisdom-v1.json").read_text(encoding="utf-8"))
    entries = document["environments"][wisdom.environment_id()]["entries"]
    assert entries == {"first": {"plan": 1}, "second": {"plan": 2}}
    warnings = [r.getMessage() for r in caplog.records if r.name == "jtconv" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "without the lock" in warnings[0]
    assert released == []  # a lock never taken is never released


def test_windows_lock_errors_are_retried_until_the_deadline(monkeypatch):
    windows(monkeypatch)  # msvcrt.locking raises OSError (not BlockingIOError) while another process holds it
    attempts = []

    def held(descriptor):
        attempts.append(descriptor)
        if len(attempts) < 3:
            raise OSError(errno.EACCES, "locked")

    monkeypatch.setattr(wisdom, "_try_lock", held)
    monkeypatch.setattr(wisdom.time, "sleep", lambda seconds: None)
    assert wisdom._acquire(7) is True and attempts == [7, 7, 7]
    attempts.clear()
    monkeypatch.setattr(wisdom, "LOCK_TIMEOUT_S", 0.0)

    def always_held(descriptor):
        attempts.append(descriptor)
        raise OSError(errno.EACCES, "locked")

    monkeypatch.setattr(wisdom, "_try_lock", always_held)
    assert wisdom._acquire(7) is False and attempts == [7]
