"""Reverse mode by linearize-and-transpose (JAX's design).

`vjp_function(fn)` takes the JVP of `fn` (the linearization: primal ops compute the residuals,
tangent ops are linear in the tangents), keeps the primal ops as the forward sweep and walks
the linear ops backwards, applying each primitive's transpose rule (registered beside the
primitive) to accumulate cotangents.

Control flow (checkpointed loops, `if`) is handled by compiler/ad/reverse.py.
"""
from __future__ import annotations

from .. import ir
from ..builder import Builder
from ..diagnostics import UnsupportedError
from ..ir import Type, Value, is_float
from ..prims import PRIMS
from .jvp import jvp_function


class TransposeContext:
    """What transpose rules need: the builder, the run-time extents of linear values, and, in
    vector mode, the batch width W: every cotangent then has an extra leading axis of extent W
    (W cotangents pulled back in one sweep, as `jacrev` does)."""

    def __init__(self, b: Builder, dims: dict, env: dict):
        self.b, self._dims, self.env = b, dims, env
        self.width = None                     # a Value (i64) in vector mode
        self.wsym = "_W"                      # the symbol of the batch axis in vector mode

    @property
    def batched(self) -> bool:
        return self.width is not None

    def dims(self, v: Value) -> list:
        """Run-time extents of a value of the linear program (linear or primal)."""
        if v in self._dims:
            return self._dims[v]
        return self.b.dims_of(self.env.get(v, v))

    def primal(self, v: Value) -> Value:
        return self.env.get(v, v)

    def spec(self, spec: str) -> str:
        return ("a" + spec) if self.batched else spec

    def axes(self, axes) -> tuple:
        return tuple(a + 1 for a in axes) if self.batched else tuple(axes)

    def ct_shape(self, shape) -> tuple:
        return ((self.wsym,) if self.batched else ()) + tuple(shape)

    def ct_dims(self, dims) -> list:
        return ([self.width] if self.batched else []) + list(dims)

    def broadcast(self, ct: Value, shape, dims, bdims) -> Value:
        """broadcast_in_dim of a cotangent (its batch axis, if any, stays axis 0)."""
        if self.batched:
            return self.b.broadcast_to(ct, self.ct_shape(shape), self.ct_dims(dims),
                                       bdims=(0,) + tuple(d + 1 for d in bdims))
        return self.b.broadcast_to(ct, tuple(shape), list(dims), bdims=tuple(bdims))

    def zeros(self, like: Value) -> Value:
        z = self.b.const(0, like.type.dtype)
        if like.type.is_scalar and not self.batched:
            return z
        return self.b.broadcast_to(z, self.ct_shape(like.type.shape), self.ct_dims(self.dims(like)), bdims=())

    def unbroadcast(self, ct: Value, operand: Value) -> Value:
        """Sum `ct` (shaped like a broadcast result) back to `operand`'s shape."""
        nb = 1 if self.batched else 0
        t, s = ct.type.shape[nb:], operand.type.shape
        off = len(t) - len(s)
        axes = tuple(range(off)) + tuple(off + k for k, d in enumerate(s) if d == 1 and t[off + k] != 1)
        if not axes:
            return ct
        r = self.b.emit1("reduce_sum", [ct], {"axes": self.axes(axes)})
        if r.type.shape[nb:] != s:
            r = self.broadcast(r, s, self.dims(operand),
                               [k for k, d in enumerate(s) if not (d == 1 and t[off + k] != 1)])
        return r


