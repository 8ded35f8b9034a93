"""Opt-in flushing of subnormal floats for the CPU JIT (`DSLC_FLUSH_DENORMALS=1`).

By default dslc keeps IEEE semantics: arithmetic producing or reading subnormal numbers is exact,
and on x86 each such operation takes a microcode assist (~100 cycles). A long reverse sweep whose
cotangent decays below 1.18e-38 (float32) then runs several times slower (B5's VJP at 10^5 steps:
docs/performance.md). XLA's CPU runtime flushes subnormals to zero; with this setting a kernel
does too: each entry point, and each chunk of a parallel loop on a worker thread, sets the MXCSR
register's flush-to-zero and denormals-are-zero bits for the duration of the call and restores
the caller's value before returning, so Python and NumPy code around the call is unaffected.

What it covers: the kernel's own arithmetic and libmvec's vector math (same thread). Matrix
products computed by OpenBLAS run on OpenBLAS's threads and keep IEEE subnormals. x86-64 only
(elsewhere the setting is ignored); the JIT only (`dslc` libraries and GPU code are unaffected).
The setting is read when a kernel is compiled and is part of the cache key.
"""
from __future__ import annotations

import os
import platform

from llvmlite import ir as ll

ENV = "DSLC_FLUSH_DENORMALS"
_FTZ_DAZ = 0x8040                 # MXCSR bit 15: flush to zero; bit 6: denormals are zero


def requested() -> bool:
    """Whether JIT kernels compiled now flush subnormals (the setting, on an x86-64 host)."""
    return (os.environ.get(ENV, "0").lower() in ("1", "on", "yes", "true")
            and platform.machine() in ("x86_64", "AMD64"))


def tag() -> str:
    """Part of the JIT cache key."""
    return "ftz" if requested() else "ieee"


def mark_body(fn: ll.Function):
    """`fn` runs with subnormals flushed: tell LLVM (constant folding then agrees with the
    hardware), and keep it a separate call, so that no floating-point operation of its body is
    moved across the MXCSR writes around it."""
    fn.attributes.add("noinline")
    set.add(fn.attributes, '"denormal-fp-math"="preserve-sign,preserve-sign"')


def wrapper(module: ll.Module, body: ll.Function, name: str) -> ll.Function:
    """A function `name` with `body`'s type that calls `body` with FTZ and DAZ set and restores
    the caller's MXCSR afterwards."""
    mark_body(body)
    fn = ll.Function(module, body.function_type, name)
    i32, i8p = ll.IntType(32), ll.IntType(8).as_pointer()
    csr = ll.FunctionType(ll.VoidType(), [i8p])
    st = module.globals.get("llvm.x86.sse.stmxcsr") or ll.Function(module, csr, "llvm.x86.sse.stmxcsr")
    ld = module.globals.get("llvm.x86.sse.ldmxcsr") or ll.Function(module, csr, "llvm.x86.sse.ldmxcsr")
    b = ll.IRBuilder(fn.append_basic_block())
    slot = b.alloca(i32)
    raw = b.bitcast(slot, i8p)
    b.call(st, [raw])
    saved = b.load(slot)
    b.store(b.or_(saved, ll.Constant(i32, _FTZ_DAZ)), slot)
    b.call(ld, [raw])
    result = b.call(body, list(fn.args))
    b.store(saved, slot)
    b.call(ld, [raw])
    b.ret(result)
    return fn
