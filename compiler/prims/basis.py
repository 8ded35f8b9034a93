"""The (scaled) identity basis as a primitive: what `jacfwd` pushes forward and `jacrev` pulls back.

    basis(start, count, scale, *extents) {shape=(W, *X)}

is the array B of shape (count, *X) (X given by the i64 `extents`, W the symbol of `count`) with

    B[w, *i] = scale[*i]  if ravel(i) == start + w  else 0

(`scale` is a scalar, applied to every row, or an array of shape X): rows start .. start+count of
the identity of X's space (N = size(X) rows in all), each scaled. The transforms only build bases
with 0 <= start and start + count <= N, and the rewrites below rely on it.

Code generation is lazy (an elementwise select on the flat index), so a basis read by fusable
consumers is never materialised, and one read by anything else (a GEMM, a loop carry) is
materialised correctly: that is the general fallback. The rewrites registered here (applied by
compiler/passes/simplify.py after differentiation) remove the basis where its structure makes the
consumer cheap:

    mul/div/neg/cast(B, v)        -> basis(scale') with scale' = scale * v ...  (v free of the W axis)
    add/sub(B1, B2)               -> basis(scale1 +- scale2)    (same rows)
    matmul(B, M)  (X = (k,))      -> scale[start:start+count, None] * M[start:start+count]
    reduce_sum(B, all X axes)     -> ravel(scale)[start:start+count]

so `jacfwd(predict)` (JAX guide: sigmoid(inputs @ W + b)) becomes s(1 - s)[:, None] * inputs, one
pass, instead of a GEMM against the identity. Structural zeros stay zeros (as with symbolic zero
tangents): an off-diagonal 0 * inf is 0 here, where a materialised basis would give NaN.
"""
from __future__ import annotations

from ..ir import Type, dim_op, is_float, is_int
from . import TypeRuleError, defprim, rewrite, rule


def _infer_basis(operands, attrs):
    if len(operands) < 3:
        raise TypeRuleError("basis: operands are start, count, scale and one extent per axis of X")
    start, count, scale, dims = operands[0], operands[1], operands[2], operands[3:]
    shape = tuple(attrs["shape"])
    for v in (start, count, *dims):
        if not (is_int(v.type.dtype) and v.type.is_scalar):
            raise TypeRuleError(f"basis: start, count and extents must be integer scalars, got {v.type}")
    if len(shape) != len(dims) + 1:
        raise TypeRuleError("basis: the shape is (count, *X), one extent operand per axis of X")
    if not scale.type.is_scalar and scale.type.rank != len(dims):
        raise TypeRuleError(f"basis: the scale must be a scalar or have the rank of X, got {scale.type}")
    if scale.type.dtype == "bool":
        raise TypeRuleError("basis: the scale must be numeric")
    return [Type(scale.type.dtype, shape)]


defprim("basis", _infer_basis, kind="view", linear=(2,))


@rule("basis", "codegen")
def _basis_cg(cg, op):
    start, count, scale = op.operands[:3]
    s, c = cg.to_i64(cg.get(start)), cg.to_i64(cg.get(count))
    xd = [cg.to_i64(cg.get(d)) for d in op.operands[3:]]
    zero = cg.constant(0, op.result.type.dtype)
    sc = cg.get(scale) if scale.type.is_scalar else None

    def elem(idx):
        hit = cg.b.icmp_signed("==", cg.flat(xd, idx[1:]), cg.b.add(s, idx[0]))
        return cg.b.select(hit, sc if sc is not None else cg.elem(scale, idx[1:]), zero)
    cg.set_lazy(op.result, [c] + xd, elem, reads=() if sc is not None else (scale,))


# ---- differentiation: linear in the scale ------------------------------------------------------
def _unit(b, op, operands=None):
    """The unscaled basis with op's rows (`operands`: op's operands in the program being built)."""
    start, count, scale = (operands or op.operands)[:3]
    one = b.const(1, scale.type.dtype)
    return b.emit1("basis", [start, count, one] + list((operands or op.operands)[3:]), {"shape": op.attrs["shape"]})


