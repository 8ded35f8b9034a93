"""A reference evaluator for dslc's IR: runs an `ir.Function` directly with NumPy.

It shares no code generation with the compiler: every primitive has one small NumPy
implementation below, structured control flow (`for`, `while`, `if`) is interpreted, and run-time
errors are raised as the compiled code raises them (`IndexError`, `ZeroDivisionError`,
`ValueError`, with the kernel's `file:line:col` and source line). It is the oracle of the
differential fuzzer (tests/test_fuzz.py, bench/fuzz.py) and a debugging aid:

    f(x, y, target="interpret")               # any kernel, derivative kernels included
    dsl.interpret.run(fn, args)               # an ir.Function (before or after simplification)
    dsl.interpret.run(fn, args, dtype=np.float64)   # f32 computed in float64 (finite differences)

Semantics (docs/language.md): Python floor division and modulo (integer division by zero raises),
Python index wrapping and slice clamping, `maximum`/`minimum` pick the first argument on ties and
propagate NaN from either side, float -> int casts truncate and saturate (NaN -> 0), integer
arithmetic wraps. Summation order is NumPy's, so float reductions may differ from the compiled
code in the last bits. It is slow (a Python loop over the ops, per loop iteration); that is fine for
its purpose.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from compiler import ir
from compiler.diagnostics import Loc

__all__ = ["run", "call", "InterpretError"]

_NP = {"bool": np.bool_, "i32": np.int32, "i64": np.int64, "f32": np.float32, "f64": np.float64}
_INT_LIMITS = {"i32": (-2 ** 31, 2 ** 31 - 1), "i64": (-2 ** 63, 2 ** 63 - 1)}


class InterpretError(RuntimeError):
    """The IR itself is malformed (an unknown primitive, a missing value): an internal error."""


def _located(cls, message: str, loc: Loc):
    if loc is not None and loc.line:
        text = f"{loc}: {message}"
        caret = loc.caret()
        if caret:
            text += "\n" + caret
    else:
        text = message
    return cls(text)


class _Interp:
    def __init__(self, fn: ir.Function, widen=None):
        self.fn = fn
        self.widen = widen          # None, or the NumPy float type every float is computed in

    # ---- dtypes ----------------------------------------------------------------------------
    def np_dtype(self, dt: str):
        if self.widen is not None and dt in ir.FLOATS:
            return self.widen if dt == "f32" or np.finfo(self.widen).bits >= 64 else _NP[dt]
        return _NP[dt]

    def arr(self, v, dt: str):
        return np.asarray(v, dtype=self.np_dtype(dt))

    # ---- blocks ----------------------------------------------------------------------------
    def run_block(self, block: ir.Block, env: dict, args: Sequence):
        env = dict(env)
        for a, v in zip(block.args, args):
            env[a] = v
        for op in block.ops:
            if op.prim in ("yield", "return"):
                return [env[o] for o in op.operands]
            impl = _IMPL.get(op.prim)
            if impl is None:
                raise InterpretError(f"the interpreter has no rule for primitive '{op.prim}'")
            try:
                xs = [env[o] for o in op.operands]
            except KeyError:
                raise InterpretError(f"{op.prim}: an operand is not defined before its use") from None
            outs = impl(self, op, xs, env)
            if len(outs) != len(op.results):
                raise InterpretError(f"{op.prim}: {len(outs)} result(s), expected {len(op.results)}")
            for r, v in zip(op.results, outs):
                env[r] = self.arr(v, r.type.dtype)
        raise InterpretError("block without a terminator")


# ---- elementwise ---------------------------------------------------------------------------------
def _isf(x) -> bool:
    return x.dtype.kind == "f"


def _bin(f):
    def impl(it, op, xs, env):
        return [f(it, op, xs[0], xs[1])]
    return impl


def _un(f):
    def impl(it, op, xs, env):
        return [f(xs[0])]
    return impl


def _int_divmod(it, op, a, b, want):
    if np.any(b == 0):
        raise _located(ZeroDivisionError, "integer division or modulo by zero", op.loc)
    a, b = np.broadcast_arrays(a, b)
    m1 = b == -1
    safe = np.where(m1, np.ones_like(b), b)
    q = np.floor_divide(a, safe)            # exact floor semantics for b != 0, -1
    r = np.mod(a, safe)
    if want == "div":
        return np.where(m1, np.negative(a), q)      # INT_MIN // -1 wraps, as NumPy and the compiler
    return np.where(m1, np.zeros_like(a), r)


def _floordiv(it, op, a, b):
    if _isf(a):
        return np.floor_divide(a, b)
    return _int_divmod(it, op, a, b, "div")


def _mod(it, op, a, b):
    if _isf(a):
        return np.mod(a, b)
    return _int_divmod(it, op, a, b, "mod")


def _pow(it, op, a, b):
    if _isf(a):
        return np.power(a, b)
    if np.any(b < 0):
        raise _located(ValueError, "integers to negative integer powers are not allowed (use a float base)", op.loc)
    a, b = np.broadcast_arrays(a, b)
    # repeated squaring with wrap-around, as the compiled code
    res = np.ones_like(a)
    base = a.copy()
    e = b.copy()
    while np.any(e > 0):
        odd = (e & 1) == 1
        res = np.where(odd, res * base, res)
        base = base * base
        e = e >> 1
    return res


def _maximum(it, op, a, b):
    take_a = (a >= b) | (np.isnan(a) if _isf(a) else False)
    return np.where(take_a, a, b)


def _minimum(it, op, a, b):
    take_a = (a <= b) | (np.isnan(a) if _isf(a) else False)
    return np.where(take_a, a, b)


def _truediv(it, op, a, b):
    if not _isf(a):
        raise InterpretError("integer true division must be cast to float first")
    return np.true_divide(a, b)


def _abs(x):
    if _isf(x):
        return np.abs(x)
    return np.where(x < 0, np.negative(x), x)


def _sign(x):
    if _isf(x):
        one = np.ones_like(x)
        zero = np.zeros_like(x)
        s = np.where(x > 0, one, zero) - np.where(x < 0, one, zero)
        return np.where(np.isnan(x), x, s)
    if x.dtype == np.bool_:
        return x
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


def _float_only(f):
    def g(x):
        if not _isf(x):
            raise InterpretError(f"{f.__name__}() of a non-float operand")
        return f(x)
    return g


def _int_or(f):
    def g(x):
        return f(x) if _isf(x) else x
    return g


def _sigmoid(x):
    one = np.ones_like(x)
    return one / (one + np.exp(-x))


def _neg(x):
    if x.dtype == np.bool_:
        raise InterpretError("neg of a bool operand")
    return np.negative(x)


def _cmp(f):
    def impl(it, op, xs, env):
        return [f(xs[0], xs[1])]
    return impl


def _logical(f):
    def impl(it, op, xs, env):
        return [f(*xs)]
    return impl


def _select(it, op, xs, env):
    c, a, b = xs
    return [np.where(c, a, b)]


def _cast(it, op, xs, env):
    (x,) = xs
    dst = op.attrs["dtype"]
    src = op.operands[0].type.dtype
    if src == dst:
        return [x]
    if dst == "bool":
        return [x != 0]                 # NaN != 0: True, as the compiled code (unordered compare)
    if ir.is_float(src) and ir.is_int(dst):
        lo, hi = _INT_LIMITS[dst]
        with np.errstate(invalid="ignore"):
            t = np.trunc(x)
            out = np.where(np.isnan(t), 0.0, t)
            big = out >= float(hi) + 1.0 if dst == "i32" else out >= 2.0 ** 63
            small = out < float(lo)
            safe = np.where(big | small, 0.0, out).astype(_NP[dst])
        res = np.where(big, _NP[dst](hi), np.where(small, _NP[dst](lo), safe))
        return [res]
    if ir.is_int(src) and ir.is_int(dst):
        return [x.astype(_NP[dst])]     # sign-extend or wrap (two's complement)
    return [x.astype(it.np_dtype(dst))]


# ---- arrays ----------------------------------------------------------------------------------------
def _const(it, op, xs, env):
    return [it.arr(op.attrs["value"], op.attrs["dtype"])]


def _dim(it, op, xs, env):
    return [np.int64(np.shape(xs[0])[op.attrs["axis"]])]


def _extents(it, op, vals):
    dims = [int(v) for v in vals]
    for d in dims:
        if d < 0:
            raise _located(ValueError, "negative dimensions are not allowed", op.loc)
    return dims


def _bcast(it, op, xs, env):
    x, dims = xs[0], _extents(it, op, xs[1:])
    xo = op.operands[0]
    bd, shape = op.attrs["bdims"], op.attrs["shape"]
    expanded = [1] * len(dims)
    for k, a in enumerate(bd):
        static1 = xo.type.shape[k] == 1
        if not static1 and xo.type.shape[k] != shape[a] and x.shape[k] != dims[a]:
            raise _located(ValueError, f"extent mismatch in broadcast (extents {x.shape[k]} and {dims[a]})", op.loc)
        expanded[a] = 1 if static1 else x.shape[k]
    # axes of x are placed in order at bdims (bdims may permute: transpose first)
    order = sorted(range(len(bd)), key=lambda k: bd[k])
    xt = np.transpose(x, order) if x.ndim else x
    try:
        return [np.broadcast_to(np.reshape(xt, expanded), dims)]
    except ValueError:
        raise _located(ValueError, f"extent mismatch in broadcast ({x.shape} to {tuple(dims)})", op.loc) from None


def _reduce(fname):
    def impl(it, op, xs, env):
        (x,) = xs
        axes = tuple(op.attrs["axes"])
        if fname in ("max", "min"):
            size = 1
            for a in axes:
                size *= x.shape[a]
            if size == 0:
                raise _located(ValueError, f"zero-size array to reduction operation {fname} which has no identity", op.loc)
            if _isf(x):
                # NaN propagates (np.max does too); ties are irrelevant for the value
                return [np.max(x, axis=axes) if fname == "max" else np.min(x, axis=axes)]
            return [np.max(x, axis=axes) if fname == "max" else np.min(x, axis=axes)]
        if fname == "sum":
            if x.dtype == np.float32:       # accumulate f32 in f64 (at least as accurate as compiled)
                return [np.sum(x, axis=axes, dtype=np.float64).astype(np.float32)]
            return [np.sum(x, axis=axes, dtype=x.dtype)]
        return [np.prod(x, axis=axes, dtype=x.dtype)]
    return impl


def _matmul(it, op, xs, env):
    a, b = xs
    batch = op.attrs.get("batch")
    if batch:
        X = a if batch == "lhs" else b
        outs = []
        for w in range(X.shape[0]):
            pair = (a[w], b) if batch == "lhs" else (a, b[w])
            outs.append(_plain_matmul(op, *pair))
        shape_tail = _plain_shape(op, a[0] if batch == "lhs" and a.shape[0] else None,
                                  b[0] if batch == "rhs" and b.shape[0] else None, a, b, batch)
        if not outs:
            return [np.zeros((0,) + shape_tail, dtype=a.dtype)]
        return [np.stack(outs)]
    return [_plain_matmul(op, a, b)]


def _plain_shape(op, a0, b0, a, b, batch):
    ta = a.shape[1:] if batch == "lhs" else a.shape
    tb = b.shape[1:] if batch == "rhs" else b.shape
    return tuple(ta[:-1]) + tuple(tb[1:])


def _plain_matmul(op, a, b):
    if a.shape[-1] != b.shape[0]:
        raise _located(ValueError, f"inner extents of '@' differ (extents {a.shape[-1]} and {b.shape[0]})", op.loc)
    if a.ndim == 1 and b.ndim == 1:
        return np.dot(a, b) if a.size else np.zeros((), a.dtype)
    return np.matmul(a, b)


def _transpose(it, op, xs, env):
    return [np.transpose(xs[0], op.attrs["perm"])]


def _reshape(it, op, xs, env):
    x, dims = xs[0], _extents(it, op, xs[1:])
    if int(np.prod(dims, dtype=np.int64)) != x.size:
        raise _located(ValueError, f"reshape: the number of elements changes (extents {x.size} and "
                                   f"{int(np.prod(dims, dtype=np.int64))})", op.loc)
    return [np.reshape(x, dims)]


def _resolve(op, x, spec, idx):
    """numpy index tuple for a spec: 'i' wraps and checks, 's' clamps (Python), 'a' whole axis."""
    out, k = [], 0
    for ax, c in enumerate(spec):
        n = x.shape[ax]
        if c == "i":
            i = int(idx[k])
            w = i + n if i < 0 else i
            if not 0 <= w < n:
                raise _located(IndexError, f"index {i} is out of bounds for axis {ax} with size {n}", op.loc)
            out.append(w)
            k += 1
        elif c == "s":
            lo, hi = (_clamp(int(idx[k]), n), _clamp(int(idx[k + 1]), n))
            out.append(slice(lo, max(hi, lo)))
            k += 2
        else:
            out.append(slice(None))
    return tuple(out)


def _clamp(v, n):
    if v < 0:
        v += n
    return min(max(v, 0), n)


def _index(it, op, xs, env):
    x, idx = xs[0], xs[1:]
    return [x[_resolve(op, x, op.attrs["spec"], idx)]]


def _slice(it, op, xs, env):
    x, idx = xs[0], xs[1:]
    return [np.array(x[_resolve(op, x, op.attrs["spec"], idx)])]


def _store(it, op, xs, env):
    x, v, idx = xs[0], xs[1], xs[2:]
    where = _resolve(op, x, op.attrs["spec"], idx)
    dst = np.array(x, copy=True)
    target = dst[where]
    vo = op.operands[1]
    tshape = np.shape(target)
    for k in range(v.ndim):
        dv = vo.type.shape[-1 - k]
        if k >= len(tshape):
            raise InterpretError("store: value of a higher rank than the target")
        if dv != 1 and v.shape[-1 - k] != tshape[-1 - k]:
            raise _located(ValueError, "the stored value's shape does not match the slice "
                                       f"(extents {v.shape[-1 - k]} and {tshape[-1 - k]})", op.loc)
    val = v.astype(dst.dtype, copy=False)
    if op.prim == "add_at":
        dst[where] = target + val
    else:
        dst[where] = val
    return [dst]


def _basis(it, op, xs, env):
    """rows start .. start+count of the identity of X's space, each scaled (compiler/prims/basis.py)."""
    start, count, scale = int(xs[0]), int(xs[1]), xs[2]
    dims = _extents(it, op, xs[3:])
    n = int(np.prod(dims, dtype=np.int64))
    flat_scale = np.broadcast_to(scale, dims).reshape(-1)
    out = np.zeros((max(count, 0), n), dtype=np.asarray(scale).dtype)
    for w in range(max(count, 0)):
        if 0 <= start + w < n:
            out[w, start + w] = flat_scale[start + w]
    return [out.reshape([max(count, 0)] + dims)]


