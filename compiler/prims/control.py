"""Structured control flow: `for` (counted, loop-carried values), `while`, `if` with results.

    for(lo, hi, step, *init)   region0(i, *carried) -> yield(*next)          results: carried
    while(*init)               region0(*carried) -> yield(cond: bool)
                               region1(*carried) -> yield(*next)             results: carried
    if(cond)                   region0() -> yield(*r)   region1() -> yield(*r)  results: r
    fork()                     region0() -> yield(*a)   region1() -> yield(*b)  results: a, b
                               {split = len(a)}

`fork` runs two regions that share no state: neither reads what the other computes, and each
writes only buffers it created or was handed alone. Its meaning is region0 then region1; the CPU
backend may run them at once on two threads (the reverse sweep's refill of one loop segment
beside the walk back through the next, reverse.py). Only code generation and the interpreter
see it: a derivative pass given a function with forks first inlines them (`inline_forks`).

Array carries live in loop-owned buffers: an iteration that updates a carry in place leaves the
buffer where it is; a freshly computed value is moved in (the old buffer goes back to the
allocation site), never copied; a fused new value that reads the old one only elementwise
(`x = x + h * f(x)`, `dA = dA + outer(u, v)`) is written over it.
"""
from __future__ import annotations

from llvmlite import ir as ll

from ..ir import Op, Type
from . import PRIMS, TypeRuleError, defprim, rule


def _infer_from_attrs(operands, attrs):
    return list(attrs["types"])


def _check_yield(block, types, what):
    ys = block.terminator.operands
    if [y.type.strong() for y in ys] != [t.strong() for t in types]:
        raise TypeRuleError(f"{what}: yields {[str(y.type) for y in ys]}, expected {[str(t) for t in types]}")


def _verify_for(op):
    lo, hi, step = op.operands[:3]
    for v in (lo, hi, step):
        if v.type != Type("i64"):
            raise TypeRuleError("for: bounds must be i64 scalars")
    body = op.regions[0]
    if len(body.args) != 1 + len(op.results):
        raise TypeRuleError("for: region takes the index and the carried values")
    _check_yield(body, [r.type for r in op.results], "for")


def _verify_while(op):
    cond, body = op.regions
    _check_yield(cond, [Type("bool")], "while condition")
    _check_yield(body, [r.type for r in op.results], "while body")


def _verify_if(op):
    for reg in op.regions:
        _check_yield(reg, [r.type for r in op.results], "if")


def _verify_fork(op):
    split = op.attrs["split"]
    if len(op.regions) != 2 or op.operands:
        raise TypeRuleError("fork: two regions and no operands")
    types = [r.type for r in op.results]
    _check_yield(op.regions[0], types[:split], "fork region 0")
    _check_yield(op.regions[1], types[split:], "fork region 1")


defprim("for", _infer_from_attrs, kind="control", verify=_verify_for)
defprim("while", _infer_from_attrs, kind="control", verify=_verify_while)
defprim("if", _infer_from_attrs, kind="control", verify=_verify_if)
defprim("fork", _infer_from_attrs, kind="control", verify=_verify_fork)


def inline_forks(block) -> None:
    """Replace every `fork` in `block` (and nested regions) by its two regions' ops, in order:
    what a fork means, for the passes that have no rule of their own for it (AD)."""
    from ..ir import walk_ops
    new_ops, rename = [], {}
    for op in block.ops:
        for reg in op.regions:
            inline_forks(reg)
        if op.prim != "fork":
            new_ops.append(op)
            continue
        yields = []
        for reg in op.regions:
            new_ops.extend(reg.ops[:-1])
            yields += reg.terminator.operands
        rename.update(zip(op.results, yields))
    block.ops = new_ops
    if rename:
        for op in walk_ops(block):
            op.operands = [rename.get(o, o) for o in op.operands]