def _shape_dims(tc: TransposeContext, op: ir.Op, linear: set) -> list:
    """Run-time extents of a linear op's result, computed from its operands' extents."""
    b = tc.b
    r = op.results[0]
    if r.type.is_scalar:
        return []
    kind = PRIMS[op.prim].kind
    if kind == "elementwise":
        out = [None] * r.type.rank
        for o in op.operands:
            off = r.type.rank - o.type.rank
            for k, d in enumerate(o.type.shape):
                if out[off + k] is None and not (d == 1 and r.type.shape[off + k] != 1):
                    out[off + k] = tc.dims(o)[k]
        return [d if d is not None else b.const(1, "i64") for d in out]
    if op.prim == "broadcast_in_dim":
        return [tc.primal(d) for d in op.operands[1:]]
    if op.prim.startswith("reduce_"):
        xd = tc.dims(op.operands[0])
        return [d for k, d in enumerate(xd) if k not in op.attrs["axes"]]
    if op.prim == "transpose":
        xd = tc.dims(op.operands[0])
        return [xd[p] for p in op.attrs["perm"]]
    if op.prim in ("store", "add_at"):
        return tc.dims(op.operands[0])
    if op.prim == "slice":
        x = op.operands[0]
        # zeros of x's own shape (in vector mode tc.zeros(x) has the basis axis in front)
        z = b.broadcast_to(b.const(0, x.type.dtype), x.type.shape, tc.dims(x), bdims=())
        probe = b.emit1("slice", [z] + [tc.primal(o) for o in op.operands[1:]], op.attrs)
        return b.dims_of(probe)
    if op.prim == "reshape":
        return [tc.primal(d) for d in op.operands[1:]]
    if op.prim == "basis":                     # (count, *X): compiler/prims/basis.py
        return [tc.primal(op.operands[1])] + [tc.primal(d) for d in op.operands[3:]]
    if op.prim == "matmul":
        a, c = op.operands
        ad, cd = tc.dims(a), tc.dims(c)
        batch = op.attrs.get("batch")
        lead = [ad[0]] if batch == "lhs" else [cd[0]] if batch == "rhs" else []
        if batch == "lhs":
            ad = ad[1:]
        elif batch == "rhs":
            cd = cd[1:]
        return lead + (ad[:-1] if len(ad) == 2 else []) + (cd[1:] if len(cd) == 2 else [])
    raise UnsupportedError(f"reverse mode: cannot size the result of '{op.prim}'", op.loc)


def _all_operands(op: ir.Op):
    """Operands of op and of every op in its regions (regions may use enclosing values)."""
    yield from op.operands
    for r in op.regions:
        for inner in ir.walk_ops(r):
            yield from inner.operands


class ReverseProgram:
    """A function being built in reverse mode: the forward sweep is emitted on construction;
    `pullback(cts)` emits a backward sweep (it can be emitted several times, e.g. once per row of
    a Jacobian inside a loop, sharing the forward sweep and its checkpoints)."""

    def __init__(self, fn: ir.Function, b: Builder, params: list, wrt: list | None = None):
        from .jacobian import _dim_value
        from .reverse import Reverse
        self.fn, self.b = fn, b
        lin = jvp_function(fn, wrt=wrt)
        n_p = len(fn.params)
        self.tparams = lin.params[n_p:]
        self.float_idx = [k for k, p in enumerate(fn.params) if is_float(p.type.dtype)] if wrt is None else list(wrt)
        n_out = len(lin.body.terminator.operands) // 2
        self.outs_lin = lin.body.terminator.operands[:n_out]
        self.touts_lin = lin.body.terminator.operands[n_out:]
        self.env = dict(zip(lin.params[:n_p], params))
        self.tc = TransposeContext(b, {}, self.env)
        self.rev = Reverse(b, self.env, set(self.tparams), self.tc, lambda d: _dim_value(b, d, fn, params))
        self.rev.mark(lin.body.ops[:-1])
        for t, k in zip(self.tparams, self.float_idx):
            self.tc._dims[t] = b.dims_of(params[k])
        self.records = self.rev.forward(lin.body.ops[:-1])
        self.outs = [self.env.get(v, v) for v in self.outs_lin]

    def pullback(self, cts: list, width: Value | None = None, wsym="_W") -> list:
        """Cotangents of the differentiated parameters for output cotangents `cts`; with `width`,
        each cotangent carries a leading batch axis of that extent (vector mode), whose symbolic
        extent is `wsym`."""
        self.tc.width, self.tc.wsym = width, wsym
        try:
            ct_env: dict = {}
            for t, c in zip(self.touts_lin, cts):
                self.rev.accumulate(ct_env, t, c)
            self.rev.backward(self.records, ct_env)
            grads = []
            for t in self.tparams:
                g = ct_env.get(t)
                grads.append(g if g is not None else self.tc.zeros(t))
            return grads
        finally:
            self.tc.width, self.tc.wsym = None, "_W"


