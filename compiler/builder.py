"""Emitting IR: ops are created through `Builder.emit`, which runs the primitive's type rule and
attaches the source location to any type error. Helpers implement dtype promotion (with weakly
typed Python literals, as in JAX) and keep the symbolic value of integer scalars, so that shapes
built from `n - 1` or an `i64` parameter stay expressible in terms of the arguments."""
from __future__ import annotations

from contextlib import contextmanager

from . import ir
from .diagnostics import DslTypeError, Loc, UNKNOWN
from .ir import Type, Value, dim_op, is_float, is_int
from .prims import PRIMS, TypeRuleError

_RANK = {"bool": 0, "i32": 1, "i64": 2, "f32": 3, "f64": 4}
_SYM_OPS = {"add": "add", "sub": "sub", "mul": "mul", "floordiv": "floordiv",
            "maximum": "max", "minimum": "min"}


def promote_dtypes(a: Type, b: Type, default_float: str) -> tuple[str, bool]:
    """The common dtype of two operands, and whether the result stays weakly typed."""
    if a.weak and b.weak:
        dt = "f64" if (is_float(a.dtype) or is_float(b.dtype)) else ("i64" if "bool" not in (a.dtype, b.dtype) or a.dtype != b.dtype else "bool")
        return dt, True
    if a.weak or b.weak:
        w, s = (a, b) if a.weak else (b, a)
        if is_float(w.dtype) and not is_float(s.dtype):
            return default_float, False
        if s.dtype == "bool" and w.dtype != "bool":
            return ("i64" if is_int(w.dtype) else default_float), False
        return s.dtype, False
    if a.dtype == b.dtype:
        return a.dtype, False
    return max(a.dtype, b.dtype, key=_RANK.get), False


