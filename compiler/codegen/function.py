"""Lowering of one IR function to an LLVM function with the dslc entry-point ABI.

Fusion: an elementwise or view op whose only user follows it in the same block (with no store or
control flow in between) is not materialised; its user evaluates it element by element inside its
own loop ("lazy" arrays). Everything else is materialised into a malloc'd buffer.

Buffers: every allocation has a *slot* (an alloca holding the pointer, null when not owned). A
scope (block) frees its slots' pointers when it ends; moving ownership to a loop carry or an `if`
result nulls the source slot. The error exit frees every slot, so failures do not leak.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

from llvmlite import ir as ll

from .. import ir
from ..diagnostics import UnsupportedError
from ..prims import PRIMS
from . import denormals, gemm_loops, parallel, vmath
from .analysis import Analysis

I1, I8, I32, I64 = ll.IntType(1), ll.IntType(8), ll.IntType(32), ll.IntType(64)
F32, F64 = ll.FloatType(), ll.DoubleType()
PTR = ll.PointerType(I8)
LLTYPE = {"bool": I1, "i32": I32, "i64": I64, "f32": F32, "f64": F64}
MEMTYPE = {"bool": I8, "i32": I32, "i64": I64, "f32": F32, "f64": F64}
ITEMSIZE = {"bool": 1, "i32": 4, "i64": 8, "f32": 4, "f64": 8}

_INTRINSICS = {"sin", "cos", "exp", "log", "sqrt", "fabs", "floor", "ceil", "pow", "copysign"}
_LIBM = {"tan", "tanh", "log1p", "expm1"}


@dataclass
class ArrayVal:
    dtype: str
    dims: list
    ptr: object = None                    # typed pointer to the first element (materialised)
    slot: object = None                   # alloca owning ptr, or None (parameter, view, output)
    lazy: Optional[Callable] = None       # idx -> scalar, for fused values
    reads: frozenset = frozenset()        # IR values a lazy expression reads


_SINCOS = {"sin": "cos", "cos": "sin"}


class Site:
    def __init__(self, kind, message, loc):
        self.kind, self.message, self.loc = kind, message, loc


class FunctionCodegen:
    """Builds one LLVM function from an `ir.Function`."""

    #: loop nests of fewer than 2 * grain elements never run in parallel
    grain = parallel.GRAIN
    #: whether a nest whose elements are independent may be split by element, not by outer row
    flat_jobs = False

    def __init__(self, module: ll.Module, fn: ir.Function, symbol: str, boundscheck: bool = True,
                 vector_isas=(), blas: bool = False, threads: bool = False, shared_runtime: bool = False,
                 flush_denormals: bool = False, one_chunk: bool = False):
        self.module, self.fn, self.symbol = module, fn, symbol
        # loop nests keep their outlined chunk function but run it once, on the calling thread
        # (a kernel that calls BLAS: llvm.build_module)
        self.one_chunk = one_chunk
        # entry points and worker chunks set FTZ/DAZ around their work (denormals.py; x86 only)
        self.flush_denormals = flush_denormals
        self.threads = threads            # big loop nests may run on several CPU threads (parallel.py)
        self.shared_runtime = shared_runtime   # runtime functions are the JIT's (runtime_module.py)
        self.in_parallel = False          # generating an outlined chunk function
        self.in_fork = False              # generating a fork's regions (loop nests stay on their thread)
        self.kernel_allocas = None        # while in a fork: the kernel's allocas block
        self.kernel_slots = []            # while in a fork: its regions' slots in the kernel's frame
        self.fork_lane = None             # while in a fork: the chunk running (i64)
        self.blas = blas                  # large matrix products may call dslc_cblas_?gemm (blas.py)
        self.boundscheck = boundscheck
        # libmvec ISA letters ("b", "d", "e") transcendental calls may be vectorised with (see
        # vmath.py); () keeps plain scalar libm calls / intrinsics (other CPUs, GPU targets)
        self.vector_isas = tuple(vector_isas)
        self.values = {}
        self.sites: list[Site] = []
        self.scopes: list[list] = []
        self.all_slots: list = []
        self.info = Analysis(fn)
        self.kept_slots = set()           # reusable allocation sites, freed when the kernel returns
        self.slot_caps = {}               # id(site slot) -> alloca holding its buffer's capacity
        self._elem_memo = {}
        self._preloaded = None            # (id(ptr), ids of the index) -> a value loaded ahead
        self._copies = {}                 # (IR matrix, transposed) -> slot of its copy (invariant_copy)

    # ---- entry point ---------------------------------------------------------------------
    def build(self) -> ll.Function:
        fn = self.fn
        argtys, self.param_slots = [], []
        for p in fn.params:
            if p.type.is_scalar:
                self.param_slots.append(len(argtys))
                argtys.append(MEMTYPE[p.type.dtype])
            else:
                self.param_slots.append(len(argtys))
                argtys += [ll.PointerType(MEMTYPE[p.type.dtype])] + [I64] * p.type.rank
        self.out_slots = []
        for t in fn.result_types:
            self.out_slots.append(len(argtys))
            argtys += [ll.PointerType(MEMTYPE[t.dtype])] + [I64] * t.rank
        argtys.append(ll.PointerType(I64))
        self.direct_out = self._direct_outputs()
        name = self.symbol + ".body" if self.flush_denormals else self.symbol
        self.llfn = ll.Function(self.module, ll.FunctionType(I32, argtys), name)
        for k, a in enumerate(self.llfn.args):
            if isinstance(a.type, ll.PointerType):
                a.add_attribute("noalias")
        if "e" in self.vector_isas:
            # LLVM tunes Ice Lake and later for 256-bit vectors; the 512-bit libmvec variants and
            # zmm arithmetic are ~2x faster for the long fused loops dslc generates
            set.add(self.llfn.attributes, '"prefer-vector-width"="512"')
        if self.vector_isas:
            # a loop calling vector math keeps its vectors on the stack across each call (every
            # vector register is caller-saved); the ABI aligns the stack to 16 bytes only, so without
            # this a zmm spill slot straddles two cache lines in 3 frames out of 4: B1's JVP took
            # 16.5-17.4 ms on the main thread against 15.1-15.4 on another (docs/performance.md)
            set.add(self.llfn.attributes, f"alignstack({64 if 'e' in self.vector_isas else 32})")
        self.allocas = self.llfn.append_basic_block("allocas")
        body = self.llfn.append_basic_block("entry")
        self.fail_block = self.llfn.append_basic_block("fail")
        self.b = ll.IRBuilder(body)
        self.status = self._entry_alloca(I32)
        self.err = self.llfn.args[-1]
        self.report = None
        self._bind_params()
        self.scopes.append([])
        self.emit_return(self.gen_block(fn.body, []))
        # error exit: free whatever is still owned, return the site id
        self.b.position_at_end(self.fail_block)
        for slot in self.all_slots:
            self._free_slot(slot)
        self.b.ret(self.b.load(self.status))
        # initialise slots in the allocas block, then fall into the body
        ab = ll.IRBuilder(self.allocas)
        for slot in self.all_slots:
            ab.store(ll.Constant(slot.type.pointee, None), slot)
        ab.branch(body)
        self.entry = self.llfn
        if self.flush_denormals:
            self.llfn.linkage = "internal"
            self.entry = denormals.wrapper(self.module, self.llfn, self.symbol)
        return self.entry

    def _direct_outputs(self) -> dict:
        """Returned arrays that top-level ops compute straight into their output buffers, not
        into a buffer of their own copied at the return: value -> its output's argument index."""
        ops = self.fn.body.ops
        if not ops or ops[-1].prim != "return":
            return {}
        direct = {}
        for v, k in zip(ops[-1].operands, self.out_slots):
            if not v.type.is_scalar and isinstance(v.owner, ir.Op) and v not in direct \
                    and self.info.block_of.get(v.owner) is self.fn.body:
                direct[v] = k
        return direct

    def _output_buffer(self, v: ir.Value, dims: list):
        """v's output buffer if v is computed into it (`_direct_outputs`), its extents checked."""
        k = self.direct_out.get(v)
        if k is None or len(self.scopes) != 1 or self.in_parallel:
            return None
        out_dims = list(self.llfn.args[k + 1:k + 1 + v.type.rank])
        for d, g in zip(out_dims, dims):
            self.check_eq(d, g, "shape", "output buffer has the wrong extent", self.fn.loc)
        # no slot: not owned, so never freed, moved into a loop carry or updated in place
        return ArrayVal(v.type.dtype, list(dims), ptr=self.llfn.args[k])

    def _entry_alloca(self, ty):
        ab = ll.IRBuilder(self.allocas)
        if self.allocas.instructions:
            ab.position_before(self.allocas.instructions[0])
        return ab.alloca(ty)

    def _bind_params(self):
        args = self.llfn.args
        bound = {}
        for p, name, k in zip(self.fn.params, self.fn.param_names, self.param_slots):
            if p.type.is_scalar:
                v = args[k]
                if p.type.dtype == "bool":
                    v = self.b.icmp_unsigned("!=", v, ll.Constant(I8, 0))
                self.values[p] = v
                continue
            dims = list(args[k + 1:k + 1 + p.type.rank])
            # a literal extent is checked below, then known to the code generator as a constant
            self.values[p] = ArrayVal(p.type.dtype, [self.i64(s_) if isinstance(s_, int) else d
                                                     for d, s_ in zip(dims, p.type.shape)], ptr=args[k])
            for ax, (d, sym) in enumerate(zip(dims, p.type.shape)):
                if isinstance(sym, int):
                    self.check(self.b.icmp_signed("==", d, self.i64(sym)), "shape",
                               f"parameter '{name}' axis {ax} must have extent {sym}", self.fn.loc,
                               d, self.i64(sym))
                elif isinstance(sym, str) and not sym.startswith(("?", "$")):
                    if sym in bound:
                        other, od = bound[sym]
                        self.check(self.b.icmp_signed("==", d, od), "shape",
                                   f"parameter '{name}' axis {ax}: extent of '{sym}' differs from "
                                   f"parameter '{other}'", self.fn.loc, d, od)
                    else:
                        bound[sym] = (name, d)
        # an integer parameter named like a dim (`def f(n: i64, x: f64[n])`) must equal that extent
        for p, name in zip(self.fn.params, self.fn.param_names):
            if p.type.is_scalar and ir.is_int(p.type.dtype) and name in bound:
                other, od = bound[name]
                v = self.to_i64(self.values[p])
                self.check(self.b.icmp_signed("==", v, od), "shape",
                           f"parameter '{name}' must equal the extent '{name}' of parameter '{other}'",
                           self.fn.loc, v, od)

    # ---- values --------------------------------------------------------------------------
    def get(self, v: ir.Value):
        return self.values[v]

    def set(self, v: ir.Value, x):
        self.values[v] = x

    def dims(self, v: ir.Value) -> list:
        return self.values[v].dims

    def i64(self, n: int):
        return ll.Constant(I64, int(n))

    def constant(self, value, dtype: str):
        if dtype == "bool":
            return ll.Constant(I1, int(bool(value)))
        if ir.is_float(dtype):
            return ll.Constant(LLTYPE[dtype], float(value))
        return ll.Constant(LLTYPE[dtype], int(value))

    def const_value(self, v: ir.Value):
        """The literal value of a `const` op's result, or None."""
        op = v.owner
        if isinstance(op, ir.Op) and op.prim == "const":
            return op.attrs["value"]
        return None

    def extreme(self, dtype: str, positive: bool):
        if ir.is_float(dtype):
            return ll.Constant(LLTYPE[dtype], float("inf") if positive else float("-inf"))
        bits = 32 if dtype == "i32" else 64
        return ll.Constant(LLTYPE[dtype], (1 << (bits - 1)) - 1 if positive else -(1 << (bits - 1)))

    def alloca_scalar(self, dtype: str, init):
        slot = self._entry_alloca(LLTYPE[dtype])
        self.b.store(init, slot)
        return slot

    # ---- scalar helpers ------------------------------------------------------------------
    def _has_sibling(self, op: ir.Op, prim: str) -> bool:
        return any(u.prim == prim for u in self.info.users[op.operands[0]])

    def call_math(self, name: str, dtype: str, args, op: Optional[ir.Op] = None):
        """`name`(*args) on `dtype` scalars; `op` is the IR operation being lowered, if any."""
        ty = LLTYPE[dtype]
        if (self.vector_isas and dtype == "f32" and op is not None
                and op.prim in _SINCOS and self._has_sibling(op, _SINCOS[op.prim])):
            # sin and cos of one value: one call computes both (vmath.sincos_wrapper)
            both = self.b.call(vmath.sincos_wrapper(self.module, self.vector_isas), args)
            return self.b.extract_value(both, 0 if name == "sin" else 1)
        if self.vector_isas and vmath.vectorised(name, dtype):
            return self.b.call(vmath.wrapper(self.module, name, dtype, self.vector_isas), args)
        if name in _INTRINSICS:
            fname = f"llvm.{name}.{'f32' if dtype == 'f32' else 'f64'}"
        elif name in _LIBM:
            fname = name + ("f" if dtype == "f32" else "")
        else:
            raise UnsupportedError(f"no lowering for math function '{name}'")
        f = self.module.globals.get(fname)
        if f is None:
            f = ll.Function(self.module, ll.FunctionType(ty, [ty] * len(args)), fname)
        return self.b.call(f, args)

    def convert(self, v, src: str, dst: str):
        b = self.b
        if src == dst:
            return v
        if dst == "bool":
            if ir.is_float(src):
                return b.fcmp_unordered("!=", v, ll.Constant(v.type, 0.0))
            return b.icmp_signed("!=", v, ll.Constant(v.type, 0))
        ty = LLTYPE[dst]
        if src == "bool":
            return b.uitofp(v, ty) if ir.is_float(dst) else b.zext(v, ty)
        if ir.is_float(src) and ir.is_float(dst):
            return b.fpext(v, ty) if dst == "f64" else b.fptrunc(v, ty)
        if ir.is_float(src):
            return self._fptosi_sat(v, ty)
        if ir.is_float(dst):
            return b.sitofp(v, ty)
        return b.sext(v, ty) if ty.width > v.type.width else b.trunc(v, ty)

    def _fptosi_sat(self, v, ty):
        # fptosi is poison out of range; the saturating intrinsic is defined for every input
        name = f"llvm.fptosi.sat.i{ty.width}.{'f32' if v.type == F32 else 'f64'}"
        f = self.module.globals.get(name) or ll.Function(self.module, ll.FunctionType(ty, [v.type]), name)
        return self.b.call(f, [v])

    def smax(self, a, c):
        return self.b.select(self.b.icmp_signed(">", a, c), a, c)

    def smin(self, a, c):
        return self.b.select(self.b.icmp_signed("<", a, c), a, c)

    def to_i64(self, v):
        if v.type == I64:
            return v
        if v.type == I1:
            return self.b.zext(v, I64)
        return self.b.sext(v, I64)

    def int_pow(self, base, exp):
        """base ** exp for exp >= 0 by repeated squaring."""
        b = self.b
        ty = base.type
        res, bb, ee = (self._entry_alloca(ty) for _ in range(3))
        b.store(ll.Constant(ty, 1), res)
        b.store(base, bb)
        b.store(exp, ee)
        head = self.llfn.append_basic_block("pow.head")
        body = self.llfn.append_basic_block("pow.body")
        done = self.llfn.append_basic_block("pow.done")
        b.branch(head)
        b.position_at_end(head)
        b.cbranch(b.icmp_signed(">", b.load(ee), ll.Constant(ty, 0)), body, done)
        b.position_at_end(body)
        e = b.load(ee)
        odd = b.trunc(b.and_(e, ll.Constant(ty, 1)), I1)
        r = b.load(res)
        b.store(b.select(odd, b.mul(r, b.load(bb)), r), res)
        b.store(b.mul(b.load(bb), b.load(bb)), bb)
        b.store(b.ashr(e, ll.Constant(ty, 1)), ee)
        b.branch(head)
        b.position_at_end(done)
        return b.load(res)

    def combiner(self, name: str, dtype: str):
        """A binary scalar function for reductions; float add/mul may be reassociated so loops
        vectorise (the summation order of a kernel's own reductions is not fixed)."""
        # self.b is looked up at each use: a parallel loop generates its body with another builder
        if name in ("add", "mul") and ir.is_float(dtype):
            return lambda a, c: getattr(self.b, "f" + name)(a, c, flags=("reassoc", "nsz"))
        if name in ("add", "mul"):
            return lambda a, c: getattr(self.b, name)(a, c)
        scalar = PRIMS[name].scalar
        t = ir.Type(dtype)
        return lambda a, c: scalar(self, [a, c], [t, t], t, None)

    def accumulate(self, slot, v, dt: str, adt: str, fold):
        """slot = fold(slot, v), v widened from dt to the accumulator's dtype adt: one element of
        a reduction's running total (a target may sum a group of elements narrow first)."""
        self.b.store(fold(self.b.load(slot), self.convert(v, dt, adt)), slot)

    # ---- errors --------------------------------------------------------------------------
    def check(self, ok, kind: str, message: str, loc, d1=None, d2=None):
        """Branch to the error exit with a new site id when `ok` (i1) is false."""
        if isinstance(ok, ll.Constant) and ok.constant:
            return
        self.sites.append(Site(kind, message, loc))
        b = self.b
        details = [self.to_i64(d) if d is not None else self.i64(0) for d in (d1, d2)]
        report, incoming = self._report_block()
        here, good = b.block, self.llfn.append_basic_block("ok")
        b.cbranch(ok, good, report)
        for phi, v in zip(incoming, [ll.Constant(I32, len(self.sites))] + details):
            phi.add_incoming(v, here)
        b.position_at_end(good)

    def _report_block(self):
        """The block every failed check of the current function branches to, with phis for the
        site id and two details: it stores them and leaves by the error exit. One block, not three
        per check: less IR for LLVM's O3 pipeline (B4's gradient has ~25 checks)."""
        if self.report is None:
            block = self.llfn.append_basic_block("report")
            rb = ll.IRBuilder(block)
            incoming = (rb.phi(I32, "site"), rb.phi(I64, "detail1"), rb.phi(I64, "detail2"))
            rb.store(incoming[0], self.status)
            with rb.if_then(rb.icmp_unsigned("!=", self.err, ll.Constant(self.err.type, None))):
                for k, v in enumerate((rb.zext(incoming[0], I64),) + incoming[1:]):
                    rb.store(v, rb.gep(self.err, [self.i64(k)]))
            rb.branch(self.fail_block)
            self.report = (block, incoming)
        return self.report

    def check_eq(self, a, c, kind, message, loc):
        self.check(self.b.icmp_signed("==", a, c), kind, message, loc, a, c)

    def wrap_index(self, i, n, loc, axis=0, check=True):
        i = self.to_i64(i)
        w = self.b.select(self.b.icmp_signed("<", i, self.i64(0)), self.b.add(i, n), i)
        if check:
            self.check(self.b.icmp_unsigned("<", w, n), "index",
                       f"index {{0}} is out of bounds for axis {axis} with size {{1}}", loc, i, n)
        return w

    def clamp_slice_bound(self, v, n):
        v = self.to_i64(v)
        v = self.b.select(self.b.icmp_signed("<", v, self.i64(0)), self.b.add(v, n), v)
        return self.smin(self.smax(v, self.i64(0)), n)

    # ---- memory --------------------------------------------------------------------------
    #: byte alignment of the arrays a CPU kernel with wide vectors allocates: a 64-byte vector
    #: load that straddles two cache lines costs two (a 64 x 64 vector-matrix product over a
    #: misaligned matrix ran 1.5x slower)
    VECTOR_ALIGN = 64

    def _malloc(self):
        f = self.module.globals.get("malloc")
        return f or ll.Function(self.module, ll.FunctionType(PTR, [I64]), "malloc")

    def _aligned_alloc(self):
        f = self.module.globals.get("aligned_alloc")
        return f or ll.Function(self.module, ll.FunctionType(PTR, [I64, I64]), "aligned_alloc")

    def _free_fn(self):
        f = self.module.globals.get("free")
        return f or ll.Function(self.module, ll.FunctionType(ll.VoidType(), [PTR]), "free")

    def _free_slot(self, slot):
        p = self.b.load(slot)
        self.b.call(self._free_fn(), [self.b.bitcast(p, PTR)])
        self.b.store(ll.Constant(slot.type.pointee, None), slot)

    def _kept_alloca(self, ty, slot=False, lanes=False):
        """An alloca whose value outlives a run of a fork's region: in the kernel's frame while a
        fork is generated (`fork`). With `lanes`, one per chunk of the fork, selected by the
        chunk running (`fork_lane`): a site's buffers stay with the thread that uses them, since
        a region moves between the caller and the worker from one run to the next (one buffer
        for both made B5's forked VJP 1.3x slower). `slot`: freed when the kernel returns."""
        if self.kernel_allocas is None:
            return self._entry_alloca(ty)
        ab = ll.IRBuilder(self.kernel_allocas)
        ab.position_before(self.kernel_allocas.instructions[0])
        if not lanes:
            a = ab.alloca(ty)
            if slot:
                self.kernel_slots.append(a)
            return a
        # the caller and the worker write their sites' slots at every step (a buffer moved into a
        # loop carry), and sharing a cache line made both crawl
        arr = _line_pair(ab, ty)
        zero = ll.Constant(I32, 0)
        if slot:
            end = ll.IRBuilder(self.kernel_allocas)           # after the alloca: appended
            self.kernel_slots += [end.gep(arr, [zero, ll.Constant(I32, k), zero]) for k in (0, 1)]
        return self.b.gep(arr, [zero, self.fork_lane, zero])

    def new_slot(self, dtype: str, scope=None):
        slot = self._entry_alloca(ll.PointerType(MEMTYPE[dtype]))
        self.all_slots.append(slot)
        (scope if scope is not None else self.scopes[-1]).append(slot)
        return slot

    def allocate(self, dtype: str, dims: list, slot=None) -> ArrayVal:
        n = self.i64(ITEMSIZE[dtype])
        ok = ll.Constant(I1, 1)
        for d in dims:
            # a negative extent or a byte count past 2**63 must not wrap into a small buffer
            prod = self.b.smul_with_overflow(n, d)
            ok = self.b.and_(ok, self.b.and_(self.b.not_(self.b.extract_value(prod, 1)),
                                              self.b.icmp_signed(">=", d, self.i64(0))))
            n = self.b.extract_value(prod, 0)
        if dims:
            self.check(ok, "memory", "array too large (or with a negative extent) to allocate",
                       self.fn.loc, n)
        n = self.smax(n, self.i64(1))
        if slot is not None or len(self.scopes) == 1:
            raw = self._checked_malloc(n)
            ptr = self.b.bitcast(raw, ll.PointerType(MEMTYPE[dtype]))
            slot = slot if slot is not None else self.new_slot(dtype)
            self.b.store(ptr, slot)
            return ArrayVal(dtype, list(dims), ptr=ptr, slot=slot)
        # inside a loop or branch: the site keeps its buffer between executions (its scope does
        # not free it) and reuses it when large enough, so a loop does not malloc every step; a
        # buffer moved elsewhere (loop carry, if result) leaves the slot null
        if self.kernel_allocas is None:
            slot = self.new_slot(dtype)
        else:                                  # in a fork's region: the kernel's frame keeps it
            slot = self._kept_alloca(ll.PointerType(MEMTYPE[dtype]), slot=True, lanes=True)
            self.scopes[-1].append(slot)
        cap = self._kept_alloca(I64, lanes=True)
        b = self.b
        old = b.load(slot)
        reuse = b.and_(b.icmp_unsigned("!=", old, ll.Constant(old.type, None)),
                       b.icmp_signed(">=", b.load(cap), n))
        grow = self.llfn.append_basic_block("alloc.grow")
        done = self.llfn.append_basic_block("alloc.done")
        b.cbranch(reuse, done, grow)
        b.position_at_end(grow)
        self._free_slot(slot)
        raw = self._checked_malloc(n)
        b.store(b.bitcast(raw, ll.PointerType(MEMTYPE[dtype])), slot)
        b.store(n, cap)
        b.branch(done)
        b.position_at_end(done)
        self.kept_slots.add(id(slot))
        self.slot_caps[id(slot)] = cap
        return ArrayVal(dtype, list(dims), ptr=b.load(slot), slot=slot)

    @staticmethod
    def itemsize(dtype: str) -> int:
        return ITEMSIZE[dtype]

    def _checked_malloc(self, n):
        if self.vector_lanes("f32"):
            a = self.VECTOR_ALIGN
            size = self.b.and_(self.b.add(n, self.i64(a - 1)), self.i64(-a))   # C11: a multiple of a
            raw = self.b.call(self._aligned_alloc(), [self.i64(a), size])
        else:
            raw = self.b.call(self._malloc(), [n])
        self.check(self.b.icmp_unsigned("!=", raw, ll.Constant(PTR, None)), "memory",
                   "out of memory allocating an array", self.fn.loc, n)
        return raw

    def alloc_array(self, v: ir.Value, dims: list) -> ArrayVal:
        av = self._output_buffer(v, dims) or self.allocate(v.type.dtype, dims)
        self.values[v] = av
        return av

    def bind_array(self, v: ir.Value, av: ArrayVal):
        self.values[v] = av

    def flat(self, dims, idx):
        if not idx:
            return self.i64(0)
        off = idx[0]
        for d, i in zip(dims[1:], idx[1:]):
            off = self.b.add(self.b.mul(off, d), i)
        return off

    def load_elem(self, av: ArrayVal, idx):
        if self._preloaded:
            hit = self._preloaded.get((id(av.ptr), tuple(id(i) for i in idx)))
            if hit is not None:
                return hit
        v = self.b.load(self.elem_ptr(av, idx))
        return self.b.trunc(v, I1) if av.dtype == "bool" else v

    def elem_ptr(self, av: ArrayVal, idx):
        return self.b.gep(av.ptr, [self.flat(av.dims, idx)], inbounds=True)

    def store_elem(self, av: ArrayVal, idx, val):
        p = self.elem_ptr(av, idx)
        if av.dtype == "bool":
            val = self.b.zext(val, I8)
        self.b.store(val, p)

    def elem(self, v: ir.Value, idx):
        av = self.values[v]
        if not isinstance(av, ArrayVal):
            return av
        if av.lazy is not None:
            # a fused DAG may reach one node by several paths: compute it once per element
            if all(isinstance(i, ll.Constant) for i in idx):
                return av.lazy(idx)       # no loop index: the value would not dominate other loops
            key = (v, tuple(idx))
            hit = self._elem_memo.get(key)
            if hit is None:
                hit = self._elem_memo[key] = av.lazy(idx)
            return hit
        return self.load_elem(av, idx)

    def set_lazy(self, v: ir.Value, dims, fn, reads=()):
        closure = set()
        for r in reads:
            av = self.values.get(r)
            if isinstance(av, ArrayVal) and av.lazy is not None:
                closure |= av.reads
            else:
                closure.add(r)
        self.values[v] = ArrayVal(v.type.dtype, list(dims), lazy=fn, reads=frozenset(closure))
        if not self.info.fused(v):
            self.materialize(v)

    def leaf_reads(self, values) -> list:
        """The stored arrays that reading `values` elementwise reads (a fused value: its leaves)."""
        out = []
        for v in values:
            av = self.values.get(v)
            for r in (av.reads if isinstance(av, ArrayVal) and av.lazy is not None else [v]):
                if r not in out:
                    out.append(r)
        return out

    def reads(self, v: ir.Value, x: ir.Value) -> bool:
        av = self.values.get(v)
        return isinstance(av, ArrayVal) and av.lazy is not None and x in av.reads

    def materialize(self, v: ir.Value) -> ArrayVal:
        av = self.values[v]
        if av.ptr is not None:
            return av
        out = self._output_buffer(v, av.dims) or self.allocate(av.dtype, av.dims)
        self.parallel_loop(av.dims, lambda idx, _: self.store_elem(out, idx, av.lazy(idx)), reads=av.reads,
                           flat=True)
        self.values[v] = out
        return out

    def copy_into(self, v: ir.Value, out: ArrayVal):
        self.parallel_loop(out.dims, lambda idx, _: self.store_elem(out, idx, self.elem(v, idx)), reads=[v],
                           flat=True)

    def copy_many(self, pairs):
        """copy_into for several (value, destination) pairs; values of one symbolic shape are
        written in one loop (multi-output fusion: their shared fused nodes are computed once)."""
        groups = {}
        for v, out in pairs:
            groups.setdefault(tuple(v.type.shape), []).append((v, out))
        for group in groups.values():
            dims = group[0][1].dims

            def body(idx, _, group=group):
                for v, out in group:
                    self.store_elem(out, idx, self.elem(v, idx))
            self.parallel_loop(dims, body, reads=[v for v, _ in group], flat=True)

    def writable_copy(self, op: ir.Op, x: ir.Value) -> ArrayVal:
        """x's buffer if `op` may update it in place (owned, defined in op's block, dead after op);
        otherwise a fresh copy."""
        av = self.values[x]
        if av.ptr is not None and av.slot is not None and self.info.dead_after(x, op):
            return ArrayVal(av.dtype, av.dims, ptr=av.ptr, slot=av.slot)
        out = self.allocate(av.dtype, av.dims)
        self.copy_into(x, out)
        return out

    # ---- loops -----------------------------------------------------------------------------
    def for_range(self, n, body, start=None, step=None):
        """for i in [start, n) by step (default 1): body(i), as a canonical counted loop."""
        b = self.b
        pre = b.block
        head = self.llfn.append_basic_block("loop")
        inner = self.llfn.append_basic_block("body")
        exit_ = self.llfn.append_basic_block("after")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64)
        i.add_incoming(start if start is not None else self.i64(0), pre)
        b.cbranch(b.icmp_signed("<", i, n), inner, exit_)
        b.position_at_end(inner)
        body(i)
        nxt = b.add(i, step if step is not None else self.i64(1), flags=("nsw",))
        i.add_incoming(nxt, b.block)
        b.branch(head)
        b.position_at_end(exit_)

    def loop_nest(self, dims, body, idx=()):
        if len(idx) == len(dims):
            body(list(idx))
            return
        self.for_range(dims[len(idx)], lambda i: self.loop_nest(dims, body, tuple(idx) + (i,)))

    # ---- threads -------------------------------------------------------------------------------
    def parallel_loop(self, dims, body, accs=(), work=None, reads=(), flat=False):
        """loop_nest(dims, body(idx, acc_slots)) with accumulators `accs` = [(dtype, init, combine)];
        returns the accumulators' final values. When threads are on, the outer loop is cut into
        chunks run by `parallel.run_fn` (each chunk has its own accumulators, combined in chunk order
        afterwards); small loops run as one chunk, inline. `work` (i64): elements of work per
        iteration of the nest, when that is more than one (a row of a matrix product). `reads`:
        IR values the body reads at `idx` (a target may load them ahead, see `_chunk_rows`). `flat`:
        the body touches only element `idx` (no row-wide writes), so a target may split the nest
        by element (`flat_jobs`)."""
        static = 1
        for d in list(dims) + ([work] if work is not None else []):
            static = static * d.constant if isinstance(d, ll.Constant) and static is not None else None
        if (not self.threads or self.in_parallel or self.in_fork or not dims
                or (static is not None and static < 2 * self.grain)):
            slots = [self.alloca_scalar(dt, init) for dt, init, _ in accs]
            self.loop_nest(dims, lambda idx: body(idx, slots))
            return [self.b.load(s) for s in slots]
        return self._outlined_loop(dims, body, accs, work, reads, flat and self.flat_jobs and len(dims) > 1)

    def _outlined_loop(self, dims, body, accs, work=None, reads=(), flat=False):
        b = self.b
        total = self.i64(1) if work is None else self.smax(work, self.i64(1))
        for d in dims:
            total = b.mul(total, self.smax(d, self.i64(0)))
        rows = total if flat else dims[0]        # what a chunk's rows are: elements or outer rows
        chunks = self._chunk_count(self.smax(rows, self.i64(0)), total)
        partials = [self._partials_buffer(dt) for dt, _, _ in accs]
        results = [self._entry_alloca(LLTYPE[dt]) for dt, _, _ in accs]
        sub = self._chunk_function(dims, body, accs, partials, reads, flat)
        captured = _captures(sub, self.llfn)
        if not self._can_capture(captured):
            slots = [self.alloca_scalar(dt, init) for dt, init, _ in accs]
            self.loop_nest(dims, lambda idx: body(idx, slots))
            return [b.load(s_) for s_ in slots]
        ctx_t = ll.LiteralStructType([v.type for v in captured] or [I8])
        _load_captures(sub, captured, ctx_t)
        single = b.icmp_signed("==", chunks, self.i64(1))
        if self._inline_single_chunk():
            # inside a loop or branch the nest may run many times on small data: one chunk runs
            # a copy of the loop inline (no call, no context), as if there were no threads
            with b.if_else(single) as (then, otherwise):
                with then:
                    slots = [self.alloca_scalar(dt, init) for dt, init, _ in accs]
                    self.loop_nest(dims, lambda idx: body(idx, slots))
                    for s_, r in zip(slots, results):
                        b.store(b.load(s_), r)
                with otherwise:
                    self._run_chunks(sub, captured, ctx_t, rows, chunks, accs, partials, results, None)
        else:
            self._run_chunks(sub, captured, ctx_t, rows, chunks, accs, partials, results, single)
        return [b.load(r) for r in results]

    # hooks a parallel target overrides (nvptx.py): how many chunks, where partials live, what a
    # chunk may capture, how a chunk walks its rows and ends
    def _unflatten(self, f, dims):
        """The index of element f (row-major) of a nest of extents `dims` (all positive here)."""
        idx = []
        for d in reversed(dims[1:]):
            idx.append(self.b.urem(f, d))
            f = self.b.udiv(f, d)
        return [f] + idx[::-1]

    def _chunk_count(self, n0, total):
        return self.i64(1) if self.one_chunk else parallel.chunk_count(self.b, n0, total)

    def _partials_buffer(self, dtype):
        return self._entry_alloca(ll.ArrayType(LLTYPE[dtype], parallel.MAX_CHUNKS))

    def _can_capture(self, captured) -> bool:
        return True

    def _inline_single_chunk(self) -> bool:
        return len(self.scopes) > 1

    def _chunk_rows(self, lo, hi, body, dims, reads):
        self.for_range(hi, body, start=lo)

    def _finish_chunk(self, accs, slots, partials, chunk):
        for s_, part in zip(slots, partials):
            self.b.store(self.b.load(s_), self.b.gep(part, [self.i64(0), chunk]))
        self.b.ret(ll.Constant(I32, 0))
        self.b.position_at_end(self.fail_block)
        self.b.ret(self.b.load(self.status))

    def _run_chunks(self, sub, captured, ctx_t, n0, chunks, accs, partials, results, single):
        """Fill the context, run the chunks (a direct call when `single`), propagate the first
        failing chunk's error, combine the partials in chunk order into `results`."""
        b = self.b
        status = self._entry_alloca(ll.ArrayType(I32, parallel.MAX_CHUNKS))
        errs = self._entry_alloca(ll.ArrayType(I64, 3 * parallel.MAX_CHUNKS))
        ctx = self._entry_alloca(ctx_t)
        for k, v in enumerate(captured):
            b.store(v, b.gep(ctx, [ll.Constant(I32, 0), ll.Constant(I32, k)]))
        zero = self.i64(0)
        errs0, status0 = b.gep(errs, [zero, zero]), b.gep(status, [zero, zero])
        # the caller's own chunks run in its (already set) floating-point mode; workers' set it
        worker_sub = sub
        if self.flush_denormals:
            worker_sub = denormals.wrapper(self.module, sub, self.module.get_unique_name(sub.name + ".ftz"))
            worker_sub.linkage = "internal"
        args = [b.bitcast(worker_sub, PTR), b.bitcast(ctx, PTR), n0, chunks, errs0, status0]
        if single is None:
            failed = b.call(parallel.run_fn(self.module, self.shared_runtime), args)
        else:
            slot = self.alloca_scalar("i64", self.i64(-1))
            with b.if_else(single) as (then, otherwise):
                with then:
                    st = b.call(sub, [args[1], zero, n0, zero, errs0])
                    b.store(st, status0)
                    b.store(b.select(b.icmp_signed("!=", st, ll.Constant(I32, 0)), zero, self.i64(-1)), slot)
                with otherwise:
                    b.store(b.call(parallel.run_fn(self.module, self.shared_runtime), args), slot)
            failed = b.load(slot)
        with b.if_then(b.icmp_signed(">=", failed, zero), likely=False):
            # the chunk a sequential run would have failed in: its site and its details
            b.store(b.load(b.gep(status, [zero, failed])), self.status)
            with b.if_then(b.icmp_unsigned("!=", self.err, ll.Constant(self.err.type, None))):
                for k in range(3):
                    src = b.gep(errs, [zero, b.add(b.mul(failed, self.i64(3)), self.i64(k))])
                    b.store(b.load(src), b.gep(self.err, [self.i64(k)]))
            b.branch(self.fail_block)
        for (dt, init, combine), part, r in zip(accs, partials, results):
            b.store(init, r)
            self.for_range(chunks, lambda c: b.store(combine(b.load(r), b.load(b.gep(part, [zero, c]))), r))

    def _begin_outlined(self, suffix):
        """Start emitting into a new internal function of type parallel.CHUNK_FN (its allocas,
        entry and fail blocks, its own status; the caller has saved this generator's state)."""
        sub = ll.Function(self.module, parallel.CHUNK_FN, self.module.get_unique_name(self.symbol + suffix))
        sub.linkage = "internal"
        # one copy of the loop's machine code: inlined at the one-chunk call it would be compiled
        # (and vectorised) twice, which costs compile time and gains nothing for a big loop
        sub.attributes.add("noinline")
        for attr in self.llfn.attributes:
            if attr.startswith(('"prefer-vector-width"', "alignstack")):
                set.add(sub.attributes, attr)
        self.llfn = sub
        self.allocas = sub.append_basic_block("allocas")
        entry = sub.append_basic_block("entry")
        self.fail_block = sub.append_basic_block("fail")
        self.b = ll.IRBuilder(entry)
        self.status, self.err, self.report = self._entry_alloca(I32), sub.args[4], None
        return sub, entry

    def _chunk_function(self, dims, body, accs, partials, reads=(), flat=False):
        """The body of a loop nest as parallel.CHUNK_FN: rows [lo, hi) of the outer loop, its
        accumulators stored to partials[chunk]. Generated by this same code generator, so every
        value of the enclosing function it uses is captured afterwards (`_captures`)."""
        saved = (self.llfn, self.b, self.allocas, self.fail_block, self.status, self.err, self.report,
                 self._elem_memo, len(self.all_slots))
        sub, entry = self._begin_outlined(".chunk")
        ctx, lo, hi, chunk, err = sub.args
        self.in_parallel, self._elem_memo = True, {}
        try:
            slots = [self.alloca_scalar(dt, init) for dt, init, _ in accs]
            if flat:
                self._chunk_rows(lo, hi, lambda f: body(self._unflatten(f, dims), slots), [], ())
            else:
                self._chunk_rows(lo, hi, lambda i: self.loop_nest(dims, lambda idx: body(idx, slots), (i,)),
                                 dims, reads)
            self._finish_chunk(accs, slots, partials, chunk)
            ll.IRBuilder(self.allocas).branch(entry)
            if len(self.all_slots) != saved[-1]:
                raise AssertionError("a parallel loop body allocated an array")  # would leak per chunk
        finally:
            (self.llfn, self.b, self.allocas, self.fail_block, self.status, self.err, self.report,
             self._elem_memo, _) = saved
            self.in_parallel = False
        return sub

    # ---- fork: two independent regions on two threads ----------------------------------------
    def can_fork(self) -> bool:
        return self.threads and not self.in_parallel and not self.in_fork and not self.one_chunk

    def fork(self, region):
        """Generate `region(0)` and `region(1)` (the regions of a `fork` op, control.py) as the two
        chunks of one outlined function, and run them: as a pooled job of two chunks, so that a
        worker takes one while this thread runs the other, when the shorter region's last run in
        this call (what running both at once saves) took `fork_min_ns()` or more; else both here,
        one after the other (the first run of each call, and loops of small steps, where handing
        over would cost more than it saves). A region's allocation sites (one buffer per chunk)
        and invariant copies keep their buffers in the kernel's frame from one run to the next
        until the kernel returns (fresh buffers for each run made B5's VJP at 300 steps 1.2x
        slower); its other slots (loop carries) are its frame's, freed when the run ends (what
        it yields was moved to the fork's result slots); its loop nests run on its own thread. The caller runs chunk 0
        and a worker chunk 1 (FORK_PINNED), and the regions swap chunks at every run, so the
        thread that refilled a segment walks it: its states stay in that core's cache (taken
        across, the walk of B5's VJP ran twice as slow)."""
        b = self.b
        # each region's last time (a cache line each: written by either thread) and which region
        # chunk 0 runs next; zero at the kernel's entry (stores appended to its allocas block)
        ab = ll.IRBuilder(self.allocas)
        ab.position_before(self.allocas.instructions[0])
        times = _line_pair(ab, I64)
        parity = self._entry_alloca(I64)
        zero32 = ll.Constant(I32, 0)
        last_ns = [ll.IRBuilder(self.allocas).gep(times, [zero32, ll.Constant(I32, k), zero32]) for k in (0, 1)]
        for slot in last_ns + [parity]:
            ll.IRBuilder(self.allocas).store(self.i64(0), slot)
        saved = (self.llfn, self.b, self.allocas, self.fail_block, self.status, self.err, self.report,
                 self._elem_memo, self._copies, self._preloaded, dict(self.values), len(self.all_slots))
        self.kernel_allocas, self.kernel_slots = self.allocas, []
        sub, entry = self._begin_outlined(".fork")
        ctx, lo, hi, chunk, err = sub.args
        self.in_fork = True
        try:
            ts = self._entry_alloca(parallel._TIMESPEC)

            def chunk_body(i):
                self.fork_lane = i
                which = self.b.xor(i, self.b.load(parity))
                with self.b.if_else(self.b.icmp_signed("==", which, self.i64(0))) as (first, second):
                    for k, arm in enumerate((first, second)):
                        with arm:
                            self._elem_memo, self._copies, self._preloaded = {}, {}, None
                            t0 = parallel._now_ns(self.module, self.b, ts)
                            region(k)
                            self.b.store(self.b.sub(parallel._now_ns(self.module, self.b, ts), t0), last_ns[k])
            self.for_range(hi, chunk_body, start=lo)
            kept = set(map(id, self.kernel_slots))
            own = [s_ for s_ in self.all_slots[saved[-1]:] if id(s_) not in kept]
            self.all_slots[saved[-1]:] = self.kernel_slots
            for slot in own:
                self._free_slot(slot)
            self.b.ret(ll.Constant(I32, 0))
            self.b.position_at_end(self.fail_block)
            for slot in own:
                self._free_slot(slot)
            self.b.ret(self.b.load(self.status))
            ab = ll.IRBuilder(self.allocas)
            for slot in own:
                ab.store(ll.Constant(slot.type.pointee, None), slot)
            ab.branch(entry)
        finally:
            (self.llfn, self.b, self.allocas, self.fail_block, self.status, self.err, self.report,
             self._elem_memo, self._copies, self._preloaded, self.values, _) = saved
            self.in_fork, self.kernel_allocas, self.fork_lane = False, None, None
        captured = _captures(sub, self.llfn)
        ctx_t = ll.LiteralStructType([v.type for v in captured] or [I8])
        _load_captures(sub, captured, ctx_t)
        alone = b.icmp_signed("<", self.smin(b.load(last_ns[0]), b.load(last_ns[1])), self.i64(fork_min_ns()))
        b.store(b.xor(b.load(parity), self.i64(1)), parity)
        self._run_chunks(sub, captured, ctx_t, self.i64(2), self.i64(2 | parallel.FORK_PINNED), [], [], [], alone)

    # ---- matrix products ------------------------------------------------------------------------
    def gemm(self, dt, M, N, K, A, ta, lda, B, tb, ldb, C, ldc):
        """C[M, N] = op(A)[M, K] @ op(B)[K, N] on row-major buffers (typed element pointers):
        op(A)[i, p] = A[p*lda + i] if ta else A[i*lda + p]; likewise B with tb; C[i, j] at
        C[i*ldc + j]. Large products call BLAS when the module may (JIT); the rest run the
        loop nest i-p-j (the inner loop streams a row of B and of C and vectorises)."""
        b = self.b
        one_row = isinstance(M, ll.Constant) and M.constant == 1

        def loops():
            if one_row and not tb and self._vecmat(dt, N, K, [(A, ta, lda)], B, ldb, [C]):
                return
            sa_i, sa_p = gemm_loops.a_strides(ta, lda)
            if self.blas and ir.is_float(dt):
                # the fallback of a module that calls BLAS for big products: small ones only,
                # where threads would not pay, in one function per element type and layout of B
                # (compiled once per process when the runtime is shared)
                b.call(gemm_loops.rows_fn(self.module, LLTYPE[dt], tb, define=not self.shared_runtime),
                       [M, N, K, A, sa_i, sa_p, B, ldb, C, ldc])
            elif self.blas:
                gemm_loops.counted(b, self.i64(0), M, lambda i: gemm_loops.emit_row(
                    b, i, N, K, A, sa_i, sa_p, B, tb, ldb, C, ldc))
            else:
                # rows of C are independent: a big product's rows are split across threads (AOT
                # libraries, GPU jobs); self.b, not b: a parallel loop builds its rows elsewhere
                self.parallel_loop([M], lambda idx, _: gemm_loops.emit_row(
                    self.b, idx[0], N, K, A, sa_i, sa_p, B, tb, ldb, C, ldc), work=self.b.mul(N, K))

        if not (self.blas and ir.is_float(dt)) or (one_row and not tb):
            # a vector @ matrix product stays here: OpenBLAS's sgemm with one row does not turn
            # into gemv, and its spinning threads slowed the kernel's own threaded loops (B2's
            # VJP, g @ inputs: 875 us through sgemm against 393 us)
            loops()
            return
        from .blas import MIN_FLOPS, NO_TRANS, ROW_MAJOR, SYMBOL_PREFIX, TRANS
        one = self.i64(1)
        big = b.icmp_signed(">=", b.mul(b.mul(M, N), K), self.i64(MIN_FLOPS))
        ok = b.and_(b.and_(b.icmp_signed(">=", M, one), b.icmp_signed(">=", N, one)),
                    b.and_(b.icmp_signed(">=", K, one), big))
        with b.if_else(ok) as (then, otherwise):
            with then:
                ty = LLTYPE[dt]
                name = SYMBOL_PREFIX + ("sgemm" if dt == "f32" else "dgemm")
                fnty = ll.FunctionType(ll.VoidType(), [I32, I32, I32, I64, I64, I64, ty, PTR, I64, PTR, I64,
                                                       ty, PTR, I64])
                f = self.module.globals.get(name) or ll.Function(self.module, fnty, name)
                b.call(f, [ll.Constant(I32, ROW_MAJOR), ll.Constant(I32, TRANS if ta else NO_TRANS),
                           ll.Constant(I32, TRANS if tb else NO_TRANS), M, N, K, ll.Constant(ty, 1.0),
                           b.bitcast(A, PTR), self.smax(lda, one), b.bitcast(B, PTR), self.smax(ldb, one),
                           ll.Constant(ty, 0.0), b.bitcast(C, PTR), self.smax(ldc, one)])
            with otherwise:
                loops()

    def blas_gemv(self, dt, M, K, A, x, y, otherwise):
        """y[M] = A[M, K] @ x[K] (row-major A, contiguous vectors) through BLAS's gemv when the
        module may call BLAS and A has at least GEMV_MIN elements; else `otherwise()`."""
        from .blas import GEMV_MIN, NO_TRANS, ROW_MAJOR, SYMBOL_PREFIX
        b, one = self.b, self.i64(1)
        if not (self.blas and ir.is_float(dt)):
            return otherwise()
        ok = b.and_(b.icmp_signed(">=", b.mul(M, K), self.i64(GEMV_MIN)),
                    b.and_(b.icmp_signed(">=", M, one), b.icmp_signed(">=", K, one)))
        with b.if_else(ok) as (then, other):
            with then:
                ty = LLTYPE[dt]
                name = SYMBOL_PREFIX + ("sgemv" if dt == "f32" else "dgemv")
                fnty = ll.FunctionType(ll.VoidType(), [I32, I32, I64, I64, ty, PTR, I64, PTR, I64, ty, PTR, I64])
                f = self.module.globals.get(name) or ll.Function(self.module, fnty, name)
                b.call(f, [ll.Constant(I32, ROW_MAJOR), ll.Constant(I32, NO_TRANS), M, K, ll.Constant(ty, 1.0),
                           b.bitcast(A, PTR), K, b.bitcast(x, PTR), one, ll.Constant(ty, 0.0),
                           b.bitcast(y, PTR), one])
            with other:
                otherwise()

    #: column vectors kept in registers per block of a vector-matrix product
    VECMAT_UNROLL = 4
    #: largest matrix (elements) a loop's vector products copy (invariant_copy)
    COPY_MAX = 1 << 16

    def vector_lanes(self, dt) -> int:
        """Lanes of the widest vector register of the host's ISAs for dt; 0 when unknown."""
        bits = {"e": 512, "d": 256, "b": 128}
        widths = [bits[i] for i in self.vector_isas if i in bits]
        if not widths or not ir.is_float(dt):
            return 0
        return max(widths) // (32 if dt == "f32" else 64)

    def invariant_copy(self, v: ir.Value, A: ArrayVal, transpose: bool):
        """(pointer, row stride) of a copy of the m x k matrix A = value v (of Aᵀ when transpose),
        made on first use in a call and kept until the kernel returns, for the vector-matrix
        products (`_vecmat`) of a loop whose matrix does not change: a transposed copy turns
        A @ x into x @ Aᵀ (2.3x faster at d = 64), and either copy's rows start on vector
        boundaries (a misaligned 64 x 64 matrix made x @ A 1.5x slower)."""
        b = self.b
        slot = self._copies.get((v, transpose))
        if slot is None:
            slot = self._copies[v, transpose] = self._kept_alloca(ll.PointerType(MEMTYPE[A.dtype]), slot=True)
            self.all_slots.append(slot)          # null at entry, freed on the error exit
            self.kept_slots.add(id(slot))        # and when the kernel returns
        m, k = A.dims
        rows, cols = (k, m) if transpose else (m, k)
        lanes = self.i64(self.vector_lanes(A.dtype))
        ld = b.mul(b.sdiv(b.add(cols, b.sub(lanes, self.i64(1))), lanes), lanes)
        with b.if_then(b.icmp_unsigned("==", b.load(slot), ll.Constant(slot.type.pointee, None))):
            raw = self._checked_malloc(self.smax(b.mul(b.mul(rows, ld), self.i64(ITEMSIZE[A.dtype])), self.i64(1)))
            copy = b.bitcast(raw, slot.type.pointee)
            b.store(copy, slot)
            self.for_range(m, lambda i: self.for_range(k, lambda j: b.store(
                b.load(b.gep(A.ptr, [b.add(b.mul(i, k), j)], inbounds=True)),
                b.gep(copy, [b.add(b.mul(j, ld), i) if transpose else b.add(b.mul(i, ld), j)], inbounds=True))))
        return b.load(slot), ld

    def _vecmat(self, dt, N, K, vecs, B, ldb, outs) -> bool:
        """outs[g][N] = vecs[g] @ B[K, N] (B row-major; vecs: (pointer, transposed, lda), element
        p at p*lda when transposed) in explicit SIMD: each block of columns is accumulated in
        registers over the whole of K, for every vector at once (one load of B serves them all),
        then stored once; the last partial vector of columns is a masked block. The i-p-j loops
        kept C in memory, so each step of p was a load-FMA-store chain on C plus the vectoriser's
        checks: x @ A at d = 64 (the reverse sweep of B5) took 3.6x as long as A @ x. False
        where the host's vector width is unknown (other targets keep the loops)."""
        lanes = self.vector_lanes(dt)
        if not lanes:
            return False
        ety = LLTYPE[dt]
        vty = ll.VectorType(ety, lanes)
        mty = ll.VectorType(I1, lanes)
        vptr = ll.PointerType(vty)
        elem_bytes = 4 if dt == "f32" else 8      # rows need not be vector-aligned
        fmuladd = vmath.declare_intrinsic(self.module, "fmuladd", vty, 3)
        suffix = f"v{lanes}{'f32' if dt == 'f32' else 'f64'}.p0"
        mload = self.module.globals.get("llvm.masked.load." + suffix) or ll.Function(
            self.module, ll.FunctionType(vty, [vptr, I32, mty, vty]), "llvm.masked.load." + suffix)
        mstore = self.module.globals.get("llvm.masked.store." + suffix) or ll.Function(
            self.module, ll.FunctionType(ll.VoidType(), [vty, vptr, I32, mty]), "llvm.masked.store." + suffix)
        b = self.b
        vzero = ll.Constant(vty, [ll.Constant(ety, 0.0)] * lanes)
        align = ll.Constant(I32, elem_bytes)

        def a_at(g, p):
            ptr, ta, lda = vecs[g]
            return b.load(b.gep(ptr, [b.mul(p, lda) if ta else p], inbounds=True))

        def splat(x, ty=vty):
            return b.shuffle_vector(b.insert_element(ll.Constant(ty, ll.Undefined), x, self.i64(0)),
                                    ll.Constant(ty, ll.Undefined), ll.Constant(ll.VectorType(I32, lanes), [0] * lanes))

        # FMA chains per (column vector, vector): one vector alone needs two to hide the latency
        chains = 2 if len(vecs) == 1 else 1

        def block(j0, nvec, mask=None):
            accs = [[[self._entry_alloca(vty) for _ in range(chains)] for _ in vecs] for _ in range(nvec)]
            for per_u in accs:
                for per_g in per_u:
                    for acc in per_g:
                        b.store(vzero, acc)

            def step(p, chain):
                aps = [splat(a_at(g, p)) for g in range(len(vecs))]
                for u in range(nvec):
                    ptr = b.bitcast(b.gep(B, [b.add(b.mul(p, ldb), b.add(j0, self.i64(u * lanes)))], inbounds=True),
                                    vptr)
                    bv = b.load(ptr, align=elem_bytes) if mask is None else b.call(mload, [ptr, align, mask, vzero])
                    for g, ap in enumerate(aps):
                        acc = accs[u][g][chain]
                        b.store(b.call(fmuladd, [ap, bv, b.load(acc)]), acc)
            if chains == 2:
                half = b.sdiv(K, self.i64(2))
                self.for_range(half, lambda q: (step(b.mul(q, self.i64(2)), 0),
                                                step(b.add(b.mul(q, self.i64(2)), self.i64(1)), 1)))
                self.for_range(K, lambda p: step(p, 0), start=b.mul(half, self.i64(2)))
            else:
                self.for_range(K, lambda p: step(p, 0))
            for u in range(nvec):
                for g, C in enumerate(outs):
                    tot = b.load(accs[u][g][0])
                    for acc in accs[u][g][1:]:
                        tot = b.fadd(tot, b.load(acc))
                    ptr = b.bitcast(b.gep(C, [b.add(j0, self.i64(u * lanes))], inbounds=True), vptr)
                    if mask is None:
                        b.store(tot, ptr, align=elem_bytes)
                    else:
                        b.call(mstore, [tot, ptr, align, mask])
        wide = lanes * self.VECMAT_UNROLL
        nwide = b.sdiv(N, self.i64(wide))
        self.for_range(nwide, lambda jb: block(b.mul(jb, self.i64(wide)), self.VECMAT_UNROLL))
        nvec = b.sdiv(N, self.i64(lanes))
        self.for_range(nvec, lambda jv: block(b.mul(jv, self.i64(lanes)), 1),
                       start=b.mul(nwide, self.i64(self.VECMAT_UNROLL)))
        rest = b.sub(N, b.mul(nvec, self.i64(lanes)))
        with b.if_then(b.icmp_signed(">", rest, self.i64(0))):
            ity = ll.VectorType(I64, lanes)
            lane = ll.Constant(ity, list(range(lanes)))
            block(b.mul(nvec, self.i64(lanes)), 1, b.icmp_signed("<", lane, splat(rest, ity)))
        return True

    # ---- blocks ------------------------------------------------------------------------------
    def gen_block(self, block: ir.Block, args):
        for a, v in zip(block.args, args):
            self.values[a] = v
        for op in block.ops:
            if op.prim in ("yield", "return"):
                return op
            self.gen_op(op)
        return None

    def gen_op(self, op: ir.Op):
        if op.prim == "return":
            return
        prim = PRIMS[op.prim]
        if prim.kind == "elementwise":
            self._gen_elementwise(op, prim)
        elif prim.codegen is not None:
            prim.codegen(self, op)
        else:
            raise UnsupportedError(f"no code generation for primitive '{op.prim}'", op.loc)

    def _gen_elementwise(self, op, prim):
        tin = [o.type for o in op.operands]
        tout = op.result.type
        if tout.is_scalar:
            self.values[op.result] = prim.scalar(self, [self.values[o] for o in op.operands], tin, tout, op)
            return
        rank = tout.rank
        dims = [None] * rank
        maps = []
        for o in op.operands:
            if o.type.is_scalar:
                maps.append(None)
                continue
            od = self.dims(o)
            off = rank - o.type.rank
            static1 = []
            for k, sym in enumerate(o.type.shape):
                s1 = sym == 1 and tout.shape[off + k] != 1
                static1.append(s1)
                if s1:
                    continue
                if dims[off + k] is None:
                    dims[off + k] = (od[k], sym)
                elif dims[off + k][1] != sym:
                    self.check_eq(dims[off + k][0], od[k], "shape",
                                  "operands could not be broadcast together (extents differ)", op.loc)
            maps.append((off, static1))
        dims = [d[0] if d is not None else self.i64(1) for d in dims]
        scalars = {o: self.values[o] for o in op.operands if o.type.is_scalar}
        operands = op.operands

        def elem(idx):
            args = []
            for o, m in zip(operands, maps):
                if m is None:
                    args.append(scalars[o])
                else:
                    off, s1 = m
                    args.append(self.elem(o, [self.i64(0) if s1[k] else idx[off + k] for k in range(len(s1))]))
            return prim.scalar(self, args, tin, tout, op)
        self.set_lazy(op.result, dims, elem, reads=[o for o in operands if not o.type.is_scalar])

    def push_scope(self):
        self.scopes.append([])

    def pop_scope(self):
        for slot in self.scopes.pop():
            if id(slot) not in self.kept_slots:
                self._free_slot(slot)

    def emit_return(self, op: ir.Op):
        args = self.llfn.args
        copies = []
        for v, k in zip(op.operands, self.out_slots):
            if v.type.is_scalar:
                val = self.values[v]
                if v.type.dtype == "bool":
                    val = self.b.zext(val, I8)
                self.b.store(val, args[k])
                continue
            if self.values[v].ptr is args[k]:
                continue                       # computed in place (_direct_outputs)
            got = self.dims(v)
            out_dims = list(args[k + 1:k + 1 + v.type.rank])
            for d, g in zip(out_dims, got):
                self.check_eq(d, g, "shape", "output buffer has the wrong extent", self.fn.loc)
            copies.append((v, ArrayVal(v.type.dtype, out_dims, ptr=args[k])))
        self.copy_many(copies)
        self.pop_scope()
        for slot in self.all_slots:            # reusable buffers kept by sites inside loops
            if id(slot) in self.kept_slots:
                self._free_slot(slot)
        self.b.ret(ll.Constant(I32, 0))


