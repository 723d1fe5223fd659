"""jtconv.cpu_memory: the errors for a C library that is not glibc, or refuses the setting."""

from __future__ import annotations

import pytest

from jtconv import cpu_memory


class _Library:
    def __init__(self, mallopt_result: int | None):
        self.calls: list[tuple[int, int]] = []
        if mallopt_result is not None:
            self.gnu_get_libc_version = lambda: b"2.99"

            def mallopt(parameter: int, value: int) -> int:
                self.calls.append((parameter, value))
                return mallopt_result

            self.mallopt = mallopt


def test_a_c_library_without_mallopt_is_refused(monkeypatch):
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda name: _Library(None))
    with pytest.raises(OSError, match="retain_freed_memory needs glibc's mallopt"):
        cpu_memory.retain_freed_memory()


def test_a_rejected_setting_is_reported(monkeypatch):
    library = _Library(0)
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda name: library)
    with pytest.raises(OSError, match=r"mallopt\(\) rejected M_MMAP_MAX=0 or M_TRIM_THRESHOLD=2147483647"):
        cpu_memory.retain_freed_memory()
    assert library.calls == [(cpu_memory._M_MMAP_MAX, 0)]  # the first refusal stops it


def test_accepted_settings_are_both_made(monkeypatch):
    library = _Library(1)
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda name: library)
    cpu_memory.retain_freed_memory()
    assert library.calls == [(cpu_memory._M_MMAP_MAX, 0), (cpu_memory._M_TRIM_THRESHOLD, cpu_memory.KEPT_BYTES)]
