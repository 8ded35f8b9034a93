"""Forward-mode differentiation as an IR-to-IR pass.

`jvp_function(fn)` returns a function taking the primals and one tangent per floating-point
parameter and returning the primal results followed by their tangents. The primal is computed
once; each op's tangent comes from its primitive's JVP rule (registered beside the primitive).
A tangent known to be zero is `None` (a symbolic zero) and generates no code.

Vector mode (`width=True`): every tangent carries an extra leading axis of run-time extent W,
so W directions are pushed through one pass (Enzyme's vector forward mode, used by `jacfwd`).

Control flow: `for`/`while` carry the tangents of their carried values as extra loop-carried
values (so forward mode stores nothing per iteration), `if` yields the taken branch's tangents.
"""
from __future__ import annotations

from typing import Optional

from .. import ir
from ..builder import Builder
from ..diagnostics import UnsupportedError
from ..ir import Type, Value, is_float
from ..prims import PRIMS

W_DIM = "_W"


class JVPContext:
    """What JVP rules need: the builder, and the batch width in vector mode."""

    def __init__(self, b: Builder, width: Optional[Value]):
        self.b = b
        self.width = width            # a Value (i64) in vector mode, else None

    @property
    def batched(self) -> bool:
        return self.width is not None

    def tshape(self, primal_type: Type) -> tuple:
        return ((W_DIM,) if self.batched else ()) + tuple(primal_type.shape)

    def ttype(self, primal_type: Type) -> Type:
        return Type(primal_type.dtype, self.tshape(primal_type))

    def tdims(self, primal: Value) -> list:
        return ([self.width] if self.batched else []) + self.b.dims_of(primal)

    def zeros(self, primal: Value) -> Value:
        """A zero tangent for `primal` (materialised where a symbolic zero cannot stay)."""
        z = self.b.const(0, primal.type.dtype)
        if not self.batched and primal.type.is_scalar:
            return z
        return self.b.broadcast_to(z, self.tshape(primal.type), self.tdims(primal), bdims=())

    def bcast(self, t: Value, operand: Value, result: Value) -> Value:
        """The tangent `t` of `operand`, broadcast (NumPy rules) to `result`'s tangent shape."""
        if operand.type.shape == result.type.shape:
            return t
        if not self.batched:
            return self.b.broadcast_to(t, result.type.shape, self.b.dims_of(result))
        off = result.type.rank - operand.type.rank
        bd = (0,) + tuple(off + k + 1 for k in range(operand.type.rank))
        shape = self.tshape(result.type)
        # axes of extent 1 that broadcast must not be mapped onto a larger axis
        if any(d == 1 and result.type.shape[off + k] != 1 for k, d in enumerate(operand.type.shape)):
            keep = [k for k, d in enumerate(operand.type.shape) if not (d == 1 and result.type.shape[off + k] != 1)]
            t = self._drop_unit_axes(t, operand, keep)
            bd = (0,) + tuple(off + k + 1 for k in keep)
        return self.b.broadcast_to(t, shape, self.tdims(result), bdims=bd)

    def _drop_unit_axes(self, t, operand, keep):
        spec = "a" + "".join("a" if k in keep else "i" for k in range(operand.type.rank))
        zeros = [self.b.const(0, "i64") for k in range(operand.type.rank) if k not in keep]
        return self.b.emit1("slice", [t] + zeros, {"spec": spec})

    def batch_spec(self, spec: str) -> str:
        return ("a" + spec) if self.batched else spec

    def axes(self, axes: tuple) -> tuple:
        return tuple(a + 1 for a in axes) if self.batched else tuple(axes)


def clone_op(b: Builder, op: ir.Op, env: dict) -> ir.Op:
    """A copy of a region-less op with operands renamed through `env`, appended at `b`."""
    results = []
    for r in op.results:
        nr = Value(r.type, r.hint, sym=r.sym)
        results.append(nr)
        env[r] = nr
    new = ir.Op(op.prim, [env.get(o, o) for o in op.operands], results, dict(op.attrs), [], op.loc,
                checked=op.checked)
    b.block.ops.append(new)
    return new