@rule("basis", "jvp")
def _basis_jvp(ctx, op, xs, ts):
    t = ts[2]
    if t is None:
        return [None]
    b = ctx.b
    if not ctx.batched:
        return [b.emit1("basis", xs[:2] + [t] + xs[3:], op.attrs)]
    # (V, W, *X): the unit basis broadcast along the tangent batch V, times t (V, *X) along W
    shape = ctx.tshape(op.result.type)
    dims = ctx.tdims(op.result)
    r = op.result.type.rank
    u = b.broadcast_to(_unit(b, op), shape, dims, bdims=tuple(range(1, r + 1)))
    tb = b.broadcast_to(t, shape, dims, bdims=(0,) + tuple(range(2, 2 + t.type.rank - 1)))
    return [b.emit1("mul", [u, tb])]


@rule("basis", "transpose")
def _basis_T(tc, op, ct, lin):
    # scale_ct[*i] = sum_w ct[w, *i] * [ravel(i) == start + w]  (all axes for a scalar scale)
    b = tc.b
    scale = op.operands[2]
    u = _unit(b, op, [tc.primal(o) for o in op.operands])
    if tc.batched:
        u = b.broadcast_to(u, tc.ct_shape(u.type.shape), tc.ct_dims(b.dims_of(u)),
                           bdims=tuple(range(1, u.type.rank + 1)))
    prod = b.emit1("mul", [ct, u])
    r = op.result.type.rank
    axes = (0,) if not scale.type.is_scalar else tuple(range(r))
    out = b.emit1("reduce_sum", [prod], {"axes": tc.axes(axes)})
    return [None, None, out] + [None] * (len(op.operands) - 3)


# ---- structural rewrites ---------------------------------------------------------------------------
def _basis_op(v):
    op = v.owner
    return op if getattr(op, "prim", None) == "basis" else None


def _const_value(v):
    op = v.owner
    return op.attrs["value"] if getattr(op, "prim", None) == "const" else None


def _is_one(v) -> bool:
    return v.type.is_scalar and _const_value(v) == 1


def _shaped(v, shape):
    """Give a freshly built value the symbolic shape it is known to have at run time."""
    v.type = Type(v.type.dtype, tuple(shape), v.type.weak and not shape)
    return v


def _with_scale(b, bop, scale):
    return b.emit1("basis", bop.operands[:2] + [scale] + bop.operands[3:], {"shape": bop.attrs["shape"]})


def _x_shape(bop):
    return tuple(bop.attrs["shape"][1:])


def _scale_as_x(b, bop, v):
    """v broadcast to X (a scalar stays a scalar)."""
    if v.type.is_scalar:
        return v
    return b.broadcast_to(v, _x_shape(bop), list(bop.operands[3:]))


def _w_invariant(bop, op, v) -> bool:
    """v, an operand of the elementwise op beside the basis, does not vary along W and does not
    broadcast the basis to a larger shape."""
    return v.type.rank <= len(_x_shape(bop)) and tuple(op.result.type.shape) == tuple(bop.result.type.shape) \
        and v.type.dtype == bop.result.type.dtype


@rewrite("mul")
def _mul_basis(b, op):
    x, y = op.operands
    bx, by = _basis_op(x), _basis_op(y)
    if (bx is None) == (by is None):
        return None
    bop, v = (bx, y) if bx is not None else (by, x)
    if not _w_invariant(bop, op, v):
        return None
    scale = bop.operands[2]
    if _is_one(scale):
        new = _scale_as_x(b, bop, v)
    else:
        a, c = (scale, v) if bx is not None else (v, scale)
        if not (a.type.is_scalar and c.type.is_scalar):
            a, c = _scale_as_x(b, bop, a), _scale_as_x(b, bop, c)
        new = b.emit1("mul", [a, c])
    return [_with_scale(b, bop, new)]


@rewrite("div")
def _div_basis(b, op):
    x, y = op.operands
    bop = _basis_op(x)
    if bop is None or _basis_op(y) is not None or not _w_invariant(bop, op, y) or not is_float(y.type.dtype):
        return None
    scale = bop.operands[2]
    if not (scale.type.is_scalar and y.type.is_scalar):
        scale, y = _scale_as_x(b, bop, scale), _scale_as_x(b, bop, y)
    return [_with_scale(b, bop, b.emit1("div", [scale, y]))]


@rewrite("neg")
def _neg_basis(b, op):
    bop = _basis_op(op.operands[0])
    if bop is None:
        return None
    return [_with_scale(b, bop, b.emit1("neg", [bop.operands[2]]))]


