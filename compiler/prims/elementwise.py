"""Elementwise primitives (NumPy broadcasting over arrays; rank-0 operands are scalars).

Each is defined with its type rule and its scalar LLVM lowering; code generation applies the
scalar lowering inside fused loops. Operands reach an elementwise op already promoted to one
dtype (the builder inserts casts), so the rules here only decide shapes and result dtypes.
"""
from __future__ import annotations

from llvmlite import ir as ll

from ..ir import Type, is_float, is_int
from . import PRIMS, TypeRuleError, defprim


def broadcast_shapes(shapes):
    """NumPy broadcasting of symbolic shapes. Dims that are equal only at run time are checked then."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(rank):
        dims = [s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0]
        dims = [d for d in dims if d != 1] or [1]
        lits = {d for d in dims if isinstance(d, int)}
        if len(lits) > 1:
            raise TypeRuleError(f"shapes {' and '.join(_shape_str(s) for s in shapes)} cannot be broadcast together")
        out.append(next(iter(lits)) if lits else dims[0])
    return tuple(out)


def _shape_str(s):
    from ..ir import dim_str
    return "(" + ", ".join(dim_str(d) for d in s) + ("," if len(s) == 1 else "") + ")"


def _same_dtype(operands):
    dts = {o.type.dtype for o in operands}
    if len(dts) != 1:
        raise TypeRuleError(f"operands of different dtypes {sorted(dts)} (the builder should have cast them)")
    return dts.pop()


def _weak(operands):
    return all(o.type.weak for o in operands)


def _infer_same(operands, attrs):
    dt = _same_dtype(operands)
    shape = broadcast_shapes([o.type.shape for o in operands])
    return [Type(dt, shape, _weak(operands) and not shape)]


def _infer_bool(operands, attrs):
    _same_dtype(operands)
    return [Type("bool", broadcast_shapes([o.type.shape for o in operands]))]


def _infer_float_only(name):
    def infer(operands, attrs):
        (x,) = operands
        if not is_float(x.type.dtype):
            raise TypeRuleError(f"{name}() needs a floating-point argument, got {x.type}")
        return [x.type]
    return infer


def _infer_logical(operands, attrs):
    for o in operands:
        if o.type.dtype != "bool":
            raise TypeRuleError(f"logical operator needs bool operands, got {o.type}")
    return _infer_same(operands, attrs)


def _infer_select(operands, attrs):
    c, a, b = operands
    if c.type.dtype != "bool":
        raise TypeRuleError(f"where(): the condition must be bool, got {c.type}")
    dt = _same_dtype([a, b])
    shape = broadcast_shapes([c.type.shape, a.type.shape, b.type.shape])
    return [Type(dt, shape, a.type.weak and b.type.weak and not shape)]


def _infer_cast(operands, attrs):
    (x,) = operands
    return [Type(attrs["dtype"], x.type.shape)]


# ---- scalar lowering helpers ---------------------------------------------------------
def _f(fl, il):
    """Pick the float or integer builder method by the operand dtype."""
    def emit(cg, args, tin, tout, op):
        meth = fl if is_float(tin[0].dtype) else il
        return getattr(cg.b, meth)(*args)
    return emit


def _math(name):
    def emit(cg, args, tin, tout, op):
        return cg.call_math(name, tin[0].dtype, args, op)
    return emit


def _fcmp(pred, ipred=None, upred=None):
    ipred = ipred or pred

    def emit(cg, args, tin, tout, op):
        dt = tin[0].dtype
        if is_float(dt):
            if upred:
                return cg.b.fcmp_unordered(upred, *args)
            return cg.b.fcmp_ordered(pred, *args)
        if dt == "bool":
            return cg.b.icmp_unsigned(ipred, *args)
        return cg.b.icmp_signed(ipred, *args)
    return emit


def _int_floordiv_mod(cg, a, b, op, want):
    """Python's floor division / modulo for signed ints; division by zero raises."""
    zero = ll.Constant(a.type, 0)
    cg.check(cg.b.icmp_signed("!=", b, zero), "zerodiv", "integer division or modulo by zero", op.loc)
    # INT_MIN // -1 overflows in LLVM (UB); Python gives a big int, we wrap like NumPy.
    minus1 = ll.Constant(a.type, -1)
    is_m1 = cg.b.icmp_signed("==", b, minus1)
    safe_b = cg.b.select(is_m1, ll.Constant(a.type, 1), b)
    q = cg.b.sdiv(a, safe_b)
    r = cg.b.srem(a, safe_b)
    adjust = cg.b.and_(cg.b.icmp_signed("!=", r, zero),
                       cg.b.icmp_signed("<", cg.b.xor(r, b), zero))
    if want == "div":
        q = cg.b.select(adjust, cg.b.sub(q, ll.Constant(a.type, 1)), q)
        return cg.b.select(is_m1, cg.b.neg(a), q)
    r = cg.b.select(adjust, cg.b.add(r, b), r)
    return cg.b.select(is_m1, zero, r)


