"""Reverse mode through structured control flow: the forward and backward sweeps.

The input is a linearization (the JVP of a kernel): its ops are primal (computing values and
residuals) or linear (in the tangents). The forward sweep re-emits the primal ops; the backward
sweep walks the linear ops in reverse, applying transpose rules, and accumulates cotangents.

Loops: a loop with tangent carries is run forward with two-level checkpointing: the primal carries
are saved once per segment of K = ceil(sqrt(T)) steps (T the trip count). The reverse loop walks
the segments backwards; for each it recomputes the segment's K states from its checkpoint, then
walks them backwards, re-emitting the step's primal ops (the residuals) and transposing its linear
ops. The recomputation of segment s - 1 and the walk through segment s are the two regions of a
`fork` (prims/control.py: on the CPU, two threads), over two sets of segment tapes. At most
ceil(T/K) + 2K <= 3 sqrt(T) + 1 states are stored, and the primal is recomputed once.
A `while` loop first counts its trips (one extra primal pass), then is reversed like a `for`.
Cotangents of linear values captured from outside a loop body are extra carries of the reverse loop.
`if`: the primal-only `if` runs forward; the reverse is an `if` on the same condition whose branches
re-emit their primal ops and transpose their linear ops.
"""
from __future__ import annotations

from .. import ir
from ..builder import Builder
from ..diagnostics import UnsupportedError
from ..ir import Type, Value
from ..prims import PRIMS, TypeRuleError
from .jacobian import clone_into

CONTROL = ("for", "while", "if")


def _uses(op: ir.Op):
    yield from op.operands
    for r in op.regions:
        for inner in ir.walk_ops(r):
            yield from inner.operands


def _defined(region: ir.Block) -> set:
    out = set(region.args)
    for op in ir.walk_ops(region):
        out.update(op.results)
        for r in op.regions:
            out.update(r.args)
    return out


def _outer_factors(c: Value):
    """(u, x) when c = u[:, None] * x[None, :] for vectors u and x (what the transpose of
    `A @ x` gives A), else None."""
    op = c.owner
    if not isinstance(op, ir.Op) or op.prim != "mul" or c.type.rank != 2:
        return None
    p, q = op.operands
    if not all(isinstance(o.owner, ir.Op) and o.owner.prim == "broadcast_in_dim" for o in (p, q)):
        return None
    for col, row in ((p, q), (q, p)):
        u, x = col.owner.operands[0], row.owner.operands[0]
        if (tuple(col.owner.attrs["bdims"]) == (0,) and tuple(row.owner.attrs["bdims"]) == (1,)
                and u.type.rank == 1 and x.type.rank == 1 and u.type.dtype == x.type.dtype == c.type.dtype):
            return u, x
    return None


