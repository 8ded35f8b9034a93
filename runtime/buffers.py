"""Output arrays of 32 MiB and more, from buffers this process has already written to.

A fresh large NumPy array is memory the kernel touches first: each page faults and is zeroed on
the first write. A 40 MB `np.empty(...).fill(1)` took 4.8 ms against 1.1 ms for an array filled
before, and B1's gradient (a 40 MB output) 11.0-11.2 ms against 8.4-8.8 ms from this pool
(docs/performance.md). Below 32 MiB glibc already reuses freed blocks: after a large block is
freed its mmap threshold rises up to 32 MiB, so the next np.empty of that size comes from memory
already touched (B3's and B2's 4-8 MB outputs gained nothing from the pool). So large outputs
come from a small pool: a buffer is handed out again once no array refers to it any more (its
reference count is back to the pool's own), never while one does, and only to a request of at
least half its size. The pool keeps at most `MAX_BUFFERS` buffers and `MAX_BYTES` bytes; past
that it lets go of the least recently used ones. An array from the pool does not own its data
(`.base` is the buffer), like any view.
"""
from __future__ import annotations

import ctypes
import sys
import threading

import numpy as np

MIN_BYTES = 32 << 20         # smaller outputs are plain np.empty (glibc's largest mmap threshold)
MAX_BYTES = 512 << 20        # bytes the pool may hold (a larger output is never pooled)
MAX_BUFFERS = 8
ALIGN = 64                   # bytes: like the arrays kernels allocate (a vector load per cache line)

_lock = threading.Lock()
_pool: list = []             # ctypes byte arrays, least recently handed out first
_FREE_REFS = 3               # a buffer only the pool holds: its list, _take's loop variable, getrefcount's argument


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array, like np.empty(shape, dtype)."""
    dtype = np.dtype(dtype)
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    if nbytes < MIN_BYTES or nbytes > MAX_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        buf = _take(nbytes)
    offset = -ctypes.addressof(buf) % ALIGN
    return np.frombuffer(buf, dtype, count, offset).reshape(shape)


def _take(nbytes: int):
    """A free pooled buffer for nbytes (moved to the end of the pool), else a new one."""
    for k in range(len(_pool)):          # not enumerate: its reused tuple would hold a reference
        buf = _pool[k]
        size = len(buf) - ALIGN
        if nbytes <= size <= 2 * nbytes and sys.getrefcount(buf) == _FREE_REFS:
            _pool.append(_pool.pop(k))
            return buf
    buf = (ctypes.c_char * (nbytes + ALIGN))()
    _pool.append(buf)
    total = sum(len(b) for b in _pool)
    while len(_pool) > 1 and (len(_pool) > MAX_BUFFERS or total > MAX_BYTES):
        total -= len(_pool.pop(0))      # one still in use lives on in its arrays, unpooled
    return buf


def clear() -> None:
    """Drop every buffer the pool holds (arrays still using one keep it alive)."""
    with _lock:
        _pool.clear()


__all__ = ["empty", "clear", "MIN_BYTES", "MAX_BYTES", "MAX_BUFFERS"]
