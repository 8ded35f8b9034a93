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


# float32 sin and cos: dslc's own sincos --------------------------------------------------------
# libmvec's float32 sin and cos cost ~0.6 ns an element each, and its only sincos (the `vvv`
# variant, outputs through vectors of pointers) is twice as slow as the two together. A forward
# derivative of sin needs cos of the same argument, so dslc computes both in one function (the
# scheme of Eigen's psincos_float): x is reduced by pi/2 in three FMA steps, both polynomials
# are evaluated on [-pi/4, pi/4] and the quadrant picks and signs them. Measured error <= 1.5 ulp
# (tests/test_vmath.py; libmvec's: 1.7), and the pair costs less than libmvec's sinf alone.
# Arguments with |x| > 2**16 (and inf/NaN) take libm's (scalar) or libmvec's (vector) sinf and
# cosf. sin(x) and cos(x) both call the one `memory(none)` wrapper, so LLVM merges them.
_SINCOS_LIMIT = 2.0 ** 16
_TWO_OVER_PI = 0.6366197723675814
_PIO2 = (1.57079601287841796875, 3.1391647326017846353352069854736328125e-07,
         5.390302529957764765544681040410068817436695098876953125e-15)   # sums to pi/2
_SIN_COEFS = (-0.1666666203982298255503735617821803316474, 0.0083326873655616851693794799871284340042,
              -0.0001959234114083702898469196984621021329)               # r**3, r**5, r**7
_COS_COEFS = (-0.5, 0.041666619479656219482421875, -0.00138865201734006404876708984375,
              2.4372266125283204019069671630859375e-05)                  # r**2 .. r**8


def _splat(ty, value):
    if isinstance(ty, ll.VectorType):
        return ll.Constant(ty, [ll.Constant(ty.element, value)] * ty.count)
    return ll.Constant(ty, value)


def _like(ty, elem):
    return ll.VectorType(elem, ty.count) if isinstance(ty, ll.VectorType) else elem


def declare_intrinsic(module, name, argty, nargs, retty=None):
    """Declare `llvm.<name>` overloaded on `argty` (llvmlite cannot mangle vector types)."""
    elem = argty.element if isinstance(argty, ll.VectorType) else argty
    base = {ll.FloatType(): "f32", ll.DoubleType(): "f64"}.get(elem) or f"i{elem.width}"
    suffix = f"v{argty.count}{base}" if isinstance(argty, ll.VectorType) else base
    full = f"llvm.{name}.{suffix}"
    return module.globals.get(full) or ll.Function(
        module, ll.FunctionType(retty or argty, [argty] * nargs), full)


