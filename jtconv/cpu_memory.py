"""An opt-in process setting for XLA on CPU: let glibc keep freed memory.

XLA's CPU runtime allocates a program's temporaries on every call, and glibc serves every block above 32 MiB with a
fresh ``mmap`` that it unmaps on ``free``, so a program with larger temporaries (the tap products of a large
few-channel layer) pays a page fault per 4 KiB page on every call (``python benchmarks/run.py
--retain-freed-memory``). :func:`retain_freed_memory` makes glibc keep freed blocks for reuse; it changes the
allocator of the whole process, which is why jtconv never calls it by itself. Starting Python with::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 python train.py

does the same where the environment can be set. The cost: the process's resident size stays at its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc's mallopt() parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

KEPT_BYTES = 2**31 - 1
"""The trim threshold set: free memory at the top of the heap up to this size stays mapped."""


def retain_freed_memory() -> None:
    """Make glibc's malloc keep freed memory for reuse in this process: ``M_MMAP_MAX = 0`` (large blocks come from
    the heap) and ``M_TRIM_THRESHOLD = 2 GiB − 1`` (freed memory is not handed back). Process-wide and permanent.

    Raises:
      OSError: when the C library is not glibc (no ``mallopt``), or glibc rejects a setting.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        raise OSError("retain_freed_memory needs glibc's mallopt(); this C library has none")
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, KEPT_BYTES)):
        raise OSError("mallopt() rejected M_MMAP_MAX=0 or M_TRIM_THRESHOLD=2147483647")