def _differentiable(v: Value) -> bool:
    return is_float(v.type.dtype)


def jvp_ops(ctx: JVPContext, ops, env: dict, tenv: dict):
    b = ctx.b
    for op in ops:
        if op.prim in CONTROL_JVP:
            with b.located(op.loc):
                CONTROL_JVP[op.prim](ctx, op, env, tenv)
            continue
        new = clone_op(b, op, env)
        ts = [tenv.get(o) for o in op.operands]
        if all(t is None for t in ts) or not any(_differentiable(r) for r in op.results):
            for r in op.results:
                tenv[r] = None
            continue
        rule = PRIMS[op.prim].jvp
        if rule is None:
            raise UnsupportedError(f"primitive '{op.prim}' has no forward-mode (JVP) rule", op.loc)
        with b.located(op.loc):
            outs = rule(ctx, new, list(new.operands), ts)
        for r, t in zip(op.results, outs):
            tenv[r] = t if _differentiable(r) else None


def _tangent_or_zeros(ctx, t, primal):
    return t if t is not None else ctx.zeros(primal)


def _jvp_loop_region(ctx, region: ir.Block, prefix_args, carried_new_types, nonzero, env, tenv, skip=0):
    """Differentiate a loop body with tangents for the carried values in `nonzero`; returns the new
    block and the yielded (primal values, tangent values or None)."""
    b = ctx.b
    args = [Value(a.type, a.hint, sym=a.sym) for a in prefix_args]
    cargs = [Value(t, a.hint) for t, a in zip(carried_new_types, region.args[skip:])]
    targs = {k: Value(ctx.ttype(carried_new_types[k]), "d" + region.args[skip + k].hint) for k in sorted(nonzero)}
    block = ir.Block(args + cargs + [targs[k] for k in sorted(nonzero)])
    benv, btenv = dict(env), dict(tenv)
    for old, new in zip(region.args[:skip], args):
        benv[old] = new
        btenv[old] = None
    for k, (old, new) in enumerate(zip(region.args[skip:], cargs)):
        benv[old] = new
        btenv[old] = targs.get(k)
    with b.at(block):
        jvp_ops(ctx, region.ops[:-1], benv, btenv)
    term = region.terminator
    ys = [benv.get(y, y) for y in term.operands]
    ts = [btenv.get(y) for y in term.operands]
    return block, ys, ts, benv


def _jvp_loop(ctx, op, env, tenv):
    b = ctx.b
    kind = op.prim
    nb = 3 if kind == "for" else 0
    bounds = [env.get(o, o) for o in op.operands[:nb]]
    inits = [env.get(o, o) for o in op.operands[nb:]]
    tinits = [tenv.get(o) for o in op.operands[nb:]]
    types = [r.type for r in op.results]
    body = op.regions[-1]
    skip = 1 if kind == "for" else 0
    nonzero = {k for k, t in enumerate(tinits) if t is not None and is_float(types[k].dtype)}
    while True:
        block, ys, ts, _ = _jvp_loop_region(ctx, body, body.args[:skip], types, nonzero, env, tenv, skip)
        grown = nonzero | {k for k, t in enumerate(ts) if t is not None and is_float(types[k].dtype)}
        if grown == nonzero:
            break
        nonzero = grown
    order = sorted(nonzero)
    with b.at(block):
        tys = [_tangent_or_zeros(ctx, ts[k], ys[k]) for k in order]
        b.terminate("yield", ys + tys)
    regions = [block]
    if kind == "while":
        cond = op.regions[0]
        cblock, cys, _, _ = _jvp_loop_region(ctx, cond, [], types, nonzero, env, tenv, 0)
        with b.at(cblock):
            b.terminate("yield", cys)
        regions = [cblock, block]
    tin = [_tangent_or_zeros(ctx, tinits[k], inits[k]) for k in order]
    all_types = types + [ctx.ttype(types[k]) for k in order]
    # `tangents`: result len(types) + j is the tangent of result order[j] (reverse mode reads it)
    outs = b.emit(kind, bounds + inits + tin, {"types": tuple(all_types), "tangents": tuple(order)}, regions)
    for k, r in enumerate(op.results):
        env[r] = outs[k]
        outs[k].hint = r.hint
        tenv[r] = None
    for j, k in enumerate(order):
        tenv[op.results[k]] = outs[len(types) + j]


