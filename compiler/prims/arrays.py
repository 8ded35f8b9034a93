"""Array primitives: constants, extents, broadcasts, reductions, matmul, transpose, element and
slice loads, element and slice stores. Type rule and LLVM lowering side by side.

Index specs (`spec` attr of index/slice/store/add_at): one letter per axis of the array,
`i` (an integer index: the axis is dropped), `s` (a `start:stop` range: two operands),
`a` (the whole axis). Indices follow Python: negative ones count from the end; ranges clamp.
"""
from __future__ import annotations

from ..ir import Type, dim_op, fresh_dim, is_int
from . import TypeRuleError, defprim, rule


# ---- const, dim ---------------------------------------------------------------------------
def _infer_const(operands, attrs):
    return [Type(attrs["dtype"], (), attrs.get("weak", False))]


defprim("const", _infer_const)


@rule("const", "codegen")
def _const_cg(cg, op):
    cg.set(op.result, cg.constant(op.attrs["value"], op.attrs["dtype"]))


defprim("dim", lambda ops, attrs: [Type("i64")])


@rule("dim", "codegen")
def _dim_cg(cg, op):
    cg.set(op.result, cg.dims(op.operands[0])[op.attrs["axis"]])


# ---- broadcast_in_dim -----------------------------------------------------------------------
def _infer_bcast(operands, attrs):
    x, dims = operands[0], operands[1:]
    shape = attrs["shape"]
    if len(dims) != len(shape):
        raise TypeRuleError("broadcast_in_dim: one extent operand per result axis")
    bd = attrs["bdims"]
    if len(bd) != x.type.rank:
        raise TypeRuleError("broadcast_in_dim: bdims must map every operand axis")
    for k, a in enumerate(bd):
        d = x.type.shape[k]
        if d != 1 and isinstance(d, int) and isinstance(shape[a], int) and d != shape[a]:
            raise TypeRuleError(f"cannot broadcast extent {d} to {shape[a]}")
    return [Type(x.type.dtype, tuple(shape))]


defprim("broadcast_in_dim", _infer_bcast, kind="view")


@rule("broadcast_in_dim", "codegen")
def _bcast_cg(cg, op):
    x, dims = op.operands[0], [cg.get(d) for d in op.operands[1:]]
    bd = op.attrs["bdims"]
    for d, dv in zip(op.operands[1:], dims):
        owner = d.owner
        if not (getattr(owner, "prim", None) == "dim" or isinstance(cg.const_value(d), int) and cg.const_value(d) >= 0):
            cg.check(cg.b.icmp_signed(">=", dv, cg.i64(0)), "value", "negative dimensions are not allowed",
                     op.loc, dv)
    if x.type.is_scalar:
        s = cg.get(x)
        cg.set_lazy(op.result, dims, lambda idx: s, reads=())
        return
    xdims = cg.dims(x)
    static1 = [x.type.shape[k] == 1 for k in range(x.type.rank)]
    for k, a in enumerate(bd):
        if not static1[k] and x.type.shape[k] != op.attrs["shape"][a]:
            cg.check_eq(xdims[k], dims[a], "shape", "extent mismatch in broadcast", op.loc)

    def elem(idx):
        return cg.elem(x, [cg.i64(0) if static1[k] else idx[a] for k, a in enumerate(bd)])
    cg.set_lazy(op.result, dims, elem, reads=(x,))


# ---- reductions --------------------------------------------------------------------------------
def _infer_reduce(operands, attrs):
    (x,) = operands
    axes = attrs["axes"]
    if x.type.dtype == "bool":
        raise TypeRuleError("cannot reduce a bool array; cast it first")
    keep = [d for k, d in enumerate(x.type.shape) if k not in axes]
    return [Type(x.type.dtype, tuple(keep))]


_REDUCERS = {
    "reduce_sum": ("add", 0),
    "reduce_prod": ("mul", 1),
    "reduce_max": ("maximum", "-inf"),
    "reduce_min": ("minimum", "+inf"),
}

for _name in _REDUCERS:
    defprim(_name, _infer_reduce, kind="reduce")


def _reduce_cg(cg, op):
    group = cg.info.reduce_group.get(op)
    if group:
        if op is group[-1]:
            _full_reductions_cg(cg, group)
        return                                  # an earlier member: computed with the last one
    if op.result.type.is_scalar:
        _full_reductions_cg(cg, [op])
        return
    (x,) = op.operands
    combine, ident = _REDUCERS[op.prim]
    dt = x.type.dtype
    axes = op.attrs["axes"]
    xdims = cg.dims(x)
    if ident in ("-inf", "+inf"):
        total = cg.i64(1)
        for a in axes:
            total = cg.b.mul(total, xdims[a])
        cg.check(cg.b.icmp_signed(">", total, cg.i64(0)), "value",
                 f"zero-size array to reduction operation {op.prim[7:]} which has no identity", op.loc)
        init = cg.extreme(dt, ident == "+inf")
    else:
        init = cg.constant(ident, dt)
    fold = cg.combiner(combine, dt)
    keep = [k for k in range(x.type.rank) if k not in axes]
    out = cg.alloc_array(op.result, [xdims[k] for k in keep])
    cg.loop_nest(out.dims, lambda idx: cg.store_elem(out, idx, init))

    def body(idx, _=None):
        oi = [idx[k] for k in keep]
        cg.store_elem(out, oi, fold(cg.load_elem(out, oi), cg.elem(x, idx)))
    if 0 in axes:
        cg.loop_nest(xdims, body)
    else:                                       # chunks of the kept outer axis write disjoint rows
        cg.parallel_loop(xdims, body)


