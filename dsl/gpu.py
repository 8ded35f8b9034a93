"""Running kernels on an NVIDIA GPU (SPEC section 6): device inputs (a `cuda.DeviceArray` or any
object exposing `__cuda_array_interface__`) or `target="cuda"` run the kernel's PTX
(compiler/codegen/nvptx.py) through the CUDA driver (runtime/cuda.py). Outputs are DeviceArrays;
a scalar result comes back as a NumPy scalar. Mixed host and device arrays are a TypeError.

Without a GPU or driver every GPU call raises `cuda.CudaUnavailableError` saying so."""
from __future__ import annotations

import ctypes
import re
import threading

import numpy as np

from runtime import Signature
from runtime import cuda
from runtime.abi import eval_dim, numpy_dtype
from runtime.call import status_error

from .lower import ParamType

_lock = threading.Lock()


def is_device(v) -> bool:
    # DeviceArray first: its interface is a property that builds a dict on every access
    return isinstance(v, cuda.DeviceArray) or hasattr(v, "__cuda_array_interface__")


def _is_host_array(v) -> bool:
    return isinstance(v, np.ndarray) and v.ndim > 0


def check_placement(kernel, args, forced: bool):
    """Device arrays with host arrays is a TypeError unless target='cuda' asked for the copy."""
    dev = [k for k, a in enumerate(args) if is_device(a)]
    host = [k for k, a in enumerate(args) if _is_host_array(a)]
    if dev and host and not forced:
        names = kernel.param_names(args)
        raise TypeError(f"{kernel.name}(): mixed host and device inputs: parameter '{names[host[0]]}' is a "
                        f"NumPy array and '{names[dev[0]]}' a device array; move them to one side "
                        "(cuda.to_device(x), or x.get() for a device array)")


def _param_type(name, a, declared):
    if declared is not None:
        return declared
    if is_device(a):
        arr = cuda.as_device_array(a)
        dt = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "bool"}.get(str(arr.dtype))
        if dt is None:
            raise TypeError(f"parameter '{name}': unsupported device array dtype {arr.dtype}")
        return ParamType(dt, tuple(f"_{name}_{k}" for k in range(arr.ndim)))
    return None


def call(kernel, args, forced: bool = False):
    """Run `kernel` on the GPU."""
    if not cuda.is_available():
        raise cuda.CudaUnavailableError(cuda.unavailable_reason() or "no CUDA GPU is available")
    check_placement(kernel, args, forced)
    args = [cuda.as_device_array(a) if is_device(a) else
            (cuda.to_device(np.ascontiguousarray(a)) if _is_host_array(a) else a) for a in args]
    # the entry depends on the arguments' dtypes and ranks (and scalars' types) only: remembered
    # per kernel, so a repeated call skips type inference
    kinds = tuple((a.dtype.str, a.ndim) if isinstance(a, cuda.DeviceArray) else type(a) for a in args)
    memo = kernel.__dict__.setdefault("_gpu_by_kinds", {})
    entry = memo.get(kinds)
    if entry is None:
        # parameter types: the host path's rules, with device arrays standing in by dtype and rank
        stand_ins = [np.empty((0,) * a.ndim, dtype=a.dtype) if isinstance(a, cuda.DeviceArray) else a
                     for a in args]
        entry = memo[kinds] = _compiled(kernel, kernel._param_types(stand_ins))
    return _launch(kernel, entry, args)


_local = threading.local()


def _nvptx():
    from compiler.codegen import nvptx
    return nvptx


class _DeviceScratch:
    """Scratch words in device memory, read back with a copy (drivers without mapped memory)."""

    def __init__(self, words: int, device: int):
        self.array = cuda.zeros((words,), np.int64, device=device)
        self.ptr = self.array.ptr

    def words(self):
        return self.array.get()


def _scratch(device: int, words: int):
    """This thread's scratch words for `device` (at least `words` int64), reused by every launch:
    mapped host memory the kernel writes directly (no copy back), else device memory."""
    bufs = _local.__dict__.setdefault("scratch", {})
    have = bufs.get(device)
    if have is None or have[0] < words:
        n = max(words, 16)
        try:
            buf = cuda.MappedHostBuffer(8 * n, device=device)
        except cuda.CudaError:
            buf = _DeviceScratch(n, device)
        bufs[device] = have = (n, buf)
    return have[1]


