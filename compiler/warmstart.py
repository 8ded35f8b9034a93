"""Warm start: kernels a new process can call without the front end, the compiler or LLVM.

The disk cache (cache.py) is keyed by the lowered IR, so a process that finds its kernel there has
already imported lark, parsed, checked, lowered and initialised LLVM (~300 ms) before it can look.
This module keeps a second, source-level layer in the same directory ($DSLC_CACHE_DIR):

* `<key>.warm` variant records, keyed by what the *front end* sees: the kernel's source text, file, line,
  the argument signature (dtypes and ranks), options, and an environment stamp (`stamp()`: dslc's
  own sources, Python, NumPy, llvmlite, glibc, the CPU and every DSLC_* setting that is not
  read at run time). A record holds what `runtime.make_caller` needs (the signature), the names
  the kernel body resolved in its module and what they were, and the name and digest of a shared
  object.
* front-end records (also `<key>.warm`), written by `@kernel` once a def has parsed and its
  annotations checked, keyed by (file, first line, digest of the file, name): the def's extent,
  parameter names, declared types and docstring, so a later process skips inspect's block search
  and the parser at decoration (dsl/kernel.py `Kernel._from_front`).
* `<key>-<digest>.so`: the kernel's cached object code (the JIT's, as stored by cache.py) linked
  by the system C compiler, loaded with ctypes. The record keeps the size and time of the
  `.dslc` entry it was linked from: that entry stays the source of truth (deleting, corrupting or
  rebuilding it retires the library, and the next compile links again).

The front end (dsl/kernel.py) computes the key, checks the recorded resolutions against the
module's current globals and asks `load_library` for the entry points. Every failure (no record,
a bad checksum, a different callee, a library the loader refuses) returns None and the caller
compiles as before; so the layer can only make a process faster, never change a result.

Producing the records is off the critical path: after a kernel is compiled, `schedule()` queues
the link on one background thread (non-daemon, so a short script still finishes its links before
it exits, for at most EXIT_BUDGET seconds after its main thread ends; links left over are queued
again by the next process that compiles those kernels). Without a C compiler nothing is linked
and everything works as before.

Linking: the JIT's objects are compiled for MCJIT (static relocation model, large code model), so
every absolute address is an R_X86_64_64 relocation: `ld -shared -z notext` accepts that and the
dynamic loader patches the text at load time (text relocations). Calls to NumPy's OpenBLAS
(`dslc_cblas_?gemm`, `dslc_cblas_?gemv`, bound with `llvm.add_symbol` in the JIT) go through a small C stub whose
function pointers `load_library` sets; calls into the JIT's runtime module (threads, small
products: codegen/runtime_module.py) are resolved by linking its object code in too. Platforms where any of this fails simply never get a record.

Files are written atomically (temporary file + rename) and carry a checksum, with cache.py's helpers.
Set DSLC_WARM_START=0 to turn the layer off.
"""
from __future__ import annotations

import marshal
import os
import sys
import threading

from . import cache

try:                                   # the builtin module: ~3 ms less than importing hashlib
    from _blake2 import blake2b as _blake2b
except ImportError:                    # pragma: no cover - other Python implementations
    from hashlib import blake2b as _blake2b

MAGIC = b"DSLCW1\n"
FORMAT = 1
#: DSLC_* variables read only at run time (or naming the cache): not part of the stamp
_RUN_TIME_ENV = frozenset({"DSLC_CACHE_DIR", "DSLC_NUM_THREADS", "DSLC_TEST_KEEP_CACHE",
                           "DSLC_DISABLE_FAST_PATH", "DSLC_WARM_START", "DSLC_CUDA_LIBRARY",
                           "DSLC_CUDA_DISABLE", "DSLC_TIERED"})
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SOURCE_PACKAGES = ("compiler", "dsl", "runtime")

_lock = threading.Lock()
_static_stamp = None                   # the part of the stamp that cannot change in a process
_libraries = []                        # loaded CDLLs: kept for the life of the process


def enabled() -> bool:
    """Whether the warm-start layer is on (Linux only; DSLC_WARM_START=0 turns it off)."""
    return (sys.platform.startswith("linux")
            and os.environ.get("DSLC_WARM_START", "1") not in ("0", "off", "no", "false"))


def digest(data: bytes) -> str:
    return _blake2b(data, digest_size=20).hexdigest()


def key_for(*parts: str) -> str:
    """A cache key from strings (unambiguous: each part is length-prefixed)."""
    h = _blake2b(digest_size=20)
    for p in parts:
        b = p.encode("utf-8", "surrogatepass")
        h.update(b"%d:" % len(b))
        h.update(b)
    return h.hexdigest()


# --- the environment stamp ------------------------------------------------------------------------

