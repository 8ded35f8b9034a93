"""The CUDA driver API through ctypes: device memory, PTX modules, kernel launches.

Imports only the standard library and NumPy. Nothing touches the driver at import time: `libcuda.so.1`
is loaded, `cuInit` called and the device counted on the first use (`is_available()`, `to_device`,
`Module`, ...), once per process, under a lock.

- `is_available()` is False (and never raises) when the library is missing, `cuInit` fails or there
  are no devices; `unavailable_reason()` says why. Any other use then raises `CudaUnavailableError`.
- Every driver call is checked; a failure is a `CudaError` (a RuntimeError) naming the function, the
  `CUresult` name and the driver's `cuGetErrorString` text. An allocation that fails for lack of
  memory is a `CudaOutOfMemoryError`, which is also a `MemoryError`, carrying the requested size.
- Contexts: the primary context of each device is retained once per process (the context CuPy,
  PyTorch, JAX and Numba use too, so pointers are shared freely) and made current in the calling
  thread before each operation that needs it (`cuCtxGetCurrent` + `cuCtxSetCurrent`).
- `DeviceArray`: a C-contiguous device buffer with `shape`, `dtype`, `ptr`; `.get()` / `np.asarray`
  copy to the host; it exports `__cuda_array_interface__` (version 3) and
  `DeviceArray.from_cuda_array_interface(obj)` wraps a CuPy / PyTorch / JAX / Numba array without
  copying (and without a driver call), keeping a reference to the owner.
- `Module(ptx)` loads PTX (JIT-compiled by the driver; its error log goes into the exception) or a
  cubin; `module.get_function(name)` and `launch(function, grid, block, args)` run a kernel on the
  legacy default stream and, unless `sync=False`, synchronize and raise on failure.

All copies and launches use the legacy default stream and are synchronous with respect to the host
(pageable-memory copies; `launch` synchronizes by default), so the arrays this module hands out never
need a stream to be waited on: their `__cuda_array_interface__` says `"stream": None`.

Environment: `DSLC_CUDA_DISABLE=1` makes `is_available()` False (to test the CPU-only path on a GPU
machine); `DSLC_CUDA_LIBRARY=/path/libcuda.so` loads another driver library (tests use a fake one).
"""
from __future__ import annotations

import ctypes
import gc
import operator
import os
import threading
import weakref
from typing import Any, Sequence

import numpy as np

__all__ = ["CudaError", "CudaUnavailableError", "CudaOutOfMemoryError", "is_available", "device_count",
           "unavailable_reason", "DeviceArray", "to_device", "empty", "zeros", "is_device_array",
           "as_device_array", "Module", "Function", "launch", "pack_kernel_args", "synchronize",
           "mem_get_info", "device_name", "compute_capability", "device_attribute", "error_name",
           "driver_version"]


# --- errors -------------------------------------------------------------------------------------------

# CUresult codes -> names, from cuda.h (CUDA 13.0), without the "CUDA_ERROR_" prefix. Used when the
# driver cannot name a code itself (cuGetErrorName fails) and, driver-free, by `error_name`.
_CURESULT_NAMES = {
    0: "CUDA_SUCCESS", 1: "INVALID_VALUE", 2: "OUT_OF_MEMORY", 3: "NOT_INITIALIZED", 4: "DEINITIALIZED",
    5: "PROFILER_DISABLED", 6: "PROFILER_NOT_INITIALIZED", 7: "PROFILER_ALREADY_STARTED",
    8: "PROFILER_ALREADY_STOPPED", 34: "STUB_LIBRARY", 36: "CALL_REQUIRES_NEWER_DRIVER",
    46: "DEVICE_UNAVAILABLE", 100: "NO_DEVICE", 101: "INVALID_DEVICE", 102: "DEVICE_NOT_LICENSED",
    200: "INVALID_IMAGE", 201: "INVALID_CONTEXT", 202: "CONTEXT_ALREADY_CURRENT", 205: "MAP_FAILED",
    206: "UNMAP_FAILED", 207: "ARRAY_IS_MAPPED", 208: "ALREADY_MAPPED", 209: "NO_BINARY_FOR_GPU",
    210: "ALREADY_ACQUIRED", 211: "NOT_MAPPED", 212: "NOT_MAPPED_AS_ARRAY", 213: "NOT_MAPPED_AS_POINTER",
    214: "ECC_UNCORRECTABLE", 215: "UNSUPPORTED_LIMIT", 216: "CONTEXT_ALREADY_IN_USE",
    217: "PEER_ACCESS_UNSUPPORTED", 218: "INVALID_PTX", 219: "INVALID_GRAPHICS_CONTEXT",
    220: "NVLINK_UNCORRECTABLE", 221: "JIT_COMPILER_NOT_FOUND", 222: "UNSUPPORTED_PTX_VERSION",
    223: "JIT_COMPILATION_DISABLED", 224: "UNSUPPORTED_EXEC_AFFINITY", 225: "UNSUPPORTED_DEVSIDE_SYNC",
    226: "CONTAINED", 300: "INVALID_SOURCE", 301: "FILE_NOT_FOUND", 302: "SHARED_OBJECT_SYMBOL_NOT_FOUND",
    303: "SHARED_OBJECT_INIT_FAILED", 304: "OPERATING_SYSTEM", 400: "INVALID_HANDLE", 401: "ILLEGAL_STATE",
    402: "LOSSY_QUERY", 500: "NOT_FOUND", 600: "NOT_READY", 700: "ILLEGAL_ADDRESS",
    701: "LAUNCH_OUT_OF_RESOURCES", 702: "LAUNCH_TIMEOUT", 703: "LAUNCH_INCOMPATIBLE_TEXTURING",
    704: "PEER_ACCESS_ALREADY_ENABLED", 705: "PEER_ACCESS_NOT_ENABLED", 708: "PRIMARY_CONTEXT_ACTIVE",
    709: "CONTEXT_IS_DESTROYED", 710: "ASSERT", 711: "TOO_MANY_PEERS", 712: "HOST_MEMORY_ALREADY_REGISTERED",
    713: "HOST_MEMORY_NOT_REGISTERED", 714: "HARDWARE_STACK_ERROR", 715: "ILLEGAL_INSTRUCTION",
    716: "MISALIGNED_ADDRESS", 717: "INVALID_ADDRESS_SPACE", 718: "INVALID_PC", 719: "LAUNCH_FAILED",
    720: "COOPERATIVE_LAUNCH_TOO_LARGE", 721: "TENSOR_MEMORY_LEAK", 800: "NOT_PERMITTED",
    801: "NOT_SUPPORTED", 802: "SYSTEM_NOT_READY", 803: "SYSTEM_DRIVER_MISMATCH",
    804: "COMPAT_NOT_SUPPORTED_ON_DEVICE", 805: "MPS_CONNECTION_FAILED", 806: "MPS_RPC_FAILURE",
    807: "MPS_SERVER_NOT_READY", 808: "MPS_MAX_CLIENTS_REACHED", 809: "MPS_MAX_CONNECTIONS_REACHED",
    810: "MPS_CLIENT_TERMINATED", 811: "CDP_NOT_SUPPORTED", 812: "CDP_VERSION_MISMATCH",
    900: "STREAM_CAPTURE_UNSUPPORTED", 901: "STREAM_CAPTURE_INVALIDATED", 902: "STREAM_CAPTURE_MERGE",
    903: "STREAM_CAPTURE_UNMATCHED", 904: "STREAM_CAPTURE_UNJOINED", 905: "STREAM_CAPTURE_ISOLATION",
    906: "STREAM_CAPTURE_IMPLICIT", 907: "CAPTURED_EVENT", 908: "STREAM_CAPTURE_WRONG_THREAD",
    909: "TIMEOUT", 910: "GRAPH_EXEC_UPDATE_FAILURE", 911: "EXTERNAL_DEVICE", 912: "INVALID_CLUSTER_SIZE",
    913: "FUNCTION_NOT_LOADED", 914: "INVALID_RESOURCE_TYPE", 915: "INVALID_RESOURCE_CONFIGURATION",
    916: "KEY_ROTATION", 999: "UNKNOWN",
}