def _empty(it, op, xs, env):
    # unspecified contents in compiled code (every element is written before it is read)
    return [np.zeros(_extents(it, op, xs), dtype=it.np_dtype(op.attrs["dtype"]))]


# ---- control flow ------------------------------------------------------------------------------------
def _for(it, op, xs, env):
    lo, hi, step = (int(v) for v in xs[:3])
    carried = list(xs[3:])
    if step == 0:
        raise _located(ValueError, "range() arg 3 must not be zero", op.loc)
    body = op.regions[0]
    i = lo
    while (i < hi) if step > 0 else (i > hi):
        vals = it.run_block(body, env, [np.int64(i)] + carried)
        carried = [it.arr(v, r.type.dtype) for v, r in zip(vals, op.results)]
        i += step
    return carried


def _while(it, op, xs, env):
    carried = list(xs)
    cond, body = op.regions
    while True:
        (c,) = it.run_block(cond, env, carried)
        if not bool(c):
            return carried
        vals = it.run_block(body, env, carried)
        carried = [it.arr(v, r.type.dtype) for v, r in zip(vals, op.results)]


def _if(it, op, xs, env):
    region = op.regions[0] if bool(xs[0]) else op.regions[1]
    return it.run_block(region, env, [])


def _fork(it, op, xs, env):
    return it.run_block(op.regions[0], env, []) + it.run_block(op.regions[1], env, [])


