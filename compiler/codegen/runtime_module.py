"""The JIT's runtime: code that every kernel module would otherwise carry a copy of, compiled once
per process, on first use, one small module per piece (its object code kept in the disk cache like
a kernel's).

The pieces are the thread runtime (`parallel.run_fn`: the job glue and the worker pool, so one
pool serves every kernel) and the loops of the matrix products too small for BLAS
(`gemm_loops.rows_fn`, one per float type and layout of B). Kernel modules built with
`shared_runtime` only declare them; MCJIT resolves the calls against the pieces' modules, and
warm-start libraries (warmstart.py) link the pieces' object code in. Carried per module, they cost
a small kernel ~60 ms of LLVM time and B4's gradient (five products) ~100 ms more.

The pieces' symbols are hidden, so a shared library linked with them does not export them.
"""
from __future__ import annotations

import functools
import os
import re
import threading

from llvmlite import ir as ll

from . import gemm_loops, parallel


def _pieces() -> dict:
    pieces = {parallel.RUN: parallel.run_fn}
    for ty in (ll.FloatType(), ll.DoubleType()):
        for tb in (False, True):
            pieces[gemm_loops.rows_name(ty, tb)] = (
                lambda m, ty=ty, tb=tb: gemm_loops.rows_fn(m, ty, tb, define=True, linkage="external"))
    return pieces


#: symbol -> function defining it in a module
PIECES = _pieces()
#: how the disk cache's entries for the pieces begin (kernels' entries are bare hex digests)
RUNTIME_PREFIX = "runtime-"
_lock = threading.Lock()
_objects: dict = {}          # symbol -> object code, once loaded in this process
_loaded: set = set()         # (id of a JIT, symbol)


@functools.lru_cache(maxsize=None)
def _sources_digest() -> str:
    import hashlib
    h = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("runtime_module.py", "parallel.py", "gemm_loops.py"):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def build(symbol: str, triple: str) -> str:
    """LLVM IR text of the module defining the piece `symbol`."""
    module = ll.Module(name="dslc_runtime")
    module.triple = triple
    PIECES[symbol](module)
    module.globals[symbol].linkage = "external"
    # llvmlite's IR builder has no visibility: hide the exported definition in the text
    return re.sub(r'^define (?:external )?(?=\w+ @"dslc\.)', "define hidden ", str(module), flags=re.M)


def used_by(code) -> list:
    """The pieces a kernel's LLVM module (ll.Module) or object code (bytes) refers to."""
    if isinstance(code, (bytes, bytearray)):
        return [s for s in PIECES if s.encode() in code]
    return [s for s in PIECES if s in code.globals]


def _key(symbol: str) -> str:
    """The piece's disk-cache key."""
    from .. import cache
    from ..pipeline import VERSION
    from . import llvm as backend
    return RUNTIME_PREFIX + cache.key_for(VERSION, backend.toolchain_version(), *backend.host_cpu(),
                                          "runtime", symbol, _sources_digest())


def ensure_loaded(jit, symbols) -> None:
    """Put the pieces `symbols` in `jit` (each once): from the disk cache, else compiled. The
    first call also has the pieces missing from the disk cache compiled in the background
    (`prefetch`)."""
    prefetch(exclude=symbols)
    todo = [s for s in symbols if (id(jit), s) not in _loaded]
    if not todo:
        return
    import llvmlite.binding as llvm
    from .. import cache
    from . import llvm as backend
    with _lock:
        for symbol in todo:
            if (id(jit), symbol) in _loaded:
                continue
            key = _key(symbol)
            name = "dslc_" + key[:24].replace("-", "_")
            hit = cache.load(key)
            if hit is not None:
                jit.add_object(name, hit[0])
                obj = hit[0]
            else:
                ref = backend.parse_and_optimise(build(symbol, llvm.get_process_triple()), jit.tm)  # IR text
                ref.name = name
                obj = jit.add_llvm(ref)
                if obj:
                    cache.store(key, obj, {"runtime": symbol})
            _objects[symbol] = obj
            _loaded.add((id(jit), symbol))


_prefetched = False


def prefetch(exclude=()) -> None:
    """Once per process: queue the pieces missing from the disk cache (but those in `exclude`,
    compiled now) to be compiled beside the program (tiering.compile_in_background) and stored
    there, so that the kernel that first needs one loads it from the disk cache (B4's gradient
    needs two matrix-product pieces, ~40 ms each). One needed before it is ready is compiled here
    as usual."""
    global _prefetched
    if _prefetched:
        return
    _prefetched = True
    from .. import cache, tiering
    if not tiering.enabled():
        return
    import llvmlite.binding as llvm
    directory, triple = cache.cache_dir(), llvm.get_process_triple()
    for symbol in PIECES:
        key = _key(symbol)
        if symbol not in exclude and cache.load(key, directory) is None:
            tiering.compile_in_background(
                lambda symbol=symbol: build(symbol, triple),
                lambda obj, key=key, symbol=symbol: cache.store(key, obj, {"runtime": symbol}, directory))


def object_code(symbols) -> list | None:
    """The object code of the pieces `symbols` (loaded in this process), for linking a warm-start
    library; None when one is missing."""
    objs = [_objects.get(s) for s in symbols]
    return None if any(not o for o in objs) else objs


__all__ = ["PIECES", "build", "used_by", "ensure_loaded", "prefetch", "object_code"]