# ---- code generation ----------------------------------------------------------------------
class _Carries:
    """Storage for loop-carried or branch-result values: a scalar slot, or a buffer slot + dims."""

    def __init__(self, cg, values):
        from ..codegen.function import LLTYPE, I64
        self.cg = cg
        self.types = [v.type for v in values]
        self.slots = []
        for t in self.types:
            if t.is_scalar:
                self.slots.append(cg._entry_alloca(LLTYPE[t.dtype]))
            else:
                buf = cg.new_slot(t.dtype)
                self.slots.append((buf, [cg._entry_alloca(I64) for _ in range(t.rank)]))

    def load(self):
        from ..codegen.function import ArrayVal
        cg, out = self.cg, []
        for t, s in zip(self.types, self.slots):
            if t.is_scalar:
                out.append(cg.b.load(s))
            else:
                buf, dslots = s
                out.append(ArrayVal(t.dtype, [cg.b.load(d) for d in dslots], ptr=cg.b.load(buf), slot=buf))
        return out

    def store_initial(self, values, owner_op):
        """Fill the slots from values defined outside the region (moved when dead, else copied)."""
        cg = self.cg
        for v, t, s in zip(values, self.types, self.slots):
            if t.is_scalar:
                cg.b.store(cg.get(v), s)
                continue
            buf, dslots = s
            av = cg.get(v)
            if av.ptr is not None and av.slot is not None and cg.info.dead_after(v, owner_op) \
                    and sum(x is v for x in values) == 1:
                cg.b.store(av.ptr, buf)
                cg.b.store(ll.Constant(av.slot.type.pointee, None), av.slot)
            else:
                new = cg.allocate(t.dtype, av.dims, slot=buf)
                cg.copy_into(v, new)
            for d, ds in zip(av.dims, dslots):
                cg.b.store(d, ds)

    def store_next(self, values, region_args, scope):
        """At a yield: move or copy each new value into its slot, freeing replaced buffers."""
        from ..codegen.function import ArrayVal
        cg = self.cg
        plans, copies = [], []
        carried = list(region_args[len(region_args) - len(values):]) if region_args else []
        for k, (v, t, s) in enumerate(zip(values, self.types, self.slots)):
            if t.is_scalar:
                plans.append(("scalar", cg.get(v)))
                continue
            buf, dslots = s
            av = cg.get(v)
            if av.slot is buf and av.ptr is not None:
                plans.append(("keep", av))
            elif _takeable(v, k, carried, values):
                # the carried value of another position, whose slot gets a new buffer: its
                # buffer changes slots (a loop that swaps two carries copies nothing)
                plans.append(("take", self.slots[carried.index(v)]))
            elif av.ptr is not None and av.slot is not None and av.slot in scope \
                    and sum(x is v for x in values) == 1:
                plans.append(("move", av))
            elif region_args and _in_place_ok(cg, v, buf, values):
                # written over the carried value it replaces, element by element
                copies.append((v, ArrayVal(t.dtype, av.dims, ptr=cg.b.load(buf), slot=buf)))
                plans.append(("in place", None))
            else:
                # a site of the region's scope that keeps a buffer: with the swap below, a loop
                # that yields a fused value ping-pongs two buffers instead of a malloc per step
                new = cg.allocate(t.dtype, av.dims)
                copies.append((v, new))
                plans.append(("move", new))
        cg.copy_many(copies)
        # buffers changing slots, read before any slot is written
        taken = {}
        for kind, x in plans:
            if kind == "take":
                src, src_dims = x
                taken[id(src)] = (cg.b.load(src), [cg.b.load(d) for d in src_dims])
        # every new value is computed before any old buffer is released
        for (kind, x), t, s in zip(plans, self.types, self.slots):
            if kind == "scalar":
                cg.b.store(x, s)
                continue
            if kind == "in place":
                continue
            buf, dslots = s
            if kind == "take":
                if id(buf) not in taken:          # its own old buffer is nobody's now
                    cg._free_slot(buf)
                ptr, dims = taken[id(x[0])]
                cg.b.store(ptr, buf)
                for d, ds in zip(dims, dslots):
                    cg.b.store(d, ds)
                continue
            if id(buf) in taken:                  # its old buffer went to another slot: not freed
                cg.b.store(ll.Constant(buf.type.pointee, None), buf)
            if kind == "move":
                cap = cg.slot_caps.get(id(x.slot))
                if cap is not None:
                    # swap: the allocation site keeps the replaced buffer for its next execution
                    old = cg.b.load(buf)
                    cg.b.store(x.ptr, buf)
                    cg.b.store(old, x.slot)
                    nbytes = cg.i64(cg.itemsize(t.dtype))
                    for ds in dslots:             # the replaced buffer's own extents
                        nbytes = cg.b.mul(nbytes, cg.b.load(ds))
                    cg.b.store(cg.b.select(cg.b.icmp_unsigned("==", old, ll.Constant(old.type, None)),
                                           cg.i64(0), nbytes), cap)
                else:
                    cg._free_slot(buf)
                    cg.b.store(x.ptr, buf)
                    cg.b.store(ll.Constant(x.slot.type.pointee, None), x.slot)
            for d, ds in zip(x.dims, dslots):
                cg.b.store(d, ds)


def _takeable(v, k, carried, values) -> bool:
    """Whether position k's new value v is, once, the carried value of another position j: then
    j's old buffer can move to slot k. j's own new value cannot be written over that buffer
    (`_in_place_ok` refuses a buffer another yielded value reads), and a new value reading it is
    materialised before any buffer changes slots."""
    return v in carried and carried.index(v) != k and sum(x is v for x in values) == 1


def _touches(cg, v, buf) -> bool:
    """Whether v's elements come from the buffer in slot `buf`: v is that array, or a lazy
    expression reading it."""
    av = cg.get(v)
    if v.type.is_scalar:
        return False
    if av.lazy is None:
        return av.slot is buf
    return any(_touches(cg, r, buf) for r in av.reads)


