"""dslc IR -> MLIR text in upstream dialects (func, arith, math, scf, memref).

The entry function has dslc's ABI semantics (docs/design.md), in MLIR's types:

    func.func @NAME(<param>..., <output>..., %err: memref<4xi64>) -> i32

- a scalar parameter is passed by value (`f32 f64 i32 i64`; bool as `i8`, 0/1);
- an array parameter is a `memref<?x...xT>` (bool arrays as `i8`), C-contiguous (identity layout);
- an array output is a caller-allocated `memref<?x...xT>` whose extents the kernel checks;
  a scalar output is a `memref<T>` (rank 0) the kernel writes;
- `%err` receives the site id and two details of the first error (as dslc's `int64_t* err`);
- the result is 0 or the site id (>= 1) of the first failed check, exactly as in dslc's own
  entry points; the site table is `MlirModule.sites` (the same kinds and messages).

Arrays are values in dslc's IR; here every array value is a buffer (`memref.alloc`) owned by the
block that computes it and freed (`memref.dealloc`) at the end of that block unless it is yielded
or returned. Loop-carried arrays are owned by the loop; an element store updates its array in place
when the array is owned and dead afterwards, else a copy. Structured control flow cannot exit
early, so a failed check records the first site id in a status slot and execution continues
*safely*: the checked access is skipped (loads yield 0), an op whose shape check failed skips its
work, `while` and `for` loops stop, and later allocations are empty. The status is returned at the
end. dslc `for` loops (any sign of step, run-time trip count) become `scf.while`.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .. import ir
from ..diagnostics import UnsupportedError
from ..ir import is_float

SCALAR = {"bool": "i1", "i32": "i32", "i64": "i64", "f32": "f32", "f64": "f64"}
MEM = {"bool": "i8", "i32": "i32", "i64": "i64", "f32": "f32", "f64": "f64"}
BITS = {"i32": 32, "i64": 64, "bool": 1}


def memref_type(dtype: str, rank: int) -> str:
    return f"memref<{'?x' * rank}{MEM[dtype]}>"


@dataclass
class Site:
    kind: str
    message: str
    loc: object


@dataclass
class Arr:
    """An array value: the SSA name of its buffer."""
    name: str
    dtype: str
    rank: int

    @property
    def type(self):
        return memref_type(self.dtype, self.rank)


class MlirModule:
    """The printed module: `text`, the entry function's `name` and its error `sites`."""

    def __init__(self, text, name, sites):
        self.text, self.name, self.sites = text, name, sites

    def __str__(self):
        return self.text


def to_mlir(fn: ir.Function, name: str = None, boundscheck: bool = True,
            c_interface: bool = True) -> MlirModule:
    """Print a prepared IR function as an MLIR module."""
    name = symbol_name(name or fn.name)
    p = _Printer(fn, name, boundscheck)
    text = p.run(c_interface)
    return MlirModule(text, name, p.sites)


def symbol_name(name: str) -> str:
    """A bare MLIR/C symbol for a kernel name (`grad(f)` -> `grad_f`)."""
    s = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "kernel"
    return s if not s[0].isdigit() else "k_" + s


class _Scope:
    def __init__(self, block, owned=()):
        self.block = block
        self.owned = list(owned)       # buffer names this block must free (unless passed out)
        self.last_use = {}
        self.pos = {}
        if block is not None:
            for k, op in enumerate(block.ops):
                self.pos[op] = k
                for v in _uses(op):
                    self.last_use[v] = k


def _uses(op):
    out = list(op.operands)
    for r in op.regions:
        for o in ir.walk_ops(r):
            out.extend(o.operands)
    return out


