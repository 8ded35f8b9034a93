"""Checking and lowering: the AST of one kernel -> an `ir.Function`.

Names are resolved, dtypes and symbolic shapes inferred (each op's type rule runs as the op is
emitted, errors carry the source location), Python control flow becomes structured IR
(`for`/`while` with loop-carried values, `if` with results) and kernel calls are inlined.
Arrays have value semantics (as in JAX): `z = y; y[0] = 1` leaves `z` unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from compiler import ir
from compiler.builder import Builder, promote_dtypes
from compiler.diagnostics import (DslNameError, DslTypeError, DslValueError, Loc,
                                  UnsupportedError)
from compiler.ir import Type, Value, is_float, is_int
from compiler.prims.elementwise import BINARY_OPS, COMPARE_OPS

from . import ast as A
from .dtypes import ParamType

DTYPE_NAMES = {"f32": "f32", "f64": "f64", "i32": "i32", "i64": "i64", "bool": "bool", "bool_": "bool",
               "float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64"}
UNARY_MATH = ("sin", "cos", "tan", "exp", "log", "log1p", "expm1", "sqrt", "tanh", "sigmoid",
              "abs", "sign", "floor", "ceil")
REDUCTIONS = {"sum": "reduce_sum", "prod": "reduce_prod", "max": "reduce_max", "min": "reduce_min",
              "mean": "mean"}
MAX_INLINE_DEPTH = 32


@dataclass
class TupleVal:
    items: list


@dataclass
class Undefined:
    why: str


class Lowering:
    def __init__(self, fdef: A.FunctionDef, source: A.Source, param_types: list[ParamType],
                 resolve: Callable[[str], object] = lambda name: None, depth: int = 0):
        self.fdef, self.source, self.resolve, self.depth = fdef, source, resolve, depth
        self.param_types = param_types
        floats = [p.dtype for p in param_types if is_float(p.dtype)]
        default = "f64" if ("f64" in floats or not floats) else "f32"
        self.b = Builder(ir.Block(), default_float=default, loc=self.loc(fdef))
        self.env: dict = {}
        self.param_values: dict = {}
        self.tuple_result = False
        self.dim_names: dict = {}      # dim name -> (param Value, axis)
        self.params: list[Value] = []

    # ---- helpers ------------------------------------------------------------------------------
    def loc(self, node) -> Loc:
        sp = node.span
        return Loc(self.source.filename, sp.line, sp.col, self.source.line(sp.line))

    def error(self, cls, msg, node):
        return cls(msg, self.loc(node))

    # ---- entry ------------------------------------------------------------------------------------
    def lower_function(self) -> ir.Function:
        fdef = self.fdef
        for p, pt in zip(fdef.params, self.param_types):
            t = Type(pt.dtype, tuple(pt.dims))
            v = Value(t, p.name, sym=("$" + p.name) if (t.is_scalar and is_int(t.dtype)) else None)
            self.params.append(v)
            self.env[p.name] = v
            for ax, d in enumerate(pt.dims):
                if isinstance(d, str) and d.isidentifier() and d not in self.dim_names:
                    self.dim_names[d] = (v, ax)
        self.readonly = set(self.env)
        self.param_values = dict(self.env)
        body = normalise_returns(fdef.body)
        results = self.lower_body(body, self.b.block, top=True)
        results = self.apply_return_annotation(results)
        self.b.terminate("return", results)
        fn = ir.Function(fdef.name, self.params, self.b.block, [p.name for p in fdef.params],
                         tuple_result=self.tuple_result, loc=self.loc(fdef))
        return fn

    def lower_body(self, stmts, block, top=False):
        """Lower statements that end in a return (after `normalise_returns`); the returned values."""
        with self.b.at(block):
            for k, s in enumerate(stmts):
                if isinstance(s, A.Return):
                    if k != len(stmts) - 1:
                        pass                     # code after return is unreachable; ignored like Python
                    return self.return_values(s)
                if isinstance(s, A.If) and always_returns([s]):
                    return self.lower_returning_if(s)
                self.stmt(s)
        if top:
            self.tuple_result = False
            raise self.error(DslTypeError, f"kernel '{self.fdef.name}' does not return a value", self.fdef)
        raise self.error(DslTypeError, "every path of this branch must end in 'return'", stmts[-1] if stmts else self.fdef)

    def return_values(self, s: A.Return) -> list[Value]:
        if s.value is None:
            raise self.error(DslTypeError, "a kernel must return a value", s)
        v = self.expr(s.value)
        self.tuple_result = isinstance(v, TupleVal)
        items = v.items if isinstance(v, TupleVal) else [v]
        out = []
        for x in items:
            if isinstance(x, TupleVal):
                raise self.error(UnsupportedError, "nested tuples cannot be returned", s)
            out.append(self.b.strong(x))
        return out

    def lower_returning_if(self, s: A.If) -> list[Value]:
        c = self.condition(s.test)
        with self.b.located(self.loc(s)):
            then_b, else_b = ir.Block(), ir.Block()
            saved = dict(self.env)
            r1 = self.lower_body(s.body, then_b)
            tr1 = self.tuple_result
            self.env = dict(saved)
            r2 = self.lower_body(s.orelse, else_b)
            self.env = saved
            if tr1 != self.tuple_result or len(r1) != len(r2):
                raise self.error(DslTypeError, "branches return different numbers of values", s)
            r1, r2 = self.unify_branch_values(r1, r2, then_b, else_b, s, ["return value"] * len(r1))
            with self.b.at(then_b):
                self.b.terminate("yield", r1)
            with self.b.at(else_b):
                self.b.terminate("yield", r2)
            return self.b.emit("if", [c], {"types": tuple(v.type for v in r1)}, [then_b, else_b])

    def unify_branch_values(self, r1, r2, b1, b2, node, names):
        out1, out2 = [], []
        for x, y, name in zip(r1, r2, names):
            dt, weak = promote_dtypes(x.type, y.type, self.b.default_float)
            if weak:
                dt = self.b.default_float if is_float(dt) else dt
            if x.type.shape != y.type.shape:
                if x.type.rank != y.type.rank or any(isinstance(p, int) and isinstance(q, int) and p != q
                                                      for p, q in zip(x.type.shape, y.type.shape)):
                    raise self.error(DslTypeError, f"{name}: the branches give different shapes "
                                     f"({x.type} and {y.type})", node)
            with self.b.at(b1):
                x = self.b.cast(x, dt) if (x.type.dtype != dt or x.type.weak) else x
            with self.b.at(b2):
                y = self.b.cast(y, dt) if (y.type.dtype != dt or y.type.weak) else y
            if x.type.shape != y.type.shape:
                raise self.error(DslTypeError, f"{name}: the branches give shapes {x.type} and {y.type}, "
                                 "which are not known to be equal", node)
            out1.append(x)
            out2.append(y)
        return out1, out2

    def apply_return_annotation(self, results):
        ann = self.fdef.returns
        if ann is None:
            return results
        types = parse_return_annotation(ann, self)
        if len(types) != len(results) or (isinstance(ann, A.Tuple) != self.tuple_result and len(types) > 1):
            raise self.error(DslTypeError, f"kernel returns {len(results)} value(s) but is annotated with "
                             f"{len(types)}", ann)
        out = []
        for v, (dt, dims) in zip(results, types):
            if len(dims) != v.type.rank:
                raise self.error(DslTypeError, f"return value has type {v.type}, annotated rank {len(dims)}", ann)
            if v.type.dtype != dt:
                origin = v.owner
                if is_float(dt) and is_float(v.type.dtype) or (isinstance(origin, ir.Op) and origin.prim == "const"):
                    with self.b.located(self.loc(ann)):
                        v = self.b.cast(v, dt)
                else:
                    raise self.error(DslTypeError, f"return value has dtype {v.type.dtype}, annotated {dt}", ann)
            for d, sd in zip(dims, v.type.shape):
                if isinstance(d, int) and isinstance(sd, int) and d != sd:
                    raise self.error(DslTypeError, f"return value has type {v.type}, annotated extent {d}", ann)
            out.append(v)
        return out

    # ---- statements -----------------------------------------------------------------------------
    def stmt(self, s):
        with self.b.located(self.loc(s)):
            m = getattr(self, "stmt_" + type(s).__name__, None)
            if m is None:
                raise self.error(UnsupportedError, f"'{type(s).__name__.lower()}' statements are not supported", s)
            m(s)

    def stmt_Pass(self, s):
        pass

    def stmt_Break(self, s):
        raise self.error(UnsupportedError, "'break' is not supported; use a 'while' loop with a condition", s)

    def stmt_Continue(self, s):
        raise self.error(UnsupportedError, "'continue' is not supported; use 'if' inside the loop", s)

    def stmt_Return(self, s):
        raise self.error(UnsupportedError, "'return' inside a loop is not supported", s)

    def stmt_ExprStmt(self, s):
        if isinstance(s.value, A.Str):
            return                               # docstring
        self.expr(s.value)

    def stmt_Assign(self, s):
        self.assign(s.target, self.expr(s.value), s)

    def stmt_AnnAssign(self, s):
        if s.value is None:
            return
        dt, dims = parse_type(s.annotation, self)
        v = self.expr(s.value)
        if isinstance(v, TupleVal) or v.type.rank != len(dims):
            raise self.error(DslTypeError, "value does not match the annotation", s)
        self.assign(s.target, self.b.cast(v, dt), s)

    def stmt_AugAssign(self, s):
        op = s.op
        t = s.target
        if isinstance(t, A.Name):
            cur = self.lookup(t.id, t)
            new = self.binop(op, cur, self.expr(s.value), s)
            if isinstance(cur, Value) and not isinstance(new, TupleVal) and new.type.dtype != cur.type.dtype \
                    and not cur.type.weak and new.type.shape == cur.type.shape:
                pass                              # Python rebinds; the type may change (loops unify)
            self.assign(t, new, s)
        elif isinstance(t, A.Subscript):
            base = t.value
            if not isinstance(base, A.Name):
                raise self.error(UnsupportedError, "augmented assignment needs a simple array name", t)
            arr = self.lookup(base.id, base)
            spec, idx = self.index_spec(arr, t)
            cur = self.load(arr, spec, idx, t)
            new = self.binop(op, cur, self.expr(s.value), s)
            self.store_into(base, arr, spec, idx, new, t)
        else:
            raise self.error(UnsupportedError, "cannot assign to this expression", t)

    def assign(self, target, value, s):
        if isinstance(target, A.Name):
            self.env[target.id] = value
        elif isinstance(target, A.Tuple):
            if not isinstance(value, TupleVal) or len(value.items) != len(target.elts):
                n = len(value.items) if isinstance(value, TupleVal) else 1
                raise self.error(DslValueError, f"cannot unpack {n} value(s) into {len(target.elts)} names", s)
            for t, v in zip(target.elts, value.items):
                self.assign(t, v, s)
        elif isinstance(target, A.Subscript):
            if not isinstance(target.value, A.Name):
                raise self.error(UnsupportedError, "element stores need a simple array name: y[i] = ...", target)
            arr = self.lookup(target.value.id, target.value)
            spec, idx = self.index_spec(arr, target)
            self.store_into(target.value, arr, spec, idx, value, target)
        else:
            raise self.error(UnsupportedError, "cannot assign to this expression", target)

    def store_into(self, name_node, arr, spec, idx, value, node):
        name = name_node.id
        if name in self.param_values and self.env.get(name) is self.param_values[name]:
            raise self.error(DslTypeError, f"parameter '{name}' is read-only; copy it first "
                             f"(e.g. y = x * 1) and write to the copy", node)
        if isinstance(value, TupleVal):
            raise self.error(DslTypeError, "cannot store a tuple into an array", node)
        value = self.b.cast(value, arr.type.dtype) if (value.type.dtype != arr.type.dtype or value.type.weak) else value
        with self.b.located(self.loc(node)):
            new = self.b.emit1("store", [arr, value] + idx, {"spec": spec})
            new.owner.checked = True
        self.env[name] = new

    def condition(self, node) -> Value:
        v = self.expr(node)
        if isinstance(v, TupleVal) or not v.type.is_scalar:
            raise self.error(DslTypeError, "the truth value of an array is ambiguous: a condition must be a "
                             "scalar (use any/all reductions or where())", node)
        return self.truth(v)

    def truth(self, v: Value) -> Value:
        if v.type.dtype == "bool":
            return v
        return self.b.emit1("ne", [self.b.strong(v), self.b.const(0, self.b.strong(v).type.dtype)])

    def stmt_If(self, s):
        c = self.condition(s.test)
        names = sorted(assigned_names(s.body) | assigned_names(s.orelse))
        saved = dict(self.env)
        then_b, else_b = ir.Block(), ir.Block()
        envs = []
        for stmts, blk in ((s.body, then_b), (s.orelse, else_b)):
            self.env = dict(saved)
            with self.b.at(blk):
                for st in stmts:
                    self.stmt(st)
            envs.append(self.env)
        self.env = saved
        results, r1, r2 = [], [], []
        for n in names:
            v1, v2 = envs[0].get(n), envs[1].get(n)
            if not isinstance(v1, Value) or not isinstance(v2, Value):
                if isinstance(v1, TupleVal) or isinstance(v2, TupleVal):
                    raise self.error(UnsupportedError, f"'{n}': tuples cannot be assigned inside 'if'", s)
                self.env[n] = Undefined(f"'{n}' is assigned in only one branch of the 'if' at line {s.span.line}")
                continue
            if v1 is v2:
                self.env[n] = v1         # the same value on both paths (e.g. `r = x` in each)
                continue
            results.append(n)
            r1.append(v1)
            r2.append(v2)
        if not results:
            # still emit the branches: they may raise errors (bounds checks) at run time
            if then_b.ops or else_b.ops:
                for blk in (then_b, else_b):
                    with self.b.at(blk):
                        self.b.terminate("yield", [])
                self.b.emit("if", [c], {"types": ()}, [then_b, else_b])
            return
        r1, r2 = self.unify_branch_values(r1, r2, then_b, else_b, s, [f"variable '{n}'" for n in results])
        for blk, vals in ((then_b, r1), (else_b, r2)):
            with self.b.at(blk):
                self.b.terminate("yield", vals)
        outs = self.b.emit("if", [c], {"types": tuple(v.type for v in r1)}, [then_b, else_b], hint="")
        for n, v in zip(results, outs):
            v.hint = n
            self.env[n] = v

    def int_operand(self, node) -> Value:
        v = self.expr(node)
        if isinstance(v, TupleVal) or not v.type.is_scalar or not (is_int(v.type.dtype) or v.type.dtype == "bool"):
            raise self.error(DslTypeError, f"expected an integer, got {describe(v)}", node)
        return self.b.i64(v)

    def stmt_For(self, s):
        if not isinstance(s.target, A.Name):
            raise self.error(UnsupportedError, "a for loop needs a single loop variable", s.target)
        it = s.iter
        if not (isinstance(it, A.Call) and isinstance(it.func, A.Name) and it.func.id == "range") or it.keywords \
                or not 1 <= len(it.args) <= 3:
            raise self.error(UnsupportedError, "only 'for i in range(...)' loops are supported", it)
        args = [self.int_operand(a) for a in it.args]
        if len(args) == 1:
            lo, hi, step = self.b.const(0, "i64"), args[0], self.b.const(1, "i64")
        elif len(args) == 2:
            lo, hi, step = args[0], args[1], self.b.const(1, "i64")
        else:
            lo, hi, step = args
        self.loop(s, [lo, hi, step], "for")

    def stmt_While(self, s):
        self.loop(s, [], "while")

    def loop(self, s, bounds, kind):
        var = s.target.id if kind == "for" else None
        assigned = assigned_names(s.body)
        carried = [n for n in sorted(assigned) if n != var and isinstance(self.env.get(n), Value)]
        for n in sorted(assigned):
            if isinstance(self.env.get(n), TupleVal):
                raise self.error(UnsupportedError, f"'{n}': tuples cannot be reassigned inside a loop", s)
        types = [self.carry_type(self.env[n]) for n in carried]
        saved = dict(self.env)
        for attempt in range(6):
            self.env = dict(saved)
            inits = [self.b.cast(self.env[n], t.dtype) if (self.env[n].type.dtype != t.dtype or self.env[n].type.weak)
                     else self.env[n] for n, t in zip(carried, types)]
            regions = []
            if kind == "while":
                cond_b = ir.Block([Value(t, n) for n, t in zip(carried, types)])
                self.env = dict(saved)
                self.env.update(zip(carried, cond_b.args))
                with self.b.at(cond_b):
                    c = self.condition(s.test)
                    self.b.terminate("yield", [c])
                regions.append(cond_b)
                body_b = ir.Block([Value(t, n) for n, t in zip(carried, types)])
            else:
                body_b = ir.Block([Value(Type("i64"), var)] + [Value(t, n) for n, t in zip(carried, types)])
            self.env = dict(saved)
            args = body_b.args if kind == "while" else body_b.args[1:]
            self.env.update(zip(carried, args))
            if var is not None:
                self.env[var] = body_b.args[0]
            with self.b.at(body_b):
                for st in s.body:
                    self.stmt(st)
            new_types, mismatch = [], False
            for n, t in zip(carried, types):
                v = self.env.get(n)
                if not isinstance(v, Value):
                    raise self.error(DslTypeError, f"'{n}' is not a value at the end of the loop body", s)
                if v.type.shape != t.shape:
                    raise self.error(DslTypeError, f"variable '{n}' changes shape in the loop "
                                     f"(from {t} to {v.type}); give it its final shape before the loop", s)
                dt, _ = promote_dtypes(t, v.type, self.b.default_float)
                if dt != t.dtype:
                    mismatch = True
                new_types.append(Type(dt, t.shape))
            if not mismatch:
                break
            types = new_types
        else:
            raise self.error(DslTypeError, "could not find stable types for the loop's variables", s)
        with self.b.at(body_b):
            ys = [self.b.cast(self.env[n], t.dtype) if (self.env[n].type.dtype != t.dtype or self.env[n].type.weak)
                  else self.env[n] for n, t in zip(carried, types)]
            self.b.terminate("yield", ys)
        body_env = self.env
        self.env = saved
        if var is not None:
            # Python would leave the last index bound; a stale value would be silently wrong
            self.env[var] = Undefined(f"the loop variable '{var}' is not available after the loop at "
                                      f"line {s.span.line}; copy it to another variable inside the loop")
        for n in assigned:
            if n not in carried and n != var and n not in saved:
                self.env[n] = Undefined(f"'{n}' is first assigned inside the loop at line {s.span.line}; "
                                        "assign it before the loop to use it afterwards")
        del body_env
        regions.append(body_b)
        outs = self.b.emit(kind, bounds + inits, {"types": tuple(types)}, regions)
        for n, v in zip(carried, outs):
            v.hint = n
            self.env[n] = v

    def carry_type(self, v: Value) -> Type:
        t = v.type
        if t.weak:
            return Type(self.b.default_float if is_float(t.dtype) else t.dtype, t.shape)
        return t

    # ---- expressions ------------------------------------------------------------------------------------
    def expr(self, node):
        m = getattr(self, "expr_" + type(node).__name__, None)
        if m is None:
            raise self.error(UnsupportedError, f"unsupported expression ({type(node).__name__})", node)
        with self.b.located(self.loc(node)):
            return m(node)

    def value(self, node) -> Value:
        v = self.expr(node)
        if isinstance(v, TupleVal):
            raise self.error(DslTypeError, "expected an array or scalar, got a tuple", node)
        return v

    def lookup(self, name: str, node):
        if name in self.env:
            v = self.env[name]
            if isinstance(v, Undefined):
                raise self.error(DslNameError, v.why, node)
            return v
        if name in self.dim_names:
            p, ax = self.dim_names[name]
            return self.b.dim(p, ax)
        raise self.error(DslNameError, f"name '{name}' is not defined", node)

    def expr_Name(self, n):
        if n.id in ("inf", "nan", "pi", "e") and n.id not in self.env:
            import math
            return self.b.const({"inf": math.inf, "nan": math.nan, "pi": math.pi, "e": math.e}[n.id], "f64", weak=True)
        return self.lookup(n.id, n)

    def expr_Num(self, n):
        if isinstance(n.value, bool):
            return self.b.const(n.value, "bool")
        if isinstance(n.value, int):
            if not -2**63 <= n.value < 2**63:
                raise self.error(DslValueError, "integer literal does not fit in 64 bits", n)
            return self.b.const(n.value, "i64", weak=True)
        return self.b.const(n.value, "f64", weak=True)

    def expr_Bool(self, n):
        return self.b.const(n.value, "bool")

    def expr_Str(self, n):
        raise self.error(DslTypeError, "strings are only allowed in type annotations", n)

    def expr_Tuple(self, n):
        return TupleVal([self.expr(e) for e in n.elts])

    def expr_UnaryOp(self, n):
        if n.op == "not":
            v = self.value(n.operand)
            if v.type.is_scalar:
                return self.b.emit1("not", [self.truth(v)])
            if v.type.dtype != "bool":
                raise self.error(DslTypeError, "'not' on an array needs a bool array", n)
            return self.b.emit1("not", [v])
        if isinstance(n.operand, A.Num) and n.op == "-":
            return self.expr_Num(A.Num(-n.operand.value, span=n.span))
        v = self.value(n.operand)
        if n.op == "+":
            return v
        return self.b.unary("neg", v)

    def binop(self, op, a, b, node):
        if isinstance(a, TupleVal) or isinstance(b, TupleVal):
            raise self.error(DslTypeError, f"operator '{op}' cannot take a tuple", node)
        if op == "@":
            return self.matmul(a, b, node)
        if op not in BINARY_OPS:
            raise self.error(UnsupportedError, f"operator '{op}' is not supported", node)
        v = self.b.binary(BINARY_OPS[op], a, b)
        if isinstance(v.owner, ir.Op) and (
                (op in ("//", "%", "**") and not is_float(v.type.dtype))   # zero division, negative power
                or _extents_checked_at_run_time(a.type.shape, b.type.shape)):
            v.owner.checked = True        # raises even when the value is unused
        return v

    def matmul(self, a, b, node):
        if a.type.is_scalar or b.type.is_scalar:
            raise self.error(DslTypeError, "'@' needs arrays, not scalars (use '*')", node)
        a, b = self.b.promote(a, b)
        r = self.b.emit1("matmul", [self.b.strong(a), self.b.strong(b)])
        if a.type.shape[-1] != b.type.shape[0]:
            r.owner.checked = True            # inner extents equal only at run time: checked even if unused
        return r

    def expr_BinOp(self, n):
        return self.binop(n.op, self.expr(n.left), self.expr(n.right), n)

    def expr_Compare(self, n):
        vals = [self.value(o) for o in n.operands]
        out = None
        for op, a, b in zip(n.ops, vals, vals[1:]):
            a2, b2 = self.b.promote(a, b)
            c = self.b.emit1(COMPARE_OPS[op], [a2, b2])
            out = c if out is None else self.b.emit1("and", [out, c]) if out.type.shape == c.type.shape or True else c
        return out

    def expr_BoolOp(self, n):
        first = self.value(n.values[0])
        if not first.type.is_scalar:
            acc = first
            for e in n.values[1:]:
                v = self.value(e)
                if acc.type.dtype != "bool" or v.type.dtype != "bool":
                    raise self.error(DslTypeError, f"'{n.op}' on arrays needs bool arrays", e)
                acc = self.b.emit1(n.op, [acc, v])
            return acc
        # scalars short-circuit: later operands may index out of range when the first decides
        acc = self.truth(first)
        for e in n.values[1:]:
            then_b, else_b = ir.Block(), ir.Block()
            evaluate, skip = (then_b, else_b) if n.op == "and" else (else_b, then_b)
            with self.b.at(evaluate):
                v = self.value(e)
                if not v.type.is_scalar:
                    raise self.error(DslTypeError, f"'{n.op}' mixes a scalar and an array", e)
                self.b.terminate("yield", [self.truth(v)])
            with self.b.at(skip):
                self.b.terminate("yield", [self.b.const(n.op == "or", "bool")])
            acc = self.b.emit1("if", [acc], {"types": (Type("bool"),)}, [then_b, else_b])
        return acc

    def expr_IfExp(self, n):
        c = self.value(n.test)
        if not c.type.is_scalar:
            raise self.error(DslTypeError, "'a if c else b' needs a scalar condition; use where(c, a, b) for arrays", n.test)
        c = self.truth(c)
        then_b, else_b = ir.Block(), ir.Block()
        with self.b.at(then_b):
            x = self.value(n.body)
        with self.b.at(else_b):
            y = self.value(n.orelse)
        if x.type.weak and y.type.weak:
            dt, _ = promote_dtypes(x.type, y.type, self.b.default_float)
            dt = self.b.default_float if is_float(dt) else dt
        else:
            dt = None
        (x,), (y,) = self.unify_branch_values([x], [y], then_b, else_b, n, ["conditional expression"])
        del dt
        with self.b.at(then_b):
            self.b.terminate("yield", [x])
        with self.b.at(else_b):
            self.b.terminate("yield", [y])
        return self.b.emit1("if", [c], {"types": (x.type,)}, [then_b, else_b])

    def expr_Attribute(self, n):
        if n.attr == "T":
            v = self.value(n.value)
            if v.type.rank < 2:
                return v
            return self.b.emit1("transpose", [v], {"perm": tuple(reversed(range(v.type.rank)))})
        if n.attr == "shape":
            v = self.value(n.value)
            return TupleVal(self.b.dims_of(v))
        if n.attr == "ndim":
            return self.b.const(self.value(n.value).type.rank, "i64", weak=True)
        if n.attr == "size":
            v = self.value(n.value)
            acc = self.b.const(1, "i64")
            for d in self.b.dims_of(v):
                acc = self.b.binary("mul", acc, d)
            return acc
        raise self.error(UnsupportedError, f"unknown attribute '.{n.attr}'", n)

    # ---- indexing -------------------------------------------------------------------------------------
    def index_spec(self, arr, sub: A.Subscript):
        if isinstance(arr, TupleVal) or arr.type.is_scalar:
            raise self.error(DslTypeError, f"cannot index a {describe(arr)}", sub)
        if len(sub.indices) > arr.type.rank:
            raise self.error(DslTypeError, f"too many indices ({len(sub.indices)}) for {arr.type}", sub)
        spec, idx = "", []
        for ax, ix in enumerate(sub.indices):
            if isinstance(ix, A.Slice):
                if ix.step is not None and not (isinstance(ix.step, A.Num) and ix.step.value == 1):
                    raise self.error(UnsupportedError, "slices with a step other than 1 are not supported", ix)
                if ix.lower is None and ix.upper is None:
                    spec += "a"
                    continue
                lo = self.int_operand(ix.lower) if ix.lower is not None else self.b.const(0, "i64")
                hi = self.int_operand(ix.upper) if ix.upper is not None else self.b.dim(arr, ax)
                spec += "s"
                idx += [lo, hi]
            else:
                spec += "i"
                idx.append(self.int_operand(ix))
        spec += "a" * (arr.type.rank - len(sub.indices))
        return spec, idx

    def load(self, arr, spec, idx, node):
        with self.b.located(self.loc(node)):
            kind = "index" if set(spec) == {"i"} else "slice"
            v = self.b.emit1(kind, [arr] + idx, {"spec": spec})
            v.owner.checked = True        # an out-of-range index raises even if the value is unused
            return v

    def expr_Subscript(self, n):
        base = self.expr(n.value)
        if isinstance(base, TupleVal):
            if len(n.indices) != 1 or not isinstance(n.indices[0], (A.Num, A.UnaryOp)):
                raise self.error(UnsupportedError, "a tuple (such as x.shape) needs a literal integer index", n)
            k = self.expr(n.indices[0])
            kv = k.owner.attrs["value"] if isinstance(k.owner, ir.Op) and k.owner.prim == "const" else None
            if not isinstance(kv, int) or not -len(base.items) <= kv < len(base.items):
                raise self.error(DslValueError if isinstance(kv, int) else DslTypeError,
                                 f"tuple index out of range (length {len(base.items)})", n)
            return base.items[kv]
        spec, idx = self.index_spec(base, n)
        return self.load(base, spec, idx, n)

    # ---- calls ---------------------------------------------------------------------------------------
    def expr_Call(self, n):
        if isinstance(n.func, A.Attribute) and isinstance(n.func.value, A.Name) and n.func.value.id in ("np", "numpy", "dsl", "math"):
            name = n.func.attr
        elif isinstance(n.func, A.Name):
            name = n.func.id
        else:
            raise self.error(UnsupportedError, "only named functions can be called", n)
        if name in self.env:
            raise self.error(DslTypeError, f"'{name}' is a value, not a function", n)
        callee = self.resolve(name)
        if callee is not None and hasattr(callee, "_dsl_definition"):
            return self.inline_call(callee, n)
        fn = BUILTINS.get(name)
        if fn is None:
            raise self.error(DslNameError, f"unknown function '{name}'", n.func)
        return fn(self, n)

    def kw(self, n, allowed):
        out = {}
        for k in n.keywords:
            if k.name not in allowed:
                raise self.error(DslTypeError, f"unexpected keyword argument '{k.name}'", k)
            out[k.name] = k.value
        return out

    def nargs(self, n, lo, hi=None):
        hi = lo if hi is None else hi
        if not lo <= len(n.args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise self.error(DslTypeError, f"{n.func.id if isinstance(n.func, A.Name) else n.func.attr}() takes "
                             f"{want} positional argument(s), got {len(n.args)}", n)

    def inline_call(self, callee, n):
        fdef, source = callee._dsl_definition
        if self.depth >= MAX_INLINE_DEPTH:
            raise self.error(DslValueError, f"kernel calls nested too deeply (recursion through '{fdef.name}'?)", n)
        if n.keywords:
            raise self.error(UnsupportedError, "kernel calls take positional arguments only", n)
        if len(n.args) != len(fdef.params):
            raise self.error(DslTypeError, f"kernel '{fdef.name}' takes {len(fdef.params)} argument(s), got {len(n.args)}", n)
        args = [self.value(a) for a in n.args]
        sub = Lowering(fdef, source, [], self.resolve, self.depth + 1)
        sub.b = self.b
        sub.b_saved_default = self.b.default_float
        for p, a, anode in zip(fdef.params, args, n.args):
            if p.annotation is not None:
                dt, dims = parse_type(p.annotation, sub)
                if len(dims) != a.type.rank:
                    raise self.error(DslTypeError, f"argument '{p.name}' of '{fdef.name}': expected rank {len(dims)}, "
                                     f"got {a.type}", anode)
                if a.type.dtype != dt:
                    if a.type.weak or (is_float(dt) and not is_float(a.type.dtype)) and a.type.is_scalar:
                        a = self.b.cast(a, dt)
                    else:
                        raise self.error(DslTypeError, f"argument '{p.name}' of '{fdef.name}': expected {dt}, "
                                         f"got {a.type}", anode)
                for ax, d in enumerate(dims):
                    if isinstance(d, str) and d.isidentifier() and d not in sub.dim_names:
                        sub.dim_names[d] = (a, ax)
            sub.env[p.name] = a
        sub.params = []
        sub.readonly = set(sub.env)
        sub.param_values = dict(sub.env)
        body = normalise_returns(fdef.body)
        with self.b.located(self.loc(n)):
            results = sub.lower_body(body, self.b.block)
        return TupleVal(results) if sub.tuple_result else results[0]


def _extents_checked_at_run_time(s1, s2) -> bool:
    """Whether broadcasting shapes s1 and s2 needs a run-time extent check (symbolic dims that
    are not known to be equal)."""
    for d1, d2 in zip(reversed(s1), reversed(s2)):
        if d1 != d2 and d1 != 1 and d2 != 1:
            return True
    return False


# ---- builtins -------------------------------------------------------------------------------------------
def _unary_math(name):
    def f(L, n):
        L.nargs(n, 1)
        L.kw(n, ())
        v = L.value(n.args[0])
        prim = {"abs": "abs"}.get(name, name)
        return L.b.unary(prim, v)
    return f


def _binary_math(prim):
    def f(L, n):
        L.nargs(n, 2)
        L.kw(n, ())
        return L.b.binary(prim, L.value(n.args[0]), L.value(n.args[1]))
    return f


def _axes(L, n, v):
    kws = L.kw(n, ("axis",))
    if "axis" not in kws or (isinstance(kws["axis"], A.Name) and kws["axis"].id == "None"):
        return tuple(range(v.type.rank))
    node = kws["axis"]
    items = node.elts if isinstance(node, A.Tuple) else [node]
    axes = []
    for it in items:
        val = it.value if isinstance(it, A.Num) else (-it.operand.value if isinstance(it, A.UnaryOp) and it.op == "-"
                                                       and isinstance(it.operand, A.Num) else None)
        if not isinstance(val, int) or isinstance(val, bool):
            raise L.error(DslTypeError, "axis must be an integer literal or a tuple of them", it)
        if not -v.type.rank <= val < v.type.rank:
            raise L.error(DslValueError, f"axis {val} is out of range for {v.type}", it)
        axes.append(val % v.type.rank)
    if len(set(axes)) != len(axes):
        raise L.error(DslValueError, "repeated axis", node)
    return tuple(sorted(axes))


def _reduction(name):
    def f(L, n):
        if name in ("max", "min") and len(n.args) == 2:
            return _binary_math("maximum" if name == "max" else "minimum")(L, n)
        L.nargs(n, 1)
        v = L.value(n.args[0])
        if v.type.is_scalar:
            L.kw(n, ("axis",))
            return v
        if v.type.dtype == "bool":
            v = L.b.cast(v, "i64")
        axes = _axes(L, n, v)
        if name == "mean":
            if not is_float(v.type.dtype):
                v = L.b.cast(v, L.b.default_float)
            s = L.b.emit1("reduce_sum", [v], {"axes": axes})
            count = L.b.const(1, "i64")
            for a in axes:
                count = L.b.binary("mul", count, L.b.dim(v, a))
            return L.b.binary("div", s, L.b.cast(count, v.type.dtype))
        r = L.b.emit1(REDUCTIONS[name], [L.b.strong(v)], {"axes": axes})
        if name in ("max", "min"):
            r.owner.checked = True            # an empty reduction raises even when unused
        return r
    return f


def _where(L, n):
    L.nargs(n, 3)
    c, a, b = (L.value(x) for x in n.args)
    if c.type.dtype != "bool":
        c = L.truth(c) if c.type.is_scalar else L.b.emit1("ne", [c, L.b.const(0, c.type.dtype)])
    return L.b.select(c, a, b)


def _dot(L, n):
    L.nargs(n, 2)
    return L.matmul(L.value(n.args[0]), L.value(n.args[1]), n)


def _len(L, n):
    L.nargs(n, 1)
    v = L.value(n.args[0])
    if v.type.is_scalar:
        raise L.error(DslTypeError, "len() of a scalar", n)
    return L.b.dim(v, 0)


def _dtype_kw(L, n, default):
    kws = L.kw(n, ("dtype",))
    if "dtype" not in kws:
        return default
    d = kws["dtype"]
    key = d.id if isinstance(d, A.Name) else d.value if isinstance(d, A.Str) else \
        d.attr if isinstance(d, A.Attribute) else None
    if key not in DTYPE_NAMES:
        raise L.error(DslTypeError, "dtype must be one of f32, f64, i32, i64, bool", d)
    return DTYPE_NAMES[key]


def _shape_arg(L, node):
    v = L.expr(node)
    items = v.items if isinstance(v, TupleVal) else [v]
    vals, syms = [], []
    for it in items:
        if isinstance(it, TupleVal) or not it.type.is_scalar or not (is_int(it.type.dtype)):
            raise L.error(DslTypeError, f"a shape must be an integer or a tuple of integers, got {describe(it)}", node)
        it = L.b.i64(it)
        vals.append(it)
        syms.append(it.sym if it.sym is not None else ir.fresh_dim())
    return vals, tuple(syms)


def _constructor(fill):
    def f(L, n):
        L.nargs(n, 2 if fill is None else 1)
        dims, shape = _shape_arg(L, n.args[0])
        dt = _dtype_kw(L, n, L.b.default_float)
        val = L.value(n.args[1]) if fill is None else L.b.const(fill, dt)
        if not val.type.is_scalar:
            raise L.error(DslTypeError, "full() needs a scalar fill value", n.args[1])
        r = L.b.full(val, shape, dims, dt)
        if any(not isinstance(d, int) for d in shape) and isinstance(r.owner, ir.Op):
            r.owner.checked = True            # a computed extent may be negative: checked even if unused
        return r
    return f


def _like(fill):
    def f(L, n):
        L.nargs(n, 1)
        x = L.value(n.args[0])
        dt = _dtype_kw(L, n, x.type.dtype if not x.type.weak else L.b.default_float)
        if x.type.is_scalar:
            return L.b.const(fill, dt)
        return L.b.full(L.b.const(fill, dt), x.type.shape, L.b.dims_of(x), dt)
    return f


def _cast_fn(dtype):
    def f(L, n):
        L.nargs(n, 1)
        L.kw(n, ())
        v = L.value(n.args[0])
        return L.b.cast(v, dtype if dtype != "float" else L.b.default_float)
    return f


BUILTINS = {name: _unary_math(name) for name in UNARY_MATH}
BUILTINS.update({
    "minimum": _binary_math("minimum"), "maximum": _binary_math("maximum"),
    "where": _where, "dot": _dot, "len": _len,
    "zeros": _constructor(0), "ones": _constructor(1), "full": _constructor(None),
    "zeros_like": _like(0), "ones_like": _like(1),
    "f32": _cast_fn("f32"), "f64": _cast_fn("f64"), "i32": _cast_fn("i32"), "i64": _cast_fn("i64"),
    "bool": _cast_fn("bool"), "float": _cast_fn("float"), "int": _cast_fn("i64"),
    "fabs": _unary_math("abs"),
})
BUILTINS.update({name: _reduction(name) for name in REDUCTIONS})


# ---- annotations -------------------------------------------------------------------------------------
def parse_type(node, L, anon_prefix: str = "") -> tuple[str, tuple]:
    """An annotation expression -> (dtype, dims); dims are names, ints, or fresh names for ':'."""
    if isinstance(node, A.Name):
        if node.id not in DTYPE_NAMES:
            raise L.error(DslTypeError, f"unknown type '{node.id}' (expected f32, f64, i32, i64, bool)", node)
        return DTYPE_NAMES[node.id], ()
    if isinstance(node, A.Subscript) and isinstance(node.value, A.Name):
        dt, _ = parse_type(node.value, L)
        dims = []
        for ax, d in enumerate(node.indices):
            if isinstance(d, A.Name):
                dims.append(d.id)
            elif isinstance(d, A.Str) and d.value.isidentifier():
                dims.append(d.value)
            elif isinstance(d, A.Num) and isinstance(d.value, int) and d.value >= 0 and not isinstance(d.value, bool):
                dims.append(d.value)
            elif isinstance(d, A.Slice) and d.lower is None and d.upper is None and d.step is None:
                dims.append(f"_{anon_prefix}_{ax}" if anon_prefix else ir.fresh_dim())
            else:
                raise L.error(DslTypeError, "a dim must be a name, a non-negative integer or ':'", d)
        return dt, tuple(dims)
    raise L.error(DslTypeError, "a type annotation looks like f32, f64[n], f32[\"m\", \"n\"] or i64", node)


def parse_return_annotation(node, L):
    if isinstance(node, A.Tuple):
        return [parse_type(e, L) for e in node.elts]
    return [parse_type(node, L)]


def describe(v) -> str:
    if isinstance(v, TupleVal):
        return "tuple"
    return f"array {v.type}" if not v.type.is_scalar else f"scalar {v.type}"


# ---- control-flow normalisation ------------------------------------------------------------------------
def always_returns(stmts) -> bool:
    if not stmts:
        return False
    last = stmts[-1]
    if isinstance(last, A.Return):
        return True
    return isinstance(last, A.If) and always_returns(last.body) and always_returns(last.orelse)


def _contains_return(stmts) -> bool:
    for s in stmts:
        if isinstance(s, A.Return):
            return True
        if isinstance(s, A.If) and (_contains_return(s.body) or _contains_return(s.orelse)):
            return True
    return False


def normalise_returns(stmts):
    """Move the statements after an `if` containing a `return` into its non-returning branches,
    so every return ends a path: `if c: return a` / `rest` becomes `if c: return a else: rest`."""
    out = []
    for k, s in enumerate(stmts):
        if isinstance(s, A.If) and _contains_return([s]):
            rest = stmts[k + 1:]
            body = s.body if always_returns(s.body) else s.body + rest
            orelse = s.orelse if always_returns(s.orelse) else s.orelse + rest
            out.append(A.If(s.test, normalise_returns(body), normalise_returns(orelse), span=s.span))
            return out
        out.append(s)
        if isinstance(s, A.Return):
            return out
    return out


def assigned_names(stmts) -> set:
    out = set()
    for s in stmts:
        for node in s.walk():
            if isinstance(node, (A.Assign, A.AugAssign, A.AnnAssign)):
                out |= _target_names(node.target)
            elif isinstance(node, A.For) and isinstance(node.target, A.Name):
                out.add(node.target.id)
    return out


def _target_names(t) -> set:
    if isinstance(t, A.Name):
        return {t.id}
    if isinstance(t, A.Tuple):
        return set().union(*(_target_names(e) for e in t.elts)) if t.elts else set()
    if isinstance(t, A.Subscript) and isinstance(t.value, A.Name):
        return {t.value.id}
    return set()


__all__ = ["Lowering", "ParamType", "parse_type", "Optional"]