def source_revision() -> str:
    """(name, size, mtime) of every source file of dslc's packages: any edit changes it (the test
    Python itself uses for .pyc files), at ~0.3 ms instead of ~2 ms for hashing the contents."""
    entries = []

    def walk(d, rel):
        try:
            with os.scandir(d) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for e in items:
            if e.is_dir():
                if e.name != "__pycache__":
                    walk(e.path, rel + e.name + "/")
            elif e.name.endswith((".py", ".lark")):
                try:
                    st = e.stat()
                except OSError:            # removed while we look: it is being edited
                    entries.append(f"{rel}{e.name}:?")
                    continue
                entries.append(f"{rel}{e.name}:{st.st_size}:{st.st_mtime_ns}")
    for pkg in _SOURCE_PACKAGES:
        walk(os.path.join(_ROOT, pkg), pkg + "/")
    return key_for(*entries)


def _cpu() -> str:
    """The first processor's identity and flags from /proc/cpuinfo (what LLVM's host CPU name
    and features are derived from); '' when unreadable (then there is no warm start)."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            head = f.read(65536).decode("ascii", "replace")
    except OSError:
        return ""
    block = head.split("\n\n", 1)[0]
    keep = ("vendor_id", "cpu family", "model", "model name", "stepping", "flags", "isa", "features",
            "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "uarch")
    lines = [ln for ln in block.splitlines() if ln.split(":", 1)[0].strip() in keep]
    return "\n".join(lines)


def _llvmlite() -> str:
    """The installed llvmlite (its files' sizes and times), found without importing it."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("llvmlite")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return ""
    root = list(spec.submodule_search_locations)[0]
    parts = []
    for rel in ("__init__.py", "_version.py", "binding"):
        p = os.path.join(root, rel)
        try:
            if os.path.isdir(p):
                with os.scandir(p) as it:
                    for e in sorted(it, key=lambda e: e.name):
                        if ".so" in e.name or e.name.endswith((".dylib", ".dll")):
                            st = e.stat()
                            parts.append(f"{e.name}:{st.st_size}:{st.st_mtime_ns}")
            else:
                st = os.stat(p)
                parts.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            continue
    return root + "|" + ",".join(parts)


def _compute_static() -> str | None:
    cpu, llvmlite = _cpu(), _llvmlite()
    if not cpu or not llvmlite:
        return None
    np = sys.modules.get("numpy")
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):
        libc = ""
    return key_for(f"format{FORMAT}", sys.version, sys.platform, os.uname().machine, libc,
                   getattr(np, "__version__", ""), getattr(np, "__file__", ""), llvmlite, cpu,
                   source_revision())


def _static() -> str | None:
    """The part of the stamp that cannot change while a process runs (computed once)."""
    global _static_stamp
    if _static_stamp is None:
        _static_stamp = _compute_static() or ""
    return _static_stamp or None


def stamp() -> str | None:
    """Everything outside a kernel's source that compiled code depends on, as one digest; None
    where the warm start is unavailable (then callers just compile)."""
    if not enabled():
        return None
    base = _static()
    if base is None:
        return None
    env = sorted(f"{k}={v}" for k, v in os.environ.items()
                 if k.startswith("DSLC_") and k not in _RUN_TIME_ENV)
    return key_for(base, *env)


# --- records ----------------------------------------------------------------------------------------

def _path(name: str, directory: str | None = None) -> str:
    return os.path.join(directory or cache.cache_dir(), name)


def load_record(key: str, directory: str | None = None):
    """The record stored under `key` (a dict), or None when absent or corrupt (then removed)."""
    return cache.load_sealed(_path(key + ".warm", directory), MAGIC, digest, _decode_record)


def _decode_record(body: bytes) -> dict:
    rec = marshal.loads(body)
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise ValueError("not a record")
    return rec


def store_record(key: str, record: dict, directory: str | None = None) -> bool:
    record = dict(record, format=FORMAT)
    return _atomic_write(_path(key + ".warm", directory), cache.seal(MAGIC, digest, marshal.dumps(record)))


def _atomic_write(path: str, data: bytes) -> bool:
    try:
        cache.write_atomic(path, data)
        return True
    except OSError:
        return False                   # read-only or full: cache.py has already warned



# --- loading a linked kernel ----------------------------------------------------------------------------

