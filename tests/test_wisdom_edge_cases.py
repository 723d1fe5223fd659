"""jtconv.wisdom: the CPU count and file-locking fallbacks of other platforms
(Python ≥ 3.13, macOS, Windows, file systems without flock), reached by
replacing what the store asks the operating system."""

from __future__ import annotations

import errno
import json
import logging
import os
import types

import pytest

from jtconv import wisdom


@pytest.fixture
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("JTCONV_CACHE_DIR", str(directory))
    wisdom.forget_wisdom()
    yield directory
    wisdom.forget_wisdom()


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