def _full_reductions_cg(cg, ops):
    """Several full reductions over inputs of one shape, in one loop (one accumulator each;
    float32 sums accumulate in float64)."""
    xdims = cg.dims(ops[0].operands[0])
    accs = []
    for op in ops:
        combine, ident = _REDUCERS[op.prim]
        dt = op.operands[0].type.dtype
        if ident in ("-inf", "+inf"):
            total = cg.i64(1)
            for d in xdims:
                total = cg.b.mul(total, d)
            cg.check(cg.b.icmp_signed(">", total, cg.i64(0)), "value",
                     f"zero-size array to reduction operation {op.prim[7:]} which has no identity", op.loc)
            init = cg.extreme(dt, ident == "+inf")
        else:
            init = cg.constant(ident, dt)
        wide = dt == "f32" and combine == "add"
        adt = "f64" if wide else dt
        accs.append((op, cg.convert(init, dt, adt), cg.combiner(combine, adt), dt, adt))

    def body(idx, slots):
        for (op, _, fold, dt, adt), acc in zip(accs, slots):
            cg.accumulate(acc, cg.elem(op.operands[0], idx), dt, adt, fold)
    totals = cg.parallel_loop(xdims, body, [(adt, init, fold) for _, init, fold, _, adt in accs],
                              reads=[op.operands[0] for op in ops], flat=True)
    for (op, _, _, dt, adt), total in zip(accs, totals):
        cg.set(op.result, cg.convert(total, adt, dt))


for _name in _REDUCERS:
    rule(_name, "codegen")(_reduce_cg)


# ---- matmul, transpose -------------------------------------------------------------------------
class _Typed:
    """A stand-in operand for a type rule: anything with a `.type`."""

    def __init__(self, type):
        self.type = type


def _infer_matmul(operands, attrs):
    a, b = operands
    batch = attrs.get("batch")
    if batch:   # the operand on side `batch` carries a leading batch axis (vector-mode JVP)
        x = a if batch == "lhs" else b
        inner = _Typed(Type(x.type.dtype, x.type.shape[1:]))
        plain = _infer_matmul([inner, b] if batch == "lhs" else [a, inner], {})[0]
        return [Type(plain.dtype, (x.type.shape[0],) + plain.shape)]
    if a.type.dtype != b.type.dtype:
        raise TypeRuleError("matmul operands must have one dtype")
    if a.type.rank not in (1, 2) or b.type.rank not in (1, 2):
        raise TypeRuleError(f"'@' needs vectors or matrices, got {a.type} @ {b.type}")
    ka = a.type.shape[-1]
    kb = b.type.shape[0]
    if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
        raise TypeRuleError(f"'@': inner extents differ ({ka} vs {kb}) in {a.type} @ {b.type}")
    shape = a.type.shape[:-1] + b.type.shape[1:]
    return [Type(a.type.dtype, shape)]


defprim("matmul", _infer_matmul, linear=(0, 1))


@rule("matmul", "codegen")
def _matmul_cg(cg, op):
    """Matrix products as GEMM calls on row-major buffers (FunctionCodegen.gemm: BLAS for large
    products in the JIT, loops otherwise). A rank-2 operand that is a lazy `transpose` of a buffer
    (what the matmul JVP and transpose rules produce) is read in place with a transposed flag,
    never copied. Vector-mode (batched) products become one GEMM where the layout allows."""
    a, b = op.operands
    batch = op.attrs.get("batch")
    group = cg.info.matvec_group.get(op)
    if group:
        if op is group[0]:
            _matvec_group_cg(cg, group)
        return                                   # a later member: computed with the first
    A, tA = _mat_operand(cg, a, batch != "lhs")
    B, tB = _mat_operand(cg, b, batch != "rhs")
    if not batch:
        return _matmul_core(cg, op, a.type, b.type, A, tA, B, tB, None)
    dt = a.type.dtype
    bd = cg.b
    X = A if batch == "lhs" else B
    ta = Type(a.type.dtype, a.type.shape[1:]) if batch == "lhs" else a.type
    tb = Type(b.type.dtype, b.type.shape[1:]) if batch == "rhs" else b.type
    nb = X.dims[0]
    if batch == "lhs":
        # out[w] = X[w] @ op(B): the slices stack into one (nb*m, k) @ op(B) product
        m = X.dims[1] if ta.rank == 2 else cg.i64(1)
        k = X.dims[-1]
        kb, n, ldb = _rhs_dims(cg, tb, B, tB)
        if ta.shape[-1] != tb.shape[0]:
            cg.check_eq(k, kb, "shape", "inner extents of '@' differ", op.loc)
        out = cg.alloc_array(op.result, [nb] + ([m] if ta.rank == 2 else []) + ([n] if tb.rank == 2 else []))
        cg.gemm(dt, bd.mul(nb, m), n, k, X.ptr, False, k, B.ptr, tB, ldb, out.ptr, n)
        return
    # batch == "rhs": out[w] = op(A) @ X[w]
    m, ka, lda = _lhs_dims(cg, ta, A, tA)
    k = X.dims[1]
    if ta.shape[-1] != tb.shape[0]:
        cg.check_eq(ka, k, "shape", "inner extents of '@' differ", op.loc)
    if tb.rank == 1:
        # out (nb, m) = X (nb, k) @ op(A)^T
        out = cg.alloc_array(op.result, [nb] + ([m] if ta.rank == 2 else []))
        if ta.rank == 2:
            cg.gemm(dt, nb, m, k, X.ptr, False, k, A.ptr, not tA, lda, out.ptr, m)
        else:
            cg.gemm(dt, nb, cg.i64(1), k, X.ptr, False, k, A.ptr, False, cg.i64(1), out.ptr, cg.i64(1))
        return
    n = X.dims[2]
    out = cg.alloc_array(op.result, [nb] + ([m] if ta.rank == 2 else []) + [n])

    def step(w):
        xs = bd.gep(X.ptr, [bd.mul(w, bd.mul(k, n))])
        os_ = bd.gep(out.ptr, [bd.mul(w, bd.mul(m, n))])
        cg.gemm(dt, m, n, k, A.ptr, tA, lda, xs, False, n, os_, n)
    cg.for_range(nb, step)


def _mat_operand(cg, v, plain):
    """(materialised ArrayVal, transposed): a plain rank-2 operand that is a lazy transpose of an
    array is returned as that array (materialised contiguously if need be) with transposed=True."""
    av = cg.get(v)
    owner = v.owner
    if (plain and v.type.rank == 2 and av.lazy is not None and getattr(owner, "prim", None) == "transpose"
            and list(owner.attrs["perm"]) == [1, 0]):
        return cg.materialize(owner.operands[0]), True
    return cg.materialize(v), False


def _lhs_dims(cg, ta, A, tA):
    """(m, k, lda) of the left operand (a vector is one row)."""
    if ta.rank == 1:
        return cg.i64(1), A.dims[0], A.dims[0]
    return (A.dims[1], A.dims[0], A.dims[1]) if tA else (A.dims[0], A.dims[1], A.dims[1])


