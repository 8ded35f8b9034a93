"""From an IR function to a callable entry point: simplify, verify, LLVM, JIT (or the disk cache)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from . import background, cache, ir, tiering
from .codegen import llvm as backend
from .codegen import blas, denormals, runtime_module
from .diagnostics import DslTypeError
from .ir import dim_is_opaque, dim_to_json
from .passes import simplify

VERSION = "0.1.0"
#: what a cached object expects of the process (bumped when that changes: 2 = it calls the
#: JIT's runtime module, codegen/runtime_module.py)
OBJECT_ABI = "2"
_compile_lock = threading.Lock()
_first_tier: dict = {}     # symbol -> Compiled, while its final code is being generated
_calls_blas: set = set()   # symbols whose code calls OpenBLAS


@dataclass
class Compiled:
    symbol: str
    signature: dict
    c_address: int
    py_address: int
    key: str = ""          # the disk-cache key of its object code ("" when not cached)
    upgrade: object = None  # first-tier code: a tiering.Upgrade to the final code (None: final)
    calls_blas: bool = False  # its code calls OpenBLAS (codegen/blas.py)


def prepare(fn: ir.Function) -> ir.Function:
    simplify(fn)
    ir.verify(fn)
    return fn


def signature_of(fn: ir.Function, symbol: str, sites) -> dict:
    params = [{"name": n, "dtype": p.type.dtype, "dims": [dim_to_json(d) for d in p.type.shape]}
              for n, p in zip(fn.param_names, fn.params)]
    outputs = []
    for k, t in enumerate(fn.result_types):
        for d in t.shape:
            if dim_is_opaque(d):
                raise DslTypeError(
                    f"the shape of return value {k} ({t}) depends on values computed inside the kernel; "
                    "an output's extents must follow from the arguments' shapes and integer arguments "
                    "(slice with bounds taken from them, or write into an array of a known size)", fn.loc)
        outputs.append({"name": fn.result_names[k] if k < len(fn.result_names) else f"out{k}",
                        "dtype": t.dtype, "dims": [dim_to_json(d) for d in t.shape]})
    return {"name": fn.name, "symbol": symbol, "abi": 1, "params": params, "outputs": outputs,
            "tuple_result": fn.tuple_result,
            "sites": [{"kind": s.kind, "message": s.message, "file": s.loc.filename, "line": s.loc.line,
                       "col": s.loc.col, "text": s.loc.text} for s in sites]}


def canonical_text(fn: ir.Function) -> str:
    """The printed IR with opaque extents (`?N`, numbered per process) renumbered by first use,
    so equal kernels get equal cache keys in every process."""
    import re
    names: dict = {}
    return re.sub(r"\?\d+", lambda m: names.setdefault(m.group(0), f"?{len(names)}"), ir.print_function(fn))


def cache_key(fn: ir.Function, boundscheck: bool) -> str:
    return cache.key_for(VERSION, OBJECT_ABI, backend.toolchain_version(), *backend.host_cpu(),
                         str(boundscheck), canonical_text(fn),
                         fn.loc.filename, str(fn.loc.line), ",".join(fn.param_names),
                         ",".join(fn.result_names), str(fn.tuple_result))


def compile_function(fn: ir.Function, boundscheck: bool = True, use_cache: bool = True) -> Compiled:
    """JIT-compile a prepared function (looking in the disk cache first). A compile that misses
    the cache returns first-tier code with an `upgrade` to the final code (tiering.py)."""
    key = cache_key(fn, boundscheck)
    symbol = f"dslc_{fn.name}_{key[:16]}"
    jit = backend.get_jit()
    cached = key if use_cache else ""

    def loaded(sig) -> Compiled:
        """The final code, loaded under `symbol`."""
        jit.signatures[symbol] = sig
        return Compiled(symbol, sig, jit.address(symbol), jit.address(symbol + "__py"), cached,
                        calls_blas=symbol in _calls_blas)

    with _compile_lock:
        if jit.address(symbol):
            return loaded(jit.signatures[symbol])
        first = _first_tier.get(symbol)
        if first is not None:
            return first
        hit = cache.load(key) if use_cache else None
        if hit is not None:
            obj, meta = hit
            if blas.called_by(obj):
                _calls_blas.add(symbol)
            runtime_module.ensure_loaded(jit, runtime_module.used_by(obj))   # what its calls resolve to
            jit.add_object(symbol, obj)
            return loaded(meta["signature"])
        with background.foreground():      # background processes wait (background.py)
            module, sites = backend.build_module(fn, symbol, boundscheck, name=symbol, vector_math="host",
                                                 blas=True, threads=True, shared_runtime=True,
                                                 flush_denormals=denormals.requested())
            sig = signature_of(fn, symbol, sites)
            jit.signatures[symbol] = sig
            if blas.called_by(module):
                _calls_blas.add(symbol)
            runtime_module.ensure_loaded(jit, runtime_module.used_by(module))
            ref = backend.parse_and_optimise(module, jit.tm)
            ref.name = symbol
            directory = cache.cache_dir()

            def store(obj: bytes):
                if use_cache and obj:
                    cache.store(key, obj, {"signature": sig}, directory)

            if not tiering.enabled():
                store(jit.add_llvm(ref))
                return loaded(sig)
            c_address, py_address, upgrade = tiering.compile_first_tier(jit, ref, symbol, store)
            compiled = Compiled(symbol, sig, c_address, py_address, cached, upgrade, symbol in _calls_blas)
            _first_tier[symbol] = compiled
            upgrade.then(lambda *_: _first_tier.pop(symbol, None))
            return compiled