def _object_stamp(object_key: str, directory: str | None) -> str | None:
    """Size and time of the disk-cache entry a library was linked from (cache.py's file is the
    source of truth: deleting, corrupting or rebuilding it retires the library)."""
    try:
        st = os.stat(_path(object_key + ".dslc", directory))
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def load_library(record: dict, directory: str | None = None):
    """(C entry point address, Python entry point address) of the record's shared object, or None
    when it is missing, does not match its digest, was linked from a disk-cache entry that has
    changed since, or the dynamic loader refuses it."""
    import ctypes
    name, want, symbol = record.get("library"), record.get("library_digest"), record.get("symbol")
    if not (isinstance(name, str) and isinstance(want, str) and isinstance(symbol, str)):
        return None
    obj = record.get("object")
    if not isinstance(obj, str) or record.get("object_stamp") != _object_stamp(obj, directory):
        return None
    path = _path(name, directory)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if digest(data) != want:
        cache.unlink_quiet(path)       # corrupt: the next compile links it again
        return None
    try:
        lib = ctypes.CDLL(path)
        if record.get("blas") and not _bind_blas(lib):
            return None
        c_addr = ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
        py_addr = ctypes.cast(getattr(lib, symbol + "__py"), ctypes.c_void_p).value
    except (OSError, AttributeError):
        return None
    _libraries.append(lib)
    return c_addr, py_addr


def _bind_blas(lib) -> bool:
    """Point the library's `dslc_cblas_?gemm`/`?gemv` stubs at NumPy's OpenBLAS (as the JIT's symbols)."""
    import ctypes
    from .codegen import blas          # imports only ctypes/glob: no LLVM
    if not blas.available():
        return False
    r = blas._state["lib"][1]
    lib.dslc_warm_set_blas.argtypes = [ctypes.c_void_p] * 4
    lib.dslc_warm_set_blas.restype = None
    lib.dslc_warm_set_blas(r["sgemm"], r["dgemm"], r["sgemv"], r["dgemv"])
    return True


# --- producing records (background) ---------------------------------------------------------------------

_BLAS_STUB = r"""
#include <stdint.h>
typedef void (*sgemm_t)(int32_t, int32_t, int32_t, int64_t, int64_t, int64_t, float, void *, int64_t,
                        void *, int64_t, float, void *, int64_t);
typedef void (*dgemm_t)(int32_t, int32_t, int32_t, int64_t, int64_t, int64_t, double, void *, int64_t,
                        void *, int64_t, double, void *, int64_t);
typedef void (*sgemv_t)(int32_t, int32_t, int64_t, int64_t, float, void *, int64_t, void *, int64_t,
                        float, void *, int64_t);
typedef void (*dgemv_t)(int32_t, int32_t, int64_t, int64_t, double, void *, int64_t, void *, int64_t,
                        double, void *, int64_t);
static sgemm_t s_gemm;
static dgemm_t d_gemm;
static sgemv_t s_gemv;
static dgemv_t d_gemv;
void dslc_warm_set_blas(void *s, void *d, void *sv, void *dv)
{ s_gemm = (sgemm_t)s; d_gemm = (dgemm_t)d; s_gemv = (sgemv_t)sv; d_gemv = (dgemv_t)dv; }
void dslc_cblas_sgemm(int32_t o, int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, float al,
                      void *a, int64_t lda, void *b, int64_t ldb, float be, void *c, int64_t ldc)
{ s_gemm(o, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc); }
void dslc_cblas_dgemm(int32_t o, int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, double al,
                      void *a, int64_t lda, void *b, int64_t ldb, double be, void *c, int64_t ldc)
{ d_gemm(o, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc); }
void dslc_cblas_sgemv(int32_t o, int32_t t, int64_t m, int64_t n, float al, void *a, int64_t lda,
                      void *x, int64_t incx, float be, void *y, int64_t incy)
{ s_gemv(o, t, m, n, al, a, lda, x, incx, be, y, incy); }
void dslc_cblas_dgemv(int32_t o, int32_t t, int64_t m, int64_t n, double al, void *a, int64_t lda,
                      void *x, int64_t incx, double be, void *y, int64_t incy)
{ d_gemv(o, t, m, n, al, a, lda, x, incx, be, y, incy); }
"""

_jobs: list = []
_worker = None
_no_cc = False
#: most queued links; more are dropped (a later process that compiles them queues them again)
MAX_PENDING = 256
#: seconds the interpreter's exit may wait for queued links once the main thread has finished
EXIT_BUDGET = 5.0


def schedule(key: str, object_key: str, record: dict):
    """Queue linking the object cached under `object_key` (cache.py) and writing the record
    `key` (`record` plus the library's name, digest and the object's signature)."""
    global _worker
    if not enabled() or _no_cc:
        return
    job = (cache.cache_dir(), key, object_key, record, _static())
    with _lock:
        if len(_jobs) >= MAX_PENDING:
            return
        _jobs.append(job)
        if _worker is None:
            # non-daemon: the interpreter waits for it at exit, so a short script's kernels are
            # linked for the next process
            _worker = threading.Thread(target=_work, name="dslc-warm-start", daemon=False)
            _worker.start()


def wait():
    """Block until every queued link is done (tests and benchmarks)."""
    w = _worker
    if w is not None:
        w.join()