def _rhs_dims(cg, tb, B, tB):
    """(k, n, ldb) of the right operand (a vector is one column)."""
    if tb.rank == 1:
        return B.dims[0], cg.i64(1), cg.i64(1)
    return (B.dims[1], B.dims[0], B.dims[1]) if tB else (B.dims[0], B.dims[1], B.dims[1])


def _matvecs(cg, dt, A, xs, outs, a_value=None):
    """outs[g] = A @ xs[g] for a row-major A: (vectorised, reassociated) dot products over
    blocks of rows, every vector at once, so a row of A is loaded once for all the vectors and
    the loop overhead and horizontal sums of the vector accumulators are shared (a JVP's A @ x
    and A @ dx in one pass; 2x faster than one row at a time at d = 64). Inside a loop, a small
    matrix defined outside every loop (`a_value`) is transposed once per call and the products
    become vector-matrix products (FunctionCodegen.transposed_copy)."""
    if a_value is not None and _copyable_in_loop(cg, a_value, dt):
        m, k = A.dims
        with cg.b.if_else(_small_copy(cg, A)) as (then, otherwise):
            with then:
                At, ld = cg.invariant_copy(a_value, A, True)
                cg._vecmat(dt, m, k, [(x.ptr, False, k) for x in xs], At, ld, [out.ptr for out in outs])
            with otherwise:
                _row_blocks(cg, dt, A, xs, outs)
        return
    if len(xs) == 1 and len(cg.scopes) == 1 and not cg.in_parallel and cg.info.products == 1:
        # once per call, a single vector, the kernel's only product: a big product is BLAS's
        # threaded gemv (a group of vectors keeps the row blocks, which read A once for all of
        # them). Only product: OpenBLAS's threads spin for ~0.1 s after a call and take the CPUs
        # from dslc's own threaded loops after it (B2's JVP ran 717 us with gemv for dA @ x
        # against 229 us without, its VJP 1047 against 393 us).
        m, k = A.dims
        cg.blas_gemv(dt, m, k, A.ptr, xs[0].ptr, outs[0].ptr, lambda: _row_blocks(cg, dt, A, xs, outs))
        return
    _row_blocks(cg, dt, A, xs, outs)


def _copyable_in_loop(cg, v, dt) -> bool:
    """Whether the matrix v of a product in a loop was defined outside every loop, so a copy
    laid out for `_vecmat` (FunctionCodegen.invariant_copy) is made once per call."""
    return (len(cg.scopes) > 1 and not cg.in_parallel and bool(cg.vector_lanes(dt))
            and cg.info.value_block.get(v) is cg.fn.body)


def _small_copy(cg, A):
    m, k = A.dims
    return cg.b.icmp_signed("<=", cg.b.mul(m, k), cg.i64(cg.COPY_MAX))


def _row_blocks(cg, dt, A, xs, outs):
    mul, add = cg.combiner("mul", dt), cg.combiner("add", dt)
    zero = cg.constant(0, dt)
    b = cg.b
    m, k = A.dims
    rows = 4 if len(xs) <= 2 else 2

    def block(i, rows):
        accs = [[cg.alloca_scalar(dt, zero) for _ in xs] for _ in range(rows)]

        def step(p):
            xp = [cg.load_elem(x, [p]) for x in xs]
            for r in range(rows):
                a = cg.load_elem(A, [cg.b.add(i, cg.i64(r)), p])
                for acc, v in zip(accs[r], xp):
                    cg.b.store(add(cg.b.load(acc), mul(a, v)), acc)
        cg.for_range(k, step)
        for r in range(rows):
            for acc, out in zip(accs[r], outs):
                cg.store_elem(out, [cg.b.add(i, cg.i64(r))], cg.b.load(acc))
    nblocks = b.sdiv(m, cg.i64(rows))
    # blocks of rows are independent: big products split across threads like any loop nest
    cg.parallel_loop([nblocks], lambda idx, _: block(cg.b.mul(idx[0], cg.i64(rows)), rows),
                     work=b.mul(k, cg.i64(rows * len(xs))))
    cg.for_range(m, lambda i: block(i, 1), start=b.mul(nblocks, cg.i64(rows)))


def _matvec_group_cg(cg, group):
    """Matrix-vector products sharing their matrix (Analysis.matvec_group), in one pass."""
    a = group[0].operands[0]
    A, tA = _mat_operand(cg, a, True)
    xs = [_mat_operand(cg, op.operands[1], True)[0] for op in group]
    if tA:                                      # a transposed view: one product at a time
        for op, x in zip(group, xs):
            _matmul_core(cg, op, a.type, op.operands[1].type, A, tA, x, False, None)
        return
    for op, x in zip(group, xs):
        if a.type.shape[-1] != op.operands[1].type.shape[0]:
            cg.check_eq(A.dims[1], x.dims[0], "shape", "inner extents of '@' differ", op.loc)
    _matvecs(cg, a.type.dtype, A, xs, [cg.alloc_array(op.result, [A.dims[0]]) for op in group], a)


def _matmul_core(cg, op, ta, tb, A, tA, B, tB, out):
    """The plain (rank <= 2) product op(A) @ op(B), bound to op's result."""
    dt = ta.dtype
    m, ka, lda = _lhs_dims(cg, ta, A, tA)
    kb, n, ldb = _rhs_dims(cg, tb, B, tB)
    if ta.shape[-1] != tb.shape[0]:
        cg.check_eq(ka, kb, "shape", "inner extents of '@' differ", op.loc)
    mul, add = cg.combiner("mul", dt), cg.combiner("add", dt)
    zero = cg.constant(0, dt)
    if ta.rank == 1 and tb.rank == 1:
        acc = cg.alloca_scalar(dt, zero)
        cg.for_range(ka, lambda p: cg.b.store(add(cg.b.load(acc), mul(cg.load_elem(A, [p]), cg.load_elem(B, [p]))), acc))
        cg.set(op.result, cg.b.load(acc))
        return
    if ta.rank == 2 and tb.rank == 1 and not tA:
        _matvecs(cg, dt, A, [B], [cg.alloc_array(op.result, [A.dims[0]])], op.operands[0])
        return
    b_value = op.operands[1].owner.operands[0] if tB else op.operands[1]
    if ta.rank == 1 and tb.rank == 2 and _copyable_in_loop(cg, b_value, dt):
        # x @ B in a loop, B fixed: rows of B aligned (and B read as stored when it is a transpose)
        out = cg.alloc_array(op.result, [n])
        with cg.b.if_else(_small_copy(cg, B)) as (then, otherwise):
            with then:
                Bc, ld = cg.invariant_copy(b_value, B, tB)
                cg._vecmat(dt, n, ka, [(A.ptr, False, lda)], Bc, ld, [out.ptr])
            with otherwise:
                cg.gemm(dt, m, n, ka, A.ptr, tA, lda, B.ptr, tB, ldb, out.ptr, n)
        return
    dims = ([m] if ta.rank == 2 else []) + ([n] if tb.rank == 2 else [])
    out = cg.alloc_array(op.result, dims)
    cg.gemm(dt, m, n, ka, A.ptr, tA, lda, B.ptr, tB, ldb, out.ptr, n)


