"""Testing helpers for derivative kernels (the forward-mode analogue of `jax.test_util.check_grads`).

    from dsl import kernel
    from dsl.testing import check_jvp

    @kernel
    def f(x: f64[n], s: f64) -> f64:
        return sum(sin(x) * s)

    check_jvp(f, (np.linspace(0, 1, 5), 0.3))           # f.jvp against finite differences
    check_jvp(f, (np.linspace(0, 1, 5), 0.3), order=2)  # and f.jvp.jvp against differences of f.jvp
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from compiler.ir import is_float

__all__ = ["check_jvp"]

_NP = {"f32": np.float32, "f64": np.float64}
# default (atol, rtol) by the precision the derivative kernel computes in and the precision the
# finite differences are taken in
_TOL = {("f64", "f64"): 1e-5, ("f32", "f64"): 2e-3, ("f32", "f32"): 2e-2}
_EPS = {"f64": 1e-6, "f32": 2e-3}


def check_jvp(f, args: Sequence, order: int = 1, atol: Optional[float] = None,
              rtol: Optional[float] = None, eps: Optional[float] = None, seed: int = 0) -> None:
    """Check `f.jvp` (and, for `order=2`, `f.jvp.jvp`) against central finite differences of `f`.

    One random tangent is drawn (from `seed`) per floating-point parameter of `f`, scalar or array,
    with its primal's shape and dtype; integer and bool parameters take none. The tangent outputs of
    `f.jvp(*args, *tangents)` must match `(f(x + eps*t) - f(x - eps*t)) / (2*eps)` to within
    `atol + rtol * |fd|`, elementwise, for every output. The differences are taken in float64 on
    float64 copies of the arguments when the kernel accepts them (an unannotated or `f64` kernel);
    otherwise at the given dtype, with a larger default `eps` and a looser default tolerance.

    `order=2` also checks the second-order tangent: `f.jvp.jvp` with the primal direction `t` and a
    zero direction for the tangent inputs gives, as its last outputs, d^2 f[t, t]; it is compared
    with central differences of the tangent output of `f.jvp(x + eps*t, t)`.

    Raises AssertionError naming the output, the order and the largest absolute and relative errors.

    Example:

        >>> @kernel
        ... def p35(x: f64) -> f64:
        ...     return x ** 3.5
        >>> check_jvp(p35, (1.1,), order=2)
    """
    if order not in (1, 2):
        raise ValueError(f"check_jvp: order must be 1 or 2, got {order!r}")
    args = tuple(args)
    ptypes = f._param_types(args)
    fpos = [k for k, p in enumerate(ptypes) if is_float(p.dtype)]
    if not fpos:
        raise ValueError(f"check_jvp: kernel '{f.name}' has no floating-point parameter")
    rng = np.random.default_rng(seed)
    tangents = [_random_like(rng, args[k], ptypes[k]) for k in fpos]
    out_dtypes = [o.dtype for o in f._caller(ptypes).signature.outputs]
    low = "f32" if "f32" in [ptypes[k].dtype for k in fpos] + out_dtypes else "f64"

    # differences in float64 when the kernel computes in float64 given float64 copies (an f32
    # parameter would round the shifted argument, an f32 output the difference)
    args64 = _as_f64(args, fpos)
    fd_args, fd_dtype, fd_types = args, low, ptypes
    try:
        pt64 = f._param_types(args64)
        if all(pt64[k].dtype == "f64" for k in fpos) and \
                "f32" not in [o.dtype for o in f._caller(pt64).signature.outputs]:
            f(*args64)
            fd_args, fd_dtype, fd_types = args64, "f64", pt64
    except (TypeError, ValueError):
        pass
    atol_, rtol_ = (_TOL[(low, fd_dtype)],) * 2
    atol = atol_ if atol is None else atol
    rtol = rtol_ if rtol is None else rtol
    eps = _EPS[fd_dtype] if eps is None else eps
    tuple_out = f._caller(ptypes).signature.tuple_result

    def outputs(kernel, a, tup):
        r = kernel(*a)
        return list(r) if tup else [r]

    # ---- order 1: f.jvp's tangent outputs against differences of f -----------------------------------
    res = f.jvp(*args, *tangents)
    n = len(res) // 2
    got = res[n:]
    plus = outputs(f, _shift(fd_args, fpos, fd_types, tangents, eps), tuple_out)
    minus = outputs(f, _shift(fd_args, fpos, fd_types, tangents, -eps), tuple_out)
    for k in range(n):
        fd = (_f64(plus[k]) - _f64(minus[k])) / (2 * eps)
        _compare(f.name, 1, k, got[k], fd, atol, rtol)
    if order == 1:
        return

    # ---- order 2: f.jvp.jvp along (t, 0) against differences of f.jvp's tangent outputs ----------------
    zeros = [_zeros_like(t) for t in tangents]
    res2 = f.jvp.jvp(*args, *tangents, *tangents, *zeros)
    got2 = res2[-n:]
    fd_t = [_cast_like(t, fd_types[k].dtype) for k, t in zip(fpos, tangents)]
    plus = f.jvp(*_shift(fd_args, fpos, fd_types, tangents, eps), *fd_t)[n:]
    minus = f.jvp(*_shift(fd_args, fpos, fd_types, tangents, -eps), *fd_t)[n:]
    for k in range(n):
        fd = (_f64(plus[k]) - _f64(minus[k])) / (2 * eps)
        _compare(f.name, 2, k, got2[k], fd, atol, rtol)


def _random_like(rng, x, ptype):
    dt = _NP[ptype.dtype]
    if not ptype.dims:
        return float(dt(rng.standard_normal()))
    return rng.standard_normal(np.shape(x)).astype(dt)


def _zeros_like(t):
    return 0.0 if isinstance(t, float) else np.zeros_like(t)


def _cast_like(t, dtype):
    return t if isinstance(t, float) else t.astype(_NP[dtype])


def _as_f64(args, fpos):
    out = list(args)
    for k in fpos:
        x = args[k]
        out[k] = float(x) if np.ndim(x) == 0 and not isinstance(x, np.ndarray) else np.asarray(x, np.float64)
    return tuple(out)


def _shift(args, fpos, ptypes, tangents, h):
    """args with every floating-point argument moved by h * its tangent (computed in float64,
    rounded to the parameter's dtype)."""
    out = list(args)
    for k, t in zip(fpos, tangents):
        dt = _NP[ptypes[k].dtype]
        x = np.asarray(args[k], np.float64) + h * np.asarray(t, np.float64)
        if not ptypes[k].dims and not isinstance(args[k], np.ndarray):
            out[k] = float(dt(x))
        else:
            out[k] = x.astype(dt)
    return tuple(out)


def _f64(v):
    return np.asarray(v).astype(np.float64)


def _compare(name, order, k, got, fd, atol, rtol):
    got = _f64(got)
    what = f"check_jvp({name}): {'tangent' if order == 1 else 'second-order tangent'} output {k}"
    if got.shape != fd.shape:
        raise AssertionError(f"{what} has shape {got.shape}, the finite differences {fd.shape}")
    if got.size == 0:
        return
    err = np.abs(got - fd)
    bad = ~(err <= atol + rtol * np.abs(fd))           # NaN counts as a mismatch
    if not np.any(bad):
        return
    rel = err / np.maximum(np.abs(fd), np.finfo(np.float64).tiny)
    i = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf), -1.0))), got.shape)
    where = f" at index {tuple(int(j) for j in i)}" if got.ndim else ""
    raise AssertionError(
        f"{what} (order {order}) differs from central finite differences: "
        f"{int(np.count_nonzero(bad))} of {got.size} element(s) out of tolerance (atol={atol:g}, rtol={rtol:g}); "
        f"max abs error {np.nanmax(err):.3g}, max rel error {np.nanmax(rel):.3g}; "
        f"worst{where}: jvp {got[i]!r}, finite differences {fd[i]!r}")