def _floordiv(cg, args, tin, tout, op):
    a, b = args
    if not is_float(tin[0].dtype):
        return _int_floordiv_mod(cg, a, b, op, "div")
    # NumPy's npy_divmod: exact floor of the true quotient, IEEE results for b == 0.
    bd = cg.b
    mod = bd.frem(a, b)
    div = bd.fdiv(bd.fsub(a, mod), b)
    zero = ll.Constant(a.type, 0.0)
    fix = bd.and_(bd.fcmp_unordered("!=", mod, zero),
                  bd.xor(bd.fcmp_ordered("<", b, zero), bd.fcmp_ordered("<", mod, zero)))
    div = bd.select(fix, bd.fsub(div, ll.Constant(a.type, 1.0)), div)
    fl = cg.call_math("floor", tin[0].dtype, [div])
    fl = bd.select(bd.fcmp_ordered(">", bd.fsub(div, fl), ll.Constant(a.type, 0.5)),
                   bd.fadd(fl, ll.Constant(a.type, 1.0)), fl)
    res = bd.select(bd.fcmp_ordered("==", div, zero),
                    cg.call_math("copysign", tin[0].dtype, [zero, bd.fdiv(a, b)]), fl)
    return bd.select(bd.fcmp_ordered("==", b, zero), bd.fdiv(a, b), res)


def _mod(cg, args, tin, tout, op):
    a, b = args
    if not is_float(tin[0].dtype):
        return _int_floordiv_mod(cg, a, b, op, "mod")
    bd = cg.b
    zero = ll.Constant(a.type, 0.0)
    mod = bd.frem(a, b)
    fix = bd.and_(bd.fcmp_unordered("!=", mod, zero),
                  bd.xor(bd.fcmp_ordered("<", b, zero), bd.fcmp_ordered("<", mod, zero)))
    adj = bd.select(fix, bd.fadd(mod, b), mod)
    return bd.select(bd.fcmp_ordered("==", mod, zero), cg.call_math("copysign", tin[0].dtype, [zero, b]), adj)


def _pow(cg, args, tin, tout, op):
    a, b = args
    if is_float(tin[0].dtype):
        # exact special cases of a literal exponent (what LLVM does for llvm.pow; the vectorisable
        # pow call in vmath.py hides the exponent from it): x**2 = x*x (one rounding, as pow's),
        # x**1 = x, x**0 = 1 (also for NaN, as C's pow)
        k = cg.const_value(op.operands[1]) if op is not None else None
        if k is not None and float(k) in (0.0, 1.0, 2.0):
            k = float(k)
            if k == 2.0:
                return cg.b.fmul(a, a)
            return a if k == 1.0 else ll.Constant(a.type, 1.0)
        return cg.call_math("pow", tin[0].dtype, args)
    # integer power by squaring; a negative exponent is an error (Python would return a float)
    cg.check(cg.b.icmp_signed(">=", b, ll.Constant(b.type, 0)), "value",
             "integers to negative integer powers are not allowed (use a float base)", op.loc)
    return cg.int_pow(a, b)


def _maximum(cg, args, tin, tout, op):
    a, b = args
    if is_float(tin[0].dtype):   # NaN propagates from either side; ties pick `a`
        take_a = cg.b.or_(cg.b.fcmp_ordered(">=", a, b), cg.b.fcmp_unordered("uno", a, a))
    else:
        take_a = cg.b.icmp_signed(">=", a, b) if tin[0].dtype != "bool" else cg.b.icmp_unsigned(">=", a, b)
    return cg.b.select(take_a, a, b)