def _infer_transpose(operands, attrs):
    (x,) = operands
    perm = attrs["perm"]
    if sorted(perm) != list(range(x.type.rank)):
        raise TypeRuleError(f"bad permutation {perm} for {x.type}")
    return [Type(x.type.dtype, tuple(x.type.shape[p] for p in perm))]


defprim("transpose", _infer_transpose, kind="view", linear=(0,))


@rule("transpose", "codegen")
def _transpose_cg(cg, op):
    (x,) = op.operands
    perm = op.attrs["perm"]
    xd = cg.dims(x)
    inv = [perm.index(k) for k in range(len(perm))]
    cg.set_lazy(op.result, [xd[p] for p in perm], lambda idx: cg.elem(x, [idx[inv[k]] for k in range(len(perm))]),
                reads=(x,))


# ---- reshape ----------------------------------------------------------------------------------
# reshape(x, *extents) {shape}: the elements of x in C order, laid out with the result shape (one
# i64 extent operand per result axis, as broadcast_in_dim). A view: element idx of the result is
# element unravel(ravel(idx, result dims), x dims) of x, read lazily; the sizes must agree (checked
# statically when both shapes are literal, else at run time). Used by jacfwd to turn the (N, *out)
# tangent into out.shape + in.shape.
def _size(shape):
    n = 1
    for d in shape:
        n = dim_op("mul", n, d)
    return n


def _infer_reshape(operands, attrs):
    x, dims = operands[0], operands[1:]
    shape = tuple(attrs["shape"])
    if len(dims) != len(shape):
        raise TypeRuleError("reshape: one extent operand per result axis")
    for d in dims:
        if not (is_int(d.type.dtype) and d.type.is_scalar):
            raise TypeRuleError(f"reshape: extents must be integer scalars, got {d.type}")
    a, b = _size(x.type.shape), _size(shape)
    if isinstance(a, int) and isinstance(b, int) and a != b:
        raise TypeRuleError(f"cannot reshape an array of size {a} into shape {shape}")
    return [Type(x.type.dtype, shape)]


defprim("reshape", _infer_reshape, kind="view", linear=(0,))


@rule("reshape", "codegen")
def _reshape_cg(cg, op):
    x = op.operands[0]
    dims = [cg.get(d) for d in op.operands[1:]]
    xd = cg.dims(x) if not x.type.is_scalar else []
    if _size(x.type.shape) != _size(op.attrs["shape"]):
        def size(ds):
            n = cg.i64(1)
            for d in ds:
                n = cg.b.mul(n, d)
            return n
        cg.check_eq(size(xd), size(dims), "shape", "reshape: the number of elements changes", op.loc)

    def elem(idx):
        flat = cg.flat(dims, idx)
        src = []
        for d in reversed(xd[1:]):
            src.insert(0, cg.b.urem(flat, d))
            flat = cg.b.udiv(flat, d)
        return cg.elem(x, ([flat] if xd else []) + src)
    if op.result.type.is_scalar:
        cg.set(op.result, elem([]))
        return
    cg.set_lazy(op.result, dims, elem, reads=(x,))


# ---- indexing ---------------------------------------------------------------------------------
def _spec_operands(spec):
    return sum({"i": 1, "s": 2, "a": 0}[c] for c in spec)


def _check_spec(x, spec, idx_ops):
    if len(spec) != x.type.rank:
        raise TypeRuleError(f"{x.type.rank}-d array indexed with {len(spec)} indices")
    if len(idx_ops) != _spec_operands(spec):
        raise TypeRuleError("index operand count does not match the spec")
    for o in idx_ops:
        if not (is_int(o.type.dtype) and o.type.is_scalar):
            raise TypeRuleError(f"indices must be integer scalars, got {o.type}")


def slice_extent(start_sym, stop_sym, n):
    """The symbolic extent of `x[start:stop]` on an axis of extent n (Python's clamping), or a
    fresh opaque dim when a bound is unknown or may be negative."""
    def norm(s):
        if s is None:
            return None
        if isinstance(s, int):
            if s < 0:
                return dim_op("max", dim_op("add", n, s), 0)
            return dim_op("min", s, n) if not isinstance(n, int) else min(s, n)
        if isinstance(s, str) and s.startswith("?"):
            return None
        if s == n:
            return n
        if _nonnegative(s):
            return dim_op("min", s, n)
        # may be negative (an integer argument, `n - 1`, ...): Python's normalisation
        # s < 0 ? max(s + n, 0) : min(s, n), written with the dim ops (integers only):
        # min(max(s, 0), n) + max(min(s, 0), -n) + n * min(max(-s, 0), 1)
        pos = dim_op("min", dim_op("max", s, 0), n)
        neg = dim_op("max", dim_op("min", s, 0), dim_op("sub", 0, n))
        is_neg = dim_op("min", dim_op("max", dim_op("sub", 0, s), 0), 1)
        return dim_op("add", dim_op("add", pos, neg), dim_op("mul", n, is_neg))
    a, b = norm(start_sym), norm(stop_sym)
    if a is None or b is None:
        return fresh_dim()
    return dim_op("max", dim_op("sub", b, a), 0)


def _nonnegative(d) -> bool:
    """Whether a dim expression is known to be >= 0 (extents are; integer arguments `$k` may not be)."""
    if isinstance(d, int):
        return d >= 0
    if isinstance(d, str):
        return not d.startswith("$")
    op, a, b = d
    if op in ("add", "mul", "floordiv", "min"):
        return _nonnegative(a) and _nonnegative(b)
    if op == "max":
        return _nonnegative(a) or _nonnegative(b)
    return False