def _random_cotangents(rng, outs) -> list:
    """One random cotangent per output, with the output's shape and dtype."""
    return [np.asarray(rng.standard_normal(np.shape(o))).astype(np.asarray(o).dtype)
            if np.ndim(o) else np.asarray(rng.standard_normal(), dtype=np.asarray(o).dtype)[()] for o in outs]


def check_vjp(f, args: Sequence, atol: Optional[float] = None, rtol: Optional[float] = None,
              eps: Optional[float] = None, seed: int = 0) -> None:
    """Check `f.vjp` by the dot-product test against finite differences of `f`:
    `<u, (f(x + eps v) - f(x - eps v)) / 2 eps> == <f.vjp(x, u), v>` for random cotangents u (one
    per output) and tangents v (one per floating-point parameter)."""
    args = tuple(args)
    ptypes = f._param_types(args)
    fpos = [k for k, p in enumerate(ptypes) if is_float(p.dtype)]
    if not fpos:
        raise ValueError(f"check_vjp: kernel '{f.name}' has no floating-point parameter")
    rng = np.random.default_rng(seed)
    sig = f._caller(ptypes).signature
    outs = f(*args)
    outs = list(outs) if sig.tuple_result else [outs]
    us = _random_cotangents(rng, outs)
    vs = [_random_like(rng, args[k], ptypes[k]) for k in fpos]
    low = "f32" if "f32" in [ptypes[k].dtype for k in fpos] + [o.dtype for o in sig.outputs] else "f64"
    eps = _EPS[low] if eps is None else eps
    tol = _TOL[(low, low)]
    atol = tol if atol is None else atol
    rtol = tol if rtol is None else rtol
    plus = f(*_shift(args, fpos, ptypes, vs, eps))
    minus = f(*_shift(args, fpos, ptypes, vs, -eps))
    plus, minus = (list(plus), list(minus)) if sig.tuple_result else ([plus], [minus])
    lhs = sum(float(np.sum(_f64(u) * (_f64(p) - _f64(m)) / (2 * eps))) for u, p, m in zip(us, plus, minus))
    grads = f.vjp(*args, *us)[len(outs):]
    rhs = sum(float(np.sum(_f64(g) * _f64(v))) for g, v in zip(grads, vs))
    scale = sum(float(np.sum(np.abs(_f64(g) * _f64(v)))) for g, v in zip(grads, vs))
    if not abs(lhs - rhs) <= atol + rtol * max(abs(lhs), scale):
        raise AssertionError(f"check_vjp: kernel '{f.name}': <u, J v> = {lhs!r} by finite differences "
                             f"but <J^T u, v> = {rhs!r} by f.vjp (difference {abs(lhs - rhs):.3g})")


def check_grads(f, args: Sequence, modes=("fwd", "rev"), order: int = 2, **tol) -> None:
    """Check f's derivatives against finite differences, like `jax.test_util.check_grads`:
    `fwd` checks f.jvp (and f.jvp.jvp for order 2), `rev` checks f.vjp by the dot-product test
    (and, for order 2, the JVP of the pullback, i.e. forward-over-reverse)."""
    if order not in (1, 2):
        raise ValueError(f"check_grads: order must be 1 or 2, got {order!r}")
    for mode in modes:
        if mode == "fwd":
            check_jvp(f, args, order=order, **tol)
        elif mode == "rev":
            check_vjp(f, args, **tol)
            if order == 2:
                args = tuple(args)
                ptypes = f._param_types(args)
                sig = f._caller(ptypes).signature
                outs = f(*args)
                outs = list(outs) if sig.tuple_result else [outs]
                rng = np.random.default_rng(1)
                us = _random_cotangents(rng, outs)
                check_jvp(f.vjp, args + tuple(us), order=1, **tol)
        else:
            raise ValueError(f"check_grads: unknown mode {mode!r} (expected 'fwd' or 'rev')")


__all__ += ["check_vjp", "check_grads"]