_IMPL = {
    "add": _bin(lambda it, op, a, b: a + b),
    "sub": _bin(lambda it, op, a, b: a - b),
    "mul": _bin(lambda it, op, a, b: a * b),
    "div": _bin(_truediv),
    "floordiv": _bin(_floordiv),
    "mod": _bin(_mod),
    "pow": _bin(_pow),
    "maximum": _bin(_maximum),
    "minimum": _bin(_minimum),
    "neg": _un(_neg),
    "abs": _un(_abs),
    "sign": _un(_sign),
    "floor": _un(_int_or(np.floor)),
    "ceil": _un(_int_or(np.ceil)),
    "sin": _un(_float_only(np.sin)), "cos": _un(_float_only(np.cos)), "tan": _un(_float_only(np.tan)),
    "exp": _un(_float_only(np.exp)), "log": _un(_float_only(np.log)), "log1p": _un(_float_only(np.log1p)),
    "expm1": _un(_float_only(np.expm1)), "sqrt": _un(_float_only(np.sqrt)), "tanh": _un(_float_only(np.tanh)),
    "sigmoid": _un(_float_only(_sigmoid)),
    "lt": _cmp(np.less), "le": _cmp(np.less_equal), "gt": _cmp(np.greater), "ge": _cmp(np.greater_equal),
    "eq": _cmp(np.equal), "ne": _cmp(np.not_equal),
    "and": _logical(np.logical_and), "or": _logical(np.logical_or), "not": _logical(np.logical_not),
    "select": _select,
    "cast": _cast,
    "const": _const,
    "dim": _dim,
    "broadcast_in_dim": _bcast,
    "reduce_sum": _reduce("sum"), "reduce_prod": _reduce("prod"),
    "reduce_max": _reduce("max"), "reduce_min": _reduce("min"),
    "matmul": _matmul,
    "transpose": _transpose,
    "reshape": _reshape,
    "basis": _basis,
    "empty": _empty,
    "index": _index,
    "slice": _slice,
    "store": _store,
    "add_at": _store,
    "for": _for,
    "while": _while,
    "if": _if,
    "fork": _fork,
}