def _result_shape(x, spec, idx_ops):
    shape, k = [], 0
    for ax, c in enumerate(spec):
        n = x.type.shape[ax]
        if c == "i":
            k += 1
        elif c == "s":
            shape.append(slice_extent(idx_ops[k].sym, idx_ops[k + 1].sym, n))
            k += 2
        else:
            shape.append(n)
    return tuple(shape)


def _infer_index(operands, attrs):
    x, idx = operands[0], operands[1:]
    _check_spec(x, attrs["spec"], idx)
    if "s" in attrs["spec"] or "a" in attrs["spec"]:
        raise TypeRuleError("index: every axis must be indexed by an integer")
    return [Type(x.type.dtype)]


def _infer_slice(operands, attrs):
    x, idx = operands[0], operands[1:]
    _check_spec(x, attrs["spec"], idx)
    return [Type(x.type.dtype, _result_shape(x, attrs["spec"], idx))]


def _infer_store(operands, attrs):
    x, v, idx = operands[0], operands[1], operands[2:]
    _check_spec(x, attrs["spec"], idx)
    target = _result_shape(x, attrs["spec"], idx)
    if v.type.dtype != x.type.dtype:
        raise TypeRuleError(f"cannot store {v.type.dtype} into a {x.type.dtype} array")
    if v.type.rank > len(target):
        raise TypeRuleError(f"cannot store a value of shape {v.type.shape} into a slice of rank {len(target)}")
    for dv, dt in zip(reversed(v.type.shape), reversed(target)):
        if dv != 1 and isinstance(dv, int) and isinstance(dt, int) and dv != dt:
            raise TypeRuleError(f"cannot store a value of extent {dv} into a slice of extent {dt}")
    return [x.type.strong()]


defprim("index", _infer_index, kind="index")
defprim("slice", _infer_slice, kind="view", linear=(0,))
defprim("store", _infer_store, linear=(0, 1))
defprim("add_at", _infer_store, linear=(0, 1))


def resolve_spec(cg, op, x, spec, idx_vals, check_bounds=True):
    """Normalise Python indices against the run-time extents: per axis ('i', index) or
    ('s', start, extent) or ('a', extent); also returns the result dims."""
    xd = cg.dims(x)
    out, dims, k = [], [], 0
    for ax, c in enumerate(spec):
        n = xd[ax]
        if c == "i":
            i = cg.wrap_index(idx_vals[k], n, op.loc, axis=ax, check=check_bounds)
            out.append(("i", i))
            k += 1
        elif c == "s":
            start = cg.clamp_slice_bound(idx_vals[k], n)
            stop = cg.clamp_slice_bound(idx_vals[k + 1], n)
            ext = cg.smax(cg.b.sub(stop, start), cg.i64(0))
            out.append(("s", start, ext))
            dims.append(ext)
            k += 2
        else:
            out.append(("a", n))
            dims.append(n)
    return out, dims


@rule("index", "codegen")
def _index_cg(cg, op):
    x = op.operands[0]
    idx = [cg.get(v) for v in op.operands[1:]]
    parts, _ = resolve_spec(cg, op, x, op.attrs["spec"], idx, cg.boundscheck)
    cg.set(op.result, cg.elem(x, [p[1] for p in parts]))


def _source_idx(cg, parts, idx):
    out, j = [], 0
    for p in parts:
        if p[0] == "i":
            out.append(p[1])
        elif p[0] == "s":
            out.append(cg.b.add(p[1], idx[j]))
            j += 1
        else:
            out.append(idx[j])
            j += 1
    return out


@rule("slice", "codegen")
def _slice_cg(cg, op):
    x = op.operands[0]
    idx = [cg.get(v) for v in op.operands[1:]]
    parts, dims = resolve_spec(cg, op, x, op.attrs["spec"], idx, cg.boundscheck)
    cg.set_lazy(op.result, dims, lambda i: cg.elem(x, _source_idx(cg, parts, i)), reads=(x,))


def _store_like_cg(cg, op):
    x, v = op.operands[0], op.operands[1]
    idx = [cg.get(o) for o in op.operands[2:]]
    parts, dims = resolve_spec(cg, op, x, op.attrs["spec"], idx, cg.boundscheck)
    dst = cg.writable_copy(op, x)            # in place when x is dead afterwards, else a copy
    vd = cg.dims(v) if not v.type.is_scalar else []
    target_shape = _result_shape(x, op.attrs["spec"], op.operands[2:])
    for k in range(len(vd)):
        dv, dt_ = v.type.shape[-1 - k], target_shape[-1 - k]
        if dv != 1 and dv != dt_:
            cg.check_eq(vd[-1 - k], dims[-1 - k], "shape",
                        "the stored value's shape does not match the slice", op.loc)
    if v.type.is_scalar:
        val = cg.get(v)
        get_v = lambda i: val
    else:
        if cg.reads(v, x):
            cg.materialize(v)
        static1 = [d == 1 for d in v.type.shape]
        off = len(dims) - len(vd)
        get_v = lambda i: cg.elem(v, [cg.i64(0) if static1[k] else i[off + k] for k in range(len(vd))])
    add = cg.combiner("add", x.type.dtype) if op.prim == "add_at" else None

    def body(i):
        si = _source_idx(cg, parts, i)
        val = get_v(i)
        if add is not None:
            val = add(cg.load_elem(dst, si), val)
        cg.store_elem(dst, si, val)
    cg.loop_nest(dims, body)
    cg.bind_array(op.result, dst)


rule("store", "codegen")(_store_like_cg)
rule("add_at", "codegen")(_store_like_cg)



# ---- JVP rules -----------------------------------------------------------------------------------
def _bcast_jvp(ctx, op, xs, ts):
    dims = xs[1:]
    if not ctx.batched:
        return [ctx.b.emit1("broadcast_in_dim", [ts[0]] + dims, op.attrs)]
    attrs = {"shape": ctx.tshape(op.results[0].type), "bdims": (0,) + tuple(a + 1 for a in op.attrs["bdims"])}
    return [ctx.b.emit1("broadcast_in_dim", [ts[0], ctx.width] + dims, attrs)]