# Errors after which the context is unusable: every later call in this process fails the same way.
_STICKY = {700, 710, 714, 715, 716, 717, 718, 719}

CUDA_SUCCESS = 0
CUDA_ERROR_OUT_OF_MEMORY = 2
CUDA_ERROR_NOT_FOUND = 500

_UNAVAILABLE_HINT = "run on the CPU (the default) or on a machine with an NVIDIA GPU"


def error_name(code: int) -> str:
    """The CUresult name of `code` (`2` -> `"CUDA_ERROR_OUT_OF_MEMORY"`), without asking the driver."""
    name = _CURESULT_NAMES.get(int(code))
    if name is None:
        return f"CUresult {int(code)}"
    return name if name.startswith("CUDA_") else "CUDA_ERROR_" + name


class CudaError(RuntimeError):
    """A CUDA driver call failed. `.function` is the driver function, `.code` the CUresult,
    `.name` its name (`CUDA_ERROR_...`) and `.description` the driver's own text."""

    def __init__(self, message: str, *, function: str | None = None, code: int | None = None,
                 name: str | None = None, description: str | None = None):
        super().__init__(message)
        self.function = function
        self.code = code
        self.name = name
        self.description = description


class CudaOutOfMemoryError(CudaError, MemoryError):
    """Device memory is exhausted; `.nbytes` is the size that was requested, `.device` the device."""

    def __init__(self, message: str, *, nbytes: int, device: int | None, **kw: Any):
        super().__init__(message, **kw)
        self.nbytes = nbytes
        self.device = device


class CudaUnavailableError(RuntimeError):
    """There is no usable CUDA driver or GPU on this machine; `.reason` says what is missing."""

    def __init__(self, reason: str):
        super().__init__(f"no CUDA GPU or driver is available on this machine ({reason}); {_UNAVAILABLE_HINT}")
        self.reason = reason


# --- the driver library ---------------------------------------------------------------------------------

_p = ctypes.POINTER
_u64 = ctypes.c_uint64          # CUdeviceptr
_vp = ctypes.c_void_p           # CUcontext, CUmodule, CUfunction, CUstream (opaque handles)
_int = ctypes.c_int
_uint = ctypes.c_uint
_size = ctypes.c_size_t

# name in libcuda -> (argtypes); all return CUresult (int). The `_v2` symbols are what cuda.h's macros
# resolve to for the 64-bit API (cuMemAlloc -> cuMemAlloc_v2, ...).
_PROTOTYPES: dict[str, tuple] = {
    "cuInit": (_uint,),
    "cuDriverGetVersion": (_p(_int),),
    "cuGetErrorName": (_int, _p(ctypes.c_char_p)),
    "cuGetErrorString": (_int, _p(ctypes.c_char_p)),
    "cuDeviceGetCount": (_p(_int),),
    "cuDeviceGet": (_p(_int), _int),
    "cuDeviceGetName": (ctypes.c_char_p, _int, _int),
    "cuDeviceGetAttribute": (_p(_int), _int, _int),
    "cuDevicePrimaryCtxRetain": (_p(_vp), _int),
    "cuCtxGetCurrent": (_p(_vp),),
    "cuCtxSetCurrent": (_vp,),
    "cuCtxSynchronize": (),
    "cuMemAlloc_v2": (_p(_u64), _size),
    "cuMemFree_v2": (_u64,),
    "cuMemGetInfo_v2": (_p(_size), _p(_size)),
    "cuMemcpyHtoD_v2": (_u64, _vp, _size),
    "cuMemcpyDtoH_v2": (_vp, _u64, _size),
    "cuMemcpyDtoD_v2": (_u64, _u64, _size),
    "cuMemsetD8_v2": (_u64, ctypes.c_ubyte, _size),
    "cuPointerGetAttribute": (_vp, _int, _u64),
    "cuModuleLoadDataEx": (_p(_vp), _vp, _uint, _p(_int), _p(_vp)),
    "cuModuleUnload": (_vp,),
    "cuModuleGetFunction": (_p(_vp), _vp, ctypes.c_char_p),
    "cuFuncGetAttribute": (_p(_int), _int, _vp),
    "cuLaunchKernel": (_vp, _uint, _uint, _uint, _uint, _uint, _uint, _uint, _vp, _p(_vp), _p(_vp)),
    "cuStreamSynchronize": (_vp,),
}
# bound when the library has them (every real driver since CUDA 9; the tests' fake driver may not)
_OPTIONAL_PROTOTYPES: dict[str, tuple] = {
    "cuLaunchCooperativeKernel": (_vp, _uint, _uint, _uint, _uint, _uint, _uint, _uint, _vp, _p(_vp)),
    "cuOccupancyMaxActiveBlocksPerMultiprocessor": (_p(_int), _vp, _int, _size),
    "cuCtxSetLimit": (_int, _size),
    "cuMemHostAlloc": (_p(_vp), _size, _uint),
    "cuMemHostGetDevicePointer_v2": (_p(_u64), _vp, _uint),
    "cuMemFreeHost": (_vp,),
    "cuCtxGetLimit": (_p(_size), _int),
}