def _pointwise(cg, v, buf) -> bool:
    """Whether materialising v at index idx reads the buffer in slot `buf` (an array of v's shape)
    at idx only: through elementwise operations whose operands reading it have v's shape."""
    av = cg.get(v)
    if v.type.is_scalar or av.lazy is None:
        return True                     # computed already, or the buffer itself read at idx
    op = v.owner
    if not (isinstance(op, Op) and PRIMS[op.prim].kind == "elementwise"):
        return not _touches(cg, v, buf)   # a view (slice, transpose, broadcast...) reads elsewhere
    for o in op.operands:
        if o.type.is_scalar:
            continue
        if tuple(o.type.shape) != tuple(v.type.shape):
            if _touches(cg, o, buf):    # broadcast: one element feeds many
                return False
        elif not _pointwise(cg, o, buf):
            return False
    return True


def _in_place_ok(cg, v, buf, values) -> bool:
    """A loop's new value v (lazy, yielded once) may be written into the carried buffer `buf` it
    replaces when it reads that buffer only at the index being written and no other yielded
    value reads the buffer at all (they are materialised in the same pass). A value that does not
    read the buffer is not written there: the carried value may have been moved out of its slot
    (into an inner loop that carries it), leaving the slot empty."""
    if sum(x is v for x in values) != 1 or not _touches(cg, v, buf) or not _pointwise(cg, v, buf):
        return False
    return not any(w is not v and not w.type.is_scalar and _touches(cg, w, buf) for w in values)


@rule("for", "codegen")
def _for_cg(cg, op):
    b = cg.b
    lo, hi, step = (cg.get(v) for v in op.operands[:3])
    inits = op.operands[3:]
    cg.check(b.icmp_signed("!=", step, cg.i64(0)), "value", "range() arg 3 must not be zero", op.loc)
    carries = _Carries(cg, op.results)
    carries.store_initial(inits, op)
    ivar = cg._entry_alloca(lo.type)
    b.store(lo, ivar)
    head = cg.llfn.append_basic_block("for.head")
    body = cg.llfn.append_basic_block("for.body")
    done = cg.llfn.append_basic_block("for.done")
    b.branch(head)
    b.position_at_end(head)
    i = b.load(ivar)
    up = b.icmp_signed(">", step, cg.i64(0))
    go = b.select(up, b.icmp_signed("<", i, hi), b.icmp_signed(">", i, hi))
    b.cbranch(go, body, done)
    b.position_at_end(body)
    cg.push_scope()
    region = op.regions[0]
    term = cg.gen_block(region, [i] + carries.load())
    carries.store_next(term.operands, region.args, cg.scopes[-1])
    cg.pop_scope()
    b.store(b.add(i, step), ivar)
    b.branch(head)
    b.position_at_end(done)
    for r, v in zip(op.results, carries.load()):
        cg.set(r, v)


@rule("while", "codegen")
def _while_cg(cg, op):
    b = cg.b
    carries = _Carries(cg, op.results)
    carries.store_initial(op.operands, op)
    head = cg.llfn.append_basic_block("while.head")
    body = cg.llfn.append_basic_block("while.body")
    done = cg.llfn.append_basic_block("while.done")
    b.branch(head)
    b.position_at_end(head)
    cond_region, body_region = op.regions
    cg.push_scope()
    term = cg.gen_block(cond_region, carries.load())
    c = cg.get(term.operands[0])
    cg.pop_scope()
    b.cbranch(c, body, done)
    b.position_at_end(body)
    cg.push_scope()
    term = cg.gen_block(body_region, carries.load())
    carries.store_next(term.operands, body_region.args, cg.scopes[-1])
    cg.pop_scope()
    b.branch(head)
    b.position_at_end(done)
    for r, v in zip(op.results, carries.load()):
        cg.set(r, v)


def _gen_into(cg, region, results: _Carries):
    """Generate a region without arguments in a scope of its own, its yields stored in `results`."""
    cg.push_scope()
    term = cg.gen_block(region, [])
    results.store_next(term.operands, [], cg.scopes[-1])
    cg.pop_scope()


@rule("if", "codegen")
def _if_cg(cg, op):
    b = cg.b
    results = _Carries(cg, op.results)
    then_bb = cg.llfn.append_basic_block("if.then")
    else_bb = cg.llfn.append_basic_block("if.else")
    done = cg.llfn.append_basic_block("if.done")
    b.cbranch(cg.get(op.operands[0]), then_bb, else_bb)
    for region, bb in zip(op.regions, (then_bb, else_bb)):
        b.position_at_end(bb)
        _gen_into(cg, region, results)
        b.branch(done)
    b.position_at_end(done)
    for r, v in zip(op.results, results.load()):
        cg.set(r, v)


@rule("fork", "codegen")
def _fork_cg(cg, op):
    split = op.attrs["split"]
    parts = [_Carries(cg, op.results[:split]), _Carries(cg, op.results[split:])]

    def region(k):
        _gen_into(cg, op.regions[k], parts[k])
    if cg.can_fork():
        cg.fork(region)
    else:
        region(0)
        region(1)
    for r, v in zip(op.results, parts[0].load() + parts[1].load()):
        cg.set(r, v)
