"""Matrix products as plain loops, for the products too small for BLAS (or where BLAS is not
linked: AOT libraries, GPU jobs).

Row i of C[M, N] = op(A)[M, K] @ op(B)[K, N] on row-major buffers is the loop nest p-j: C's row is
zeroed, then for each p the inner loop streams a row of B (or a column, when B is read
transposed) and the row of C, which LLVM vectorises. `emit_row` writes one row where the caller's
builder stands (a parallel loop's body); `rows_fn` is a function running every row, one per
element type and layout of B (A's layout is a pair of strides: its elements are read one at a
time):

    void dslc.rt.gemm.<f32|f64>.<n|t>(i64 M, i64 N, i64 K, T* A, i64 sa_i, i64 sa_p, T* B, i64 ldb,
                                      T* C, i64 ldc)

The JIT compiles these once per process, in its runtime module (runtime_module.py), instead of
inlining a loop nest per product into every kernel: B4's gradient has five products, and their
loop nests were a third of its LLVM time.
"""
from __future__ import annotations

from llvmlite import ir as ll

I64 = ll.IntType(64)


def counted(b: ll.IRBuilder, lo, hi, body):
    """for i in [lo, hi): body(i), as a canonical counted loop in b's function."""
    fn = b.function
    pre = b.block
    head, inner, done = (fn.append_basic_block(n) for n in ("l.head", "l.body", "l.done"))
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64)
    i.add_incoming(lo, pre)
    b.cbranch(b.icmp_signed("<", i, hi), inner, done)
    b.position_at_end(inner)
    body(i)
    i.add_incoming(b.add(i, ll.Constant(I64, 1), flags=("nsw",)), b.block)
    b.branch(head)
    b.position_at_end(done)


def emit_row(b: ll.IRBuilder, i, N, K, A, sa_i, sa_p, B, tb, ldb, C, ldc):
    """Row i of C = op(A) @ op(B): op(A)[i, p] = A[i*sa_i + p*sa_p]; op(B)[p, j] = B[j*ldb + p]
    if tb else B[p*ldb + j]; C[i, j] at C[i*ldc + j]. A, B, C: typed element pointers."""
    ty = C.type.pointee
    is_float = isinstance(ty, (ll.FloatType, ll.DoubleType))
    zero = ll.Constant(ty, 0)
    zero_i = ll.Constant(I64, 0)

    def at(ptr, idx):
        return b.gep(ptr, [idx], inbounds=True)

    counted(b, zero_i, N, lambda j: b.store(zero, at(C, b.add(b.mul(i, ldc), j))))

    def mid(p):
        a = b.load(at(A, b.add(b.mul(i, sa_i), b.mul(p, sa_p))))

        def inner(j):
            cp = at(C, b.add(b.mul(i, ldc), j))
            bv = b.load(at(B, b.add(b.mul(j, ldb), p) if tb else b.add(b.mul(p, ldb), j)))
            if is_float:
                b.store(b.fadd(b.load(cp), b.fmul(a, bv)), cp)
            else:
                b.store(b.add(b.load(cp), b.mul(a, bv)), cp)
        counted(b, zero_i, N, inner)
    counted(b, zero_i, K, mid)


def a_strides(ta: bool, lda):
    """(sa_i, sa_p) of op(A) for a row-major A with leading dimension lda."""
    one = ll.Constant(I64, 1)
    return (one, lda) if ta else (lda, one)


def rows_name(ty: ll.Type, tb: bool) -> str:
    kind = "f32" if isinstance(ty, ll.FloatType) else "f64"
    return f"dslc.rt.gemm.{kind}.{'t' if tb else 'n'}"


def rows_fn(module: ll.Module, ty: ll.Type, tb: bool, define: bool, linkage: str = "internal"):
    """The function running every row of a product (see the module docstring), declared in
    `module`, and defined there too when `define`."""
    name = rows_name(ty, tb)
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    p = ll.PointerType(ty)
    fn = ll.Function(module, ll.FunctionType(ll.VoidType(), [I64, I64, I64, p, I64, I64, p, I64, p, I64]), name)
    if not define:
        return fn
    fn.linkage = linkage
    fn.args[8].add_attribute("noalias")          # C is always a fresh buffer
    M, N, K, A, sa_i, sa_p, B, ldb, C, ldc = fn.args
    b = ll.IRBuilder(fn.append_basic_block("entry"))
    counted(b, ll.Constant(I64, 0), M, lambda i: emit_row(b, i, N, K, A, sa_i, sa_p, B, tb, ldb, C, ldc))
    b.ret_void()
    return fn


__all__ = ["counted", "emit_row", "a_strides", "rows_fn", "rows_name"]