# enum values from cuda.h
CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1
CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X = 5
CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8
CU_DEVICE_ATTRIBUTE_WARP_SIZE = 10
CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9
CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0
CU_FUNC_ATTRIBUTE_NUM_REGS = 4
CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH = 95
CU_LIMIT_MALLOC_HEAP_SIZE = 2
CU_JIT_INFO_LOG_BUFFER = 3
CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4
CU_JIT_ERROR_LOG_BUFFER = 5
CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6

_JIT_LOG_SIZE = 16384


class _Driver:
    """The loaded library with its functions bound, and the process-wide state built on it."""

    def __init__(self, lib: ctypes.CDLL, path: str):
        self.lib = lib
        self.path = path
        self.fn: dict[str, Any] = {}
        for name, argtypes in _PROTOTYPES.items():
            f = getattr(lib, name)          # AttributeError: an old or foreign library
            f.argtypes = argtypes
            f.restype = _int
            self.fn[name] = f
        for name, argtypes in _OPTIONAL_PROTOTYPES.items():
            f = getattr(lib, name, None)
            if f is not None:
                f.argtypes = argtypes
                f.restype = _int
                self.fn[name] = f
        self.device_count = 0
        self.contexts: dict[int, ctypes.c_void_p] = {}
        self.lock = threading.Lock()

    def describe(self, code: int) -> tuple[str, str]:
        """(name, description) of a CUresult, from the driver when it knows the code."""
        name = desc = None
        s = ctypes.c_char_p()
        try:
            if self.fn["cuGetErrorName"](code, ctypes.byref(s)) == 0 and s.value:
                name = s.value.decode(errors="replace")
            s = ctypes.c_char_p()
            if self.fn["cuGetErrorString"](code, ctypes.byref(s)) == 0 and s.value:
                desc = s.value.decode(errors="replace")
        except Exception:  # pragma: no cover - a broken driver must not hide the original error
            pass
        return name or error_name(code), desc or "unrecognized error code"

    def error(self, function: str, code: int, detail: str = "", log: str = "") -> CudaError:
        name, desc = self.describe(code)
        msg = f"{function} failed" + (f" ({detail})" if detail else "") + f": {name}: {desc}"
        if log:
            msg += f"\n{log}"
        if code in _STICKY:
            msg += ("; this error leaves the CUDA context unusable: restart the Python process to use "
                    "the GPU again")
        return CudaError(msg, function=function, code=code, name=name, description=desc)

    def check(self, function: str, *args: Any, detail: str = "") -> None:
        code = self.fn[function](*args)
        if code != 0:
            raise self.error(function, code, detail)

    def context(self, device: int) -> ctypes.c_void_p:
        """Retain the primary context of `device` (once per process) and make it current here."""
        ctx = self.contexts.get(device)
        if ctx is None:
            if not 0 <= device < self.device_count:
                raise ValueError(f"CUDA device {device} does not exist: this machine has "
                                 f"{self.device_count} CUDA device(s), numbered from 0")
            with self.lock:
                ctx = self.contexts.get(device)
                if ctx is None:
                    dev = _int()
                    self.check("cuDeviceGet", ctypes.byref(dev), device)
                    ctx = _vp()
                    self.check("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev.value)
                    self.contexts[device] = ctx
        cur = _vp()
        self.check("cuCtxGetCurrent", ctypes.byref(cur))
        if cur.value != ctx.value:
            self.check("cuCtxSetCurrent", ctx)
        return ctx


_lock = threading.Lock()
_driver_obj: _Driver | None = None
_unavailable: str | None = None      # the reason, once loading failed
_loaded = False
_generation = 0                      # bumped on reset and in a forked child: stale handles are not freed


def _library_names() -> list[str]:
    override = os.environ.get("DSLC_CUDA_LIBRARY")
    if override:
        return [override]
    if os.name == "nt":  # pragma: no cover
        return ["nvcuda.dll"]
    return ["libcuda.so.1", "libcuda.so"]


def _load() -> None:
    global _driver_obj, _unavailable, _loaded
    if os.environ.get("DSLC_CUDA_DISABLE", "").strip() not in ("", "0"):
        _unavailable = "CUDA disabled by DSLC_CUDA_DISABLE"
        return
    names = _library_names()
    lib = None
    errors = []
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as e:
            errors.append(str(e))
    if lib is None:
        _unavailable = f"{names[0]} not found"
        if names[0] not in ("libcuda.so.1", "nvcuda.dll") and errors:
            _unavailable += f": {errors[0]}"
        return
    try:
        drv = _Driver(lib, name)
    except AttributeError as e:
        _unavailable = f"{name} is not a usable CUDA driver (missing function: {e}); the NVIDIA driver may be too old"
        return
    code = drv.fn["cuInit"](0)
    if code != 0:
        cname, desc = drv.describe(code)
        _unavailable = f"cuInit returned {cname}: {desc}"
        return
    count = _int()
    code = drv.fn["cuDeviceGetCount"](ctypes.byref(count))
    if code != 0:
        cname, desc = drv.describe(code)
        _unavailable = f"cuDeviceGetCount returned {cname}: {desc}"
        return
    if count.value <= 0:
        _unavailable = "the CUDA driver reports 0 devices"
        return
    drv.device_count = count.value
    _driver_obj = drv


def _try_driver() -> _Driver | None:
    global _loaded
    if not _loaded:
        with _lock:
            if not _loaded:
                try:
                    _load()
                except Exception as e:  # never let probing raise
                    global _unavailable
                    _unavailable = f"loading the CUDA driver failed: {type(e).__name__}: {e}"
                _loaded = True
    return _driver_obj


def _driver() -> _Driver:
    drv = _try_driver()
    if drv is None:
        raise CudaUnavailableError(_unavailable or "unknown reason")
    return drv


def _reset() -> None:
    """Forget the loaded driver (tests; a forked child). Handles made before are never freed after."""
    global _driver_obj, _unavailable, _loaded, _generation, _pool_bytes
    with _lock:
        _driver_obj = None
        _unavailable = None
        _loaded = False
        _generation += 1
    with _pool_lock:
        _pool.clear()               # the old driver's memory: never freed through a new one
        _pool_bytes = 0


if hasattr(os, "register_at_fork"):
    # CUDA state does not survive fork(): the child starts over (and cuInit tells it the truth).
    os.register_at_fork(after_in_child=_reset)


def is_available() -> bool:
    """True when the CUDA driver loads, initializes and reports at least one device. Never raises."""
    try:
        return _try_driver() is not None
    except Exception:  # pragma: no cover
        return False


def unavailable_reason() -> str | None:
    """Why CUDA is not available (None when it is)."""
    return None if is_available() else (_unavailable or "unknown reason")


def device_count() -> int:
    """Number of CUDA devices (0 without a driver or GPU). Never raises."""
    try:
        drv = _try_driver()
    except Exception:  # pragma: no cover
        return 0
    return drv.device_count if drv is not None else 0


def driver_version() -> int:
    """The driver's CUDA version as an integer (12040 for 12.4)."""
    drv = _driver()
    v = _int()
    drv.check("cuDriverGetVersion", ctypes.byref(v))
    return v.value


def device_attribute(attribute: int, device: int = 0) -> int:
    """`cuDeviceGetAttribute(attribute)` of a device (CU_DEVICE_ATTRIBUTE_* constants of this module)."""
    drv = _driver()
    drv.context(device)
    v = _int()
    drv.check("cuDeviceGetAttribute", ctypes.byref(v), int(attribute), int(device))
    return v.value


def compute_capability(device: int = 0) -> tuple[int, int]:
    """(major, minor): (9, 0) for an H100."""
    return (device_attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
            device_attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device))