def _keep_bcast(ctx, out, x, axes):
    """`out` (a reduction of x over axes) broadcast back to x's shape."""
    kept = tuple(k for k in range(x.type.rank) if k not in axes)
    return ctx.b.broadcast_to(out, x.type.shape, ctx.b.dims_of(x), bdims=kept)


def _reduce_sum_jvp(ctx, op, xs, ts):
    return [ctx.b.emit1("reduce_sum", [ts[0]], {"axes": ctx.axes(op.attrs["axes"])})]


def _reduce_extreme_jvp(ctx, op, xs, ts):
    # the tangent at the extreme element(s); ties share it equally
    b, (x,), axes = ctx.b, xs, op.attrs["axes"]
    full = _keep_bcast(ctx, op.results[0], x, axes)
    mask = b.emit1("cast", [b.emit1("eq", [x, full])], {"dtype": x.type.dtype})
    num = b.emit1("reduce_sum", [b.emit1("mul", [mask, ts[0]])], {"axes": ctx.axes(axes)})
    cnt = b.emit1("reduce_sum", [mask], {"axes": axes})
    return [b.emit1("div", [num, cnt])]


def _reduce_prod_jvp(ctx, op, xs, ts):
    # d prod / d x_k is the product of the other elements, formed without dividing by zero
    # (prod / x_k is 0 / 0 = NaN at a zero). With P the product of the non-zero elements, Z that of
    # the zero ones (1 if none) and z their number: (P / x_k) * Z for a non-zero x_k, and for a
    # zero x_k, P if z == 1, else 0. Written with x itself (Z), so that its own derivative is
    # right too (second order), except at points with two or more zeros.
    b, (x,), axes = ctx.b, xs, op.attrs["axes"]
    dt = x.type.dtype
    zero, one = b.const(0, dt), b.const(1, dt)
    nonzero = b.emit1("ne", [x, zero])
    safe = b.emit1("select", [nonzero, x, one])
    p = _keep_bcast(ctx, b.emit1("reduce_prod", [safe], {"axes": axes}), x, axes)
    zprod = _keep_bcast(ctx, b.emit1("reduce_prod", [b.emit1("select", [nonzero, one, x])], {"axes": axes}), x, axes)
    nzeros = b.emit1("reduce_sum", [b.emit1("cast", [b.emit1("eq", [x, zero])], {"dtype": dt})], {"axes": axes})
    nzeros = _keep_bcast(ctx, nzeros, x, axes)
    others = b.emit1("select", [nonzero, b.emit1("mul", [b.emit1("div", [p, safe]), zprod]),
                                b.emit1("select", [b.emit1("eq", [nzeros, one]), p, zero])])
    return [b.emit1("reduce_sum", [b.emit1("mul", [others, ts[0]])], {"axes": ctx.axes(axes)})]


def batched_matmul(ctx, lhs, rhs, side):
    """lhs @ rhs where the operand on `side` carries the tangent batch axis (vector mode)."""
    b = ctx.b
    if not ctx.batched:
        return b.emit1("matmul", [lhs, rhs])
    if side == "lhs":
        if lhs.type.rank == 2:               # (W, k) @ ...: a batch of vectors is a matrix
            return b.emit1("matmul", [lhs, rhs])
        return b.emit1("matmul", [lhs, rhs], {"batch": "lhs"})
    if rhs.type.rank == 2:                   # ... @ (W, k): transpose the product
        if lhs.type.rank == 1:
            return b.emit1("matmul", [rhs, lhs])
        return b.emit1("matmul", [rhs, b.emit1("transpose", [lhs], {"perm": (1, 0)})])
    return b.emit1("matmul", [lhs, rhs], {"batch": "rhs"})


def _matmul_jvp(ctx, op, xs, ts):
    a, c = xs
    if op.attrs.get("batch"):
        return [_batched_op_matmul_jvp(ctx, op, xs, ts)]
    terms = []
    if ts[0] is not None:
        terms.append(batched_matmul(ctx, ts[0], c, "lhs"))
    if ts[1] is not None:
        terms.append(batched_matmul(ctx, a, ts[1], "rhs"))
    return [terms[0] if len(terms) == 1 else ctx.b.emit1("add", terms)]


def _batched_op_matmul_jvp(ctx, op, xs, ts):
    """The JVP of a matmul that already carries a batch axis (a vector-mode JVP differentiated
    again: `jacfwd(f).jvp`, `jacfwd(jacfwd(f))`). One tangent: the same batched product. In vector
    mode each term may be batched on both sides (W and N): it is written as a broadcast product
    summed over the inner axis, in the index space (W, N, m?, k, n?) (lazy, fused into the sum)."""
    b, (a, c), side = ctx.b, xs, op.attrs["batch"]
    if not ctx.batched:
        terms = [b.emit1("matmul", [t, c] if k == 0 else [a, t], op.attrs) for k, t in enumerate(ts) if t is not None]
        return terms[0] if len(terms) == 1 else b.emit1("add", terms)
    bx = a if side == "lhs" else c
    la = (["N"] if side == "lhs" else []) + (["m"] if a.type.rank - (side == "lhs") == 2 else []) + ["k"]
    ra = (["N"] if side == "rhs" else []) + ["k"] + (["n"] if c.type.rank - (side == "rhs") == 2 else [])
    names = ["W", "N"] + [x for x in ("m", "k", "n") if x in la or x in ra]
    sym = {"W": ctx.tshape(op.results[0].type)[0], "N": bx.type.shape[0]}
    val = {"W": ctx.width, "N": b.dim(bx, 0)}
    for v, axes in ((a, la), (c, ra)):
        for k, x in enumerate(axes):
            sym.setdefault(x, v.type.shape[k])
            val.setdefault(x, b.dim(v, k))
    shape, dims = tuple(sym[x] for x in names), [val[x] for x in names]
    acc = None
    for k, t in enumerate(ts):
        if t is None:
            continue
        lhs, lax = (t, ["W"] + la) if k == 0 else (a, la)
        rhs, rax = (t, ["W"] + ra) if k == 1 else (c, ra)
        lb = b.broadcast_to(lhs, shape, dims, bdims=tuple(names.index(x) for x in lax))
        rb = b.broadcast_to(rhs, shape, dims, bdims=tuple(names.index(x) for x in rax))
        term = b.emit1("reduce_sum", [b.emit1("mul", [lb, rb])], {"axes": (names.index("k"),)})
        acc = term if acc is None else b.emit1("add", [acc, term])
    return acc


