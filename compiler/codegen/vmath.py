"""Vectorisable transcendental functions for the CPU backend.

LLVM's loop vectoriser scalarises `llvm.sin/exp/...` and libm calls (one call per element,
about 7x slower than NumPy's SIMD loops). glibc ships SIMD versions of these functions in
`libmvec` (`_ZGVeN16v_sinf`: 16 floats in a zmm register, `_ZGVdN8v_sinf`: 8 in a ymm one, ...),
and LLVM's vectoriser knows how to use a vector variant of a scalar function when the function
carries the `vector-function-abi-variant` attribute (the mechanism `-fveclib=libmvec` uses).

So a kernel does not call `sinf` directly: it calls a small hidden, `noinline` wrapper
`__dslc_vm_sinf(x) = sinf(x)` declared `memory(none)` and listing its libmvec variants for the
ISAs the target has (SSE `b`, AVX2 `d`, AVX-512 `e`). A fused loop containing such calls then
vectorises like any arithmetic: the vector body calls `_ZGVeN16v_sinf` on 16 lanes at a time
and the scalar remainder calls the wrapper. The wrapper's name is not a libm name, so LLVM
does not turn it back into `llvm.sin.f32` (which would lose the attribute).

Accuracy is glibc's (libmvec's documented bound is 4 ulp; measured by tests/test_vmath.py
against float64/mpmath references: see docs/performance.md). Special values (0, -0, ±inf, NaN,
denormals, huge arguments of sin/cos/tan, exp overflow/underflow) are handled by glibc.

Anywhere else (not x86-64 Linux, no libmvec, `DSLC_VECTOR_MATH=0`, or a GPU/non-host target)
codegen keeps the plain scalar calls: LLVM intrinsics or libm functions, which are exact to
glibc's scalar accuracy. Shared libraries built with vector math need `-lmvec` at link time
(`link_libraries()`).
"""
from __future__ import annotations

import os
import platform
import sys
import threading

from llvmlite import ir as ll

# dslc name -> (f32 libm name, f64 libm name, arity)
FUNCS = {
    "sin": ("sinf", "sin", 1), "cos": ("cosf", "cos", 1), "tan": ("tanf", "tan", 1),
    "exp": ("expf", "exp", 1), "log": ("logf", "log", 1), "log1p": ("log1pf", "log1p", 1),
    "expm1": ("expm1f", "expm1", 1), "tanh": ("tanhf", "tanh", 1), "pow": ("powf", "pow", 2),
}
# float64 functions whose libmvec variants measure within 2 ulp (tests/test_vmath.py); the others
# (sin, cos, tan, exp, expm1, tanh: up to 3.3 ulp) keep glibc's scalar, < 1 ulp versions in f64.
F64_VECTOR = {"log", "log1p", "pow"}


def vectorised(name: str, dtype: str) -> bool:
    return name in FUNCS and (dtype == "f32" or name in F64_VECTOR)


# (mangling letter, vector bits, feature that must be present)
_ISAS = (("b", 128, "sse2"), ("d", 256, "avx2"), ("e", 512, "avx512f"))

_lock = threading.Lock()
_state = {}


def _libmvec_loaded() -> bool:
    with _lock:
        if "loaded" not in _state:
            ok = False
            if sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64"):
                import llvmlite.binding as llvm
                try:
                    llvm.load_library_permanently("libmvec.so.1")
                    ok = True
                except Exception:
                    ok = False
            _state["loaded"] = ok
        return _state["loaded"]


def host_isas() -> tuple:
    """The libmvec ISA letters usable on this host, narrowest first; () when vector math is off."""
    if os.environ.get("DSLC_VECTOR_MATH", "1") in ("0", "off", "no", "false"):
        return ()
    if not _libmvec_loaded():
        return ()
    if "isas" not in _state:
        import llvmlite.binding as llvm
        feats = llvm.get_host_cpu_features()
        _state["isas"] = tuple(letter for letter, _, f in _ISAS if feats.get(f, False))
    return _state["isas"]


def host_prefers_512() -> bool:
    return "e" in host_isas()


def tag() -> str:
    """A short description of the configuration (part of the JIT cache key)."""
    isas = host_isas()
    return "vm-libmvec-" + "".join(isas) if isas else "vm-scalar"


def link_libraries(isas) -> list:
    return ["-lmvec", "-lm"] if isas else ["-lm"]


def wrapper(module: ll.Module, name: str, dtype: str, isas) -> ll.Function:
    """The scalar function to call for `name` on `dtype` (f32/f64) inside `module`, carrying the
    libmvec variants for `isas`."""
    f32name, f64name, arity = FUNCS[name]
    libm = f32name if dtype == "f32" else f64name
    # External (hidden) linkage with a per-module name: an internal function would have its
    # signature changed by interprocedural passes (a constant argument removed), which breaks
    # the variant list; a per-module name keeps JIT modules from clashing.
    wname = f"__dslc_vm_{libm}.{module.name}"
    fn = module.globals.get(wname)
    if fn is not None:
        return fn
    ty = ll.FloatType() if dtype == "f32" else ll.DoubleType()
    fnty = ll.FunctionType(ty, [ty] * arity)
    target = module.globals.get(libm) or ll.Function(module, fnty, libm)
    fn = ll.Function(module, fnty, wname)
    fn.visibility = "hidden"
    for a in ("noinline", "nounwind"):
        fn.attributes.add(a)
    variants = []
    elem_bits = 32 if dtype == "f32" else 64
    params = "v" * arity
    for letter, bits, _ in _ISAS:
        if letter not in isas:
            continue
        lanes = bits // elem_bits
        vname = f"_ZGV{letter}N{lanes}{params}_{libm}"
        vty = ll.VectorType(ty, lanes)
        vfn = module.globals.get(vname) or ll.Function(module, ll.FunctionType(vty, [vty] * arity), vname)
        _keep(module, vfn)
        variants.append(f"_ZGV{letter}N{lanes}{params}_{wname}({vname})")
    # llvmlite only knows enum attributes: add the rest verbatim (they print inside the definition)
    set.add(fn.attributes, "willreturn")
    set.add(fn.attributes, "memory(none)")
    if variants:
        set.add(fn.attributes, f'"vector-function-abi-variant"="{",".join(variants)}"')
    b = ll.IRBuilder(fn.append_basic_block())
    b.ret(b.call(target, list(fn.args)))
    return fn


def _keep(module: ll.Module, fn: ll.Function):
    """List `fn` in @llvm.compiler.used so that its (otherwise unused) declaration survives until
    the loop vectoriser looks for it."""
    used = getattr(module, "_dslc_vm_used", None)
    if used is None:
        used = module._dslc_vm_used = []
    if fn not in used:
        used.append(fn)


def finish(module: ll.Module):
    """Emit @llvm.compiler.used for the vector variants referenced in `module` (call once, after
    every function is generated)."""
    used = getattr(module, "_dslc_vm_used", None)
    if not used:
        return
    ptr = ll.PointerType(ll.IntType(8))
    arr = ll.ArrayType(ptr, len(used))
    gv = ll.GlobalVariable(module, arr, "llvm.compiler.used")
    gv.linkage = "appending"
    gv.section = "llvm.metadata"
    gv.initializer = ll.Constant(arr, [f.bitcast(ptr) for f in used])
    module._dslc_vm_used = None


__all__ = ["FUNCS", "host_isas", "wrapper", "finish", "tag", "link_libraries", "host_prefers_512"]