def _minimum(cg, args, tin, tout, op):
    a, b = args
    if is_float(tin[0].dtype):
        take_a = cg.b.or_(cg.b.fcmp_ordered("<=", a, b), cg.b.fcmp_unordered("uno", a, a))
    else:
        take_a = cg.b.icmp_signed("<=", a, b) if tin[0].dtype != "bool" else cg.b.icmp_unsigned("<=", a, b)
    return cg.b.select(take_a, a, b)


def _neg(cg, args, tin, tout, op):
    (x,) = args
    return cg.b.fneg(x) if is_float(tin[0].dtype) else cg.b.neg(x)


def _abs(cg, args, tin, tout, op):
    (x,) = args
    if is_float(tin[0].dtype):
        return cg.call_math("fabs", tin[0].dtype, [x])
    return cg.b.select(cg.b.icmp_signed("<", x, ll.Constant(x.type, 0)), cg.b.neg(x), x)


def _sign(cg, args, tin, tout, op):
    (x,) = args
    bd = cg.b
    if is_float(tin[0].dtype):
        zero = ll.Constant(x.type, 0.0)
        pos = bd.uitofp(bd.fcmp_ordered(">", x, zero), x.type)
        neg = bd.uitofp(bd.fcmp_ordered("<", x, zero), x.type)
        s = bd.fsub(pos, neg)
        return bd.select(bd.fcmp_unordered("uno", x, x), x, s)
    pos = bd.zext(bd.icmp_signed(">", x, ll.Constant(x.type, 0)), x.type)
    neg = bd.zext(bd.icmp_signed("<", x, ll.Constant(x.type, 0)), x.type)
    return bd.sub(pos, neg)


def _int_identity_or(name):
    def emit(cg, args, tin, tout, op):
        if not is_float(tin[0].dtype):
            return args[0]
        return cg.call_math(name, tin[0].dtype, args)
    return emit


def _sigmoid(cg, args, tin, tout, op):
    # e = exp(-|x|) never overflows: sigmoid(x) = 1/(1+e) for x >= 0 and e/(1+e) for x < 0, so
    # large negative x gives the tiny (denormal) value instead of 1/(1+inf) = 0. One exp call,
    # branch-free (vectorises); NaN propagates through exp.
    (x,) = args
    bd = cg.b
    one = ll.Constant(x.type, 1.0)
    ax = cg.call_math("fabs", tin[0].dtype, [x])
    e = cg.call_math("exp", tin[0].dtype, [bd.fneg(ax)])
    r = bd.fdiv(one, bd.fadd(one, e))
    return bd.select(bd.fcmp_ordered("<", x, ll.Constant(x.type, 0.0)), bd.fmul(e, r), r)


def _truediv(cg, args, tin, tout, op):
    if not is_float(tin[0].dtype):
        raise TypeRuleError("integer true division must be cast to float first")
    return cg.b.fdiv(*args)


def _select(cg, args, tin, tout, op):
    return cg.b.select(*args)


def _not(cg, args, tin, tout, op):
    return cg.b.xor(args[0], ll.Constant(args[0].type, 1))


def _cast(cg, args, tin, tout, op):
    return cg.convert(args[0], tin[0].dtype, tout.dtype)


# ---- definitions ------------------------------------------------------------------------
def _ew(name, infer, scalar, **kw):
    return defprim(name, infer, kind="elementwise", scalar=scalar, **kw)


_ew("add", _infer_same, _f("fadd", "add"), linear=(0, 1))
_ew("sub", _infer_same, _f("fsub", "sub"), linear=(0, 1))
_ew("mul", _infer_same, _f("fmul", "mul"))
_ew("div", _infer_same, _truediv)
_ew("floordiv", _infer_same, _floordiv)
_ew("mod", _infer_same, _mod)
_ew("pow", _infer_same, _pow)
_ew("maximum", _infer_same, _maximum)
_ew("minimum", _infer_same, _minimum)
_ew("neg", _infer_same, _neg, linear=(0,))
_ew("abs", _infer_same, _abs)
_ew("sign", _infer_same, _sign)
_ew("floor", _infer_same, _int_identity_or("floor"))
_ew("ceil", _infer_same, _int_identity_or("ceil"))
for _name in ("sin", "cos", "tan", "exp", "log", "log1p", "expm1", "sqrt", "tanh"):
    _ew(_name, _infer_float_only(_name), _math(_name))
