"""The `via="mlir"` backend: dslc IR -> MLIR text -> mlir-opt lowering -> mlir-translate -> LLVM IR ->
llvmlite (the shared JIT engine), behind a small C-ABI wrapper with dslc's entry-point ABI, so that
`runtime.make_caller` calls it exactly like dslc's own code."""
from __future__ import annotations

import hashlib
import threading

import llvmlite.binding as llvm
from llvmlite import ir as ll

from .. import ir
from ..codegen import llvm as backend
from ..pipeline import Compiled, signature_of
from .printer import symbol_name, to_mlir
from .tools import lower_many

I8, I32, I64 = ll.IntType(8), ll.IntType(32), ll.IntType(64)
PTR = ll.PointerType(I8)
SCALAR_LL = {"bool": I8, "i32": I32, "i64": I64, "f32": ll.FloatType(), "f64": ll.DoubleType()}

_lock = threading.Lock()
_signatures = {}


def build_wrapper(fn: ir.Function, symbol: str, inner: str) -> ll.Module:
    """`int32_t symbol(<dslc ABI>)` calling the lowered MLIR function `inner`, whose memref arguments
    are expanded by MLIR's LLVM lowering into (allocated, aligned, offset, sizes..., strides...)."""
    mod = ll.Module(name=symbol + "_wrapper")
    outer_tys, inner_tys = [], []
    kinds = []
    for t in [p.type for p in fn.params] + list(fn.result_types):
        kinds.append(t)
    nparams = len(fn.params)
    for k, t in enumerate(kinds):
        is_out = k >= nparams
        if t.is_scalar and not is_out:
            outer_tys.append(SCALAR_LL[t.dtype])
            inner_tys.append(SCALAR_LL[t.dtype])
        elif t.is_scalar:
            outer_tys.append(PTR)
            inner_tys += [PTR, PTR, I64]
        else:
            outer_tys += [PTR] + [I64] * t.rank
            inner_tys += [PTR, PTR, I64] + [I64] * (2 * t.rank)
    outer_tys.append(PTR)
    inner_tys += [PTR, PTR, I64, I64, I64]
    outer = ll.Function(mod, ll.FunctionType(I32, outer_tys), symbol)
    callee = ll.Function(mod, ll.FunctionType(I32, inner_tys), inner)
    b = ll.IRBuilder(outer.append_basic_block("entry"))
    errbuf = b.alloca(ll.ArrayType(I64, 4))
    b.store(ll.Constant(ll.ArrayType(I64, 4), [0, 0, 0, 0]), errbuf)
    args = list(outer.args)
    call, pos = [], 0
    for k, t in enumerate(kinds):
        is_out = k >= nparams
        if t.is_scalar and not is_out:
            call.append(args[pos])
            pos += 1
        elif t.is_scalar:
            call += [args[pos], args[pos], ll.Constant(I64, 0)]
            pos += 1
        else:
            ptr, dims = args[pos], args[pos + 1:pos + 1 + t.rank]
            pos += 1 + t.rank
            strides = [ll.Constant(I64, 1)]
            for d in reversed(dims[1:]):
                strides.insert(0, b.mul(strides[0], d))
            call += [ptr, ptr, ll.Constant(I64, 0)] + list(dims) + strides
    ebuf = b.bitcast(errbuf, PTR)
    call += [ebuf, ebuf, ll.Constant(I64, 0), ll.Constant(I64, 4), ll.Constant(I64, 1)]
    st = b.call(callee, call)
    err = args[-1]
    failed = b.and_(b.icmp_signed("!=", st, ll.Constant(I32, 0)),
                    b.icmp_unsigned("!=", err, ll.Constant(PTR, None)))
    with b.if_then(failed):
        src = b.bitcast(errbuf, ll.PointerType(I64))
        dst = b.bitcast(err, ll.PointerType(I64))
        for k in range(3):
            b.store(b.load(b.gep(src, [ll.Constant(I64, k)])), b.gep(dst, [ll.Constant(I64, k)]))
    b.ret(st)
    return mod


def _key(fn: ir.Function, boundscheck: bool) -> str:
    m = to_mlir(fn, name="k", boundscheck=boundscheck, c_interface=False)
    key = hashlib.sha256("\0".join([m.text, fn.name, ",".join(fn.param_names), ",".join(fn.result_names),
                                    str(fn.tuple_result), fn.loc.filename, str(fn.loc.line)]).encode()).hexdigest()
    return f"dslc_mlir_{symbol_name(fn.name)}_{key[:16]}"


def llvm_ir(fn: ir.Function, symbol: str, boundscheck: bool = True):
    """The lowered kernel as LLVM IR text, its ABI wrapper (LLVM IR text) and the error sites."""
    return _llvm_many([(fn, symbol)], boundscheck)[0]


def _llvm_many(items, boundscheck):
    mods = [to_mlir(fn, name=symbol + "__mlir", boundscheck=boundscheck, c_interface=False) for fn, symbol in items]
    texts = lower_many([m.text for m in mods])
    return [(t, str(build_wrapper(fn, symbol, m.name)), m.sites) for (fn, symbol), m, t in zip(items, mods, texts)]


def _jit(fn, symbol, text, wrapper, sites, opt):
    jit = backend.get_jit()
    ref = llvm.parse_assembly(text)
    ref.link_in(llvm.parse_assembly(wrapper))
    ref.triple = llvm.get_process_triple()
    ref.data_layout = str(jit.tm.target_data)
    ref.name = symbol
    ref.verify()
    if opt:
        ref = backend.optimise(ref, jit.tm, opt)
    jit.add_llvm(ref)
    _signatures[symbol] = signature_of(fn, symbol, sites)


def compile_mlir(fn: ir.Function, boundscheck: bool = True, opt: int = 1) -> Compiled:
    """JIT-compile a prepared function through MLIR; the entry point has dslc's C ABI (no `__py` twin).
    `opt`: the LLVM optimisation level applied to mlir-translate's output (O2 and up vectorise and
    unroll: several times slower to compile)."""
    return compile_many([fn], boundscheck, opt)[0]


def compile_many(fns, boundscheck: bool = True, opt: int = 1) -> list:
    """compile_mlir for several functions, running the MLIR tools once for all of them."""
    jit = backend.get_jit()
    symbols = [_key(fn, boundscheck) for fn in fns]
    with _lock:
        todo, seen = [], set()
        for fn, sym in zip(fns, symbols):
            if sym not in seen and not jit.address(sym):
                todo.append((fn, sym))
                seen.add(sym)
        for (fn, sym), (text, wrapper, sites) in zip(todo, _llvm_many(todo, boundscheck)):
            _jit(fn, sym, text, wrapper, sites, opt)
        return [Compiled(sym, _signatures[sym], jit.address(sym), 0) for sym in symbols]