def vjp_function(fn: ir.Function, name: str | None = None, wrt: list | None = None) -> ir.Function:
    """params (*primals, *cotangents of the outputs) -> (*outs, *cotangents of the float params, or
    of the params in `wrt`: only those are linearized, so no work is spent on the others)."""
    params = [Value(p.type, p.hint, sym=p.sym) for p in fn.params]
    cts = [Value(Type(t.dtype, t.shape), "ct" + str(k)) for k, t in enumerate(fn.result_types)]
    block = ir.Block(params + cts)
    b = Builder(block, loc=fn.loc)
    prog = ReverseProgram(fn, b, params, wrt)
    grads = prog.pullback(cts)
    b.terminate("return", prog.outs + grads)
    names = list(fn.param_names) + [f"ct{k}" for k in range(len(cts))]
    rnames = [f"out{k}" for k in range(len(prog.outs))] + [f"d_{fn.param_names[k]}" for k in prog.float_idx]
    return ir.Function(name or fn.name + "_vjp", params + cts, block, names, rnames,
                       tuple_result=True, loc=fn.loc, boundscheck=fn.boundscheck)


def _differentiable_argnums(fn: ir.Function, argnums) -> list:
    """The sorted parameter indices to differentiate; an integer or bool one is a DslTypeError."""
    from ..diagnostics import DslTypeError
    for k in argnums:
        if not is_float(fn.params[k].type.dtype):
            raise DslTypeError(f"cannot differentiate with respect to parameter '{fn.param_names[k]}' "
                               f"of type {fn.params[k].type}", fn.loc)
    return sorted(set(argnums))


def grad_function(fn: ir.Function, argnums: tuple, with_value: bool = False,
                  as_tuple: bool = False) -> ir.Function:
    """params -> [value,] d(scalar output)/d(params[k]) for k in argnums (one fused function)."""
    from ..diagnostics import DslTypeError
    from .jacobian import inline
    outs = fn.body.terminator.operands
    if len(outs) != 1 or not outs[0].type.is_scalar or not is_float(outs[0].type.dtype):
        got = ", ".join(str(v.type) for v in outs)
        raise DslTypeError(f"grad needs a kernel returning one floating-point scalar, '{fn.name}' returns {got} "
                           "(use vjp or jacrev for other outputs)", fn.loc)
    wrt = _differentiable_argnums(fn, argnums)
    vf = vjp_function(fn, wrt=wrt)
    params = [Value(p.type, p.hint, sym=p.sym) for p in fn.params]
    block = ir.Block(list(params))
    b = Builder(block, loc=fn.loc)
    res = inline(b, vf, params + [b.const(1.0, outs[0].type.dtype)])
    grads = [res[1 + wrt.index(k)] for k in argnums]
    results = ([res[0]] if with_value else []) + grads
    b.terminate("return", results)
    rnames = (["value"] if with_value else []) + [f"d_{fn.param_names[k]}" for k in argnums]
    return ir.Function(f"grad_{fn.name}", params, block, list(fn.param_names), rnames,
                       tuple_result=as_tuple or len(results) > 1, loc=fn.loc, boundscheck=fn.boundscheck)


def unconnected_params(fn: ir.Function) -> set:
    """Indices of float parameters whose cotangent is structurally zero (the output does not
    depend on them), found from the linearization."""
    lin = jvp_function(fn)
    n_p = len(fn.params)
    from .reverse import Reverse
    linear = set(lin.params[n_p:])
    Reverse(None, {}, linear, None).mark(lin.body.ops[:-1])
    used = set()
    for op in lin.body.ops[:-1]:
        if any(r in linear for r in op.results):
            used.update(o for o in _all_operands(op) if o in linear)
    n_out = len(lin.body.terminator.operands) // 2
    used.update(v for v in lin.body.terminator.operands[n_out:] if v in linear)
    float_idx = [k for k, p in enumerate(fn.params) if is_float(p.type.dtype)]
    return {k for t, k in zip(lin.params[n_p:], float_idx) if t not in used}


JACREV_BUDGET = 1 << 24       # elements of the (chunk, *in) cotangent block