_ew("sigmoid", _infer_float_only("sigmoid"), _sigmoid)
_ew("lt", _infer_bool, _fcmp("<"))
_ew("le", _infer_bool, _fcmp("<="))
_ew("gt", _infer_bool, _fcmp(">"))
_ew("ge", _infer_bool, _fcmp(">="))
_ew("eq", _infer_bool, _fcmp("=="))
_ew("ne", _infer_bool, _fcmp("!=", upred="!="))
_ew("and", _infer_logical, lambda cg, a, ti, to, op: cg.b.and_(*a))
_ew("or", _infer_logical, lambda cg, a, ti, to, op: cg.b.or_(*a))
_ew("not", _infer_logical, _not)
_ew("select", _infer_select, _select, linear=(1, 2))
_ew("cast", _infer_cast, _cast, linear=(0,))

BINARY_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "//": "floordiv", "%": "mod", "**": "pow"}
COMPARE_OPS = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}
MATH_FUNCS = ("sin", "cos", "tan", "exp", "log", "log1p", "expm1", "sqrt", "tanh", "sigmoid",
              "abs", "sign", "floor", "ceil")

__all__ = ["broadcast_shapes", "BINARY_OPS", "COMPARE_OPS", "MATH_FUNCS", "is_int"]


# ---- JVP rules ---------------------------------------------------------------------------------
# Each differentiable elementwise primitive lists its partial derivatives, one per operand:
# ONE / NEG for linear operands, a function (builder, out, *operands) -> coefficient, or None
# (zero). The tangent is sum_k partial_k * tangent_k, broadcast to the result.
ONE, NEG = "one", "neg"


def _c(b, x, v):
    return b.const(v, x.type.dtype)


def _un(prim, x, b):
    return b.emit1(prim, [x])


def _bin(prim, x, y, b):
    return b.emit1(prim, [x, y])


def _jvp_partials(*parts):
    def rule(ctx, op, xs, ts):
        b, out = ctx.b, op.results[0]
        acc = None
        for part, x, t in zip(parts, xs, ts):
            if t is None or part is None:
                continue
            tb = ctx.bcast(t, x, out)
            if part == ONE:
                term = tb
            elif part == NEG:
                term = b.emit1("neg", [tb])
            else:
                term = b.emit1("mul", [part(b, out, *xs), tb])
            acc = term if acc is None else b.emit1("add", [acc, term])
        return [acc]
    return rule


def _const_of(v):
    op = v.owner
    return op.attrs["value"] if getattr(op, "prim", None) == "const" else None


def _dpow_dx(b, out, x, y):
    # y * x**(y - 1), taken as 0 where y == 0 (x**0 is constant; 0 * 0**-1 would be NaN at x == 0)
    yv = _const_of(y)
    if yv == 0:
        return _c(b, x, 0)
    ym1 = _c(b, y, yv - 1) if yv is not None else _bin("sub", y, _c(b, y, 1), b)
    d = _bin("mul", y, _bin("pow", x, ym1, b), b)
    if yv is not None:
        return d
    return b.emit1("select", [_bin("eq", y, _c(b, y, 0), b), _c(b, x, 0), d])


def _dpow_dy(b, out, x, y):
    # d/dy x**y = log(x) x**y, taken as 0 where x == 0 (the limit from the right)
    safe = _bin("mul", _un("log", x, b), out, b)
    return b.emit1("select", [_bin("eq", x, _c(b, x, 0), b), _c(b, x, 0), safe])


def _mask(prim):
    return lambda b, out, x, y: b.emit1("cast", [_bin(prim, x, y, b)], {"dtype": x.type.dtype})


def _select_jvp(ctx, op, xs, ts):
    c, a, bb = xs
    out = op.results[0]
    ta = ctx.bcast(ts[1], a, out) if ts[1] is not None else ctx.zeros(out)
    tb = ctx.bcast(ts[2], bb, out) if ts[2] is not None else ctx.zeros(out)
    return [ctx.b.emit1("select", [c, ta, tb])]


def _cast_jvp(ctx, op, xs, ts):
    if not is_float(op.attrs["dtype"]) or not is_float(xs[0].type.dtype):
        return [None]
    return [ctx.b.emit1("cast", [ts[0]], {"dtype": op.attrs["dtype"]})]


