"""Constant folding of scalar ops, common-subexpression elimination and dead-code elimination.

All three respect structured regions: a value is only replaced by an equivalent one that
dominates it (defined earlier in the same block or an enclosing one)."""
from __future__ import annotations

import math
import operator

from .. import ir
from ..prims import PRIMS, REWRITES, rewrite

_FOLD = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul,
    "neg": operator.neg, "maximum": max, "minimum": min,
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
    "eq": operator.eq, "ne": operator.ne,
}
_IMPURE = {"for", "while", "if", "fork"}          # regions may raise; kept unless proven dead


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


def _dead_carries(block: ir.Block, used: set) -> bool:
    """Drop a `for` loop's carried value whose result is unused and which feeds nothing but its
    own next value (a reverse sweep's tape of states that only another argument's gradient
    reads): its init, block argument, result and the pure ops computing it go."""
    changed = False
    for op in block.ops:
        for reg in op.regions:
            changed |= _dead_carries(reg, used)
        if op.prim != "for":
            continue
        body = op.regions[0]
        users = {}
        for o in body.ops:
            for v in o.operands:
                users.setdefault(v, []).append(o)
        for o in _nested_ops(body):
            for v in o.operands:
                users.setdefault(v, []).append(None)      # read inside a nested region: kept
        for i in reversed(range(len(op.results))):
            if op.results[i] in used:
                continue
            cone, ops, work, ok = set(), set(), [body.args[1 + i]], True
            while work and ok:
                v = work.pop()
                if v in cone:
                    continue
                cone.add(v)
                for u in users.get(v, ()):
                    if u is body.terminator:
                        ok = [k for k, y in enumerate(u.operands) if y is v] == [i]
                    elif (u is None or u.regions or u.checked or u.prim in _IMPURE
                          or PRIMS[u.prim].kind == "control"):
                        ok = False
                    else:
                        ops.add(u)
                        work.extend(u.results)
            if not ok:
                continue
            body.ops = [o for o in body.ops if o not in ops]
            del body.terminator.operands[i]
            del body.args[1 + i]
            del op.operands[3 + i]
            del op.results[i]
            op.attrs["types"] = tuple(t for k, t in enumerate(op.attrs["types"]) if k != i)
            changed = True
    return changed


def _invariant_carries(body: ir.Block) -> bool:
    """Drop a `for` loop's carried value that every iteration yields unchanged: its block
    argument and its result are its initial value (a reverse sweep's accumulator that the
    segment's walk leaves to one matrix product afterwards)."""
    rename = {}
    for op in ir.walk_ops(body):
        if op.prim != "for":
            continue
        region = op.regions[0]
        for i in reversed(range(len(op.results))):
            arg = region.args[1 + i]
            if region.terminator.operands[i] is not arg:
                continue
            rename[arg] = rename[op.results[i]] = op.operands[3 + i]
            del region.terminator.operands[i]
            del region.args[1 + i]
            del op.operands[3 + i]
            del op.results[i]
            op.attrs["types"] = tuple(t for k, t in enumerate(op.attrs["types"]) if k != i)
    if not rename:
        return False

    def resolve(v):
        while v in rename:
            v = rename[v]
        return v
    for op in ir.walk_ops(body):
        op.operands = [resolve(o) for o in op.operands]
    return True


def _nested_ops(block: ir.Block):
    """The ops inside the regions of `block`'s ops (not `block`'s own)."""
    for op in block.ops:
        for reg in op.regions:
            yield from ir.walk_ops(reg)


def _rewrite(block: ir.Block, rename: dict) -> bool:
    """Apply the structural rewrites registered beside the primitives (`prims.REWRITES`, e.g. a
    product with an identity basis -> a slice, compiler/prims/basis.py), in program order: a
    replacement is emitted where the op stood and takes the op's result types (they agree at run
    time; keeping the symbols lets code generation fuse as before)."""
    from ..builder import Builder
    changed = False
    new_ops = []
    for op in block.ops:
        op.operands = [rename.get(o, o) for o in op.operands]
        for reg in op.regions:
            changed |= _rewrite(reg, rename)
        replaced = False
        for fn in (REWRITES.get(op.prim, ()) if op.results and not op.regions and not op.checked else ()):
            tmp = ir.Block()
            repl = fn(Builder(tmp, loc=op.loc), op)
            if repl is None:
                continue
            made = {r for o in tmp.ops for r in o.results}
            for old, new in zip(op.results, repl):
                assert new.type.dtype == old.type.dtype and new.type.rank == old.type.rank, (op.prim, new, old)
                if new in made:
                    new.type = old.type
                rename[old] = new
            for o in tmp.ops:
                o.loc = op.loc
            new_ops.extend(tmp.ops)
            changed = replaced = True
            break
        if not replaced:
            new_ops.append(op)
    block.ops = new_ops
    return changed