def _sincos_body(fn: ll.Function, slow_sin, slow_cos):
    """Fill `fn(x: float or <N x float>) -> {sin, cos}`; slow_sin/slow_cos take the whole
    argument when some lane is out of range."""
    x = fn.args[0]
    fty = x.type
    ity = _like(fty, ll.IntType(32))
    b = ll.IRBuilder(fn.append_basic_block("entry"))
    fabs = declare_intrinsic(b.module, "fabs", fty, 1)
    rint = declare_intrinsic(b.module, "rint", fty, 1)
    fma = declare_intrinsic(b.module, "fma", fty, 3)
    # reduce |x| and give sin the sign of x afterwards, so that sin(-0) = -0
    ax = b.call(fabs, [x])
    k = b.call(rint, [b.fmul(ax, _splat(fty, _TWO_OVER_PI))])
    r = ax
    for part in _PIO2:
        r = b.call(fma, [k, _splat(fty, -part), r])
    z = b.fmul(r, r)

    def horner(coefs):
        acc = _splat(fty, coefs[-1])
        for c in reversed(coefs[:-1]):
            acc = b.call(fma, [acc, z, _splat(fty, c)])
        return acc
    s = b.call(fma, [b.fmul(r, z), horner(_SIN_COEFS), r])
    c = b.call(fma, [z, horner(_COS_COEFS), _splat(fty, 1.0)])
    # quadrant q = k mod 4: sin x = (s, c, -s, -c)[q], cos x = (c, -s, -c, s)[q]
    q = b.fptosi(k, ity)
    odd = b.icmp_signed("!=", b.and_(q, _splat(ity, 1)), _splat(ity, 0))
    sin_neg = b.icmp_signed("!=", b.and_(q, _splat(ity, 2)), _splat(ity, 0))
    cos_neg = b.icmp_signed("!=", b.and_(b.add(q, _splat(ity, 1)), _splat(ity, 2)), _splat(ity, 0))
    sv, cv = b.select(odd, c, s), b.select(odd, s, c)
    sv, cv = b.select(sin_neg, b.fneg(sv), sv), b.select(cos_neg, b.fneg(cv), cv)
    sign = b.and_(b.bitcast(x, ity), _splat(ity, -2 ** 31))
    sf, cf = b.bitcast(b.xor(b.bitcast(sv, ity), sign), fty), cv
    # NaN compares false: inf and NaN take the slow path too
    ok = b.fcmp_ordered("<=", ax, _splat(fty, _SINCOS_LIMIT))
    all_ok = ok
    if isinstance(fty, ll.VectorType):
        all_ok = b.call(declare_intrinsic(b.module, "vector.reduce.and", ok.type, 1, ll.IntType(1)), [ok])
    rty = fn.function_type.return_type
    fast, slow = fn.append_basic_block("fast"), fn.append_basic_block("slow")
    b.cbranch(all_ok, fast, slow)
    b.position_at_end(fast)
    b.ret(b.insert_value(b.insert_value(ll.Constant(rty, None), sf, 0), cf, 1))
    b.position_at_end(slow)
    sf2 = b.select(ok, sf, b.call(slow_sin, [x]))
    cf2 = b.select(ok, cf, b.call(slow_cos, [x]))
    b.ret(b.insert_value(b.insert_value(ll.Constant(rty, None), sf2, 0), cf2, 1))


def sincos_wrapper(module: ll.Module, isas) -> ll.Function:
    """`{float, float} f(float x)` = (sin x, cos x), with vector variants for `isas` (all three
    defined in `module`, so no libmvec is needed unless an argument is out of range)."""
    wname = f"__dslc_vm_sincosf.{module.name}"
    fn = module.globals.get(wname)
    if fn is not None:
        return fn
    f32 = ll.FloatType()

    def make(name, ty, slow_sin, slow_cos):
        f = ll.Function(module, ll.FunctionType(ll.LiteralStructType([ty, ty]), [ty]), name)
        f.visibility = "hidden"
        f.attributes.add("nounwind")
        _sincos_body(f, slow_sin, slow_cos)
        return f

    def libm(name, ty):
        return module.globals.get(name) or ll.Function(module, ll.FunctionType(ty, [ty]), name)

    variants = []
    for letter, bits, _ in _ISAS:
        if letter not in isas:
            continue
        lanes = bits // 32
        vty = ll.VectorType(f32, lanes)
        vname = f"__dslc_vm_sincosf{letter}{lanes}.{module.name}"
        vfn = make(vname, vty, libm(f"_ZGV{letter}N{lanes}v_sinf", vty), libm(f"_ZGV{letter}N{lanes}v_cosf", vty))
        _keep(module, vfn)
        variants.append(f"_ZGV{letter}N{lanes}v_{wname}({vname})")
    fn = make(wname, f32, libm("sinf", f32), libm("cosf", f32))
    fn.attributes.add("noinline")
    set.add(fn.attributes, "willreturn")
    set.add(fn.attributes, "memory(none)")
    if variants:
        set.add(fn.attributes, f'"vector-function-abi-variant"="{",".join(variants)}"')
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


__all__ = ["FUNCS", "host_isas", "wrapper", "sincos_wrapper", "declare_intrinsic", "finish", "tag", "link_libraries", "host_prefers_512"]