_PARTIALS = {
    "add": (ONE, ONE),
    "sub": (ONE, NEG),
    "neg": (NEG,),
    "mul": (lambda b, o, x, y: y, lambda b, o, x, y: x),
    "div": (lambda b, o, x, y: _bin("div", _c(b, y, 1), y, b), lambda b, o, x, y: _un("neg", _bin("div", o, y, b), b)),
    "pow": (_dpow_dx, _dpow_dy),
    "maximum": (_mask("ge"), _mask("lt")),
    "minimum": (_mask("le"), _mask("gt")),
    "mod": (ONE, lambda b, o, x, y: _un("neg", _bin("floordiv", x, y, b), b)),
    "floordiv": (None, None),
    "abs": (lambda b, o, x: _un("sign", x, b),),
    "sign": (None,), "floor": (None,), "ceil": (None,),
    "sin": (lambda b, o, x: _un("cos", x, b),),
    "cos": (lambda b, o, x: _un("neg", _un("sin", x, b), b),),
    "tan": (lambda b, o, x: _bin("add", _c(b, x, 1), _bin("mul", o, o, b), b),),
    "exp": (lambda b, o, x: o,),
    "log": (lambda b, o, x: _bin("div", _c(b, x, 1), x, b),),
    "log1p": (lambda b, o, x: _bin("div", _c(b, x, 1), _bin("add", _c(b, x, 1), x, b), b),),
    "expm1": (lambda b, o, x: _bin("add", o, _c(b, x, 1), b),),
    "sqrt": (lambda b, o, x: _bin("div", _c(b, x, 0.5), o, b),),
    "tanh": (lambda b, o, x: _bin("sub", _c(b, x, 1), _bin("mul", o, o, b), b),),
    "sigmoid": (lambda b, o, x: _bin("mul", o, _bin("sub", _c(b, x, 1), o, b), b),),
}
for _name, _parts in _PARTIALS.items():
    PRIMS[_name].jvp = _jvp_partials(*_parts)
PRIMS["select"].jvp = _select_jvp
PRIMS["cast"].jvp = _cast_jvp


# ---- transpose rules (reverse mode) ----------------------------------------------------------------
# rule(tc, op, ct, linear) -> one cotangent contribution per operand (None where not linear).
def _add_T(tc, op, ct, lin):
    a, c = op.operands
    return [tc.unbroadcast(ct, a) if lin[0] else None, tc.unbroadcast(ct, c) if lin[1] else None]


def _sub_T(tc, op, ct, lin):
    a, c = op.operands
    return [tc.unbroadcast(ct, a) if lin[0] else None,
            tc.unbroadcast(tc.b.emit1("neg", [ct]), c) if lin[1] else None]


def _neg_T(tc, op, ct, lin):
    return [tc.b.emit1("neg", [ct])]


def _mul_T(tc, op, ct, lin):
    a, c = op.operands
    if lin[0] and lin[1]:
        raise TypeRuleError("mul of two tangents is not linear")
    k = 0 if lin[0] else 1
    other = tc.primal(op.operands[1 - k])
    out = [None, None]
    out[k] = tc.unbroadcast(tc.b.emit1("mul", [ct, other]), op.operands[k])
    return out


def _div_T(tc, op, ct, lin):
    a, c = op.operands
    if lin[1]:
        raise TypeRuleError("division by a tangent is not linear")
    return [tc.unbroadcast(tc.b.emit1("div", [ct, tc.primal(c)]), a), None]


def _select_T(tc, op, ct, lin):
    c, a, bb = op.operands
    cond = tc.primal(c)
    zero = tc.b.const(0, ct.type.dtype)
    return [None,
            tc.unbroadcast(tc.b.emit1("select", [cond, ct, zero]), a) if lin[1] else None,
            tc.unbroadcast(tc.b.emit1("select", [cond, zero, ct]), bb) if lin[2] else None]


def _cast_T(tc, op, ct, lin):
    return [tc.b.emit1("cast", [ct], {"dtype": op.operands[0].type.dtype})]


for _name, _rule in (("add", _add_T), ("sub", _sub_T), ("neg", _neg_T), ("mul", _mul_T), ("div", _div_T),
                     ("select", _select_T), ("cast", _cast_T)):
    PRIMS[_name].transpose = _rule