class Reverse:
    """State of one reverse-mode transformation (values of the linearization -> new program)."""

    def __init__(self, b: Builder, env: dict, linear: set, tc, dim_value=lambda d: None):
        self.b, self.env, self.linear, self.tc = b, env, linear, tc
        self.dim_value = dim_value            # symbolic dim -> its run-time value here, or None
        self.checks = True                    # False while re-emitting steps the forward sweep checked

    # ---- which values are linear -----------------------------------------------------------
    def mark(self, ops):
        for op in ops:
            if op.prim in CONTROL:
                nt = len(op.attrs.get("tangents", ()))
                n_p = len(op.results) - nt
                skip = 1 if op.prim == "for" else 0
                for region in op.regions:
                    if op.prim != "if":
                        self.linear.update(region.args[skip + n_p:])
                    self.mark(region.ops)
                self.linear.update(op.results[n_p:])
            elif any(o in self.linear for o in op.operands):
                self.linear.update(op.results)

    def _n_primal(self, op) -> int:
        return len(op.results) - len(op.attrs.get("tangents", ()))

    def _touches_linear(self, op) -> bool:
        return any(r in self.linear for r in op.results) or any(o in self.linear for o in _uses(op))

    def _ev(self, v):
        return self.env.get(v, v)

    def _captured(self, op) -> list:
        """Linear values defined outside op's regions and used inside them (in first-use order)."""
        inside = set()
        for r in op.regions:
            inside |= _defined(r)
        seen, out = set(), []
        for r in op.regions:
            for inner in ir.walk_ops(r):
                for o in inner.operands:
                    if o in self.linear and o not in inside and o not in seen:
                        seen.add(o)
                        out.append(o)
        return out

    # ---- forward sweep ---------------------------------------------------------------------------
    def emit_primal(self, op):
        """Re-emit `op` without its linear parts."""
        b = self.b
        if not self._touches_linear(op):
            clone_into(b, op, self.env, checks=self.checks)
            return
        if not op.regions:
            return
        n_p = self._n_primal(op)
        types = tuple(r.type for r in op.results[:n_p])
        if op.prim == "for":
            region = op.regions[0]
            body = self._primal_region(region, 1, n_p, n_p)
            outs = b.emit("for", [self._ev(o) for o in op.operands[:3 + n_p]], {"types": types}, [body])
        elif op.prim == "while":
            cond = self._primal_region(op.regions[0], 0, n_p, 1)
            body = self._primal_region(op.regions[1], 0, n_p, n_p)
            outs = b.emit("while", [self._ev(o) for o in op.operands[:n_p]], {"types": types}, [cond, body])
        else:
            blocks = [self._primal_region(r, 0, 0, n_p) for r in op.regions]
            outs = b.emit("if", [self._ev(op.operands[0])], {"types": types}, blocks)
        for r, o in zip(op.results, outs):
            self.env[r] = o

    def _primal_region(self, region, skip, n_args, n_yield):
        block = ir.Block([Value(a.type, a.hint, sym=a.sym) for a in region.args[:skip + n_args]])
        for a, na in zip(region.args, block.args):
            self.env[a] = na
        with self.b.at(block):
            for inner in region.ops[:-1]:
                self.emit_primal(inner)
            self.b.terminate("yield", [self._ev(y) for y in region.terminator.operands[:n_yield]])
        return block

    def forward(self, ops, prebound=frozenset()) -> list:
        """Emit the primal part of `ops` (except ops whose results are `prebound`: loaded from a
        tape); returns what the backward sweep needs, in order."""
        b, tc = self.b, self.tc
        records = []
        for op in ops:
            if op.results and all(r in prebound for r in op.results):
                continue
            linear_results = any(r in self.linear for r in op.results)
            if not op.regions:
                if linear_results:
                    with b.located(op.loc):
                        from .transpose import _shape_dims
                        tc._dims[op.results[0]] = _shape_dims(tc, op, self.linear)
                    records.append((op, None))
                else:
                    clone_into(b, op, self.env, checks=self.checks)
                continue
            if not linear_results:
                self.emit_primal(op)
                continue
            with b.located(op.loc):
                info = self.emit_primal(op) if op.prim == "if" else self.checkpointed_forward(op)
                n_p = self._n_primal(op)
                for j, k in enumerate(op.attrs["tangents"]):
                    tc._dims[op.results[n_p + j]] = tc.dims(op.results[k])
            records.append((op, info))
        return records

    # ---- loops -------------------------------------------------------------------------------------
    def _residuals(self, region) -> list:
        """Primal values computed at the top level of a loop body that its linear ops read, and
        whose extents are known before the loop (so a tape of them can be allocated)."""
        top = [r for op in region.ops[:-1] if not op.regions for r in op.results if r not in self.linear]
        top_set = set(top)
        used = set()
        for op in ir.walk_ops(region):
            if not op.regions and any(r in self.linear for r in op.results):
                used.update(o for o in op.operands if o in top_set)
        return [r for r in top if r in used and all(self.dim_value(d) is not None for d in r.type.shape)]

    def _i64(self, v):
        return self.b.i64(v)

    def _trip_count(self, lo, hi, step):
        b = self.b
        one, zero = b.const(1, "i64"), b.const(0, "i64")
        up = b.binary("floordiv", b.binary("add", b.binary("sub", hi, lo), b.binary("sub", step, one)), step)
        neg = b.emit1("neg", [step])
        down = b.binary("floordiv", b.binary("sub", b.binary("sub", lo, hi), b.binary("add", step, one)), neg)
        n = b.emit1("select", [b.emit1("gt", [step, zero]), up, down])
        return b.emit1("maximum", [n, zero])

    def _state_buffer(self, count, like):
        """zeros((count, *like.shape)) of like's dtype: storage for `count` states like `like`."""
        b = self.b
        z = b.const(0, like.type.dtype)
        shape = (ir.fresh_dim(),) + tuple(like.type.shape)
        return b.broadcast_to(z, shape, [count] + b.dims_of(like), bdims=())

    def _tape_buffer(self, count, r: Value):
        """zeros((count, *r.shape)) for a residual whose extents are known before the loop."""
        b = self.b
        dt = r.type.dtype
        shape = (ir.fresh_dim(),) + tuple(r.type.shape)
        return b.broadcast_to(b.const(0, dt), shape, [count] + [self.dim_value(d) for d in r.type.shape], bdims=())

    def _rows(self, count, like, axis):
        """zeros((count, like.shape[axis])): a tape of `count` vectors along axis of `like`."""
        b = self.b
        shape = (ir.fresh_dim(), like.type.shape[axis])
        return b.broadcast_to(b.const(0, like.type.dtype), shape, [count, b.dim(like, axis)], bdims=())

    def _states_read_back(self, op, residuals) -> list:
        """Indices of the loop's primal carries that its linear ops depend on other than through
        the taped residuals: the states the backward walk must load (the others' tapes are not
        kept; e.g. the states, when only the gradient of A in `x = f(A @ x)` reads them)."""
        region = op.regions[-1]
        skip = 1 if op.prim == "for" else 0
        n_p = self._n_primal(op)
        position = {a: i for i, a in enumerate(region.args[skip:skip + n_p])}
        top = {r: o for o in region.ops[:-1] for r in o.results}
        taped = set(residuals)
        work = []
        for o in region.ops[:-1]:
            if (o.regions and self._touches_linear(o)) or any(r in self.linear for r in o.results):
                work += [v for v in _uses(o) if v not in self.linear]
        need, seen = set(), set()
        while work:
            v = work.pop()
            if v in seen or v in taped:
                continue
            seen.add(v)
            if v in position:
                need.add(position[v])
            elif v in top:
                work += list(_uses(top[v]))
        return sorted(need)

    def _placeholder(self, like: Value) -> Value:
        """Zeros shaped like `like` (a state the walk does not read)."""
        b = self.b
        z = b.const(0, like.type.dtype)
        return z if like.type.is_scalar else b.broadcast_to(z, like.type.shape, b.dims_of(like), bdims=())

    def _save(self, buf, state, slot):
        spec = "i" + "a" * state.type.rank
        return self.b.emit1("store", [buf, state, slot], {"spec": spec})

    def _load(self, buf, slot, like_type):
        b = self.b
        if like_type.is_scalar:
            return b.emit1("index", [buf, slot], {"spec": "i"})
        return b.emit1("slice", [buf, slot], {"spec": "i" + "a" * like_type.rank})

    def _step(self, op, j, state):
        """Emit one primal step of loop `op` at step number j (0-based) from `state`; returns the
        next state."""
        b = self.b
        region = op.regions[-1]
        n_p = self._n_primal(op)
        if op.prim == "for":
            lo, step = self._loop_lo_step(op)
            self.env[region.args[0]] = b.binary("add", lo, b.binary("mul", j, step))
        skip = 1 if op.prim == "for" else 0
        for a, v in zip(region.args[skip:skip + n_p], state):
            self.env[a] = v
        for inner in region.ops[:-1]:
            self.emit_primal(inner)
        return [self._ev(y) for y in region.terminator.operands[:n_p]]

    def _loop_lo_step(self, op):
        return self._ev(op.operands[0]), self._ev(op.operands[2])

    def _loop_of(self, lo, hi, carried, body_fn, hint="j"):
        """Emit `for j in range(lo, hi)` carrying `carried`; body_fn(j, args) -> next values."""
        b = self.b
        block = ir.Block([Value(Type("i64"), hint)] + [Value(c.type, c.hint) for c in carried])
        with b.at(block):
            nxt = body_fn(block.args[0], list(block.args[1:]))
            b.terminate("yield", nxt)
        return b.emit("for", [lo, hi, b.const(1, "i64")] + list(carried),
                      {"types": tuple(c.type for c in carried)}, [block])

    def checkpointed_forward(self, op):
        b = self.b
        n_p = self._n_primal(op)
        if op.prim == "for":
            inits = [self._ev(o) for o in op.operands[3:3 + n_p]]
            lo, hi, step = (self._ev(o) for o in op.operands[:3])
            n = self._trip_count(lo, hi, step)
        else:
            inits = [self._ev(o) for o in op.operands[:n_p]]
            n, final = self._count_while(op, inits)
        inits = [b.strong(v) if v.type.weak else v for v in inits]
        k = b.emit1("maximum", [b.cast(b.unary("ceil", b.unary("sqrt", b.cast(n, "f64"))), "i64"),
                                b.const(1, "i64")])
        nck = b.binary("floordiv", b.binary("add", n, b.binary("sub", k, b.const(1, "i64"))), k)
        bufs = [self._state_buffer(nck, v) for v in inits]

        def segment(s, args):
            state, cks = args[:n_p], args[n_p:]
            cks = [self._save(c, v, s) for c, v in zip(cks, state)]
            j0 = b.binary("mul", s, k)
            j1 = b.emit1("minimum", [b.binary("add", j0, k), n])
            state = self._loop_of(j0, j1, state, lambda j, st: self._step(op, j, st))
            return list(state) + cks
        outs = self._loop_of(b.const(0, "i64"), nck, inits + bufs, segment, hint="seg")
        if op.prim == "for":
            for r, o in zip(op.results[:n_p], outs[:n_p]):
                self.env[r] = o
        else:
            for r, o in zip(op.results[:n_p], final):
                self.env[r] = o
        return {"n": n, "k": k, "nck": nck, "bufs": outs[n_p:], "types": [v.type for v in inits], "inits": inits}

    def _count_while(self, op, inits):
        """Run the primal `while` once, counting its trips: (count, final state)."""
        b = self.b
        n_p = self._n_primal(op)
        cond_r, body_r = op.regions
        cond = ir.Block([Value(v.type, a.hint) for v, a in zip(inits, cond_r.args)] + [Value(Type("i64"), "trips")])
        for a, na in zip(cond_r.args, cond.args):
            self.env[a] = na
        with b.at(cond):
            for inner in cond_r.ops[:-1]:
                self.emit_primal(inner)
            b.terminate("yield", [self._ev(cond_r.terminator.operands[0])])
        body = ir.Block([Value(v.type, a.hint) for v, a in zip(inits, body_r.args)] + [Value(Type("i64"), "trips")])
        with b.at(body):
            nxt = self._step(op, None, body.args[:n_p])
            b.terminate("yield", nxt + [b.binary("add", body.args[-1], b.const(1, "i64"))])
        types = tuple(v.type for v in inits) + (Type("i64"),)
        outs = b.emit("while", inits + [b.const(0, "i64")], {"types": types}, [cond, body])
        return outs[-1], outs[:n_p]

    # ---- backward sweep -------------------------------------------------------------------------------
    def backward(self, records, ct_env: dict):
        b = self.b
        for op, info in reversed(records):
            with b.located(op.loc):
                if op.prim in ("for", "while"):
                    self.reverse_loop(op, info, ct_env)
                elif op.prim == "if":
                    self.reverse_if(op, ct_env)
                else:
                    self.transpose_op(op, ct_env)

    def accumulate(self, ct_env, v, c):
        if c is None or v not in self.linear:
            return
        ct_env[v] = c if v not in ct_env else self.b.emit1("add", [ct_env[v], c])

    def transpose_op(self, op, ct_env):
        ct = ct_env.pop(op.results[0], None)
        if ct is None:
            return
        rule = PRIMS[op.prim].transpose
        if rule is None:
            raise UnsupportedError(f"primitive '{op.prim}' has no transpose rule (needed for reverse mode)", op.loc)
        try:
            contribs = rule(self.tc, op, ct, [o in self.linear for o in op.operands])
        except TypeRuleError as e:              # a rule's own limitation, reported at the op
            raise UnsupportedError(f"reverse mode: {e}", op.loc) from None
        for o, c in zip(op.operands, contribs):
            self.accumulate(ct_env, o, c)

    def _ct_or_zeros(self, ct_env, v, pop=True):
        c = ct_env.pop(v, None) if pop else ct_env.get(v)
        return c if c is not None else self.tc.zeros(v)

    def reverse_loop(self, op, info, ct_env):
        b, tc = self.b, self.tc
        n_p = self._n_primal(op)
        order = op.attrs["tangents"]
        nt = len(order)
        region = op.regions[-1]
        skip = 1 if op.prim == "for" else 0
        ct0 = [self._ct_or_zeros(ct_env, op.results[n_p + j]) for j in range(nt)]
        captured = self._captured(op)
        acc0 = [self._ct_or_zeros(ct_env, v) for v in captured]
        n, k, nck, bufs, types = info["n"], info["k"], info["nck"], info["bufs"], info["types"]
        residuals = self._residuals(region)

        inits = info["inits"]
        kept = self._states_read_back(op, residuals)        # the states the walk reads
        ns = len(kept)
        # two sets of segment buffers (states, then residual tapes): while the walk reads one,
        # the refill of the segment before it writes the other (`fork`, control.py)
        cur0 = [self._state_buffer(k, inits[i]) for i in kept] + [self._tape_buffer(k, r) for r in residuals]
        spare0 = [b.broadcast_to(b.const(0, v.type.dtype), v.type.shape, b.dims_of(v), bdims=()) for v in cur0]
        nb = len(cur0)
        outer = [v.type.rank == 2 and ir.is_float(v.type.dtype) for v in captured]
        na = len(captured)

        def refill_segment(s, spare):
            """Recompute segment s's states and residuals from its checkpoint into `spare`
            (nothing when s < 0)."""
            sc = b.emit1("maximum", [s, b.const(0, "i64")])
            start = [self._load(buf, sc, t) for buf, t in zip(bufs, types)]
            j0 = b.binary("mul", sc, k)
            m = b.emit1("minimum", [b.binary("sub", b.emit1("minimum", [b.binary("add", j0, k), n]), j0),
                                    b.binary("mul", b.emit1("maximum", [b.binary("add", s, b.const(1, "i64")),
                                                                         b.const(0, "i64")]), k)])

            def refill(q, a):
                st, sg, tp = a[:n_p], a[n_p:n_p + ns], a[n_p + ns:]
                sg = [self._save(g, st[i], q) for g, i in zip(sg, kept)]
                nxt = self._step(op, b.binary("add", j0, q), st)
                tp = [self._save(t, b.strong(self._ev(r)) if self._ev(r).type.weak else self._ev(r), q)
                      for t, r in zip(tp, residuals)]
                return nxt + sg + tp
            return list(self._loop_of(b.const(0, "i64"), m, start + list(spare), refill, hint="q")[n_p:])

        def walk_segment(s, cur, cts, accs):
            """Walk segment s backwards over its refilled states and residuals `cur` (no steps
            when s is past the last segment)."""
            filled, taped = cur[:ns], cur[ns:]
            j0 = b.binary("mul", s, k)
            m = b.emit1("maximum", [b.binary("sub", b.emit1("minimum", [b.binary("add", j0, k), n]), j0),
                                    b.const(0, "i64")])

            # a rank-2 cotangent whose step contributions are outer products u x^T (A's in
            # `A @ x`): u and x go to one row each of two tapes, and the segment's sum is one
            # matrix product U^T X after the walk (`_outer_factors`)
            tapes_u = [self._rows(k, acc, 0) for acc, o in zip(accs, outer) if o]
            tapes_x = [self._rows(k, acc, 1) for acc, o in zip(accs, outer) if o]
            batched = [False] * len(captured)
            x_rows = [None] * len(tapes_x)

            def back(qr, a):
                cts, accs, us, xs = a[:nt], a[nt:nt + na], a[nt + na:nt + na + len(tapes_u)], a[nt + na + len(tapes_u):]
                q = b.binary("sub", b.binary("sub", m, b.const(1, "i64")), qr)
                state = [self._placeholder(v) for v in inits]     # read by dead code only
                for g, i in zip(filled, kept):
                    state[i] = self._load(g, q, types[i])
                if op.prim == "for":
                    lo, step = self._loop_lo_step(op)
                    self.env[region.args[0]] = b.binary("add", lo, b.binary("mul", b.binary("add", j0, q), step))
                for a_, v in zip(region.args[skip:skip + n_p], state):
                    self.env[a_] = v
                for r, tape in zip(residuals, taped):
                    self.env[r] = self._load(tape, q, r.type)
                for j, kk in enumerate(order):
                    tc._dims[region.args[skip + n_p + j]] = tc.dims(region.args[skip + kk])
                records = self.forward(region.ops[:-1], prebound=frozenset(residuals))
                local = {}
                for j in range(nt):
                    self.accumulate(local, region.terminator.operands[n_p + j], cts[j])
                self.backward(records, local)
                new_cts = []
                for j in range(nt):
                    arg = region.args[skip + n_p + j]
                    c = local.pop(arg, None)
                    new_cts.append(c if c is not None else tc.zeros(arg))
                new_accs, new_us, new_xs = [], list(us), list(xs)
                t = 0
                for i, (v, acc) in enumerate(zip(captured, accs)):
                    c = local.pop(v, None)
                    factors = _outer_factors(c) if outer[i] and c is not None else None
                    if factors is not None:
                        batched[i] = True
                        new_us[t] = self._save(us[t], factors[0], q)
                        x = factors[1].owner
                        if (x.prim == "slice" and x.attrs["spec"] == "ia" and x.operands[1] is q
                                and any(x.operands[0] is g for g in filled)):
                            x_rows[t] = x.operands[0]           # x is the step's state: its tape
                        else:
                            new_xs[t] = self._save(xs[t], factors[1], q)
                        new_accs.append(acc)
                    else:
                        new_accs.append(acc if c is None else b.emit1("add", [acc, c]))
                    t += outer[i]
                return new_cts + new_accs + new_us + new_xs
            walked = self._loop_of(b.const(0, "i64"), m, list(cts) + list(accs) + tapes_u + tapes_x, back,
                                   hint="qr")
            cts, accs = list(walked[:nt]), list(walked[nt:nt + na])
            us, xs = walked[nt + na:nt + na + len(tapes_u)], walked[nt + na + len(tapes_u):]
            t = 0
            for i in range(na):
                if batched[i]:            # rows past m are zeros: the sum is over the segment's steps
                    ut = b.emit1("transpose", [us[t]], {"perm": (1, 0)})
                    rows = x_rows[t] if x_rows[t] is not None else xs[t]
                    accs[i] = b.emit1("add", [accs[i], b.emit1("matmul", [ut, rows])])
                t += outer[i]
            return cts + accs

        def segment(r, args):
            cts, accs = args[:nt], args[nt:nt + na]
            cur, spare = args[nt + na:nt + na + nb], args[nt + na + nb:]
            s = b.binary("sub", nck, r)           # walked; segment s - 1 is refilled meanwhile
            regions = []
            for emit in (lambda: refill_segment(b.binary("sub", s, b.const(1, "i64")), spare),
                         lambda: walk_segment(s, cur, cts, accs)):
                block = ir.Block()
                with b.at(block):
                    ys = emit()
                    b.terminate("yield", ys)
                regions.append((block, ys))
            types_ = tuple(y.type for _, ys in regions for y in ys)
            outs = b.emit("fork", [], {"types": types_, "split": nb}, [blk for blk, _ in regions])
            refilled, walked = outs[:nb], outs[nb:]
            return list(walked) + list(refilled) + list(cur)
        saved, self.checks = self.checks, False
        # segment nck - 1 is refilled alone first; then each trip walks one and refills the next
        trips = b.binary("add", nck, b.emit1("minimum", [nck, b.const(1, "i64")]))
        outs = self._loop_of(b.const(0, "i64"), trips, ct0 + acc0 + cur0 + spare0, segment, hint="rseg")
        self.checks = saved
        first = 3 if op.prim == "for" else 0
        for j in range(nt):
            self.accumulate(ct_env, op.operands[first + n_p + j], outs[j])
        for v, o in zip(captured, outs[nt:]):
            self.accumulate(ct_env, v, o)

    def reverse_if(self, op, ct_env):
        b, tc = self.b, self.tc
        n_p = self._n_primal(op)
        nt = len(op.attrs["tangents"])
        cts = [ct_env.pop(op.results[n_p + j], None) for j in range(nt)]
        captured = self._captured(op)
        if not captured or all(c is None for c in cts):
            return
        blocks = []
        for region in op.regions:
            block = ir.Block()
            with b.at(block):
                records = self.forward(region.ops[:-1])
                local = {}
                for j in range(nt):
                    self.accumulate(local, region.terminator.operands[n_p + j], cts[j])
                self.backward(records, local)
                b.terminate("yield", [local.pop(v) if v in local else tc.zeros(v) for v in captured])
            blocks.append(block)
        types = tuple(y.type for y in blocks[0].terminator.operands)   # batched in vector mode
        outs = b.emit("if", [self._ev(op.operands[0])], {"types": types}, blocks)
        for v, o in zip(captured, outs):
            self.accumulate(ct_env, v, o)