@rewrite("cast")
def _cast_basis(b, op):
    bop = _basis_op(op.operands[0])
    if bop is None or not (is_float(op.result.type.dtype) and is_float(bop.result.type.dtype)):
        return None
    return [_with_scale(b, bop, b.emit1("cast", [bop.operands[2]], {"dtype": op.result.type.dtype}))]


@rewrite("add", "sub")
def _add_bases(b, op):
    x, y = op.operands
    bx, by = _basis_op(x), _basis_op(y)
    if bx is None or by is None or x.type != y.type or bx.operands[:2] != by.operands[:2]:
        return None
    sx, sy = bx.operands[2], by.operands[2]
    if not (sx.type.is_scalar and sy.type.is_scalar):
        sx, sy = _scale_as_x(b, bx, sx), _scale_as_x(b, bx, sy)
    return [_with_scale(b, bx, b.emit1(op.prim, [sx, sy]))]


def _rows(b, bop, v, spec_rest: str, shape_rest: tuple):
    """v[start:start+count, ...] (rows of v picked by the basis), shaped (W, *shape_rest)."""
    start, count = bop.operands[:2]
    stop = b.emit1("add", [start, count])
    return _shaped(b.emit1("slice", [v, start, stop], {"spec": "s" + spec_rest}),
                   (bop.attrs["shape"][0],) + tuple(shape_rest))


@rewrite("matmul")
def _matmul_basis(b, op):
    """B @ M = scale[start:stop, None] * M[start:stop] for a basis of vectors (X = (k,))."""
    lhs, m = op.operands
    bop = _basis_op(lhs)
    if bop is None or op.attrs.get("batch") or lhs.type.rank != 2 or m.type.rank not in (1, 2):
        return None
    if m.type.shape[0] != lhs.type.shape[1]:
        return None                      # equal extents are checked by the product: keep it
    rest = tuple(m.type.shape[1:])
    rows = _rows(b, bop, m, "a" * len(rest), rest)
    scale = bop.operands[2]
    if _is_one(scale):
        return [rows]
    if not scale.type.is_scalar:
        scale = _rows(b, bop, scale, "", ())
        if rest:
            wd = [bop.operands[1]] + b.dims_of(m)[1:]
            scale = b.broadcast_to(scale, op.result.type.shape, wd, bdims=(0,))
    return [b.emit1("mul", [rows, scale])]


@rewrite("reduce_sum")
def _reduce_basis(b, op):
    """sum over every axis of X: row w holds one non-zero, scale at flat position start + w."""
    bop = _basis_op(op.operands[0])
    if bop is None:
        return None
    xs = _x_shape(bop)
    if not xs or tuple(sorted(op.attrs["axes"])) != tuple(range(1, len(xs) + 1)):
        return None
    scale = bop.operands[2]
    wshape = (bop.attrs["shape"][0],)
    if scale.type.is_scalar:
        return [b.broadcast_to(scale, wshape, [bop.operands[1]], bdims=())]
    flat = scale
    if len(xs) > 1:
        n = b.const(1, "i64")
        size = 1
        for d, s in zip(bop.operands[3:], xs):
            n = b.emit1("mul", [n, d])
            size = dim_op("mul", size, s)
        flat = b.emit1("reshape", [scale, n], {"shape": (size,)})
    return [_rows(b, bop, flat, "", ())]


# ---- empty: an array every element of which is written before it is read ----------------------------
# empty(*extents) {shape, dtype}: the accumulators of jacfwd and jacrev, whose chunk loops store
# every column (row) block exactly once; allocating without zero-filling saves a pass over the
# Jacobian. Its contents are unspecified (the reference interpreter gives zeros); nothing else
# may read it before writing.
def _infer_empty(operands, attrs):
    shape = tuple(attrs["shape"])
    if len(operands) != len(shape):
        raise TypeRuleError("empty: one extent operand per axis")
    for d in operands:
        if not (is_int(d.type.dtype) and d.type.is_scalar):
            raise TypeRuleError(f"empty: extents must be integer scalars, got {d.type}")
    return [Type(attrs["dtype"], shape)]


defprim("empty", _infer_empty)


@rule("empty", "codegen")
def _empty_cg(cg, op):
    cg.alloc_array(op.result, [cg.to_i64(cg.get(d)) for d in op.operands])
