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


def _subst_sym(sym, subst):
    return _subst_dim(sym, subst) if subst and sym is not None else sym


def clone_region(b: Builder, block: ir.Block, env: dict, subst=None, checks: bool = True) -> ir.Block:
    new = ir.Block([Value(_subst_type(a.type, subst), a.hint, sym=_subst_sym(a.sym, subst)) for a in block.args])
    for a, na in zip(block.args, new.args):
        env[a] = na
    with b.at(new):
        for op in block.ops:
            clone_into(b, op, env, subst, checks)
    return new


def clone_into(b: Builder, op: ir.Op, env: dict, subst=None, checks: bool = True) -> ir.Op:
    """Deep-copy `op` (regions included) at `b`, renaming operands through `env` and dim
    symbols through `subst`."""
    regions = [clone_region(b, r, env, subst, checks) for r in op.regions]
    results = []
    for r in op.results:
        nr = Value(_subst_type(r.type, subst), r.hint, sym=_subst_sym(r.sym, subst))
        env[r] = nr
        results.append(nr)
    new = ir.Op(op.prim, [env.get(o, o) for o in op.operands], results, _subst_attrs(op.attrs, subst),
                regions, op.loc, checked=op.checked and checks)
    b.block.ops.append(new)
    return new


def inline(b: Builder, fn: ir.Function, args: list, subst=None) -> list:
    """Inline `fn`'s body at `b` with its parameters bound to `args`; returns its results."""
    env = dict(zip(fn.params, args))
    for op in fn.body.ops[:-1]:
        clone_into(b, op, env, subst)
    return [env.get(v, v) for v in fn.body.terminator.operands]


def size_of(b: Builder, x: Value) -> Value:
    n = b.const(1, "i64")
    for d in b.dims_of(x):
        n = b.binary("mul", n, d)
    return n


def identity_basis(b: Builder, x: Value, start: Value | None = None, count: Value | None = None,
                   size_sym=None) -> Value:
    """Rows start .. start+count of I reshaped to (N, *x.shape), N = x.size: row w is the
    (start + w)-th unit vector of x's space (all N rows by default). A symbolic `basis` op
    (compiler/prims/basis.py): evaluated lazily, and rewritten away where its consumer allows."""
    dims = b.dims_of(x)
    if count is None:
        n = size_of(b, x)
        n.sym = None
        size_sym = 1
        for s_ in x.type.shape:
            size_sym = ir.dim_op("mul", size_sym, s_)
    else:
        n, size_sym = count, (size_sym or ir.fresh_dim())
    if start is None:
        start = b.const(0, "i64")
    shape = (size_sym,) + tuple(x.type.shape)
    return b.emit1("basis", [start, n, b.const(1, x.type.dtype)] + dims, {"shape": shape})


def _dim_value(b: Builder, d, fn: ir.Function, params: list):
    """The run-time value of a symbolic dim of `fn`'s types, or None if it is opaque."""
    if isinstance(d, int):
        return b.const(d, "i64")
    if isinstance(d, tuple):
        x, y = _dim_value(b, d[1], fn, params), _dim_value(b, d[2], fn, params)
        if x is None or y is None:
            return None
        prim = {"add": "add", "sub": "sub", "mul": "mul", "floordiv": "floordiv",
                "max": "maximum", "min": "minimum"}[d[0]]
        return b.emit1(prim, [x, y])
    if d.startswith("$"):
        k = fn.param_names.index(d[1:])
        return b.i64(params[k])
    for p, q in zip(fn.params, params):
        if d in p.type.shape:
            return b.dim(q, list(p.type.shape).index(d))
    return None


CHUNK_BUDGET = 1 << 24        # elements of the (chunk, *out) tangent block


def _mentions(d, sym) -> bool:
    if isinstance(d, tuple):
        return any(_mentions(x, sym) for x in d[1:])
    return d == sym


def lazy_in_batch(fn: ir.Function, wsym) -> bool:
    """Simplify `fn` (a throw-away candidate: the basis pushed through whole, its batch axis of
    symbolic extent `wsym`) and say whether every op that reads or makes a batched value is
    elementwise or a view. Then the basis has been rewritten away (compiler/prims/basis.py) or is
    read lazily, the Jacobian is one fused expression evaluated straight into the output, and
    chunking the basis would save no memory: jacfwd/jacrev emit it unchunked."""
    from ..passes import simplify
    from ..prims import PRIMS
    simplify(fn)

    def batched(v):
        return any(_mentions(d, wsym) for d in v.type.shape)
    for op in ir.walk_ops(fn.body):
        if op.prim in ("return", "yield", "dim"):
            continue
        if any(batched(v) for v in op.operands) or any(batched(r) for r in op.results):
            if op.prim not in PRIMS or PRIMS[op.prim].kind not in ("elementwise", "view"):
                return False
    return True


