"""Matrix products through the BLAS that NumPy itself uses (its bundled scipy-openblas).

Why (docs/performance.md has the measurements): OpenBLAS's hand-written AVX-512 GEMM kernels
run at close to the core's peak, with cache blocking, packing and threads; a tiled loop nest
emitted as LLVM IR reached a fraction of that in the time available, and NumPy is a dependency
anyway, so every user of dslc already has this library loaded in the process.

JIT only: generated code calls `dslc_cblas_{s,d}gemm` and `dslc_cblas_{s,d}gemv` (CBLAS
signatures with 64-bit integers), symbols that `register_symbols()` binds to the library's
`scipy_cblas_*64_` before any module is added (so cached object code finds them too).
Products below `MIN_FLOPS` multiply-adds, matrix-vector products below `GEMV_MIN` elements or
inside loops, AOT libraries and hosts without the library use the generated loops (function.py /
prims/arrays.py), which give the same result up to summation order.
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading

MIN_FLOPS = 32 * 32 * 32          # m*n*k below which the call overhead is not worth it
# a matrix-vector product is memory-bound: OpenBLAS's threaded gemv reads B2's 4096 x 512 matrix
# in 160-200 us against 200-250 us for the generated row blocks (measured in turns with NumPy)
GEMV_MIN = 1 << 20                # m*k below which the generated loops are kept
_ROUTINES = ("sgemm", "dgemm", "sgemv", "dgemv")
SYMBOL_PREFIX = "dslc_cblas_"     # generated code calls SYMBOL_PREFIX + routine
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

_lock = threading.Lock()
_state = {}


def _find_library():
    try:
        import numpy
    except ImportError:
        return None
    base = os.path.dirname(os.path.dirname(os.path.abspath(numpy.__file__)))
    for pat in ("numpy.libs/libscipy_openblas64_*.so*", "numpy/.dylibs/libscipy_openblas64_*.dylib"):
        for path in sorted(glob.glob(os.path.join(base, pat))):
            try:
                lib = ctypes.CDLL(path)
                return path, {r: ctypes.cast(getattr(lib, f"scipy_cblas_{r}64_"), ctypes.c_void_p).value
                              for r in _ROUTINES}
            except (OSError, AttributeError):
                continue
    return None


def available() -> bool:
    """Whether the JIT may call BLAS (numpy's ILP64 scipy-openblas found; DSLC_BLAS != 0)."""
    if os.environ.get("DSLC_BLAS", "1") in ("0", "off", "no", "false"):
        return False
    with _lock:
        if "lib" not in _state:
            _state["lib"] = _find_library()
        return _state["lib"] is not None


def register_symbols() -> bool:
    """Bind dslc_cblas_{s,d}{gemm,gemv} for the JIT's symbol resolution; True when BLAS is usable."""
    if not available():
        return False
    with _lock:
        if not _state.get("registered"):
            import llvmlite.binding as llvm
            for routine, address in _state["lib"][1].items():
                llvm.add_symbol(SYMBOL_PREFIX + routine, address)
            _state["registered"] = True
    return True


def called_by(code) -> bool:
    """Whether a kernel's LLVM module (ll.Module) or object code (bytes) calls BLAS."""
    if isinstance(code, (bytes, bytearray)):
        return SYMBOL_PREFIX.encode() in code
    return any(name.startswith(SYMBOL_PREFIX) for name in code.globals)


def tag() -> str:
    return "blas-openblas64-gemv" if available() else "blas-none"


__all__ = ["available", "called_by", "register_symbols", "tag", "MIN_FLOPS", "GEMV_MIN", "SYMBOL_PREFIX"]