def _transpose_jvp(ctx, op, xs, ts):
    perm = op.attrs["perm"]
    if ctx.batched:
        perm = (0,) + tuple(p + 1 for p in perm)
    return [ctx.b.emit1("transpose", [ts[0]], {"perm": perm})]


def _reshape_jvp(ctx, op, xs, ts):
    if not ctx.batched:
        return [ctx.b.emit1("reshape", [ts[0]] + xs[1:], op.attrs)]
    return [ctx.b.emit1("reshape", [ts[0], ctx.width] + xs[1:], {"shape": ctx.tshape(op.results[0].type)})]


def _index_jvp(ctx, op, xs, ts):
    idx = xs[1:]
    if ctx.batched:
        return [ctx.b.emit1("slice", [ts[0]] + idx, {"spec": "a" + op.attrs["spec"]})]
    return [ctx.b.emit1("index", [ts[0]] + idx, op.attrs)]


def _slice_jvp(ctx, op, xs, ts):
    return [ctx.b.emit1("slice", [ts[0]] + xs[1:], {"spec": ctx.batch_spec(op.attrs["spec"])})]


def _store_jvp(ctx, op, xs, ts):
    b = ctx.b
    x, v, idx = xs[0], xs[1], xs[2:]
    tx = ts[0] if ts[0] is not None else ctx.zeros(x)
    tv = ts[1]
    if tv is None:
        if op.prim == "add_at":
            return [tx]
        tv = b.const(0, x.type.dtype)
    elif ctx.batched:
        target = b.emit1("slice", [x] + idx, {"spec": op.attrs["spec"]}) if set(op.attrs["spec"]) != {"i"} else None
        if target is not None:
            tv = ctx.bcast(tv, v, target)
    return [b.emit1(op.prim, [tx, tv] + idx, {"spec": ctx.batch_spec(op.attrs["spec"])})]


rule("broadcast_in_dim", "jvp")(_bcast_jvp)
rule("reduce_sum", "jvp")(_reduce_sum_jvp)
rule("reduce_max", "jvp")(_reduce_extreme_jvp)
rule("reduce_min", "jvp")(_reduce_extreme_jvp)
rule("reduce_prod", "jvp")(_reduce_prod_jvp)
rule("matmul", "jvp")(_matmul_jvp)
rule("transpose", "jvp")(_transpose_jvp)
rule("reshape", "jvp")(_reshape_jvp)
rule("index", "jvp")(_index_jvp)
rule("slice", "jvp")(_slice_jvp)
rule("store", "jvp")(_store_jvp)
rule("add_at", "jvp")(_store_jvp)


# ---- transpose rules (reverse mode) ----------------------------------------------------------------
# In vector mode (tc.batched) every cotangent has a leading batch axis; tc's helpers shift axes,
# specs and broadcasts past it.
def _bcast_T(tc, op, ct, lin):
    x = op.operands[0]
    bd, rshape = op.attrs["bdims"], op.attrs["shape"]
    unit = [k for k, d in enumerate(x.type.shape) if d == 1 and rshape[bd[k]] != 1]
    axes = tuple(sorted([a for a in range(len(rshape)) if a not in bd] + [bd[k] for k in unit]))
    r = tc.b.emit1("reduce_sum", [ct], {"axes": tc.axes(axes)}) if axes else ct
    if unit:
        kept = [k for k in range(x.type.rank) if k not in unit]
        r = tc.broadcast(r, x.type.shape, tc.dims(x), kept)
    return [r] + [None] * (len(op.operands) - 1)


def _reduce_sum_T(tc, op, ct, lin):
    x = op.operands[0]
    kept = [k for k in range(x.type.rank) if k not in op.attrs["axes"]]
    return [tc.broadcast(ct, x.type.shape, tc.dims(x), kept)]


def _outer(tc, u, v, ud, vd, u_ct):
    """u (x) v, one of them the cotangent (`u_ct` says which) and so batched in vector mode."""
    shape, dims = (u.type.shape[-1], v.type.shape[-1]), [ud, vd]
    bu = tc.broadcast(u, shape, dims, (0,)) if u_ct else tc.b.broadcast_to(u, tc.ct_shape(shape), tc.ct_dims(dims),
                                                                            bdims=(tc.batched + 0,))
    bv = tc.broadcast(v, shape, dims, (1,)) if not u_ct else tc.b.broadcast_to(v, tc.ct_shape(shape), tc.ct_dims(dims),
                                                                                bdims=(tc.batched + 1,))
    return tc.b.emit1("mul", [bu, bv])


def _T2(b, m):
    return b.emit1("transpose", [m], {"perm": (1, 0)})


def _flatten_batch(tc, v, dims, keep_last: int):
    """v (B, *rest) -> (B * prod(rest[:-keep_last]), *rest[-keep_last:]) as a reshape."""
    b = tc.b
    lead = dims[:len(dims) - keep_last]
    n = b.const(1, "i64")
    for d in lead:
        n = b.binary("mul", n, d)
    from ..ir import fresh_dim
    shape = (fresh_dim(),) + tuple(v.type.shape[len(dims) - keep_last:])
    return b.emit1("reshape", [v, n] + list(dims[len(dims) - keep_last:]), {"shape": shape})