# ---- entry points ------------------------------------------------------------------------------------
def _coerce_arg(p: ir.Value, a, it: _Interp, name: str):
    dt = p.type.dtype
    want = it.np_dtype(dt)
    if p.type.is_scalar:
        return np.asarray(a).astype(want)
    arr = np.asarray(a)
    if arr.ndim != p.type.rank:
        raise TypeError(f"parameter {name!r}: expected a rank-{p.type.rank} {dt} array, got shape {arr.shape}")
    return arr.astype(want, copy=True)


def _check_dims(fn: ir.Function, vals: list) -> None:
    """The extents bound by parameters' dim names and literal dims, as the compiled entry checks."""
    bound = {}
    for p, name, v in zip(fn.params, fn.param_names, vals):
        for ax, (d, e) in enumerate(zip(p.type.shape, np.shape(v))):
            if isinstance(d, int):
                if e != d:
                    raise _located(ValueError, f"parameter '{name}' axis {ax} must have extent {d} "
                                               f"(extents {e} and {d})", fn.loc)
            elif isinstance(d, str) and not d.startswith(("?", "$")):
                if d in bound and bound[d][1] != e:
                    raise _located(ValueError, f"parameter '{name}' axis {ax}: extent of '{d}' differs from "
                                               f"parameter '{bound[d][0]}' (extents {e} and {bound[d][1]})", fn.loc)
                bound.setdefault(d, (name, e))
    for p, name, v in zip(fn.params, fn.param_names, vals):
        if p.type.is_scalar and ir.is_int(p.type.dtype) and name in bound and int(v) != bound[name][1]:
            raise _located(ValueError, f"parameter '{name}' must equal the extent '{name}' of parameter "
                                       f"'{bound[name][0]}'", fn.loc)