def _jacfwd_lazy(fn: ir.Function, vjvp: ir.Function, params: list, x: Value) -> bool:
    """jacfwd of x in one unchunked pass is one lazy expression (see `lazy_in_batch`)."""
    wsym = ir.fresh_dim()
    block = ir.Block()
    cb = Builder(block, loc=fn.loc)
    basis = identity_basis(cb, x, start=cb.const(0, "i64"), count=size_of(cb, x), size_sym=wsym)
    res = inline(cb, vjvp, params + [basis], {W_DIM: wsym})
    cb.terminate("return", res[len(res) // 2:])
    return lazy_in_batch(ir.Function("candidate", list(params), block, list(fn.param_names), loc=fn.loc), wsym)


def jacfwd_function(fn: ir.Function, argnums: tuple, as_tuple: bool, chunk: int | None = None) -> ir.Function:
    """params -> Jacobian(s) of every output w.r.t. params[argnums], shape out.shape + in.shape.

    The identity basis goes through one vector-mode JVP in chunks of C columns, C chosen at run
    time so that C * (size of the outputs) <= CHUNK_BUDGET (or `chunk`): the primal is computed
    once per chunk, never once per column, and memory stays bounded for wide inputs."""
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
        out_types = [t for t in fn.result_types]
        out_dims = [[_dim_value(b, d, fn, params) for d in t.shape] for t in out_types]
        if any(d is None for ds in out_dims for d in ds) or (chunk is None and _jacfwd_lazy(fn, vjvp, params, x)):
            # an output extent known only by running the kernel, or a Jacobian computed lazily
            # (e.g. predict's s(1-s)[:, None] * inputs): one chunk
            basis = identity_basis(b, x)
            res = inline(b, vjvp, params + [basis], {W_DIM: basis.type.shape[0]})
            touts = res[len(res) // 2:]
            outs.extend(_basis_axis_last(b, t, x) for t in touts)
        else:
            jacs = _chunked_tangents(b, fn, vjvp, params, x, out_types, out_dims, chunk)
            outs.extend(_unflatten_last(b, j, x) for j in jacs)
    b.terminate("return", outs)
    names = [f"jac{k}" for k in range(len(outs))]
    return ir.Function(f"jacfwd_{fn.name}", params, block, list(fn.param_names), names,
                       tuple_result=as_tuple or len(outs) > 1, loc=fn.loc, boundscheck=fn.boundscheck)


def _chunked_tangents(b, fn, vjvp, params, x, out_types, out_dims, chunk):
    """(*out, N) Jacobians for every output, the basis pushed through in chunks: chunk c0 is
    stored transposed into the columns c0:c0+cnt, so the result needs no final transposition
    (and a chunk computed lazily, e.g. rows of a matrix picked by the basis, is one pass)."""
    n = size_of(b, x)
    one = b.const(1, "i64")
    total = one
    for ds in out_dims:
        size = one
        for d in ds:
            size = b.binary("mul", size, d)
        total = b.emit1("maximum", [total, size])
    if chunk is not None:
        c = b.const(max(1, int(chunk)), "i64")
    else:
        c = b.binary("floordiv", b.const(CHUNK_BUDGET, "i64"), total)
    c = b.emit1("maximum", [b.emit1("minimum", [c, n]), one])
    nsym = 1
    for s_ in x.type.shape:
        nsym = ir.dim_op("mul", nsym, s_)
    jac0 = []
    for t, ds in zip(out_types, out_dims):
        jac0.append(b.emit1("empty", ds + [n], {"shape": tuple(t.shape) + (nsym,), "dtype": t.dtype}))
    # for c0 in range(0, n, c): jac[..., c0:c0+cnt] = (J @ basis[c0:c0+cnt].T)
    body = ir.Block([Value(ir.Type("i64"), "c0")] + [Value(j.type, "jac") for j in jac0])
    with b.at(body):
        c0 = body.args[0]
        cnt = b.emit1("minimum", [c, b.binary("sub", n, c0)])
        basis = identity_basis(b, x, start=c0, count=cnt)
        res = inline(b, vjvp, params + [basis], {W_DIM: basis.type.shape[0]})
        touts = res[len(res) // 2:]
        new = []
        for jac, t in zip(body.args[1:], touts):
            r = t.type.rank
            if r > 1:
                t = b.emit1("transpose", [t], {"perm": tuple(range(1, r)) + (0,)})
            spec = "a" * (r - 1) + "s"
            new.append(b.emit1("store", [jac, t, c0, b.binary("add", c0, cnt)], {"spec": spec}))
        b.terminate("yield", new)
    return b.emit("for", [b.const(0, "i64"), n, c] + jac0, {"types": tuple(j.type for j in jac0)}, [body])


def _basis_axis_last(b, t, x):
    """(N, *out) -> (*out, *x.shape); for a scalar input the basis axis (extent 1) is dropped."""
    r = t.type.rank
    jac = b.emit1("transpose", [t], {"perm": tuple(range(1, r)) + (0,)}) if r > 1 else t
    return _unflatten_last(b, jac, x)


def _unflatten_last(b, jac, x):
    """(*out, N) -> (*out, *x.shape); for a scalar input the basis axis (extent 1) is dropped."""
    r = jac.type.rank
    if x.type.rank == 0:
        return b.emit1("slice", [jac, b.const(0, "i64")], {"spec": "a" * (r - 1) + "i"}) if r > 1 else \
            b.emit1("index", [jac, b.const(0, "i64")], {"spec": "i"})
    if x.type.rank > 1:                      # N = x.size in C order
        shape = tuple(jac.type.shape[:-1]) + tuple(x.type.shape)
        return b.emit1("reshape", [jac] + b.dims_of(jac)[:-1] + b.dims_of(x), {"shape": shape})
    return jac