@rewrite("add", "sub", "mul")
def _int_identity(b, op):
    """x + 0, 0 + x, x - 0, x * 1, 1 * x -> x for integer scalars (extent arithmetic)."""
    t = op.result.type
    if not (t.is_scalar and t.dtype in ("i32", "i64")):
        return None
    x, y = op.operands
    unit = 1 if op.prim == "mul" else 0
    pairs = ((y, x),) if op.prim == "sub" else ((y, x), (x, y))
    for c, v in pairs:
        if _const(c) == unit and c.type.dtype == t.dtype and v.type.dtype == t.dtype and v.type.is_scalar:
            if v.sym is None:
                v.sym = op.result.sym
            return [v]
    return None


@rewrite("dim")
def _dim_of_elementwise(b, op):
    """The extent of an elementwise result is its first operand's on that axis (the one code
    generation takes, compiler/codegen/function.py `_gen_elementwise`), so `dim(x*x)` does not
    keep `x*x` alive: a reverse pass's unused `x**2` (kept for its shape) would otherwise stop
    `x` from fusing into its real user. Only where the op checks nothing at run time (its
    operands' extents agree symbolically on every axis), so no shape error is dropped with it."""
    v, axis = op.operands[0], op.attrs["axis"]
    src = v.owner
    if not (isinstance(src, ir.Op) and src.prim in PRIMS and PRIMS[src.prim].kind == "elementwise"
            and len(src.results) == 1 and not src.regions):
        return None
    rank = v.type.rank
    covering = [[] for _ in range(rank)]     # per result axis: (operand, its axis) setting the extent
    for o in src.operands:
        off = rank - o.type.rank
        for k in range(o.type.rank):
            if not (o.type.shape[k] == 1 and v.type.shape[off + k] != 1):   # not a broadcast axis
                covering[off + k].append((o, k))
    if any(len({o.type.shape[k] for o, k in c}) > 1 for c in covering) or not covering[axis]:
        return None
    o, k = covering[axis][0]
    return [b.emit1("dim", [o], {"axis": k})]


@rewrite("slice")
def _full_slice(b, op):
    """x[0:n] on an axis of extent n is the whole axis; a slice of whole axes is x itself."""
    x, idx = op.operands[0], op.operands[1:]
    spec, new_spec, new_idx, k, changed = op.attrs["spec"], [], [], 0, False
    for ax, c in enumerate(spec):
        if c == "s":
            lo, hi = idx[k], idx[k + 1]
            k += 2
            if _const(lo) == 0 and hi.sym is not None and hi.sym == x.type.shape[ax]:
                new_spec.append("a")
                changed = True
            else:
                new_spec.append("s")
                new_idx += [lo, hi]
        elif c == "i":
            new_spec.append("i")
            new_idx.append(idx[k])
            k += 1
        else:
            new_spec.append("a")
    if not changed:
        return None
    if set(new_spec) == {"a"} and x.type == op.result.type:
        return [x]
    return [b.emit1("slice", [x] + new_idx, {"spec": "".join(new_spec)})]


def simplify(fn: ir.Function) -> ir.Function:
    """Fold, CSE, rewrite (`_rewrite`) and DCE `fn` in place (and return it)."""
    _cse_fold(fn.body, {}, {})
    for _ in range(4):
        if not _rewrite(fn.body, {}):
            break
        _cse_fold(fn.body, {}, {})
    while True:
        used = set()
        _used(fn.body, used)
        if not (_dce(fn.body, used) | _dead_carries(fn.body, used) | _invariant_carries(fn.body)):
            break
    return fn


__all__ = ["simplify"]
