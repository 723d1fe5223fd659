"""An opt-in process setting for XLA on CPU: let glibc keep freed memory.

XLA's CPU runtime allocates a program's temporary buffer on every call, and
glibc serves every block above 32 MiB with a fresh ``mmap`` that it unmaps
again on ``free``. A program whose temporaries exceed 32 MiB therefore touches
fresh pages on every call and pays a page fault per 4 KiB page, which for a
few-channel layer can cost more than its arithmetic (``python
benchmarks/run.py --retain-freed-memory`` measures the difference). jtconv's fast lowerings
build such temporaries for large few-channel layers (the tap products ``Z``
are ``T·Cout`` values per input position).

:func:`retain_freed_memory` switches glibc to keep freed blocks for reuse.
It changes the allocator of the *whole process* (JAX, torch, numpy alike),
which is why jtconv never calls it by itself. Starting Python with::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 python train.py

does the same before the first allocation; this function is for where the
environment cannot be set (a notebook, an embedding application). The cost:
memory freed by the process is kept (its resident size stays at its peak).
"""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc's mallopt() parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

KEPT_BYTES = 2**31 - 1
"""The trim threshold set: free memory at the top of the heap up to this size stays mapped."""


def _glibc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        raise OSError("retain_freed_memory needs glibc's mallopt(); this C library has none")
    return libc


def retain_freed_memory() -> None:
    """Make glibc's malloc keep freed memory for reuse in this process.

    Sets ``M_MMAP_MAX = 0`` (large blocks come from the heap, not from fresh
    ``mmap`` calls) and ``M_TRIM_THRESHOLD = 2 GiB − 1`` (freed memory is not
    handed back to the system). Later calls of a jitted function then reuse
    the pages of the previous call's temporaries instead of faulting in new
    ones. Process-wide and permanent, the same as the environment variables
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``.

    Raises:
      OSError: when the C library is not glibc (no ``mallopt``), or glibc
        rejects a setting.
    """
    libc = _glibc()
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, KEPT_BYTES)):
        raise OSError("mallopt() rejected M_MMAP_MAX=0 or M_TRIM_THRESHOLD=2147483647")