def device_name(device: int = 0) -> str:
    drv = _driver()
    drv.context(device)
    buf = ctypes.create_string_buffer(256)
    drv.check("cuDeviceGetName", buf, 256, int(device))
    return buf.value.decode(errors="replace")


def mem_get_info(device: int = 0) -> tuple[int, int]:
    """(free, total) bytes of device memory."""
    drv = _driver()
    drv.context(device)
    free, total = _size(), _size()
    drv.check("cuMemGetInfo_v2", ctypes.byref(free), ctypes.byref(total))
    return free.value, total.value


def synchronize(device: int = 0) -> None:
    """Wait for all work on the device (its primary context) to finish; raise if any of it failed."""
    drv = _driver()
    drv.context(device)
    drv.check("cuCtxSynchronize")


# --- device memory --------------------------------------------------------------------------------------

# Freed blocks of at least POOL_MIN_BYTES are kept for reuse by an allocation of the same size
# (cuMemAlloc/cuMemFree of 400 MB take ~0.4 ms, longer than a kernel reading it), up to
# DSLC_CUDA_POOL_MB (default 2048) in all; `release_pool()` frees them, and so does an
# allocation that would otherwise run out of memory.
POOL_MIN_BYTES = 1 << 20
_pool: dict[tuple[int, int], list[int]] = {}
_pool_lock = threading.Lock()
_pool_bytes = 0


def _pool_cap() -> int:
    env = os.environ.get("DSLC_CUDA_POOL_MB", "")
    return (int(env) << 20) if env.isdigit() else (2048 << 20)


def release_pool() -> int:
    """Free the device memory kept for reuse by freed arrays; returns the bytes released."""
    global _pool_bytes
    with _pool_lock:
        blocks, _pool_bytes = [(k[0], p) for k, ps in _pool.items() for p in ps], 0
        released = sum(k[1] * len(ps) for k, ps in _pool.items())
        _pool.clear()
    drv = _driver_obj
    for device, p in blocks:
        if drv is not None:
            drv.context(device)
            drv.fn["cuMemFree_v2"](p)
    return released


def _mem_alloc(drv: _Driver, nbytes: int, device: int) -> int:
    global _pool_bytes
    if nbytes >= POOL_MIN_BYTES:
        with _pool_lock:
            free = _pool.get((device, nbytes))
            if free:
                _pool_bytes -= nbytes
                return free.pop()
    drv.context(device)
    ptr = _u64()
    code = drv.fn["cuMemAlloc_v2"](ctypes.byref(ptr), nbytes)
    if code == CUDA_ERROR_OUT_OF_MEMORY:
        gc.collect()  # unreachable DeviceArrays hold memory until collected: free them and retry once
        release_pool()
        code = drv.fn["cuMemAlloc_v2"](ctypes.byref(ptr), nbytes)
    if code == CUDA_ERROR_OUT_OF_MEMORY:
        name, desc = drv.describe(code)
        free = ""
        try:
            f, t = _size(), _size()
            if drv.fn["cuMemGetInfo_v2"](ctypes.byref(f), ctypes.byref(t)) == 0:
                free = f" ({_fmt_bytes(f.value)} free of {_fmt_bytes(t.value)})"
        except Exception:  # pragma: no cover
            pass
        raise CudaOutOfMemoryError(
            f"out of GPU memory: cannot allocate {nbytes} bytes ({_fmt_bytes(nbytes)}) on CUDA device "
            f"{device}{free}: cuMemAlloc_v2 failed: {name}: {desc}",
            nbytes=nbytes, device=device, function="cuMemAlloc_v2", code=code, name=name, description=desc)
    if code != 0:
        raise drv.error("cuMemAlloc_v2", code, f"allocating {nbytes} bytes on CUDA device {device}")
    return ptr.value


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _mem_free(ptr: int, device: int, generation: int, nbytes: int = 0) -> None:
    """Finalizer of an owned allocation (kept for reuse when big, see POOL_MIN_BYTES). Never
    raises (it runs inside the garbage collector)."""
    global _pool_bytes
    drv = _driver_obj
    if drv is None or generation != _generation:
        return
    if nbytes >= POOL_MIN_BYTES:
        with _pool_lock:
            if _pool_bytes + nbytes <= _pool_cap():
                _pool.setdefault((device, nbytes), []).append(ptr)
                _pool_bytes += nbytes
                return
    try:
        drv.context(device)
        drv.fn["cuMemFree_v2"](ptr)
    except Exception:  # pragma: no cover
        pass


_OK_KINDS = "biufc"


def _check_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind not in _OK_KINDS or dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise TypeError(f"a CUDA DeviceArray holds numbers or booleans, not {dt}")
    if not dt.isnative:
        dt = dt.newbyteorder("=")
    return dt


def _check_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        out = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"a shape is a tuple of non-negative ints, not {shape!r}") from None
    if any(s < 0 for s in out):
        raise ValueError(f"negative dimension in shape {out}")
    return out


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    acc = itemsize
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