class Builder:
    def __init__(self, block: ir.Block, default_float: str = "f64", loc: Loc = UNKNOWN):
        self.block = block
        self.default_float = default_float
        self.loc = loc

    @contextmanager
    def at(self, block: ir.Block):
        saved = self.block
        self.block = block
        try:
            yield self
        finally:
            self.block = saved

    @contextmanager
    def located(self, loc: Loc):
        saved = self.loc
        self.loc = loc
        try:
            yield self
        finally:
            self.loc = saved

    # ---- the one way ops are made --------------------------------------------------------
    def emit(self, prim: str, operands, attrs=None, regions=(), hint: str = "") -> list[Value]:
        attrs = dict(attrs or {})
        operands = list(operands)
        try:
            types = PRIMS[prim].infer(operands, attrs)
        except TypeRuleError as e:
            raise DslTypeError(str(e), self.loc) from None
        results = [Value(t, hint) for t in types]
        op = ir.Op(prim, operands, results, attrs, list(regions), self.loc)
        self.block.ops.append(op)
        self._track_sym(op)
        return results

    def emit1(self, prim, operands, attrs=None, regions=(), hint="") -> Value:
        return self.emit(prim, operands, attrs, regions, hint)[0]

    def _track_sym(self, op: ir.Op):
        r = op.results[0] if op.results else None
        if r is None or not (r.type.is_scalar and is_int(r.type.dtype)):
            return
        if op.prim == "const":
            r.sym = int(op.attrs["value"])
        elif op.prim == "dim":
            r.sym = op.operands[0].type.shape[op.attrs["axis"]]
        elif op.prim == "cast" and is_int(op.operands[0].type.dtype):
            r.sym = op.operands[0].sym
        elif op.prim in _SYM_OPS and all(o.sym is not None for o in op.operands):
            r.sym = dim_op(_SYM_OPS[op.prim], *(o.sym for o in op.operands))

    def terminate(self, kind: str, values):
        self.block.ops.append(ir.Op(kind, list(values), [], {}, [], self.loc))

    # ---- scalars and casts ---------------------------------------------------------------------
    def const(self, value, dtype: str, weak: bool = False) -> Value:
        if dtype == "bool":
            value = bool(value)
        elif is_float(dtype):
            value = float(value)
        else:
            value = int(value)
        return self.emit1("const", [], {"value": value, "dtype": dtype, "weak": weak})

    def cast(self, v: Value, dtype: str) -> Value:
        if v.type.dtype == dtype:
            if v.type.weak:
                owner = v.owner
                if isinstance(owner, ir.Op) and owner.prim == "const":
                    return self.const(owner.attrs["value"], dtype)
                return self.emit1("cast", [v], {"dtype": dtype})
            return v
        owner = v.owner
        if isinstance(owner, ir.Op) and owner.prim == "const":
            val = owner.attrs["value"]
            if dtype == "bool" or is_float(dtype) or not isinstance(val, float):
                return self.const(val, dtype)
        return self.emit1("cast", [v], {"dtype": dtype})

    def promote(self, a: Value, b: Value) -> tuple[Value, Value]:
        dt, weak = promote_dtypes(a.type, b.type, self.default_float)
        if weak:
            return self._weak_cast(a, dt), self._weak_cast(b, dt)
        return self.cast(a, dt), self.cast(b, dt)

    def _weak_cast(self, v, dt):
        if v.type.dtype == dt:
            return v
        owner = v.owner
        if isinstance(owner, ir.Op) and owner.prim == "const":
            return self.const(owner.attrs["value"], dt, weak=True)
        r = self.emit1("cast", [v], {"dtype": dt})
        r.type = Type(dt, r.type.shape, True)
        return r

    def strong(self, v: Value, dtype: str | None = None) -> Value:
        """Fix a weakly typed value to a concrete dtype (the kernel's float type for floats)."""
        if not v.type.weak and dtype is None:
            return v
        if dtype is None:
            dtype = self.default_float if is_float(v.type.dtype) else v.type.dtype
        return self.cast(v, dtype) if (v.type.dtype != dtype or v.type.weak) else v

    # ---- arithmetic -------------------------------------------------------------------------------
    def binary(self, prim: str, a: Value, b: Value) -> Value:
        a, b = self.promote(a, b)
        if prim == "div" and not is_float(a.type.dtype):
            weak = a.type.weak and b.type.weak
            dt = "f64" if weak else self.default_float
            a, b = (self._weak_cast(a, dt), self._weak_cast(b, dt)) if weak else (self.cast(a, dt), self.cast(b, dt))
        if a.type.dtype == "bool" and prim in ("add", "sub", "mul", "floordiv", "mod", "pow"):
            a, b = self.cast(a, "i64"), self.cast(b, "i64")
        return self.emit1(prim, [a, b])

    def unary(self, prim: str, x: Value) -> Value:
        if prim in ("sin", "cos", "tan", "exp", "log", "log1p", "expm1", "sqrt", "tanh", "sigmoid") \
                and not is_float(x.type.dtype):
            x = self.cast(x, self.default_float) if not x.type.weak else self._weak_cast(x, "f64")
        if prim == "neg" and x.type.dtype == "bool":
            x = self.cast(x, "i64")
        return self.emit1(prim, [x])

    def select(self, c: Value, a: Value, b: Value) -> Value:
        a, b = self.promote(a, b)
        return self.emit1("select", [c, a, b])

    def i64(self, v: Value) -> Value:
        return self.cast(v, "i64") if v.type.dtype != "i64" or v.type.weak else v

    def dim(self, x: Value, axis: int) -> Value:
        return self.emit1("dim", [x], {"axis": axis})

    def dims_of(self, x: Value) -> list[Value]:
        return [self.dim(x, k) for k in range(x.type.rank)]

    def broadcast_to(self, x: Value, shape: tuple, dim_values: list, bdims=None) -> Value:
        """Broadcast x to `shape` (NumPy rules: x's axes align to the right unless `bdims` says)."""
        if bdims is None:
            bdims = tuple(range(len(shape) - x.type.rank, len(shape)))
        if tuple(x.type.shape) == tuple(shape) and tuple(bdims) == tuple(range(len(shape))):
            return x
        x = self.strong(x) if x.type.weak else x
        return self.emit1("broadcast_in_dim", [x] + list(dim_values), {"shape": tuple(shape), "bdims": tuple(bdims)})

    def full(self, value: Value, shape: tuple, dim_values: list, dtype: str) -> Value:
        return self.broadcast_to(self.cast(self.strong(value, dtype), dtype), shape, dim_values)

    def zeros_like(self, x: Value) -> Value:
        z = self.const(0, x.type.dtype)
        if x.type.is_scalar:
            return z
        return self.broadcast_to(z, x.type.shape, self.dims_of(x))
