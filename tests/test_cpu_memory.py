"""jtconv.cpu_memory: the opt-in glibc setting that stops per-call page faults, and its
errors for a C library that is not glibc or refuses the setting.

Each page-fault check runs in a fresh subprocess: the setting is process-wide and
permanent, so it must not leak into the other tests.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from jtconv import cpu_memory

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt() is glibc's"
)

_MALLOC_REUSE = """
import ctypes, ctypes.util, resource, sys
from jtconv.cpu_memory import retain_freed_memory
if sys.argv[1] == "retain":
    retain_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 48 * 2**20

def use_a_buffer():  # as XLA's CPU runtime does with a program's temporaries on every call
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)

use_a_buffer()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    use_a_buffer()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""

# A 2d k5 s2 layer with 16 -> 8 channels on a (3, 16, 128, 128) input: its
# "matmul" program has 37.5 MiB of temporaries (the tap products).
_JITTED_LAYER = """
import resource, sys
import jax, jax.numpy as jnp
import jtconv
from jtconv.cpu_memory import retain_freed_memory
if sys.argv[1] == "retain":
    retain_freed_memory()
x = jnp.ones((3, 16, 128, 128)); w = jnp.ones((16, 8, 5, 5))
f = jax.jit(lambda x, w: jtconv.conv_transpose2d(x, w, stride=2, padding=2, output_padding=1))
temp = f.lower(x, w).compile().memory_analysis().temp_size_in_bytes
for _ in range(10):  # warm every malloc arena the runtime's threads may allocate from
    f(x, w).block_until_ready()
faults = []
for _ in range(11):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, w).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(temp, sorted(faults)[5])  # the median call
"""


def _run(script: str, mode: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True, timeout=300)
    return [float(v) for v in out.stdout.split()]


@glibc_only
def test_retaining_freed_memory_stops_page_faults_on_reused_large_buffers():
    pages = 48 * 2**20 / 4096
    (default,) = _run(_MALLOC_REUSE, "default")
    (retained,) = _run(_MALLOC_REUSE, "retain")
    assert default > 0.9 * pages  # a fresh mmap per 48 MiB block: every page faults again
    assert retained < 0.05 * pages  # the heap keeps the block; its reuse touches no new page


@glibc_only
@pytest.mark.slow  # a second page-fault measurement, on a jtconv layer
def test_a_jitted_layer_with_large_temporaries_reuses_its_pages():
    temp, default = _run(_JITTED_LAYER, "default")
    _, retained = _run(_JITTED_LAYER, "retain")
    temp_pages = temp / 4096
    assert temp > 32 * 2**20  # above glibc's largest dynamic mmap threshold
    assert default > 0.9 * temp_pages  # a typical call faults all its temporaries in again
    assert retained < 0.1 * temp_pages  # a typical call reuses pages the heap kept


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