#: a fork runs its regions on two threads once the shorter of them took this long in the same
#: call (running them at once saves about its time): handing a region to a worker and joining
#: costs ~2-4 us on the 2-vCPU VMs (B5's VJP with d = 16, segments of ~3 and ~2 us, ran 1.3x
#: slower forked; with d = 64, ~12 and ~8 us, 1.3x faster)
FORK_MIN_NS = 5_000


def _line_pair(ab: ll.IRBuilder, ty):
    """An alloca at `ab` of two `ty` values on a cache line each (written by two threads)."""
    arr = ab.alloca(ll.ArrayType(ll.LiteralStructType([ty, ll.ArrayType(I8, 64 - 8)]), 2))
    arr.align = 64
    return arr


def fork_min_ns() -> int:
    """FORK_MIN_NS, or DSLC_FORK_MIN_NS (nanoseconds; 0 forks every time, as the tests do): read
    when a kernel is compiled, part of the cache key (`tag`)."""
    try:
        return max(0, int(os.environ.get("DSLC_FORK_MIN_NS", FORK_MIN_NS)))
    except ValueError:
        return FORK_MIN_NS


def tag() -> str:
    return f"fork{fork_min_ns()}"


def _is_local_to(v, fn) -> bool:
    if isinstance(v, ll.Argument):
        return v.parent is fn
    return isinstance(v, ll.Instruction) and getattr(v.parent, "parent", None) is fn