def run(fn: ir.Function, args: Sequence, dtype: Optional[type] = None) -> list:
    """Evaluate `fn` on `args` (one per parameter, NumPy arrays or scalars); returns the list of
    results as NumPy values (0-d for scalars). `dtype=np.float64` computes every f32 in float64
    (the returned values are float64 then); `dtype=np.longdouble` computes every float in long
    double (an extended-precision oracle); otherwise values keep their declared dtypes."""
    if dtype is not None:
        dtype = np.dtype(dtype).type
        if dtype not in (np.float64, np.longdouble):
            raise ValueError("dtype must be None, numpy.float64 or numpy.longdouble")
    if len(args) != len(fn.params):
        raise TypeError(f"{fn.name}() takes {len(fn.params)} argument(s), got {len(args)}")
    it = _Interp(fn, widen=dtype)
    names = list(fn.param_names) + [f"arg{k}" for k in range(len(fn.param_names), len(fn.params))]
    vals = [_coerce_arg(p, a, it, n) for p, a, n in zip(fn.params, args, names)]
    _check_dims(fn, vals)
    with np.errstate(all="ignore"):
        return it.run_block(fn.body, dict(zip(fn.params, vals)), [])


def _output_value(v, dtype):
    v = np.asarray(v)
    if v.ndim == 0:
        return dtype.type(v[()])
    return np.array(v, dtype=dtype, copy=True)


