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


_I32, _I8P = ll.IntType(32), ll.IntType(8).as_pointer()
_DEFAULT_MXCSR = 0x1F80           # power-on value: round to nearest, exceptions masked, no flushing


def _mxcsr(module: ll.Module, op: str) -> ll.Function:
    """llvm.x86.sse.{st,ld}mxcsr: store MXCSR to / load it from an i32 in memory."""
    name = f"llvm.x86.sse.{op}mxcsr"
    return module.globals.get(name) or ll.Function(module, ll.FunctionType(ll.VoidType(), [_I8P]), name)


def set_default_mode(b: ll.IRBuilder):
    """Load the default MXCSR at `b` (x86 modules only; elsewhere nothing). For threads that a
    flushing caller may have created: a thread inherits its creator's MXCSR."""
    if not b.module.triple.startswith(("x86_64", "i686", "i386")):
        return
    slot = b.alloca(_I32)
    b.store(ll.Constant(_I32, _DEFAULT_MXCSR), slot)
    b.call(_mxcsr(b.module, "ld"), [b.bitcast(slot, _I8P)])


def wrapper(module: ll.Module, body: ll.Function, name: str) -> ll.Function:
    """A function `name` with `body`'s type that calls `body` with FTZ and DAZ set and restores
    the caller's MXCSR afterwards."""
    mark_body(body)
    fn = ll.Function(module, body.function_type, name)
    st, ld = _mxcsr(module, "st"), _mxcsr(module, "ld")
    b = ll.IRBuilder(fn.append_basic_block())
    slot = b.alloca(_I32)
    raw = b.bitcast(slot, _I8P)
    b.call(st, [raw])
    saved = b.load(slot)
    b.store(b.or_(saved, ll.Constant(_I32, _FTZ_DAZ)), slot)
    b.call(ld, [raw])
    result = b.call(body, list(fn.args))
    b.store(saved, slot)
    b.call(ld, [raw])
    b.ret(result)
    return fn