def _map_values(x, f):
    if isinstance(x, (list, tuple)):
        return type(x)(_map_values(y, f) for y in x)
    return f(x)


def _captures(sub: ll.Function, outer: ll.Function) -> list:
    """The values of `outer` that the instructions of `sub` use, in first-use order."""
    seen, out = set(), []

    def note(v):
        if _is_local_to(v, outer) and id(v) not in seen:
            seen.add(id(v))
            out.append(v)
        return v
    for block in sub.blocks:
        for instr in block.instructions:
            for name, val in vars(instr).items():
                if name != "parent":
                    _map_values(val, note)
    return out


def _load_captures(sub: ll.Function, captured: list, ctx_t):
    """Rewrite every use of a captured value in `sub` as a load from its context struct.
    llvmlite instructions keep operands in several attributes (operands, pointer, indices, args,
    incomings, aggregate...): all of them are rewritten."""
    if not captured:
        return
    b = ll.IRBuilder(sub.blocks[0])
    b.position_at_start(sub.blocks[0])
    ctx = b.bitcast(sub.args[0], ll.PointerType(ctx_t))
    loads = {id(v): b.load(b.gep(ctx, [ll.Constant(I32, 0), ll.Constant(I32, k)]))
             for k, v in enumerate(captured)}
    fresh = set(id(x) for x in loads.values())
    for block in sub.blocks:
        for instr in block.instructions:
            if id(instr) in fresh:
                continue
            for name, val in list(vars(instr).items()):
                if name != "parent":
                    hit = []

                    def swap(v):
                        new = loads.get(id(v))
                        if new is None:
                            return v
                        hit.append(v)
                        return new
                    new = _map_values(val, swap)
                    if hit:
                        setattr(instr, name, new)
            instr._clear_string_cache()


def generate(module: ll.Module, fn: ir.Function, symbol: str, boundscheck: bool = True,
             vector_isas=(), blas: bool = False, threads: bool = False,
             shared_runtime: bool = False, flush_denormals: bool = False,
             one_chunk: bool = False) -> FunctionCodegen:
    cg = FunctionCodegen(module, fn, symbol, boundscheck, vector_isas, blas, threads, shared_runtime,
                         flush_denormals, one_chunk)
    cg.build()
    return cg
