"""Constant folding of scalar ops, common-subexpression elimination and dead-code elimination.

All three respect structured regions: a value is only replaced by an equivalent one that
dominates it (defined earlier in the same block or an enclosing one)."""
from __future__ import annotations

import math
import operator

from .. import ir
from ..prims import PRIMS

_FOLD = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul,
    "neg": operator.neg, "maximum": max, "minimum": min,
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
    "eq": operator.eq, "ne": operator.ne,
}
_IMPURE = {"for", "while", "if"}          # regions may raise; kept unless proven dead


def _const(v):
    op = v.owner
    return op.attrs["value"] if isinstance(op, ir.Op) and op.prim == "const" else None


def _wrap(value, dtype):
    if dtype in ("i32", "i64"):
        bits = 32 if dtype == "i32" else 64
        value = (int(value) + (1 << (bits - 1))) % (1 << bits) - (1 << (bits - 1))
    return value


def _fold(op: ir.Op):
    """The folded constant of a scalar op on constants of the same dtype, or None."""
    if op.prim not in _FOLD or op.regions or len(op.results) != 1 or not op.result.type.is_scalar:
        return None
    vals = [_const(o) for o in op.operands]
    if any(v is None for v in vals):
        return None
    dt = op.result.type.dtype
    if dt in ("f32", "f64"):
        return None                          # float rounding is left to LLVM's exact folding
    try:
        r = _FOLD[op.prim](*vals)
    except (ArithmeticError, ValueError):
        return None
    if isinstance(r, float) and not math.isfinite(r):
        return None
    return _wrap(r, dt)


def _key(op: ir.Op, rename):
    def h(v):
        if isinstance(v, (list, tuple)):
            return tuple(h(x) for x in v)
        if isinstance(v, float) and math.isnan(v):
            return "nan"
        return v
    return (op.prim, tuple(id(rename.get(o, o)) for o in op.operands),
            tuple(sorted((k, h(v)) for k, v in op.attrs.items() if k != "types")),
            tuple(str(r.type) for r in op.results))


def _cse_fold(block: ir.Block, rename: dict, seen: dict):
    seen = dict(seen)
    new_ops = []
    for op in block.ops:
        op.operands = [rename.get(o, o) for o in op.operands]
        for reg in op.regions:
            _cse_fold(reg, rename, seen)
        folded = _fold(op)
        if folded is not None:
            op.prim = "const"
            op.operands = []
            op.attrs = {"value": folded, "dtype": op.result.type.dtype, "weak": op.result.type.weak}
        if not op.regions and op.prim not in ("yield", "return") and op.results:
            k = _key(op, rename)
            if k in seen:
                for r, r0 in zip(op.results, seen[k].results):
                    rename[r] = r0
                    if r0.sym is None:
                        r0.sym = r.sym
                continue
            seen[k] = op
        new_ops.append(op)
    block.ops = new_ops


def _used(block: ir.Block, used: set):
    for op in block.ops:
        used.update(op.operands)
        for reg in op.regions:
            _used(reg, used)


def _dce(block: ir.Block, used: set) -> bool:
    changed = False
    keep = []
    for op in block.ops:
        for reg in op.regions:
            changed |= _dce(reg, used)
        dead = op.results and not any(r in used for r in op.results)
        if dead and op.prim not in _IMPURE and op.prim not in ("yield", "return") and not op.checked:
            changed = True
            continue
        keep.append(op)
    block.ops = keep
    return changed


def simplify(fn: ir.Function) -> ir.Function:
    """Fold, CSE and DCE `fn` in place (and return it)."""
    _cse_fold(fn.body, {}, {})
    while True:
        used = set()
        _used(fn.body, used)
        if not _dce(fn.body, used):
            break
    return fn


__all__ = ["simplify"]