def _jvp_if(ctx, op, env, tenv):
    b = ctx.b
    types = [r.type for r in op.results]
    blocks, yields = [], []
    for region in op.regions:
        block = ir.Block()
        benv, btenv = dict(env), dict(tenv)
        with b.at(block):
            jvp_ops(ctx, region.ops[:-1], benv, btenv)
        term = region.terminator
        blocks.append(block)
        yields.append(([benv.get(y, y) for y in term.operands], [btenv.get(y) for y in term.operands], benv))
    nonzero = sorted({k for _, ts, _ in yields for k, t in enumerate(ts) if t is not None and is_float(types[k].dtype)})
    for block, (ys, ts, _) in zip(blocks, yields):
        with b.at(block):
            b.terminate("yield", ys + [_tangent_or_zeros(ctx, ts[k], ys[k]) for k in nonzero])
    all_types = types + [ctx.ttype(types[k]) for k in nonzero]
    outs = b.emit("if", [env.get(op.operands[0], op.operands[0])],
                  {"types": tuple(all_types), "tangents": tuple(nonzero)}, blocks)
    for k, r in enumerate(op.results):
        env[r] = outs[k]
        tenv[r] = None
    for j, k in enumerate(nonzero):
        tenv[op.results[k]] = outs[len(types) + j]


CONTROL_JVP = {"for": _jvp_loop, "while": _jvp_loop, "if": _jvp_if}


def jvp_function(fn: ir.Function, vector: bool = False, name: Optional[str] = None,
                 wrt: Optional[list] = None) -> ir.Function:
    """The JVP of `fn`: params (*primals, *tangents) -> (*outs, *tangent outs), with one tangent
    per floating-point parameter (or per parameter index in `wrt`)."""
    params = [Value(p.type, p.hint, sym=p.sym) for p in fn.params]
    float_idx = [k for k, p in enumerate(fn.params) if is_float(p.type.dtype)] if wrt is None else list(wrt)
    block = ir.Block(list(params))
    b = Builder(block, default_float="f64", loc=fn.loc)
    ctx = JVPContext(b, None)
    tparams = [Value(ctx.ttype(fn.params[k].type) if not vector else
                     Type(fn.params[k].type.dtype, (W_DIM,) + tuple(fn.params[k].type.shape)),
                     "d" + fn.param_names[k]) for k in float_idx]
    block.args.extend(tparams)
    for t in tparams:
        t.owner = block
    if vector:
        if not tparams:
            raise UnsupportedError(f"kernel '{fn.name}' has no floating-point parameter to differentiate", fn.loc)
        ctx.width = b.dim(tparams[0], 0)
    env = dict(zip(fn.params, params))
    tenv = {fn.params[k]: t for k, t in zip(float_idx, tparams)}
    jvp_ops(ctx, fn.body.ops[:-1], env, tenv)
    outs = [env.get(v, v) for v in fn.body.terminator.operands]
    touts = []
    for old, new in zip(fn.body.terminator.operands, outs):
        t = tenv.get(old)
        if not is_float(new.type.dtype):     # integer outputs: a float zero tangent
            t = ctx.zeros(b.cast(new, _float_of(fn)))
        elif t is None:
            t = ctx.zeros(new)
        touts.append(t)
    b.terminate("return", outs + touts)
    names = list(fn.param_names) + [fn.param_names[k] + "_dot" for k in float_idx]
    rnames = [f"out{k}" for k in range(len(outs))] + [f"out{k}_dot" for k in range(len(outs))]
    return ir.Function(name or fn.name + "_jvp", params + tparams, block, names, rnames,
                       tuple_result=True, loc=fn.loc, boundscheck=fn.boundscheck)


def _float_of(fn):
    fl = [p.type.dtype for p in fn.params if is_float(p.type.dtype)]
    return "f32" if fl and "f64" not in fl else "f64"