def _heap_bytes(device: int) -> int:
    """The device malloc heap kernels need for temporaries: DSLC_CUDA_HEAP_MB, else an eighth of
    the device's memory, at most 4 GiB."""
    import os
    env = os.environ.get("DSLC_CUDA_HEAP_MB", "")
    if env.isdigit() and int(env) > 0:
        return int(env) << 20
    return min(cuda.mem_get_info(device)[1] // 8, 4 << 30)


class _Entry:
    def __init__(self, signature, function, module):
        self.signature, self.function, self.module = signature, function, module
        self.local = threading.local()          # this thread's argument buffer (_arg_buffer)


_CTYPE = {"f32": ctypes.c_float, "f64": ctypes.c_double, "i32": ctypes.c_int32,
          "i64": ctypes.c_int64, "bool": ctypes.c_uint8}


def _arg_buffer(entry: _Entry):
    """This thread's `kernelParams` for `entry`: one ctypes value per kernel parameter (array
    parameters: the pointer, then an int64 per extent; outputs likewise; then the status and error
    pointers) and the void*[] of their addresses, made once and filled in place by each call (the
    driver copies the values at launch). Per thread: two threads may launch one kernel at once."""
    buf = getattr(entry.local, "buf", None)
    if buf is None:
        sig, vals = entry.signature, []
        for p in sig.params:
            vals.append(ctypes.c_void_p() if p.dims else _CTYPE[p.dtype]())
            vals += [ctypes.c_int64() for _ in p.dims]
        for o in sig.outputs:               # a scalar result: a pointer into the scratch words
            vals.append(ctypes.c_void_p())
            vals += [ctypes.c_int64() for _ in o.dims]
        vals += [ctypes.c_void_p(), ctypes.c_void_p()]
        buf = entry.local.buf = (vals, (ctypes.c_void_p * len(vals))(*[ctypes.addressof(v) for v in vals]))
    return buf


def _compiled(kernel, ptypes) -> _Entry:
    key = tuple((p.dtype, tuple(p.dims)) for p in ptypes)
    cache = kernel.__dict__.setdefault("_gpu_entries", {})
    with _lock:
        if key not in cache:
            from compiler.codegen import nvptx
            from compiler.pipeline import prepare, signature_of
            fn = prepare(kernel._lower_ir(ptypes))
            symbol = re.sub(r"[^A-Za-z0-9_]", "_", kernel.name).strip("_") or "kernel"
            ptx, sites = nvptx.emit_ptx(fn, symbol, kernel.boundscheck)
            sig = Signature.from_json(signature_of(fn, symbol, sites))
            cuda.ensure_heap(_heap_bytes(0))
            module = cuda.Module(ptx, name=kernel.name)
            cache[key] = _Entry(sig, module.get_function(symbol), module)
        return cache[key]


def _launch(kernel, entry: _Entry, args):
    sig = entry.signature
    if len(args) != len(sig.params):
        raise TypeError(f"{kernel.name}() takes {len(sig.params)} argument(s), got {len(args)}")
    vals, params = _arg_buffer(entry)
    dims, scalars, k = {}, {}, 0
    for p, a in zip(sig.params, args):
        if not p.dims:
            if isinstance(a, cuda.DeviceArray):
                raise TypeError(f"parameter '{p.name}': expected a scalar {p.dtype}, got a device array")
            val = numpy_dtype(p.dtype).type(a)
            scalars[p.name] = int(val) if p.dtype in ("i32", "i64") else val
            vals[k].value = val.item()
            k += 1
            continue
        if not isinstance(a, cuda.DeviceArray):
            raise TypeError(f"parameter '{p.name}': expected an array, got {type(a).__name__}")
        if a.dtype != numpy_dtype(p.dtype) or a.ndim != len(p.dims):
            raise TypeError(f"parameter '{p.name}': expected {p.dtype} of rank {len(p.dims)}, "
                            f"got a {a.dtype} device array of shape {a.shape}")
        for d, n in zip(p.dims, a.shape):
            if isinstance(d, str):
                if d in dims and dims[d] != n:
                    raise ValueError(f"parameter '{p.name}': extent {d} = {n} differs from {dims[d]} "
                                     "bound by an earlier parameter")
                dims[d] = n
            elif isinstance(d, int) and d != n:
                raise ValueError(f"parameter '{p.name}': expected extent {d}, got {n}")
        vals[k].value = a.ptr
        for n in a.shape:
            k += 1
            vals[k].value = n
        k += 1
    # one per-thread scratch buffer of int64 words, read back with one copy: [status (int32,
    # padded), err[4], scalar results...]; the kernel always writes the status
    nscalar = sum(1 for o in sig.outputs if not o.dims)
    scratch = _scratch(entry.module.device, 5 + nscalar)
    outs, word = [], 5
    for o in sig.outputs:
        shape = tuple(eval_dim(d, dims, scalars) for d in o.dims)
        if o.dims:
            buf = cuda.empty(shape, numpy_dtype(o.dtype))
            ptr = buf.ptr
        else:
            buf, ptr = word, scratch.ptr + 8 * word
            word += 1
        outs.append((o, buf, shape))
        vals[k].value = ptr
        for n in shape:
            k += 1
            vals[k].value = n
        k += 1
    vals[k].value, vals[k + 1].value = scratch.ptr, scratch.ptr + 8
    nvptx = _nvptx()
    cuda.launch_cooperative_packed(entry.function, nvptx.BLOCK, params, max_blocks=nvptx.MAX_BLOCKS)
    words = scratch.words()
    code = int(words[:1].view(np.int32)[0])
    if code == nvptx.BAD_LAUNCH:
        raise RuntimeError(f"{kernel.name}(): the GPU kernel refused its launch shape (a 1-D grid of at "
                           f"most {nvptx.MAX_BLOCKS} blocks of at most 1024 threads)")
    if code == nvptx.GRID_STUCK:
        raise RuntimeError(f"{kernel.name}(): the GPU kernel's blocks could not all run at once (its grid "
                           "barrier gave up); launch it cooperatively, with no more blocks than fit")
    if code:
        details = tuple(int(v) for v in words[1:5])
        raise status_error(sig, code, details[1:3] if details[0] == code else None)
    results = [words[buf:buf + 1].view(numpy_dtype(o.dtype))[0] if isinstance(buf, int) else buf
               for o, buf, shape in outs]
    return tuple(results) if sig.tuple_result else results[0]