class DeviceArray:
    """A C-contiguous array in CUDA device memory.

    `DeviceArray(shape, dtype)` allocates (uninitialised, like `np.empty`); see also `to_device`,
    `empty`, `zeros` and `DeviceArray.from_cuda_array_interface`. The memory is freed when the array
    (and every view of it) is garbage collected; a wrapper around foreign memory keeps the foreign
    object alive instead and never frees anything.
    """

    # NumPy ufuncs (`np_array + device_array`, np.sin(device_array)) raise TypeError instead of
    # silently copying to the host; np.asarray / .get() are the explicit copies.
    __array_ufunc__ = None

    def __init__(self, shape: Any, dtype: Any = np.float32, *, device: int = 0):
        dt = _check_dtype(dtype)
        shp = _check_shape(shape)
        drv = _driver()
        self._init(shp, dt, 0, device, None, False)
        if self._nbytes:
            self._ptr = _mem_alloc(drv, self._nbytes, device)
            f = weakref.finalize(self, _mem_free, self._ptr, device, _generation, self._nbytes)
            f.atexit = False  # the process exit frees device memory; the driver may be gone by then

    def _init(self, shape: tuple[int, ...], dtype: np.dtype, ptr: int, device: int | None, owner: Any,
              readonly: bool) -> None:
        self._shape = shape
        self._dtype = dtype
        self._ptr = int(ptr)
        self._device = device
        self._owner = owner
        self._readonly = bool(readonly)
        size = 1
        for s in shape:
            size *= s
        self._size = size
        self._nbytes = size * dtype.itemsize

    @classmethod
    def _wrap(cls, ptr: int, shape: tuple[int, ...], dtype: np.dtype, *, device: int | None = None,
              owner: Any = None, readonly: bool = False) -> "DeviceArray":
        """A DeviceArray over memory someone else owns (no allocation, no driver call)."""
        self = cls.__new__(cls)
        self._init(_check_shape(shape), _check_dtype(dtype), ptr, device, owner, readonly)
        return self

    # -- interop -----------------------------------------------------------------------------------------

    @classmethod
    def from_cuda_array_interface(cls, obj: Any) -> "DeviceArray":
        """Wrap `obj` (anything exposing `__cuda_array_interface__`: a CuPy, PyTorch, JAX or Numba
        device array) without copying. The result keeps `obj` alive. Only C-contiguous arrays are
        accepted (call `.copy()` / `.contiguous()` on the source first); a masked array is rejected.
        Makes no driver call unless the producer names a stream to wait for."""
        if isinstance(obj, DeviceArray):
            return obj
        try:
            iface = obj.__cuda_array_interface__
        except AttributeError:
            raise TypeError(f"{type(obj).__name__} does not expose __cuda_array_interface__") from None
        if not isinstance(iface, dict):
            raise TypeError(f"{type(obj).__name__}.__cuda_array_interface__ is not a dict")
        try:
            shape = tuple(int(s) for s in iface["shape"])
            typestr = iface["typestr"]
            data = iface["data"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed __cuda_array_interface__ of {type(obj).__name__}: {e!r}") from None
        version = iface.get("version", 0)
        dtype = np.dtype(typestr)
        if not dtype.isnative and dtype.itemsize > 1:
            raise TypeError(f"__cuda_array_interface__ of {type(obj).__name__}: non-native byte order "
                            f"{typestr!r} is not supported")
        dtype = _check_dtype(dtype)
        if iface.get("mask") is not None:
            raise ValueError(f"__cuda_array_interface__ of {type(obj).__name__}: masked arrays are not supported")
        if data is None:
            ptr, readonly = 0, False
        else:
            ptr, readonly = int(data[0]), bool(data[1])
        strides = iface.get("strides")
        if strides is not None:
            strides = tuple(int(s) for s in strides)
            if not _is_c_contiguous(shape, strides, dtype.itemsize):
                raise ValueError(
                    f"{type(obj).__name__} device array of shape {shape} has strides {strides} (bytes), "
                    f"not C-contiguous; dslc takes C-contiguous device arrays only: pass a contiguous "
                    f"copy (CuPy: cupy.ascontiguousarray(a), PyTorch: t.contiguous())")
        size = 1
        for s in shape:
            size *= s
        if size and not ptr:
            raise ValueError(f"__cuda_array_interface__ of {type(obj).__name__}: null data pointer "
                             f"for a non-empty array")
        stream = iface.get("stream") if version >= 3 else None
        if isinstance(stream, int) and not isinstance(stream, bool) and stream > 2:
            # The producer has work in flight on its own stream: wait for it (CAI v3 consumer rule).
            drv = _driver()
            drv.check("cuStreamSynchronize", _vp(stream),
                      detail=f"waiting for the stream of a {type(obj).__name__} array")
        elif stream == 0:
            raise ValueError("__cuda_array_interface__: stream 0 is disallowed by the protocol")
        return cls._wrap(ptr, shape, dtype, owner=obj, readonly=readonly)

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self._shape, "typestr": self._dtype.str, "data": (self._ptr, self._readonly),
                "strides": None, "version": 3, "stream": None}

    # -- attributes --------------------------------------------------------------------------------------

    shape = property(lambda self: self._shape)
    dtype = property(lambda self: self._dtype)
    size = property(lambda self: self._size)
    nbytes = property(lambda self: self._nbytes)
    ndim = property(lambda self: len(self._shape))
    itemsize = property(lambda self: self._dtype.itemsize)
    ptr = property(lambda self: self._ptr, doc="the device pointer (an int; 0 for an empty array)")
    readonly = property(lambda self: self._readonly)
    owner = property(lambda self: self._owner, doc="the object whose memory this array uses, if any")

    @property
    def strides(self) -> tuple[int, ...]:
        return _c_strides(self._shape, self._dtype.itemsize)

    @property
    def device(self) -> int:
        """The device ordinal holding the memory (asked of the driver for wrapped foreign memory)."""
        if self._device is None:
            if not self._ptr:
                self._device = 0
            else:
                drv = _driver()
                v = _int()
                drv.check("cuPointerGetAttribute", ctypes.byref(v), CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                          self._ptr, detail="asking which device holds a foreign device array")
                self._device = v.value
        return self._device

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d DeviceArray")
        return self._shape[0]

    def __repr__(self) -> str:
        dev = "?" if self._device is None else self._device
        return (f"DeviceArray(shape={self._shape}, dtype={self._dtype}, device={dev}, "
                f"ptr=0x{self._ptr:x})")

    def __bool__(self) -> bool:
        raise TypeError("the truth value of a DeviceArray is ambiguous; copy it to the host with .get()")

    # -- copies ------------------------------------------------------------------------------------------

    def get(self, out: np.ndarray | None = None) -> np.ndarray:
        """Copy to the host: a new NumPy array (or into `out`, a C-contiguous array of the same shape
        and dtype)."""
        if out is None:
            out = np.empty(self._shape, self._dtype)
        else:
            if not isinstance(out, np.ndarray) or out.shape != self._shape or out.dtype != self._dtype \
                    or not out.flags.c_contiguous or not out.flags.writeable:
                raise ValueError(f"out must be a writeable C-contiguous {self._dtype} array of shape "
                                 f"{self._shape}")
        if self._nbytes:
            drv = _driver()
            drv.context(self.device)
            drv.check("cuMemcpyDtoH_v2", out.ctypes.data, self._ptr, self._nbytes,
                      detail=f"copying {self._nbytes} bytes from the device to the host")
        return out

    copy_to_host = get

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if copy is False:
            raise ValueError("a DeviceArray cannot be viewed as a NumPy array without a copy to the host")
        a = self.get()
        return a if dtype is None else a.astype(dtype, copy=False)

    def copy_to_device(self, src: Any) -> "DeviceArray":
        """Overwrite this array with `src` (a NumPy array-like or a device array) of the same shape and
        dtype. Returns self."""
        if self._readonly:
            raise ValueError("this DeviceArray wraps read-only device memory")
        if is_device_array(src):
            other = as_device_array(src)
            self._check_same(other.shape, other.dtype, "source")
            if self._nbytes:
                drv = _driver()
                drv.context(self.device)
                drv.check("cuMemcpyDtoD_v2", self._ptr, other.ptr, self._nbytes,
                          detail=f"copying {self._nbytes} bytes between device arrays")
            return self
        host = np.asarray(src)
        self._check_same(host.shape, host.dtype, "source")
        host = _c_contiguous(host, self._dtype)  # contiguity and byte order only
        if self._nbytes:
            drv = _driver()
            drv.context(self.device)
            drv.check("cuMemcpyHtoD_v2", self._ptr, host.ctypes.data, self._nbytes,
                      detail=f"copying {self._nbytes} bytes from the host to the device")
        return self

    def _check_same(self, shape: tuple, dtype: np.dtype, what: str) -> None:
        if tuple(shape) != self._shape or np.dtype(dtype).newbyteorder("=") != self._dtype:
            raise ValueError(f"{what} is {np.dtype(dtype)} of shape {tuple(shape)}, but this DeviceArray "
                             f"is {self._dtype} of shape {self._shape} (no implicit casts or broadcasts)")

    def copy(self) -> "DeviceArray":
        """A new device array with the same contents."""
        out = DeviceArray(self._shape, self._dtype, device=self.device)
        return out.copy_to_device(self)

    def reshape(self, *shape: Any) -> "DeviceArray":
        """A view with another shape and the same number of elements (keeps this array alive)."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        shp = list(_check_shape([s if s != -1 else 0 for s in shape]))
        if -1 in shape:
            if list(shape).count(-1) > 1:
                raise ValueError("can only specify one unknown dimension")
            known = 1
            for s, orig in zip(shp, shape):
                if orig != -1:
                    known *= s
            if known == 0 or self._size % known:
                raise ValueError(f"cannot reshape array of size {self._size} into shape {tuple(shape)}")
            shp[list(shape).index(-1)] = self._size // known
        shp = tuple(shp)
        n = 1
        for s in shp:
            n *= s
        if n != self._size:
            raise ValueError(f"cannot reshape array of size {self._size} into shape {shp}")
        return DeviceArray._wrap(self._ptr, shp, self._dtype, device=self._device, owner=self,
                                 readonly=self._readonly)


def _is_c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> bool:
    if len(strides) != len(shape):
        return False
    if 0 in shape:
        return True
    expected = itemsize
    for s, st in zip(reversed(shape), reversed(strides)):
        if s == 0:
            return True
        if s != 1 and st != expected:
            return False
        expected *= s
    return True


def _c_contiguous(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`a` as a C-contiguous array of `dtype` (copying only if needed; keeps 0-d arrays 0-d, unlike
    np.ascontiguousarray)."""
    if a.dtype == dtype and a.flags.c_contiguous:
        return a
    return np.array(a, dtype=dtype, order="C", copy=True)