def _batched_matmul_T(tc, op, ct, lin):
    """Transpose of a matmul whose lhs or rhs carries a leading batch axis (from vector-mode JVPs):
    every case is a plain product of flattened or transposed operands."""
    if tc.batched:
        from ..diagnostics import UnsupportedError
        raise UnsupportedError("reverse mode over cotangent batches (jacrev) of a product that is itself "
                               "batched by forward mode (jacfwd) is not supported; use jacfwd(jacrev(f))",
                               tc.b.loc)
    b = tc.b
    a, c = op.operands
    ap, cp = tc.primal(a), tc.primal(c)
    ad, cd = tc.dims(a), tc.dims(c)
    out = [None, None]
    if op.attrs["batch"] == "lhs":                 # a: (B, m, k), c: (k) or (k, n)
        if lin[0]:
            if c.type.rank == 1:                   # ct (B, m): outer products per batch
                shape, dims = a.type.shape, ad
                out[0] = b.emit1("mul", [b.broadcast_to(ct, shape, dims, bdims=(0, 1)),
                                         b.broadcast_to(cp, shape, dims, bdims=(2,))])
            else:                                  # ct (B, m, n) @ c.T
                out[0] = b.emit1("matmul", [ct, _T2(b, cp)], {"batch": "lhs"})
        if lin[1]:                                 # sum over the batch of a_b.T @ ct_b
            af = _flatten_batch(tc, ap, ad, 1)     # (B*m, k)
            cf = _flatten_batch(tc, ct, ad[:-1] + (cd[1:] if c.type.rank == 2 else []),
                                1 if c.type.rank == 2 else 0)
            out[1] = b.emit1("matmul", [cf, af]) if c.type.rank == 1 else b.emit1("matmul", [_T2(b, af), cf])
    else:                                          # a: (m, k) or (k), c: (B, k, n)
        if lin[1]:
            if a.type.rank == 1:                   # ct (B, n): ct_c[b, p, j] = a[p] ct[b, j]
                shape, dims = c.type.shape, cd
                out[1] = b.emit1("mul", [b.broadcast_to(ap, shape, dims, bdims=(1,)),
                                         b.broadcast_to(ct, shape, dims, bdims=(0, 2))])
            else:                                  # a.T @ ct_b for every b
                out[1] = b.emit1("matmul", [_T2(b, ap), ct], {"batch": "rhs"})
        if lin[0]:                                 # sum over the batch of ct_b @ c_b.T
            B, k, n = cd[0], cd[1], cd[2]
            bn = b.binary("mul", B, n)
            from ..ir import fresh_dim
            cflat = b.emit1("reshape", [b.emit1("transpose", [cp], {"perm": (1, 0, 2)}), k, bn],
                            {"shape": (c.type.shape[1], fresh_dim())})                 # (k, B*n)
            if a.type.rank == 1:                   # ct (B, n) -> (B*n)
                ctf = b.emit1("reshape", [ct, bn], {"shape": (fresh_dim(),)})
                out[0] = b.emit1("matmul", [cflat, ctf])
            else:                                  # ct (B, m, n) -> (m, B*n)
                m = ad[0]
                ctf = b.emit1("reshape", [b.emit1("transpose", [ct], {"perm": (1, 0, 2)}), m, bn],
                              {"shape": (a.type.shape[0], fresh_dim())})
                out[0] = b.emit1("matmul", [ctf, _T2(b, cflat)])
    return out


def _matmul_T(tc, op, ct, lin):
    if op.attrs.get("batch"):
        return _batched_matmul_T(tc, op, ct, lin)
    a, c = op.operands
    b = tc.b
    ra, rc = a.type.rank, c.type.rank
    out = [None, None]
    if lin[0]:
        cp = tc.primal(c)
        if ra == 1 and rc == 1:                 # ct: scalar (W,)
            out[0] = b.emit1("mul", [tc.broadcast(ct, cp.type.shape, tc.dims(c), ()) if tc.batched else ct, cp])
        elif ra == 2 and rc == 1:
            out[0] = _outer(tc, ct, cp, tc.dims(a)[0], tc.dims(c)[0], True)
        elif ra == 1:
            out[0] = b.emit1("matmul", [ct, _T2(b, cp)]) if tc.batched else b.emit1("matmul", [cp, ct])
        else:
            out[0] = b.emit1("matmul", [ct, _T2(b, cp)], {"batch": "lhs"} if tc.batched else {})
    if lin[1]:
        ap = tc.primal(a)
        if ra == 1 and rc == 1:
            out[1] = b.emit1("mul", [tc.broadcast(ct, ap.type.shape, tc.dims(a), ()) if tc.batched else ct, ap])
        elif ra == 2 and rc == 1:
            out[1] = b.emit1("matmul", [ct, ap])
        elif ra == 1:
            out[1] = _outer(tc, ap, ct, tc.dims(c)[0], tc.dims(c)[1], False)
        else:
            out[1] = b.emit1("matmul", [_T2(b, ap), ct], {"batch": "rhs"} if tc.batched else {})
    return out


def _transpose_T(tc, op, ct, lin):
    perm = op.attrs["perm"]
    inv = tuple(perm.index(k) for k in range(len(perm)))
    if tc.batched:
        inv = (0,) + tuple(p + 1 for p in inv)
    return [tc.b.emit1("transpose", [ct], {"perm": inv})]


def _gather_T(tc, op, ct, lin):
    x = op.operands[0]
    idx = [tc.primal(o) for o in op.operands[1:]]
    return [tc.b.emit1("add_at", [tc.zeros(x), ct] + idx, {"spec": tc.spec(op.attrs["spec"])})] + [None] * len(idx)


def _store_T(tc, op, ct, lin):
    v = op.operands[1]
    idx = [tc.primal(o) for o in op.operands[2:]]
    spec = op.attrs["spec"]
    b = tc.b
    out = [None, None] + [None] * len(idx)
    if lin[0]:
        out[0] = ct if op.prim == "add_at" else b.emit1("store", [ct, b.const(0, ct.type.dtype)] + idx,
                                                         {"spec": tc.spec(spec)})
    if lin[1]:
        kind = "index" if set(spec) == {"i"} and not tc.batched else "slice"
        part = b.emit1(kind, [ct] + idx, {"spec": tc.spec(spec)})
        out[1] = tc.unbroadcast(part, v)
    return out


def _reshape_T(tc, op, ct, lin):
    # the transpose of a row-major reshape is the reshape back (the batch axis, if any, stays)
    x = op.operands[0]
    shape = tc.ct_shape(x.type.shape)
    back = tc.b.emit1("reshape", [ct] + tc.ct_dims(tc.dims(x)), {"shape": shape})
    return [back] + [None] * (len(op.operands) - 1)


rule("reshape", "transpose")(_reshape_T)
rule("broadcast_in_dim", "transpose")(_bcast_T)
rule("reduce_sum", "transpose")(_reduce_sum_T)
rule("matmul", "transpose")(_matmul_T)
rule("transpose", "transpose")(_transpose_T)
rule("index", "transpose")(_gather_T)
rule("slice", "transpose")(_gather_T)
rule("store", "transpose")(_store_T)
rule("add_at", "transpose")(_store_T)