def call(kernel, args: Sequence, dtype: Optional[type] = None, simplify: bool = False):
    """`kernel(*args, target="interpret")`: type the arguments as a compiled call would (same
    TypeError/ValueError for a bad argument), evaluate the kernel's IR (as lowered, unless
    `simplify`), and return what the compiled call returns (NumPy scalars, new arrays, a tuple)."""
    from compiler.pipeline import prepare, signature_of
    from runtime import Signature
    from runtime.call import _Checker

    ptypes = kernel._param_types(args)
    fn = kernel._lower_ir(ptypes)
    if simplify:
        fn = prepare(fn)
    else:
        ir.verify(fn)
    sig = Signature.from_json(signature_of(fn, fn.name, []))
    checker = _Checker(sig)
    values, dims = checker.bind(args)
    shapes = checker.output_shapes(values, dims)
    outs = run(fn, values, dtype=dtype)
    res = []
    for o, v, want in zip(sig.outputs, outs, shapes):
        if np.shape(v) != tuple(want):
            raise _located(ValueError, f"output buffer has the wrong extent (shape {np.shape(v)}, the "
                                       f"signature gives {tuple(want)})", fn.loc)
        res.append(_output_value(v, np.asarray(v).dtype if dtype is not None and o.dtype in ir.FLOATS
                                 else np.dtype(_NP[o.dtype])))
    if sig.tuple_result or len(res) != 1:
        return tuple(res)
    return res[0]