def is_device_array(obj: Any) -> bool:
    """True for a DeviceArray or any object exposing `__cuda_array_interface__` (driver-free)."""
    return isinstance(obj, DeviceArray) or hasattr(type(obj), "__cuda_array_interface__") or \
        hasattr(obj, "__cuda_array_interface__")


def as_device_array(obj: Any) -> DeviceArray:
    """`obj` itself if it is a DeviceArray, else a zero-copy wrapper of its `__cuda_array_interface__`."""
    if isinstance(obj, DeviceArray):
        return obj
    return DeviceArray.from_cuda_array_interface(obj)


def empty(shape: Any, dtype: Any = np.float32, *, device: int = 0) -> DeviceArray:
    """An uninitialised device array."""
    return DeviceArray(shape, dtype, device=device)


def zeros(shape: Any, dtype: Any = np.float32, *, device: int = 0) -> DeviceArray:
    """A device array of zeros (cuMemsetD8)."""
    out = DeviceArray(shape, dtype, device=device)
    if out.nbytes:
        drv = _driver()
        drv.context(device)
        drv.check("cuMemsetD8_v2", out.ptr, 0, out.nbytes)
    return out


def to_device(obj: Any, dtype: Any = None, *, device: int = 0) -> DeviceArray:
    """Copy a NumPy array (or anything `np.asarray` accepts) to the GPU. A device array (a DeviceArray
    or an object exposing `__cuda_array_interface__`) is returned as a DeviceArray without copying."""
    if is_device_array(obj):
        d = as_device_array(obj)
        if dtype is not None and np.dtype(dtype) != d.dtype:
            raise TypeError(f"to_device: the device array is {d.dtype}, not {np.dtype(dtype)} "
                            f"(no implicit casts on the device)")
        return d
    host = np.asarray(obj, dtype=dtype)
    dt = _check_dtype(host.dtype)
    host = _c_contiguous(host, dt)
    out = DeviceArray(host.shape, dt, device=device)
    return out.copy_to_device(host)


# --- modules and launches -------------------------------------------------------------------------------

def _is_binary_image(image: bytes) -> bool:
    # cubin (ELF) or fatbin (magic 0xBA55ED50, little-endian): passed as is; anything else is PTX text
    return image[:4] == b"\x7fELF" or image[:4] == b"\x50\xed\x55\xba"


