"""A one-time check that NumPy's `PyArrayObject` has the layout the fast call path assumes.

The JIT's `NAME__py` entry points take each array as a `PyObject*` and read, straight from the struct
(CPython, 64-bit, NumPy 1.x/2.x):

    offset 16  char*      data
    offset 24  int        nd
    offset 32  npy_intp*  dimensions
    offset 40  npy_intp*  strides      (checked too, not used)

and the C entry point's callers read `data` at offset 16 instead of paying ~1.5 us for `arr.ctypes.data`.
`check_layout()` verifies this on a few arrays of different ranks, dtypes and offsets by reading the
memory at `id(arr)` with ctypes (nothing is compiled), and never dereferences the `dimensions` pointer
before `data` and `nd` have matched. `FAST_PATH_OK` is its result at import; setting the environment
variable `DSLC_DISABLE_FAST_PATH=1` forces it to False.
"""
from __future__ import annotations

import ctypes
import os
import sys

import numpy as np

OFFSET_DATA = 16
OFFSET_ND = 24
OFFSET_DIMENSIONS = 32
OFFSET_STRIDES = 40


def _word(address: int) -> int:
    return ctypes.c_uint64.from_address(address).value


def _examples() -> list:
    base = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4)
    return [
        np.arange(5, dtype=np.float32),
        np.zeros((3, 4), dtype=np.float64),
        base,
        base[:, 1:, ::2],                           # a strided view with a data offset
        np.ones((7, 1), dtype=np.bool_)[3:],
        np.empty((0,), dtype=np.int64),
        np.arange(6, dtype=np.float64)[2:],         # a 1-d view with a data offset
        np.zeros((2, 1, 3, 1, 2), dtype=np.float32),
    ]


def check_layout() -> tuple[bool, str]:
    """(ok, reason): whether every example array's struct has data/nd/dimensions/strides where expected."""
    if os.environ.get("DSLC_DISABLE_FAST_PATH", "") not in ("", "0"):
        return False, "disabled by DSLC_DISABLE_FAST_PATH"
    if sys.implementation.name != "cpython":
        return False, f"not CPython ({sys.implementation.name}): id() is not an address"
    if ctypes.sizeof(ctypes.c_void_p) != 8 or np.dtype(np.intp).itemsize != 8:
        return False, "not a 64-bit platform"
    if ctypes.sizeof(ctypes.c_int) != 4:
        return False, "C int is not 4 bytes"
    if getattr(np.ndarray, "__basicsize__", 0) < OFFSET_STRIDES + 8:
        return False, "ndarray's struct is smaller than expected"
    try:
        for arr in _examples():
            base = id(arr)
            if base % 8:
                return False, "array object not 8-byte aligned"
            if _word(base + OFFSET_DATA) != arr.__array_interface__["data"][0]:
                return False, "data pointer not at offset 16"
            if ctypes.c_int.from_address(base + OFFSET_ND).value != arr.ndim:
                return False, "nd not at offset 24"
            dims = _word(base + OFFSET_DIMENSIONS)
            strides = _word(base + OFFSET_STRIDES)
            if dims == 0 or dims % 8 or strides == 0 or strides % 8:
                return False, "dimensions/strides pointers not where expected"
            if tuple(ctypes.c_int64.from_address(dims + 8 * k).value for k in range(arr.ndim)) != arr.shape:
                return False, "dimensions not at offset 32"
            if tuple(ctypes.c_int64.from_address(strides + 8 * k).value for k in range(arr.ndim)) != arr.strides:
                return False, "strides not at offset 40"
    except Exception as e:  # pragma: no cover - defensive: any surprise means "do not use the fast path"
        return False, f"layout check failed: {e!r}"
    return True, "ok"


FAST_PATH_OK, FAST_PATH_REASON = check_layout()

# A ctypes view of the whole address space as 64-bit words: `WORDS[(id(arr) >> 3) + 2]` is `arr`'s data
# pointer (offset 16) in ~50 ns. Only to be used when FAST_PATH_OK.
WORDS = (ctypes.c_uint64 * (1 << 59)).from_address(0) if FAST_PATH_OK else None


def data_address(arr: np.ndarray) -> int:
    """The address of an ndarray's first element."""
    if FAST_PATH_OK:
        return WORDS[(id(arr) >> 3) + 2]
    return arr.__array_interface__["data"][0]