def jacrev_function(fn: ir.Function, argnums: tuple, as_tuple: bool) -> ir.Function:
    """params -> Jacobian(s) of the single output w.r.t. params[argnums], shape out.shape + in.shape,
    by reverse mode: one pullback per output element (one in all for a scalar output)."""
    from ..diagnostics import DslTypeError
    from .jacobian import identity_basis, size_of
    outs = fn.body.terminator.operands
    if len(outs) != 1 or not is_float(outs[0].type.dtype):
        raise DslTypeError("jacrev needs a kernel with one floating-point output", fn.loc)
    out_t = outs[0].type
    wrt = _differentiable_argnums(fn, argnums)
    params = [Value(p.type, p.hint, sym=p.sym) for p in fn.params]
    block = ir.Block(list(params))
    b = Builder(block, loc=fn.loc)
    prog = ReverseProgram(fn, b, params, wrt)          # the forward sweep runs once
    if out_t.is_scalar:
        grads = prog.pullback([b.const(1.0, out_t.dtype)])
        jacs = [grads[wrt.index(k)] for k in argnums]
    else:
        # vector mode over cotangents: the identity basis of the output space is pulled back in
        # chunks of C rows through one backward sweep each (C * in.size <= JACREV_BUDGET), or
        # whole when that makes the Jacobian one lazy expression (`lazy_in_batch`)
        y = prog.outs[0]
        n = size_of(b, y)
        nsym = 1
        for d in out_t.shape:
            nsym = ir.dim_op("mul", nsym, d)
        if _jacrev_lazy(fn, prog, b, y, n):
            basis = identity_basis(b, y, start=b.const(0, "i64"), count=n, size_sym=nsym)
            grads = prog.pullback([basis], width=n, wsym=nsym)
            flat = [grads[wrt.index(k)] for k in argnums]
        else:
            flat = _jacrev_chunks(b, prog, params, argnums, wrt, y, n, nsym)
        jacs = []
        for jf, k in zip(flat, argnums):
            if out_t.rank == 1:
                jacs.append(jf)
            else:                                  # (N, *in) -> (*out, *in), N = out.size in C order
                shape = tuple(out_t.shape) + tuple(params[k].type.shape)
                jacs.append(b.emit1("reshape", [jf] + b.dims_of(y) + b.dims_of(params[k]), {"shape": shape}))
    b.terminate("return", jacs)
    return ir.Function(f"jacrev_{fn.name}", params, block, list(fn.param_names),
                       [f"jac{k}" for k in range(len(jacs))], tuple_result=as_tuple or len(jacs) > 1,
                       loc=fn.loc, boundscheck=fn.boundscheck)


def _jacrev_lazy(fn, prog, b, y, n) -> bool:
    """The whole output basis pulled back in one sweep is one lazy expression (a throw-away
    candidate, emitted aside and simplified). Kernels with control flow are chunked."""
    from .jacobian import identity_basis, lazy_in_batch
    if any(op.prim in ("for", "while", "if") for op in ir.walk_ops(fn.body)):
        return False
    wsym = ir.fresh_dim()
    block = ir.Block()
    with b.at(block):
        basis = identity_basis(b, y, start=b.const(0, "i64"), count=n, size_sym=wsym)
        b.terminate("return", prog.pullback([basis], width=n, wsym=wsym))
    return lazy_in_batch(ir.Function("candidate", [], block, [], loc=fn.loc), wsym)


def _jacrev_chunks(b, prog, params, argnums, wrt, y, n, nsym) -> list:
    """(N, *in) Jacobians, the output basis pulled back in chunks of rows; every row block is
    stored once, so the accumulators start uninitialised (`empty`)."""
    from .jacobian import identity_basis, size_of
    from .jvp import W_DIM
    biggest = b.const(1, "i64")
    for k in argnums:
        biggest = b.emit1("maximum", [biggest, size_of(b, params[k])])
    one = b.const(1, "i64")
    c = b.emit1("maximum", [b.emit1("minimum", [b.binary("floordiv", b.const(JACREV_BUDGET, "i64"), biggest), n]), one])
    jac0 = []
    for k in argnums:
        x = params[k]
        jac0.append(b.emit1("empty", [n] + b.dims_of(x), {"shape": (nsym,) + tuple(x.type.shape),
                                                          "dtype": x.type.dtype}))
    body = ir.Block([Value(Type("i64"), "c0")] + [Value(j.type, "jac") for j in jac0])
    with b.at(body):
        c0 = body.args[0]
        cnt = b.emit1("minimum", [c, b.binary("sub", n, c0)])
        basis = identity_basis(b, y, start=c0, count=cnt, size_sym=W_DIM)
        grads = prog.pullback([basis], width=cnt)
        new = []
        for jac, k in zip(body.args[1:], argnums):
            g = grads[wrt.index(k)]
            spec = "s" + "a" * params[k].type.rank
            new.append(b.emit1("store", [jac, g, c0, b.binary("add", c0, cnt)], {"spec": spec}))
        b.terminate("yield", new)
    return b.emit("for", [b.const(0, "i64"), n, c] + jac0, {"types": tuple(j.type for j in jac0)}, [body])