class Module:
    """A loaded CUDA module: PTX text (str or bytes; the driver JIT-compiles it for the device) or a
    cubin/fatbin image. Unloaded when garbage collected (after its functions)."""

    def __init__(self, image: str | bytes, *, device: int = 0, name: str = "<ptx>"):
        if isinstance(image, str):
            image = image.encode()
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise TypeError(f"Module takes PTX text (str or bytes) or a cubin image, not {type(image).__name__}")
        image = bytes(image)
        drv = _driver()
        self.device = device
        self.name = name
        if not _is_binary_image(image) and not image.endswith(b"\0"):
            image += b"\0"                      # PTX must be NUL-terminated
        drv.context(device)
        buf = ctypes.create_string_buffer(image, len(image))
        err_log = ctypes.create_string_buffer(_JIT_LOG_SIZE)
        info_log = ctypes.create_string_buffer(_JIT_LOG_SIZE)
        opts = (_int * 4)(CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                          CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES)
        vals = (_vp * 4)(ctypes.cast(err_log, _vp), _vp(_JIT_LOG_SIZE),
                         ctypes.cast(info_log, _vp), _vp(_JIT_LOG_SIZE))
        handle = _vp()
        code = drv.fn["cuModuleLoadDataEx"](ctypes.byref(handle), buf, 4, opts, vals)
        if code != 0:
            log = err_log.value.decode(errors="replace").strip()
            raise drv.error("cuModuleLoadDataEx", code, f"loading {name} on CUDA device {device}", log=log)
        self.info_log = info_log.value.decode(errors="replace").strip()
        self.handle = handle
        self._functions: dict[str, Function] = {}
        f = weakref.finalize(self, _module_unload, handle.value, device, _generation)
        f.atexit = False

    def get_function(self, name: str) -> "Function":
        fn = self._functions.get(name)
        if fn is None:
            drv = _driver()
            drv.context(self.device)
            h = _vp()
            code = drv.fn["cuModuleGetFunction"](ctypes.byref(h), self.handle, name.encode())
            if code != 0:
                raise drv.error("cuModuleGetFunction", code, f"looking up kernel {name!r} in {self.name}")
            fn = self._functions[name] = Function(self, name, h)
        return fn

    def __getitem__(self, name: str) -> "Function":
        return self.get_function(name)


def _module_unload(handle: int, device: int, generation: int) -> None:
    drv = _driver_obj
    if drv is None or generation != _generation:
        return
    try:
        drv.context(device)
        drv.fn["cuModuleUnload"](_vp(handle))
    except Exception:  # pragma: no cover
        pass


class Function:
    """A kernel of a loaded Module (keeps the module alive). `f(grid, block, *args)` launches it."""

    def __init__(self, module: Module, name: str, handle: ctypes.c_void_p):
        self.module = module
        self.name = name
        self.handle = handle

    @property
    def device(self) -> int:
        return self.module.device

    def attribute(self, attribute: int) -> int:
        drv = _driver()
        drv.context(self.device)
        v = _int()
        drv.check("cuFuncGetAttribute", ctypes.byref(v), int(attribute), self.handle)
        return v.value

    @property
    def max_threads_per_block(self) -> int:
        return self.attribute(CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)

    @property
    def num_regs(self) -> int:
        return self.attribute(CU_FUNC_ATTRIBUTE_NUM_REGS)

    def __call__(self, grid: Any, block: Any, *args: Any, shared_mem: int = 0, stream: Any = None,
                 sync: bool = True) -> None:
        launch(self, grid, block, args, shared_mem=shared_mem, stream=stream, sync=sync)

    def max_active_blocks(self, block: int, shared_mem: int = 0) -> int:
        """Blocks of `block` threads of this kernel that fit on the whole device at once (the
        occupancy calculator times the multiprocessors); 1 where the driver cannot say."""
        cached = self.__dict__.setdefault("_occupancy", {})
        if (block, shared_mem) not in cached:
            drv = _driver()
            drv.context(self.device)
            f = drv.fn.get("cuOccupancyMaxActiveBlocksPerMultiprocessor")
            n = _int(0)
            if f is None or f(ctypes.byref(n), self.handle, int(block), int(shared_mem)) != 0:
                cached[(block, shared_mem)] = 1
            else:
                sms = device_attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, self.device)
                cached[(block, shared_mem)] = max(1, n.value * sms)
        return cached[(block, shared_mem)]

    def __repr__(self) -> str:
        return f"<CUDA kernel {self.name!r} of {self.module.name}>"


# NumPy scalar type -> the ctypes type of the kernel parameter it fills
_SCALAR_CTYPES = {
    np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double,
    np.dtype(np.int8): ctypes.c_int8, np.dtype(np.int16): ctypes.c_int16,
    np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
    np.dtype(np.uint8): ctypes.c_uint8, np.dtype(np.uint16): ctypes.c_uint16,
    np.dtype(np.uint32): ctypes.c_uint32, np.dtype(np.uint64): ctypes.c_uint64,
    np.dtype(np.bool_): ctypes.c_uint8,
}


def _kernel_arg(i: int, a: Any) -> ctypes._SimpleCData:
    if isinstance(a, ctypes._SimpleCData):
        return a                               # already typed: c_int32(5), c_float(2.0), c_void_p(p) ...
    if isinstance(a, DeviceArray):
        return _vp(a.ptr or None)
    if isinstance(a, bool) or isinstance(a, np.bool_):
        return ctypes.c_uint8(1 if a else 0)   # a PTX .u8 / .pred-as-byte parameter
    if isinstance(a, int):
        if not -(1 << 63) <= a < (1 << 64):
            raise OverflowError(f"kernel argument {i}: {a} does not fit in 64 bits")
        return ctypes.c_int64(a) if a < (1 << 63) else ctypes.c_uint64(a)
    if isinstance(a, float):
        return ctypes.c_double(a)
    if isinstance(a, np.generic) and a.dtype in _SCALAR_CTYPES:
        return _SCALAR_CTYPES[a.dtype](a.item())
    if a is None:
        return _vp(None)                       # a null pointer
    if is_device_array(a):
        return _vp(as_device_array(a).ptr or None)
    raise TypeError(f"kernel argument {i}: cannot pass {type(a).__name__} to a CUDA kernel (pass a "
                    f"DeviceArray, a device array exposing __cuda_array_interface__, a Python int "
                    f"(int64) or float (double), a NumPy scalar or a ctypes scalar)")


def pack_kernel_args(args: Sequence[Any]) -> tuple[Any, list]:
    """The `kernelParams` of cuLaunchKernel: a `void*[len(args)]` whose entry i points at a ctypes value
    holding argument i (device arrays -> c_void_p device pointer; Python int -> c_int64; Python float ->
    c_double; NumPy scalars -> their own width (np.float32 -> c_float, np.int32 -> c_int32, ...); ctypes
    scalars as given). Returns (array or None when there are no arguments, the values to keep alive
    until the launch returns)."""
    values = [_kernel_arg(i, a) for i, a in enumerate(args)]
    if not values:
        return None, values
    params = (_vp * len(values))(*[ctypes.addressof(v) for v in values])
    return params, values