def _work():
    global _worker
    import time
    from .background import lower_this_thread
    lower_this_thread()                # and the compiler and linker it runs
    deadline = None
    while True:
        if deadline is None and not threading.main_thread().is_alive():
            deadline = time.monotonic() + EXIT_BUDGET   # the program has ended: do not hold it long
        with _lock:
            if not _jobs or (deadline is not None and time.monotonic() > deadline):
                _jobs.clear()
                _worker = None
                return
            job = _jobs.pop(0)
        try:
            _build(*job)
        except Exception:               # never let a cache write disturb the program
            pass


def _build(directory, key, object_key, record, static):
    global _no_cc
    if static is None or static != _compute_static():
        return                         # dslc's sources changed while running: the stamp is stale
    ostamp = _object_stamp(object_key, directory)
    old = load_record(key, directory)
    if (old is not None and old.get("resolutions") == record.get("resolutions")
            and old.get("object_stamp") == ostamp and _library_ok(old, directory)):
        return                         # another process linked it already
    hit = cache.load(object_key, directory)
    if hit is None:
        return
    obj, meta = hit
    sig = meta.get("signature")
    if not isinstance(sig, dict) or not isinstance(sig.get("symbol"), str):
        return
    cc = find_cc()
    if not cc:
        _no_cc = True
        return
    from .codegen import blas as _blas
    blas = _blas.called_by(obj)
    from .codegen import runtime_module           # the pieces it calls: this process has them
    runtime = runtime_module.object_code(runtime_module.used_by(obj))
    if runtime is None:
        return
    so = _link(cc, obj, blas, directory, runtime)
    if so is None:
        return
    name = f"{key}-{digest(so)[:16]}.so"
    if not _atomic_write(_path(name, directory), so):
        return
    store_record(key, dict(record, signature=sig, symbol=sig["symbol"], library=name,
                           library_digest=digest(so), blas=blas, object=object_key,
                           object_stamp=ostamp), directory)
    stale = old.get("library") if old is not None else None
    if isinstance(stale, str) and stale != name and stale.startswith(key):
        # the library the replaced record named (a process that read that record just compiles instead)
        cache.unlink_quiet(_path(stale, directory))


def find_cc() -> str | None:
    """$CC, else cc, gcc or clang on PATH (aot.py uses this one: it imports no compiler module)."""
    import shutil
    cc = os.environ.get("CC")
    if cc:
        return cc
    for c in ("cc", "gcc", "clang"):
        p = shutil.which(c)
        if p:
            return p
    return None


def _library_ok(record: dict, directory: str | None) -> bool:
    try:
        with open(_path(record["library"], directory), "rb") as f:
            return digest(f.read()) == record["library_digest"]
    except (OSError, KeyError, TypeError):
        return False


def _link(cc: str, obj: bytes, blas: bool, directory: str, runtime=()) -> bytes | None:
    import tempfile
    with tempfile.TemporaryDirectory(prefix="dslc-warm-") as tmp:
        o, so = os.path.join(tmp, "k.o"), os.path.join(tmp, "k.so")
        with open(o, "wb") as f:
            f.write(obj)
        cmd = cc.split() + ["-shared", "-o", so, o]
        for k, piece in enumerate(runtime):     # the JIT's runtime pieces the kernel calls
            rt = os.path.join(tmp, f"runtime{k}.o")
            with open(rt, "wb") as f:
                f.write(piece)
            cmd.append(rt)
        if blas:
            c = os.path.join(tmp, "blas.c")
            with open(c, "w") as f:
                f.write(_BLAS_STUB)
            cmd += ["-O2", "-fPIC", c]
        # the JIT's objects are not position-independent: let the loader relocate the text
        cmd += ["-Wl,-z,notext"] + (["-lmvec"] if b"_ZGV" in obj else []) + ["-lm", "-lpthread"]
        if _run_in_background(cmd) != 0:
            return None
        try:
            with open(so, "rb") as f:
                return f.read()
        except OSError:
            return None


def _run_in_background(cmd, timeout: float = 120) -> int | None:
    """Run `cmd` (the C compiler and linker) in a process group of its own, so that it can be
    stopped as a whole while the program waits (background.py); its exit status (None: it could
    not run or timed out)."""
    import subprocess
    from . import background
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **group)
    except OSError:
        return None

    def signal_group(sig):
        if proc.poll() is None:
            os.killpg(proc.pid, sig)

    work = background.begin(signal_group)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        import signal
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None
    finally:
        background.end(work)


def _after_fork_in_child():
    global _lock, _worker, _jobs
    _lock = threading.Lock()
    _worker = None
    _jobs = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


__all__ = ["enabled", "stamp", "key_for", "load_record", "store_record", "load_library", "schedule",
           "wait", "source_revision"]
