"""Full Jacobians by vector-mode forward differentiation: the identity basis of the chosen input is
built inside the kernel and pushed through one JVP pass (the primal is computed once)."""
from __future__ import annotations

from .. import ir
from ..builder import Builder
from ..diagnostics import DslTypeError
from ..ir import Value, is_float
from .jvp import W_DIM, jvp_function


def _subst_dim(d, subst):
    if isinstance(d, tuple):
        return ir.dim_op(d[0], _subst_dim(d[1], subst), _subst_dim(d[2], subst))
    return subst.get(d, d) if isinstance(d, str) else d


def _subst_type(t, subst):
    if not subst or not t.shape:
        return t
    return ir.Type(t.dtype, tuple(_subst_dim(d, subst) for d in t.shape), t.weak)


def _subst_attrs(attrs, subst):
    out = dict(attrs)
    if subst and "types" in out:
        out["types"] = tuple(_subst_type(t, subst) for t in out["types"])
    if subst and "shape" in out:
        out["shape"] = tuple(_subst_dim(d, subst) for d in out["shape"])
    return out


def clone_region(b: Builder, block: ir.Block, env: dict, subst=None) -> ir.Block:
    new = ir.Block([Value(_subst_type(a.type, subst), a.hint, sym=a.sym) for a in block.args])
    for a, na in zip(block.args, new.args):
        env[a] = na
    with b.at(new):
        for op in block.ops:
            clone_into(b, op, env, subst)
    return new


def clone_into(b: Builder, op: ir.Op, env: dict, subst=None) -> ir.Op:
    """Deep-copy `op` (regions included) at `b`, renaming operands through `env` and dim
    symbols through `subst`."""
    regions = [clone_region(b, r, env, subst) for r in op.regions]
    results = []
    for r in op.results:
        nr = Value(_subst_type(r.type, subst), r.hint, sym=r.sym)
        env[r] = nr
        results.append(nr)
    new = ir.Op(op.prim, [env.get(o, o) for o in op.operands], results, _subst_attrs(op.attrs, subst),
                regions, op.loc)
    b.block.ops.append(new)
    return new


def inline(b: Builder, fn: ir.Function, args: list, subst=None) -> list:
    """Inline `fn`'s body at `b` with its parameters bound to `args`; returns its results."""
    env = dict(zip(fn.params, args))
    for op in fn.body.ops[:-1]:
        clone_into(b, op, env, subst)
    return [env.get(v, v) for v in fn.body.terminator.operands]


def identity_basis(b: Builder, x: Value) -> Value:
    """I reshaped to (N, *x.shape), N = x.size: row w is the w-th unit vector of x's space."""
    dims = b.dims_of(x)
    n = b.const(1, "i64")
    for d in dims:
        n = b.binary("mul", n, d)
    n.sym = None
    size_sym = 1
    for s in x.type.shape:
        size_sym = ir.dim_op("mul", size_sym, s)
    shape = (size_sym,) + tuple(x.type.shape)
    zero = b.const(0, x.type.dtype)
    basis = b.broadcast_to(zero, shape, [n] + dims, bdims=())
    body = ir.Block([Value(ir.Type("i64"), "w"), Value(basis.type, "basis")])
    with b.at(body):
        w, cur = body.args
        idx, rest = [w], w
        for k in reversed(range(x.type.rank)):
            idx.insert(1, b.emit1("mod", [rest, dims[k]]) if k > 0 else rest)
            if k > 0:
                rest = b.emit1("floordiv", [rest, dims[k]])
        one = b.const(1, x.type.dtype)
        new = b.emit1("store", [cur, one] + idx, {"spec": "i" * (x.type.rank + 1)})
        b.terminate("yield", [new])
    return b.emit1("for", [b.const(0, "i64"), n, b.const(1, "i64"), basis], {"types": (basis.type,)}, [body])


def jacfwd_function(fn: ir.Function, argnums: tuple, as_tuple: bool) -> ir.Function:
    """params -> Jacobian(s) of every output w.r.t. params[argnums], shape out.shape + in.shape."""
    params = [Value(p.type, p.hint, sym=p.sym) for p in fn.params]
    block = ir.Block(list(params))
    b = Builder(block, loc=fn.loc)
    outs = []
    for k in argnums:
        if not -len(params) <= k < len(params):
            raise DslTypeError(f"argnums {k} is out of range for a kernel of {len(params)} argument(s)", fn.loc)
        k %= len(params)
        if not is_float(params[k].type.dtype):
            raise DslTypeError(f"cannot differentiate with respect to integer parameter "
                               f"'{fn.param_names[k]}'", fn.loc)
        x = params[k]
        vjvp = jvp_function(fn, vector=True, wrt=[k])
        basis = identity_basis(b, x)
        res = inline(b, vjvp, params + [basis], {W_DIM: basis.type.shape[0]})
        n_out = len(res) // 2
        for t in res[n_out:]:
            # t: (N, *out) -> (*out, N); for a scalar input the basis axis has extent 1
            r = t.type.rank
            jac = b.emit1("transpose", [t], {"perm": tuple(range(1, r)) + (0,)}) if r > 1 else t
            if x.type.rank == 0:
                jac = b.emit1("slice", [jac, b.const(0, "i64")], {"spec": "a" * (r - 1) + "i"}) if r > 1 else \
                    b.emit1("index", [jac, b.const(0, "i64")], {"spec": "i"})
            elif x.type.rank > 1:        # (*out, N) -> (*out, *x.shape), N = x.size in C order
                shape = tuple(jac.type.shape[:-1]) + tuple(x.type.shape)
                jac = b.emit1("reshape", [jac] + b.dims_of(jac)[:-1] + b.dims_of(x), {"shape": shape})
            outs.append(jac)
    b.terminate("return", outs)
    names = [f"jac{k}" for k in range(len(outs))]
    return ir.Function(f"jacfwd_{fn.name}", params, block, list(fn.param_names), names,
                       tuple_result=as_tuple or len(outs) > 1, loc=fn.loc, boundscheck=fn.boundscheck)