def _dim3(x: Any, what: str) -> tuple[int, int, int]:
    if isinstance(x, (int, np.integer)):
        t = (int(x),)
    else:
        t = tuple(int(v) for v in x)
    if not 1 <= len(t) <= 3 or any(v < 1 for v in t):
        raise ValueError(f"{what} must be a positive int or a tuple of 1 to 3 positive ints, not {x!r}")
    return (t + (1, 1))[:3]  # type: ignore[return-value]


def launch(function: Function, grid: Any, block: Any, args: Sequence[Any] = (), shared_mem: int = 0,
           stream: Any = None, sync: bool = True) -> None:
    """Launch `function` on a `grid` of `block`s (ints or tuples of up to 3 ints) with `args` (see
    `pack_kernel_args`) and `shared_mem` bytes of dynamic shared memory, on `stream` (a CUstream handle
    as an int, default the legacy default stream). With `sync` (the default), wait for the kernel and
    raise a CudaError if it failed (an illegal address, a trap, ...)."""
    g = _dim3(grid, "grid")
    b = _dim3(block, "block")
    drv = _driver()
    drv.context(function.device)
    params, keep = pack_kernel_args(args)
    st = stream if isinstance(stream, ctypes.c_void_p) else (_vp(int(stream)) if stream else None)
    _launch_packed(drv, function, g, b, params, len(keep), shared_mem, st, sync)
    del keep


def _launch_packed(drv: _Driver, function: Function, g: tuple, b: tuple, params: Any, nargs: int,
                   shared_mem: int = 0, stream: Any = None, sync: bool = True) -> None:
    """cuLaunchKernel with the `kernelParams` array built, then (with `sync`) cuCtxSynchronize."""
    code = drv.fn["cuLaunchKernel"](function.handle, g[0], g[1], g[2], b[0], b[1], b[2], int(shared_mem),
                                    stream, params, None)
    if code != 0:
        raise drv.error("cuLaunchKernel", code, f"launching kernel {function.name!r} with grid {g}, "
                        f"block {b}, {shared_mem} bytes of shared memory and {nargs} argument(s)")
    if sync:
        code = drv.fn["cuCtxSynchronize"]()
        if code != 0:
            raise drv.error("cuCtxSynchronize", code, f"running kernel {function.name!r} with grid {g}, "
                            f"block {b}")


_cooperative: dict[int, bool] = {}     # device -> supports cooperative launches


def launch_cooperative(function: Function, block: int, args: Sequence[Any] = (), max_blocks: int | None = None) -> int:
    """Launch `function` on as many blocks of `block` threads as can run at once (at most
    `max_blocks`), all guaranteed co-resident (cuLaunchCooperativeKernel), so the kernel may
    synchronise its whole grid; wait for it. Falls back to one block of one thread where the
    driver has no cooperative launch. Returns the number of blocks launched."""
    params, keep = pack_kernel_args(args)
    grid = launch_cooperative_packed(function, block, params, max_blocks)
    del keep
    return grid


def launch_cooperative_packed(function: Function, block: int, params: Any, max_blocks: int | None = None) -> int:
    """`launch_cooperative` with the `kernelParams` array already built (a `void*[]` of pointers
    to the argument values, see `pack_kernel_args`): a caller that launches one kernel often
    fills one array in place instead of building it per call."""
    drv = _driver()
    drv.context(function.device)
    coop = drv.fn.get("cuLaunchCooperativeKernel")
    if coop is not None and function.device not in _cooperative:
        _cooperative[function.device] = bool(device_attribute(CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH,
                                                              function.device))
    if coop is None or not _cooperative[function.device]:
        _launch_packed(drv, function, (1, 1, 1), (1, 1, 1), params, len(params or ()))
        return 1
    grid = function.max_active_blocks(block)
    if max_blocks is not None:
        grid = min(grid, max_blocks)
    code = coop(function.handle, grid, 1, 1, block, 1, 1, 0, None, params)
    if code != 0:
        raise drv.error("cuLaunchCooperativeKernel", code, f"launching kernel {function.name!r} on "
                        f"{grid} co-resident blocks of {block} threads")
    code = drv.fn["cuCtxSynchronize"]()
    if code != 0:
        raise drv.error("cuCtxSynchronize", code, f"running kernel {function.name!r} on {grid} blocks "
                        f"of {block} threads")
    return grid


def ensure_heap(nbytes: int, device: int = 0) -> None:
    """Make the device `malloc` heap at least `nbytes` (kernels allocate their temporaries there;
    the driver's default is 8 MiB). Only possible before the context first runs a kernel that
    uses malloc; later calls that cannot grow it are ignored (allocation failures are reported by
    the kernels themselves)."""
    drv = _driver()
    drv.context(device)
    get, set_ = drv.fn.get("cuCtxGetLimit"), drv.fn.get("cuCtxSetLimit")
    if get is None or set_ is None:
        return
    cur = _size(0)
    if get(ctypes.byref(cur), CU_LIMIT_MALLOC_HEAP_SIZE) == 0 and cur.value < nbytes:
        set_(CU_LIMIT_MALLOC_HEAP_SIZE, _size(int(nbytes)))


class MappedHostBuffer:
    """Page-locked host memory that kernels write directly (`ptr` is its device address), so a
    few words of results come back with no copy once the kernel has finished. Raises CudaError
    where the driver cannot map host memory."""

    def __init__(self, nbytes: int, device: int = 0):
        drv = _driver()
        drv.context(device)
        if "cuMemHostAlloc" not in drv.fn or "cuMemHostGetDevicePointer_v2" not in drv.fn:
            raise CudaError("this CUDA driver cannot map host memory (no cuMemHostAlloc)")
        host, dptr = _vp(), _u64()
        drv.check("cuMemHostAlloc", ctypes.byref(host), int(nbytes), 0x01 | 0x02)   # PORTABLE | DEVICEMAP
        try:
            drv.check("cuMemHostGetDevicePointer_v2", ctypes.byref(dptr), host, 0)
        except CudaError:
            drv.fn["cuMemFreeHost"](host)
            raise
        self.host, self.ptr, self.nbytes = host.value, dptr.value, int(nbytes)
        self._view = np.frombuffer((ctypes.c_uint8 * self.nbytes).from_address(self.host), dtype=np.int64)
        f = weakref.finalize(self, _free_host, self.host, _generation)
        f.atexit = False

    def words(self) -> np.ndarray:
        """A copy of the buffer as int64 words (call after the kernel writing it has finished)."""
        return self._view.copy()


def _free_host(host: int, generation: int) -> None:
    drv = _driver_obj
    if drv is None or generation != _generation or "cuMemFreeHost" not in drv.fn:
        return
    try:
        drv.fn["cuMemFreeHost"](_vp(host))
    except Exception:  # pragma: no cover
        pass