class _Printer:
    def __init__(self, fn: ir.Function, name: str, boundscheck: bool):
        self.fn, self.name, self.boundscheck = fn, name, boundscheck
        self.lines = []
        self.consts = {}
        self.const_lines = []
        self.depth = 2
        self.n = 0
        self.vals = {}
        self.sites = []
        self.scopes = []

    # ---- text ------------------------------------------------------------------------------
    def fresh(self, prefix="v"):
        self.n += 1
        return f"%{prefix}{self.n}"

    def emit(self, line: str):
        self.lines.append("  " * self.depth + line)

    def op(self, text: str, prefix="v") -> str:
        r = self.fresh(prefix)
        self.emit(f"{r} = {text}")
        return r

    def const(self, value, ty: str) -> str:
        """A constant of MLIR type `ty` (hoisted to the function's entry)."""
        if ty in ("f32", "f64"):
            if ty == "f64":
                lit = "0x%016X" % struct.unpack("<Q", struct.pack("<d", float(value)))[0]
            else:
                lit = "0x%08X" % struct.unpack("<I", struct.pack("<f", float(value)))[0]
        elif ty == "i1":
            lit = "true" if value else "false"
        else:
            lit = str(int(value))
        key = (lit, ty)
        if key not in self.consts:
            r = f"%c{len(self.consts)}"
            self.consts[key] = r
            self.const_lines.append(f"    {r} = arith.constant {lit}" + ("" if ty == "i1" else f" : {ty}"))
        return self.consts[key]

    def c64(self, n):
        return self.const(n, "i64")

    def cidx(self, n):
        return self.const(n, "index")

    def dconst(self, value, dtype):
        return self.const(value, SCALAR[dtype])

    # ---- scalar helpers ------------------------------------------------------------------
    def to_index(self, v):
        return self.op(f"arith.index_cast {v} : i64 to index")

    def to_i64(self, v, dtype):
        if dtype == "i64":
            return v
        if dtype == "bool":
            return self.op(f"arith.extui {v} : i1 to i64")
        return self.op(f"arith.extsi {v} : {SCALAR[dtype]} to i64")

    def ibin(self, opname, a, b, ty="i64"):
        return self.op(f"arith.{opname} {a}, {b} : {ty}")

    def icmp(self, pred, a, b, ty="i64"):
        return self.op(f"arith.cmpi {pred}, {a}, {b} : {ty}")

    def select(self, c, a, b, ty):
        return self.op(f"arith.select {c}, {a}, {b} : {ty}")

    def smax(self, a, b):
        return self.op(f"arith.maxsi {a}, {b} : i64")

    def smin(self, a, b):
        return self.op(f"arith.minsi {a}, {b} : i64")

    def and_(self, a, b):
        if a is None:
            return b
        if b is None:
            return a
        return self.op(f"arith.andi {a}, {b} : i1")

    def not_(self, a):
        return self.op(f"arith.xori {a}, {self.const(1, 'i1')} : i1")

    # ---- errors ----------------------------------------------------------------------------
    def status_ok(self):
        s = self.op("memref.load %status[] : memref<i32>")
        return self.icmp("eq", s, self.const(0, "i32"), "i32")

    def check(self, ok, kind, message, loc, d1=None, d2=None):
        """Record site `kind` as the first error unless `ok` (i1) holds; returns ok."""
        self.sites.append(Site(kind, message, loc))
        sid = len(self.sites)
        bad = self.not_(ok)
        self.emit(f"scf.if {bad} {{")
        self.depth += 1
        first = self.status_ok()
        self.emit(f"scf.if {first} {{")
        self.depth += 1
        self.emit(f"memref.store {self.const(sid, 'i32')}, %status[] : memref<i32>")
        for k, d in enumerate((self.c64(sid), d1, d2)):
            if d is not None:
                self.emit(f"memref.store {d}, %err[{self.cidx(k)}] : memref<4xi64>")
        self.depth -= 1
        self.emit("}")
        self.depth -= 1
        self.emit("}")
        return ok

    def check_eq(self, a, b, kind, message, loc):
        return self.check(self.icmp("eq", a, b), kind, message, loc, a, b)

    # ---- memory ----------------------------------------------------------------------------
    def dims(self, a: Arr) -> list:
        """The extents of a buffer as i64 values."""
        out = []
        for k in range(a.rank):
            d = self.op(f"memref.dim {a.name}, {self.cidx(k)} : {a.type}")
            out.append(self.op(f"arith.index_cast {d} : index to i64"))
        return out

    def alloc(self, dtype, dims) -> Arr:
        """A new buffer owned by the current scope (empty once an error has been recorded)."""
        ok = self.status_ok()
        idx = []
        for d in dims:
            d = self.select(ok, self.smax(d, self.c64(0)), self.c64(0), "i64")
            idx.append(self.to_index(d))
        a = Arr(self.fresh("buf"), dtype, len(dims))
        self._arr_by_name[a.name] = a
        self.emit(f"{a.name} = memref.alloc({', '.join(idx)}) : {a.type}")
        self.scopes[-1].owned.append(a.name)
        return a

    def load(self, a: Arr, idx) -> str:
        v = self.op(f"memref.load {a.name}[{', '.join(idx)}] : {a.type}")
        if a.dtype == "bool":
            v = self.op(f"arith.trunci {v} : i8 to i1")
        return v

    def store(self, a: Arr, idx, v):
        if a.dtype == "bool":
            v = self.op(f"arith.extui {v} : i1 to i8")
        self.emit(f"memref.store {v}, {a.name}[{', '.join(idx)}] : {a.type}")

    def guarded_load(self, a: Arr, idx, ok) -> str:
        if ok is None:
            return self.load(a, idx)
        ty = SCALAR[a.dtype]
        r = self.fresh()
        self.emit(f"{r} = scf.if {ok} -> ({ty}) {{")
        self.depth += 1
        v = self.load(a, idx)
        self.emit(f"scf.yield {v} : {ty}")
        self.depth -= 1
        self.emit("} else {")
        self.depth += 1
        self.emit(f"scf.yield {self.dconst(0, a.dtype)} : {ty}")
        self.depth -= 1
        self.emit("}")
        return r

    def begin_if(self, ok):
        if ok is not None:
            self.emit(f"scf.if {ok} {{")
            self.depth += 1

    def end_if(self, ok):
        if ok is not None:
            self.depth -= 1
            self.emit("}")

    def loop_nest(self, dims, body, ivs=()):
        """Nested scf.for over [0, d) for each i64 extent in dims; body(list of index ivs)."""
        if not dims:
            body(list(ivs))
            return
        hi = self.to_index(self._live_extent(dims[0], ivs))
        iv = self.fresh("i")
        self.emit(f"scf.for {iv} = {self.cidx(0)} to {hi} step {self.cidx(1)} {{")
        self.depth += 1
        self.loop_nest(dims[1:], body, tuple(ivs) + (iv,))
        self.depth -= 1
        self.emit("}")

    def _live_extent(self, d, ivs):
        """An outermost loop's trip count: 0 once an error is recorded, since buffers allocated
        after it are empty (`alloc`) and a loop sized from other extents would run past them."""
        if ivs:
            return d
        return self.select(self.status_ok(), d, self.c64(0), "i64")

    def acc_nest(self, dims, init, ty, body, ivs=()):
        """A loop nest carrying one scalar: body(ivs, acc) -> new acc; returns the final value."""
        if not dims:
            return body(list(ivs), init)
        hi = self.to_index(self._live_extent(dims[0], ivs))
        iv, acc, r = self.fresh("i"), self.fresh("acc"), self.fresh()
        self.emit(f"{r} = scf.for {iv} = {self.cidx(0)} to {hi} step {self.cidx(1)} "
                  f"iter_args({acc} = {init}) -> ({ty}) {{")
        self.depth += 1
        new = self.acc_nest(dims[1:], acc, ty, body, tuple(ivs) + (iv,))
        self.emit(f"scf.yield {new} : {ty}")
        self.depth -= 1
        self.emit("}")
        return r

    def fill(self, dtype, dims, elem, ok=None) -> Arr:
        """A new buffer with element idx = elem(idx) (skipped when `ok` is false)."""
        out = self.alloc(dtype, dims)
        self.begin_if(ok)
        self.loop_nest(dims, lambda idx: self.store(out, idx, elem(idx)))
        self.end_if(ok)
        return out

    def copy(self, a: Arr) -> Arr:
        return self.fill(a.dtype, self.dims(a), lambda idx: self.load(a, idx))

    def owned_here(self, name):
        return name in self.scopes[-1].owned

    def dead_after(self, v: ir.Value, op: ir.Op) -> bool:
        sc = self.scopes[-1]
        if op not in sc.pos:
            return False
        return sc.last_use.get(v) == sc.pos[op] and op.operands.count(v) == 1 and \
            not any(v in o.operands for r in op.regions for o in ir.walk_ops(r))

    def free_scope(self, keep=()):
        for name in self.scopes[-1].owned:
            if name not in keep:
                a = self._arr_by_name[name]
                self.emit(f"memref.dealloc {name} : {a.type}")

    # ---- the function ------------------------------------------------------------------------
    def run(self, c_interface: bool) -> str:
        fn = self.fn
        self._arr_by_name = {}
        args = []
        for p, pname in zip(fn.params, fn.param_names):
            nm = self.fresh("arg")
            if p.type.is_scalar:
                args.append(f"{nm}: {MEM[p.type.dtype]}")
            else:
                a = Arr(nm, p.type.dtype, p.type.rank)
                self._arr_by_name[nm] = a
                args.append(f"{nm}: {a.type}")
            self.vals[p] = nm
        self.outs = []
        for k, t in enumerate(fn.result_types):
            nm = self.fresh("out")
            a = Arr(nm, t.dtype, t.rank)
            self.outs.append(a)
            args.append(f"{nm}: {a.type}")
        args.append("%err: memref<4xi64>")
        self.scopes.append(_Scope(fn.body))
        self.emit("%status = memref.alloca() : memref<i32>")
        self.emit(f"memref.store {self.const(0, 'i32')}, %status[] : memref<i32>")
        self._bind_params(args)
        term = self.gen_block(fn.body)
        self._return(term)
        attrs = " attributes {llvm.emit_c_interface}" if c_interface else ""
        head = [f"// dslc kernel '{fn.name}' in MLIR's upstream dialects (dslc entry-point ABI v1: "
                "see compiler/mlir/printer.py)",
                "module {",
                f"  func.func @{self.name}({', '.join(args)}) -> i32{attrs} {{"]
        return "\n".join(head + self.const_lines + self.lines + ["  }", "}", ""])

    def _bind_params(self, args):
        fn = self.fn
        bound = {}
        for p, pname in zip(fn.params, fn.param_names):
            nm = self.vals[p]
            if p.type.is_scalar:
                if p.type.dtype == "bool":
                    self.vals[p] = self.icmp("ne", nm, self.const(0, "i8"), "i8")
                continue
            a = self._arr_by_name[nm]
            self.vals[p] = a
            dims = self.dims(a)
            for ax, (d, sym) in enumerate(zip(dims, p.type.shape)):
                if isinstance(sym, int):
                    self.check_eq(d, self.c64(sym), "shape",
                                  f"parameter '{pname}' axis {ax} must have extent {sym}", fn.loc)
                elif isinstance(sym, str) and not sym.startswith(("?", "$")):
                    if sym in bound:
                        other, od = bound[sym]
                        self.check_eq(d, od, "shape", f"parameter '{pname}' axis {ax}: extent of '{sym}' "
                                      f"differs from parameter '{other}'", fn.loc)
                    else:
                        bound[sym] = (pname, d)
        for p, pname in zip(fn.params, fn.param_names):
            if p.type.is_scalar and ir.is_int(p.type.dtype) and pname in bound:
                other, od = bound[pname]
                v = self.to_i64(self.vals[p], p.type.dtype)
                self.check_eq(v, od, "shape", f"parameter '{pname}' must equal the extent '{pname}' "
                              f"of parameter '{other}'", fn.loc)

    def _return(self, term):
        for v, out in zip(term.operands, self.outs):
            if v.type.is_scalar:
                val = self.vals[v]
                if v.type.dtype == "bool":
                    val = self.op(f"arith.extui {val} : i1 to i8")
                self.emit(f"memref.store {val}, {out.name}[] : {out.type}")
                continue
            src = self.vals[v]
            got, want = self.dims(src), self.dims(out)
            ok = None
            for d, g in zip(want, got):
                ok = self.and_(ok, self.check_eq(d, g, "shape", "output buffer has the wrong extent",
                                                 self.fn.loc))
            self.begin_if(ok)
            self.loop_nest(want, lambda idx: self.store(out, idx, self.load(src, idx)))
            self.end_if(ok)
        self.free_scope()
        st = self.op("memref.load %status[] : memref<i32>")
        self.emit(f"func.return {st} : i32")

    # ---- blocks and ops --------------------------------------------------------------------
    def gen_block(self, block: ir.Block):
        """Emit the ops of `block` but its terminator (returned)."""
        for op in block.ops[:-1]:
            self.gen_op(op)
        return block.ops[-1]

    def bind(self, v: ir.Value, x):
        if isinstance(x, Arr):
            self._arr_by_name[x.name] = x
        self.vals[v] = x

    def gen_op(self, op: ir.Op):
        from ..prims import PRIMS
        prim = PRIMS.get(op.prim)
        if prim is None:
            raise UnsupportedError(f"MLIR export: unknown primitive '{op.prim}'", op.loc)
        if prim.kind == "elementwise":
            return self._elementwise(op)
        meth = getattr(self, "_p_" + op.prim, None)
        if meth is None:
            raise UnsupportedError(f"MLIR export: no lowering for primitive '{op.prim}'", op.loc)
        meth(op)

    def result_or_fill(self, op, dims, elem, ok=None):
        """Bind op's result to elem([]) when scalar, else to a new buffer filled with elem."""
        t = op.result.type
        if t.is_scalar:
            self.bind(op.result, elem([]))
        else:
            self.bind(op.result, self.fill(t.dtype, dims, elem, ok))

    # elementwise ---------------------------------------------------------------------------
    def _elementwise(self, op):
        tin = [o.type for o in op.operands]
        tout = op.result.type
        if tout.is_scalar:
            self.bind(op.result, self.scalar_op(op.prim, [self.vals[o] for o in op.operands], tin, tout, op))
            return
        rank = tout.rank
        dims = [None] * rank
        maps = []
        for o in op.operands:
            if o.type.is_scalar:
                maps.append(None)
                continue
            od = self.dims(self.vals[o])
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
                    dims[off + k] = (self.smin(dims[off + k][0], od[k]), dims[off + k][1])
            maps.append((off, static1))
        dims = [d[0] if d is not None else self.c64(1) for d in dims]

        def elem(idx):
            args = []
            for o, m in zip(op.operands, maps):
                if m is None:
                    args.append(self.vals[o])
                else:
                    off, s1 = m
                    args.append(self.load(self.vals[o], [self.cidx(0) if s1[k] else idx[off + k]
                                                         for k in range(len(s1))]))
            return self.scalar_op(op.prim, args, tin, tout, op)
        self.bind(op.result, self.fill(tout.dtype, dims, elem))

    def scalar_op(self, prim, args, tin, tout, op):
        dt = tin[0].dtype
        ty = SCALAR[dt]
        fl = is_float(dt)
        if prim in ("add", "sub", "mul"):
            return self.op(f"arith.{prim}{'f' if fl else 'i'} {args[0]}, {args[1]} : {ty}")
        if prim == "div":
            return self.op(f"arith.divf {args[0]}, {args[1]} : {ty}")
        if prim in ("floordiv", "mod"):
            if fl:
                return self._float_floordiv_mod(args[0], args[1], ty, prim)
            return self._int_floordiv_mod(args[0], args[1], ty, prim, op)
        if prim == "pow":
            if fl:
                return self.op(f"math.powf {args[0]}, {args[1]} : {ty}")
            a, b = args
            self.check(self.icmp("sge", b, self.dconst(0, dt), ty), "value",
                       "integers to negative integer powers are not allowed (use a float base)", op.loc)
            return self._int_pow(a, b, ty)
        if prim in ("maximum", "minimum"):
            return self.combine(prim, dt, args[0], args[1])
        if prim == "neg":
            if fl:
                return self.op(f"arith.negf {args[0]} : {ty}")
            return self.op(f"arith.subi {self.dconst(0, dt)}, {args[0]} : {ty}")
        if prim == "abs":
            if fl:
                return self.op(f"math.absf {args[0]} : {ty}")
            x = args[0]
            neg = self.icmp("slt", x, self.dconst(0, dt), ty)
            return self.select(neg, self.op(f"arith.subi {self.dconst(0, dt)}, {x} : {ty}"), x, ty)
        if prim == "sign":
            x = args[0]
            if fl:
                z = self.dconst(0.0, dt)
                pos = self.op(f"arith.uitofp {self.op(f'arith.cmpf ogt, {x}, {z} : {ty}')} : i1 to {ty}")
                neg = self.op(f"arith.uitofp {self.op(f'arith.cmpf olt, {x}, {z} : {ty}')} : i1 to {ty}")
                s = self.op(f"arith.subf {pos}, {neg} : {ty}")
                return self.select(self.op(f"arith.cmpf uno, {x}, {x} : {ty}"), x, s, ty)
            z = self.dconst(0, dt)
            pos = self.op(f"arith.extui {self.icmp('sgt', x, z, ty)} : i1 to {ty}")
            neg = self.op(f"arith.extui {self.icmp('slt', x, z, ty)} : i1 to {ty}")
            return self.op(f"arith.subi {pos}, {neg} : {ty}")
        if prim in ("floor", "ceil"):
            return self.op(f"math.{prim} {args[0]} : {ty}") if fl else args[0]
        if prim in ("sin", "cos", "tan", "exp", "log", "log1p", "expm1", "sqrt", "tanh"):
            return self.op(f"math.{prim} {args[0]} : {ty}")
        if prim == "sigmoid":
            one = self.dconst(1.0, dt)
            e = self.op(f"math.exp {self.op(f'arith.negf {args[0]} : {ty}')} : {ty}")
            return self.op(f"arith.divf {one}, {self.op(f'arith.addf {one}, {e} : {ty}')} : {ty}")
        if prim in ("lt", "le", "gt", "ge", "eq", "ne"):
            if fl:
                pred = {"lt": "olt", "le": "ole", "gt": "ogt", "ge": "oge", "eq": "oeq", "ne": "une"}[prim]
                return self.op(f"arith.cmpf {pred}, {args[0]}, {args[1]} : {ty}")
            base = {"lt": "lt", "le": "le", "gt": "gt", "ge": "ge"}.get(prim)
            pred = prim if base is None else ("u" if dt == "bool" else "s") + base
            return self.icmp(pred, args[0], args[1], ty)
        if prim == "and":
            return self.op(f"arith.andi {args[0]}, {args[1]} : i1")
        if prim == "or":
            return self.op(f"arith.ori {args[0]}, {args[1]} : i1")
        if prim == "not":
            return self.not_(args[0])
        if prim == "select":
            return self.select(args[0], args[1], args[2], SCALAR[tin[1].dtype])
        if prim == "cast":
            return self.convert(args[0], dt, tout.dtype)
        raise UnsupportedError(f"MLIR export: no scalar lowering for '{prim}'", op.loc if op else None)

    def combine(self, prim, dt, a, b):
        ty = SCALAR[dt]
        if prim in ("add", "mul"):
            return self.op(f"arith.{prim}{'f' if is_float(dt) else 'i'} {a}, {b} : {ty}")
        pred = {"maximum": ("oge", "sge", "uge"), "minimum": ("ole", "sle", "ule")}[prim]
        if is_float(dt):
            take = self.op(f"arith.ori {self.op(f'arith.cmpf {pred[0]}, {a}, {b} : {ty}')}, "
                           f"{self.op(f'arith.cmpf uno, {a}, {a} : {ty}')} : i1")
        else:
            take = self.icmp(pred[2] if dt == "bool" else pred[1], a, b, ty)
        return self.select(take, a, b, ty)

    def copysign0(self, y, ty):
        """copysign(0.0, y), with bit operations."""
        ity = "i64" if ty == "f64" else "i32"
        bits = self.op(f"arith.bitcast {y} : {ty} to {ity}")
        mask = self.const(-(1 << 63) if ty == "f64" else -(1 << 31), ity)
        return self.op(f"arith.bitcast {self.ibin('andi', bits, mask, ity)} : {ity} to {ty}")

    def _float_floordiv_mod(self, a, b, ty, prim):
        # NumPy's npy_divmod, as dslc's own code generator computes it
        zero, one, half = (self.const(v, ty) for v in (0.0, 1.0, 0.5))
        mod = self.op(f"arith.remf {a}, {b} : {ty}")
        mod_nz = self.op(f"arith.cmpf une, {mod}, {zero} : {ty}")
        b_neg = self.op(f"arith.cmpf olt, {b}, {zero} : {ty}")
        mod_neg = self.op(f"arith.cmpf olt, {mod}, {zero} : {ty}")
        fix = self.op(f"arith.andi {mod_nz}, {self.op(f'arith.xori {b_neg}, {mod_neg} : i1')} : i1")
        if prim == "mod":
            adj = self.select(fix, self.op(f"arith.addf {mod}, {b} : {ty}"), mod, ty)
            return self.select(self.op(f"arith.cmpf oeq, {mod}, {zero} : {ty}"), self.copysign0(b, ty), adj, ty)
        div = self.op(f"arith.divf {self.op(f'arith.subf {a}, {mod} : {ty}')}, {b} : {ty}")
        div = self.select(fix, self.op(f"arith.subf {div}, {one} : {ty}"), div, ty)
        fl = self.op(f"math.floor {div} : {ty}")
        up = self.op(f"arith.cmpf ogt, {self.op(f'arith.subf {div}, {fl} : {ty}')}, {half} : {ty}")
        fl = self.select(up, self.op(f"arith.addf {fl}, {one} : {ty}"), fl, ty)
        q = self.op(f"arith.divf {a}, {b} : {ty}")
        res = self.select(self.op(f"arith.cmpf oeq, {div}, {zero} : {ty}"), self.copysign0(q, ty), fl, ty)
        return self.select(self.op(f"arith.cmpf oeq, {b}, {zero} : {ty}"), q, res, ty)

    def _int_floordiv_mod(self, a, b, ty, prim, op):
        zero, m1, one = self.const(0, ty), self.const(-1, ty), self.const(1, ty)
        nz = self.icmp("ne", b, zero, ty)
        self.check(nz, "zerodiv", "integer division or modulo by zero", op.loc)
        is_m1 = self.icmp("eq", b, m1, ty)
        safe_b = self.select(self.op(f"arith.ori {is_m1}, {self.not_(nz)} : i1"), one, b, ty)
        q = self.ibin("divsi", a, safe_b, ty)
        r = self.ibin("remsi", a, safe_b, ty)
        adjust = self.op(f"arith.andi {self.icmp('ne', r, zero, ty)}, "
                         f"{self.icmp('slt', self.ibin('xori', r, b, ty), zero, ty)} : i1")
        if prim == "floordiv":
            q = self.select(adjust, self.ibin("subi", q, one, ty), q, ty)
            return self.select(is_m1, self.ibin("subi", zero, a, ty), q, ty)
        r = self.select(adjust, self.ibin("addi", r, b, ty), r, ty)
        return self.select(is_m1, zero, r, ty)

    def _int_pow(self, a, e, ty):
        # repeated squaring; res, base, exp carried by scf.while
        r = self.fresh("pow")
        x, y, z = self.fresh("p"), self.fresh("p"), self.fresh("p")
        self.emit(f"{r}:3 = scf.while ({x} = {self.const(1, ty)}, {y} = {a}, {z} = {e}) : "
                  f"({ty}, {ty}, {ty}) -> ({ty}, {ty}, {ty}) {{")
        self.depth += 1
        c = self.icmp("sgt", z, self.const(0, ty), ty)
        self.emit(f"scf.condition({c}) {x}, {y}, {z} : {ty}, {ty}, {ty}")
        self.depth -= 1
        self.emit("} do {")
        x2, y2, z2 = self.fresh("p"), self.fresh("p"), self.fresh("p")
        self.emit(f"^bb0({x2}: {ty}, {y2}: {ty}, {z2}: {ty}):")
        self.depth += 1
        odd = self.op(f"arith.trunci {self.ibin('andi', z2, self.const(1, ty), ty)} : {ty} to i1")
        nr = self.select(odd, self.ibin("muli", x2, y2, ty), x2, ty)
        nb = self.ibin("muli", y2, y2, ty)
        ne = self.ibin("shrsi", z2, self.const(1, ty), ty)
        self.emit(f"scf.yield {nr}, {nb}, {ne} : {ty}, {ty}, {ty}")
        self.depth -= 1
        self.emit("}")
        return f"{r}#0"

    def convert(self, v, src, dst):
        if src == dst:
            return v
        st, dt_ = SCALAR[src], SCALAR[dst]
        if dst == "bool":
            if is_float(src):
                return self.op(f"arith.cmpf une, {v}, {self.const(0.0, st)} : {st}")
            return self.icmp("ne", v, self.const(0, st), st)
        if src == "bool":
            return self.op(f"arith.{'uitofp' if is_float(dst) else 'extui'} {v} : i1 to {dt_}")
        if is_float(src) and is_float(dst):
            return self.op(f"arith.{'extf' if dst == 'f64' else 'truncf'} {v} : {st} to {dt_}")
        if is_float(src):
            # saturating, as llvm.fptosi.sat: NaN -> 0, out of range -> the extreme value
            bits = BITS[dst]
            lo, hi = self.const(-2.0 ** (bits - 1), st), self.const(2.0 ** (bits - 1), st)
            too_hi = self.op(f"arith.cmpf oge, {v}, {hi} : {st}")
            too_lo = self.op(f"arith.cmpf olt, {v}, {lo} : {st}")
            nan = self.op(f"arith.cmpf uno, {v}, {v} : {st}")
            bad = self.op(f"arith.ori {self.op(f'arith.ori {too_hi}, {too_lo} : i1')}, {nan} : i1")
            safe = self.select(bad, self.const(0.0, st), v, st)
            r = self.op(f"arith.fptosi {safe} : {st} to {dt_}")
            r = self.select(too_hi, self.const((1 << (bits - 1)) - 1, dt_), r, dt_)
            return self.select(too_lo, self.const(-(1 << (bits - 1)), dt_), r, dt_)
        if is_float(dst):
            return self.op(f"arith.sitofp {v} : {st} to {dt_}")
        return self.op(f"arith.{'extsi' if BITS[dst] > BITS[src] else 'trunci'} {v} : {st} to {dt_}")

    # const, dim -----------------------------------------------------------------------------
    def _p_const(self, op):
        self.bind(op.result, self.dconst(op.attrs["value"], op.attrs["dtype"]))

    def _p_dim(self, op):
        self.bind(op.result, self.dims(self.vals[op.operands[0]])[op.attrs["axis"]])

    # broadcast_in_dim -----------------------------------------------------------------------
    def _p_broadcast_in_dim(self, op):
        x = op.operands[0]
        dims = [self.to_i64(self.vals[d], d.type.dtype) for d in op.operands[1:]]
        bd = op.attrs["bdims"]
        for d, dv in zip(op.operands[1:], dims):
            owner = d.owner
            cv = owner.attrs.get("value") if getattr(owner, "prim", None) == "const" else None
            if not (getattr(owner, "prim", None) == "dim" or isinstance(cv, int) and cv >= 0):
                self.check(self.icmp("sge", dv, self.c64(0)), "value", "negative dimensions are not allowed",
                           op.loc, dv)
        if x.type.is_scalar:
            s = self.vals[x]
            self.result_or_fill(op, dims, lambda idx: s)
            return
        xa = self.vals[x]
        xdims = self.dims(xa)
        static1 = [x.type.shape[k] == 1 for k in range(x.type.rank)]
        ok = None
        for k, a in enumerate(bd):
            if not static1[k] and x.type.shape[k] != op.attrs["shape"][a]:
                ok = self.and_(ok, self.check_eq(xdims[k], dims[a], "shape", "extent mismatch in broadcast",
                                                 op.loc))
        self.result_or_fill(op, dims, lambda idx: self.load(
            xa, [self.cidx(0) if static1[k] else idx[a] for k, a in enumerate(bd)]), ok)

    # reductions -----------------------------------------------------------------------------
    def _reduce(self, op):
        x = op.operands[0]
        xa = self.vals[x]
        combine, ident = {"reduce_sum": ("add", 0), "reduce_prod": ("mul", 1),
                          "reduce_max": ("maximum", "-inf"), "reduce_min": ("minimum", "+inf")}[op.prim]
        dt = x.type.dtype
        axes = op.attrs["axes"]
        xdims = self.dims(xa)
        if ident in ("-inf", "+inf"):
            total = self.c64(1)
            for a in axes:
                total = self.ibin("muli", total, xdims[a])
            self.check(self.icmp("sgt", total, self.c64(0)), "value",
                       f"zero-size array to reduction operation {op.prim[7:]} which has no identity", op.loc)
            pos = ident == "+inf"
            if is_float(dt):
                init = self.dconst(float(ident), dt)
            else:
                bits = BITS[dt]
                init = self.dconst((1 << (bits - 1)) - 1 if pos else -(1 << (bits - 1)), dt)
        else:
            init = self.dconst(ident, dt)
        if op.result.type.is_scalar:
            wide = dt == "f32" and combine == "add"
            adt = "f64" if wide else dt
            init_a = self.convert(init, dt, adt)

            def body(idx, acc):
                return self.combine(combine, adt, acc, self.convert(self.load(xa, idx), dt, adt))
            r = self.acc_nest(xdims, init_a, SCALAR[adt], body)
            self.bind(op.result, self.convert(r, adt, dt))
            return
        keep = [k for k in range(x.type.rank) if k not in axes]
        out = self.alloc(dt, [xdims[k] for k in keep])
        self.loop_nest([xdims[k] for k in keep], lambda idx: self.store(out, idx, init))

        def body2(idx):
            oi = [idx[k] for k in keep]
            self.store(out, oi, self.combine(combine, dt, self.load(out, oi), self.load(xa, idx)))
        self.loop_nest(xdims, body2)
        self.bind(op.result, out)

    _p_reduce_sum = _p_reduce_prod = _p_reduce_max = _p_reduce_min = _reduce

    # matmul, transpose, reshape ----------------------------------------------------------------
    def _p_matmul(self, op):
        a, b = op.operands
        A, B = self.vals[a], self.vals[b]
        batch = op.attrs.get("batch")
        dt = a.type.dtype
        ad, bd = self.dims(A), self.dims(B)
        ta = ir.Type(dt, a.type.shape[1:]) if batch == "lhs" else a.type
        tb = ir.Type(dt, b.type.shape[1:]) if batch == "rhs" else b.type
        pa = ad[1:] if batch == "lhs" else ad
        pb = bd[1:] if batch == "rhs" else bd
        ka, kb = pa[-1], pb[0]
        if ta.shape[-1] != tb.shape[0]:
            self.check_eq(ka, kb, "shape", "inner extents of '@' differ", op.loc)
            ka = self.smin(ka, kb)
        rows = pa[:-1] if ta.rank == 2 else []
        cols = pb[1:] if tb.rank == 2 else []
        wdims = [ad[0] if batch == "lhs" else bd[0]] if batch else []
        ty = SCALAR[dt]

        def elem(idx):
            w, rest = idx[:len(wdims)], idx[len(wdims):]
            ri, ci = rest[:len(rows)], rest[len(rows):]
            aw = w if batch == "lhs" else []
            bw = w if batch == "rhs" else []

            def body(p, acc):
                prod = self.combine("mul", dt, self.load(A, aw + ri + p), self.load(B, bw + p + ci))
                return self.combine("add", dt, acc, prod)
            return self.acc_nest([ka], self.dconst(0, dt), ty, body)
        self.result_or_fill(op, wdims + rows + cols, elem)

    def _p_transpose(self, op):
        x = op.operands[0]
        xa = self.vals[x]
        perm = op.attrs["perm"]
        xd = self.dims(xa)
        inv = [perm.index(k) for k in range(len(perm))]
        self.result_or_fill(op, [xd[p] for p in perm],
                            lambda idx: self.load(xa, [idx[inv[k]] for k in range(len(perm))]))

    def _p_reshape(self, op):
        x = op.operands[0]
        dims = [self.to_i64(self.vals[d], d.type.dtype) for d in op.operands[1:]]
        if x.type.is_scalar:
            s = self.vals[x]
            self.result_or_fill(op, dims, lambda idx: s)
            return
        xa = self.vals[x]
        xd = self.dims(xa)

        def size(ds):
            n = self.c64(1)
            for d in ds:
                n = self.ibin("muli", n, d)
            return n
        ok = self.check_eq(size(xd), size(dims), "shape", "reshape: the number of elements changes", op.loc)

        def elem(idx):
            flat = self.c64(0)
            for d, i in zip(dims, idx):
                flat = self.ibin("addi", self.ibin("muli", flat, d),
                                 self.op(f"arith.index_cast {i} : index to i64"))
            src = []
            for d in reversed(xd[1:]):
                src.insert(0, self.to_index(self.ibin("remui", flat, d)))
                flat = self.ibin("divui", flat, d)
            return self.load(xa, [self.to_index(flat)] + src)
        if op.result.type.is_scalar:
            self.bind(op.result, self.guarded_load(xa, [self.cidx(0)] * x.type.rank, ok))
            return
        self.result_or_fill(op, dims, elem, ok)

    # basis, empty (compiler/prims/basis.py) ----------------------------------------------------
    def _p_basis(self, op):
        start, count, scale = op.operands[:3]
        s = self.to_i64(self.vals[start], start.type.dtype)
        c = self.to_i64(self.vals[count], count.type.dtype)
        xd = [self.to_i64(self.vals[d], d.type.dtype) for d in op.operands[3:]]
        dt = op.result.type.dtype
        zero = self.dconst(0, dt)

        def elem(idx):
            flat = self.c64(0)
            for d, i in zip(xd, idx[1:]):
                flat = self.ibin("addi", self.ibin("muli", flat, d),
                                 self.op(f"arith.index_cast {i} : index to i64"))
            w = self.op(f"arith.index_cast {idx[0]} : index to i64")
            hit = self.icmp("eq", flat, self.ibin("addi", s, w))
            v = self.vals[scale] if scale.type.is_scalar else self.load(self.vals[scale], idx[1:])
            return self.select(hit, v, zero, SCALAR[dt])
        self.result_or_fill(op, [c] + xd, elem)

    def _p_empty(self, op):
        dims = [self.to_i64(self.vals[d], d.type.dtype) for d in op.operands]
        self.bind(op.result, self.alloc(op.attrs["dtype"], dims))

    # indexing --------------------------------------------------------------------------------
    def resolve_spec(self, op, xa, spec, idx_vals):
        """Per axis ('i', index) | ('s', start, extent) | ('a', extent) (i64 values), the result dims,
        and the conjunction of the bounds checks (None when unchecked)."""
        xd = self.dims(xa)
        out, dims, k, ok = [], [], 0, None
        for ax, c in enumerate(spec):
            n = xd[ax]
            if c == "i":
                v, dt = idx_vals[k]
                i = self.to_i64(v, dt)
                w = self.select(self.icmp("slt", i, self.c64(0)), self.ibin("addi", i, n), i, "i64")
                inb = self.icmp("ult", w, n)
                if self.boundscheck:
                    self.check(inb, "index", f"index {{0}} is out of bounds for axis {ax} with size {{1}}",
                               op.loc, i, n)
                    ok = self.and_(ok, inb)
                out.append(("i", w))
                k += 1
            elif c == "s":
                bounds = []
                for v, dt in idx_vals[k:k + 2]:
                    v = self.to_i64(v, dt)
                    v = self.select(self.icmp("slt", v, self.c64(0)), self.ibin("addi", v, n), v, "i64")
                    bounds.append(self.smin(self.smax(v, self.c64(0)), n))
                ext = self.smax(self.ibin("subi", bounds[1], bounds[0]), self.c64(0))
                out.append(("s", bounds[0], ext))
                dims.append(ext)
                k += 2
            else:
                out.append(("a", n))
                dims.append(n)
        return out, dims, ok

    def source_idx(self, parts, idx):
        out, j = [], 0
        for p in parts:
            if p[0] == "i":
                out.append(self.to_index(p[1]))
            elif p[0] == "s":
                out.append(self.op(f"arith.addi {self.to_index(p[1])}, {idx[j]} : index"))
                j += 1
            else:
                out.append(idx[j])
                j += 1
        return out

    def _idx_vals(self, ops):
        return [(self.vals[o], o.type.dtype) for o in ops]

    def _p_index(self, op):
        x = op.operands[0]
        xa = self.vals[x]
        parts, _, ok = self.resolve_spec(op, xa, op.attrs["spec"], self._idx_vals(op.operands[1:]))
        self.bind(op.result, self.guarded_load(xa, self.source_idx(parts, []), ok))

    def _p_slice(self, op):
        x = op.operands[0]
        xa = self.vals[x]
        parts, dims, ok = self.resolve_spec(op, xa, op.attrs["spec"], self._idx_vals(op.operands[1:]))
        if op.result.type.is_scalar:
            self.bind(op.result, self.guarded_load(xa, self.source_idx(parts, []), ok))
            return
        self.result_or_fill(op, dims, lambda idx: self.load(xa, self.source_idx(parts, idx)), ok)

    def _p_store(self, op):
        from ..prims.arrays import _result_shape
        x, v = op.operands[0], op.operands[1]
        xa = self.vals[x]
        parts, dims, ok = self.resolve_spec(op, xa, op.attrs["spec"], self._idx_vals(op.operands[2:]))
        # in place when x's buffer is owned here and x is dead afterwards, else a copy
        if xa.name in self.scopes[-1].owned and self.dead_after(x, op) and v is not x:
            dst = xa
        else:
            dst = self.copy(xa)
        target = _result_shape(x, op.attrs["spec"], op.operands[2:])
        if v.type.is_scalar:
            val = self.vals[v]
            get_v = lambda i: val  # noqa: E731
        else:
            va = self.vals[v]
            vd = self.dims(va)
            for k in range(len(vd)):
                dv, dt_ = v.type.shape[-1 - k], target[-1 - k]
                if dv != 1 and dv != dt_:
                    ok = self.and_(ok, self.check_eq(vd[-1 - k], dims[-1 - k], "shape",
                                                     "the stored value's shape does not match the slice", op.loc))
            static1 = [d == 1 for d in v.type.shape]
            off = len(dims) - len(vd)
            get_v = lambda i: self.load(va, [self.cidx(0) if static1[k] else i[off + k]  # noqa: E731
                                             for k in range(len(vd))])

        def body(i):
            si = self.source_idx(parts, i)
            val = get_v(i)
            if op.prim == "add_at":
                val = self.combine("add", x.type.dtype, self.load(dst, si), val)
            self.store(dst, si, val)
        self.begin_if(ok)
        self.loop_nest(dims, body)
        self.end_if(ok)
        self.bind(op.result, dst)

    _p_add_at = _p_store

    # control flow ------------------------------------------------------------------------------
    def _vtype(self, v):
        return SCALAR[v.type.dtype] if v.type.is_scalar else memref_type(v.type.dtype, v.type.rank)

    def _initial(self, values, op):
        """The initial carried values of a loop: scalars as they are, arrays as buffers the loop owns."""
        out, taken = [], set()
        for v in values:
            if v.type.is_scalar:
                out.append(self.vals[v])
            else:
                a = self.vals[v]
                if a.name in self.scopes[-1].owned and a.name not in taken and self.dead_after(v, op) \
                        and sum(x is v for x in values) == 1:
                    self.scopes[-1].owned.remove(a.name)
                    out.append(a.name)
                    taken.add(a.name)
                else:
                    c = self.copy(a)
                    self.scopes[-1].owned.remove(c.name)
                    out.append(c.name)
        return out

    def _yield_values(self, values, keep_args=()):
        """At the end of a region: buffers to pass out (owned by the region and used once, else copies);
        frees the region's other buffers. Returns the names to yield."""
        out, passed = [], set()
        for v in values:
            if v.type.is_scalar:
                out.append(self.vals[v])
                continue
            a = self.vals[v]
            if a.name in self.scopes[-1].owned and a.name not in passed:
                passed.add(a.name)
                out.append(a.name)
            else:
                c = self.copy(a)
                passed.add(c.name)
                out.append(c.name)
        self.free_scope(keep=passed)
        return out

    def _bind_results(self, op, names):
        for r, nm in zip(op.results, names):
            if r.type.is_scalar:
                self.bind(r, nm)
            else:
                a = Arr(nm, r.type.dtype, r.type.rank)
                self.bind(r, a)
                self.scopes[-1].owned.append(nm)

    def _region_args(self, region, names):
        for a, nm in zip(region.args, names):
            if a.type.is_scalar:
                self.bind(a, nm)
            else:
                self.bind(a, Arr(nm, a.type.dtype, a.type.rank))

    def _while_loop(self, op, init_names, types, cond_fn, body_fn):
        """scf.while over the carried values; cond_fn(arg names) -> i1 (emitted in the before
        region), body_fn(arg names) -> yielded names (in the after region, which owns the arrays)."""
        r = self.fresh("loop")
        n = len(types)
        bargs = [self.fresh("w") for _ in range(n)]
        tys = ", ".join(types)
        inits = ", ".join(f"{a} = {i}" for a, i in zip(bargs, init_names))
        self.emit(f"{r}{':' + str(n) if n > 1 else ''} = scf.while ({inits}) : ({tys}) -> ({tys}) {{")
        self.depth += 1
        c = cond_fn(bargs)
        c = self.op(f"arith.andi {c}, {self.status_ok()} : i1")
        self.emit(f"scf.condition({c}) {', '.join(bargs)} : {tys}")
        self.depth -= 1
        self.emit("} do {")
        aargs = [self.fresh("w") for _ in range(n)]
        self.emit(f"^bb0({', '.join(f'{a}: {t}' for a, t in zip(aargs, types))}):")
        self.depth += 1
        ys = body_fn(aargs)
        self.emit(f"scf.yield {', '.join(ys)} : {tys}")
        self.depth -= 1
        self.emit("}")
        return [r] if n == 1 else [f"{r}#{k}" for k in range(n)]

    def _p_for(self, op):
        lo, hi, step = (self.vals[v] for v in op.operands[:3])
        inits = op.operands[3:]
        self.check(self.icmp("ne", step, self.c64(0)), "value", "range() arg 3 must not be zero", op.loc)
        names = [lo] + self._initial(inits, op)
        types = ["i64"] + [self._vtype(r) for r in op.results]
        region = op.regions[0]
        up = self.icmp("sgt", step, self.c64(0))

        def cond(args):
            i = args[0]
            return self.select(up, self.icmp("slt", i, hi), self.icmp("sgt", i, hi), "i1")

        def body(args):
            arrays = [a for a, r in zip(args[1:], op.results) if not r.type.is_scalar]
            self.scopes.append(_Scope(region, arrays))
            self._region_args(region, args)
            term = self.gen_block(region)
            ys = self._yield_values(term.operands)
            self.scopes.pop()
            return [self.ibin("addi", args[0], step)] + ys
        res = self._while_loop(op, names, types, cond, body)
        self._bind_results(op, res[1:])

    def _p_while(self, op):
        names = self._initial(op.operands, op)
        types = [self._vtype(r) for r in op.results]
        cond_region, body_region = op.regions

        def cond(args):
            self.scopes.append(_Scope(cond_region))
            self._region_args(cond_region, args)
            term = self.gen_block(cond_region)
            c = self.vals[term.operands[0]]
            self.free_scope()
            self.scopes.pop()
            return c

        def body(args):
            arrays = [a for a, r in zip(args, op.results) if not r.type.is_scalar]
            self.scopes.append(_Scope(body_region, arrays))
            self._region_args(body_region, args)
            term = self.gen_block(body_region)
            ys = self._yield_values(term.operands)
            self.scopes.pop()
            return ys
        if not types:
            raise UnsupportedError("MLIR export: a while loop without carried values", op.loc)
        self._bind_results(op, self._while_loop(op, names, types, cond, body))

    def _p_fork(self, op):
        # region 0, then region 1 (what a fork means; dslc's own CPU backend may overlap them)
        split = op.attrs["split"]
        names = []
        for region, results in zip(op.regions, (op.results[:split], op.results[split:])):
            types = [self._vtype(r) for r in results]
            r = self.fresh("fork")
            n = len(types)
            lhs = f"{r}{':' + str(n) if n > 1 else ''} = " if n else ""
            tys = f" -> ({', '.join(types)})" if n else ""
            self.emit(f"{lhs}scf.execute_region{tys} {{")
            self.depth += 1
            self.scopes.append(_Scope(region))
            term = self.gen_block(region)
            ys = self._yield_values(term.operands)
            self.scopes.pop()
            self.emit(f"scf.yield {', '.join(ys)} : {', '.join(types)}" if n else "scf.yield")
            self.depth -= 1
            self.emit("}")
            names += [r] if n == 1 else [f"{r}#{k}" for k in range(n)]
        self._bind_results(op, names)

    def _p_if(self, op):
        types = [self._vtype(r) for r in op.results]
        r = self.fresh("if")
        n = len(types)
        lhs = f"{r}{':' + str(n) if n > 1 else ''} = " if n else ""
        tys = f" -> ({', '.join(types)})" if n else ""
        self.emit(f"{lhs}scf.if {self.vals[op.operands[0]]}{tys} {{")
        for k, region in enumerate(op.regions):
            if k == 1:
                self.emit("} else {")
            self.depth += 1
            self.scopes.append(_Scope(region))
            term = self.gen_block(region)
            ys = self._yield_values(term.operands)
            self.scopes.pop()
            if n:
                self.emit(f"scf.yield {', '.join(ys)} : {', '.join(types)}")
            self.depth -= 1
        self.emit("}")
        self._bind_results(op, [r] if n == 1 else [f"{r}#{k}" for k in range(n)])
