"""Differential checks of one generated program: compiled kernel vs the NumPy reference evaluator
(dsl/interpret.py), JVPs vs central finite differences of the evaluator (in long double), compiled
derivative kernels vs the evaluator run on the same derivative IR, and, for straight-line kernels,
the VJP against the JVP by the dot-product test <u, J v> = <J^T u, v>.

`check(program, seed)` returns a dict: `status` is one of
  ok             every check passed
  mismatch       a wrong number (or a wrong exception type) from the compiler: a bug
  unstable       the compiled and evaluated results differ, but only where the computation is
                 ill-conditioned (the evaluator at its own precision disagrees with itself in long
                 double): not counted as a bug
  compile_error  the compiler rejected the program (a DslcError; `kind` says which)
  internal       an exception that is not a DslcError escaped the compiler or the evaluator
and `detail` says what differed. Crashes (the process dies) are detected by the caller.
"""
from __future__ import annotations

import re
import traceback

import numpy as np

import dsl.interpret as interp
from compiler.diagnostics import DslcError, UnsupportedError
from dsl import compile_source

RUNTIME_ERRORS = (IndexError, ZeroDivisionError, ValueError)
RTOL = {"f64": 1e-7, "f32": 2e-3}
HI = np.longdouble


class Mismatch(Exception):
    pass


class Unstable(Exception):
    pass


def make_inputs(prog, rng, allow_empty=True):
    n = int(rng.integers(1, 6)) if not (allow_empty and rng.random() < 0.05) else 0
    m = int(rng.integers(1, 5))
    k = int(rng.integers(-3, 7))
    ft = np.float32 if prog.ftype == "f32" else np.float64
    shape = {"S": (), "V": (n,), "W": (m,), "M": (m, n)}
    args = []
    for name, kind, sh in prog.params:
        if kind == "i":
            args.append(k if sh == "S" else rng.integers(-4, 6, size=shape[sh]).astype(np.int64))
        elif sh == "S":
            args.append(float(ft(rng.uniform(-2, 2))))
        else:
            args.append(rng.uniform(-2, 2, size=shape[sh]).astype(ft))
    return args


def _kind(e: Exception) -> str:
    msg = getattr(e, "message", str(e)).split("\n")[0]
    msg = re.sub(r"'[^']*'", "'_'", msg)
    msg = re.sub(r"\b[a-z]?\d+\b", "N", msg)
    msg = re.sub(r"\S+\[[^\]]*\]", "T", msg)
    return f"{type(e).__name__}: {msg[:90]}"


def _outs(r, n=None):
    return list(r) if isinstance(r, tuple) else [r]


def _eval(thunk):
    """('ok', outputs) or ('err', exception type)."""
    try:
        return "ok", _outs(thunk())
    except DslcError:
        raise
    except RUNTIME_ERRORS as e:
        return "err", type(e)


def _close(a, b, rtol, scale):
    a = np.asarray(a, dtype=HI)
    b = np.asarray(b, dtype=HI)
    both_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore", over="ignore"):
        same_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
        ok = np.abs(a - b) <= rtol * (scale + np.abs(b))
    return both_nan | same_inf | ok


def _scale(v):
    v = np.asarray(v, dtype=HI)
    fin = np.abs(v[np.isfinite(v)]) if v.size else v
    return float(max(1.0, float(np.max(fin)) if fin.size else 1.0))


def compare(what, got, ref, hi, ftype):
    """Compiled `got` against the evaluator's `ref` (same precision) and `hi` (long double)."""
    gs, rs = got[0], ref
    if gs != rs[0]:
        if hi[0] != rs[0] or (rs[0] == "err" and hi[1] != rs[1]):
            raise Unstable(f"{what}: evaluator raises/returns differently in long double")
        raise Mismatch(f"{what}: compiled {'raised ' + got[1].__name__ if gs == 'err' else 'returned'}; "
                       f"evaluator {'raised ' + rs[1].__name__ if rs[0] == 'err' else 'returned'}")
    if gs == "err":
        if got[1] is not rs[1]:
            if hi[0] == "err" and hi[1] is got[1]:
                raise Unstable(f"{what}: error type depends on rounding")
            raise Mismatch(f"{what}: compiled raised {got[1].__name__}, evaluator {rs[1].__name__}")
        return
    g_out, r_out = got[1], rs[1]
    h_out = hi[1] if hi[0] == "ok" else None
    if len(g_out) != len(r_out):
        raise Mismatch(f"{what}: {len(g_out)} outputs compiled, {len(r_out)} evaluated")
    rtol = RTOL[ftype]
    for j, (g, r) in enumerate(zip(g_out, r_out)):
        g_a, r_a = np.asarray(g), np.asarray(r)
        if g_a.shape != r_a.shape:
            raise Mismatch(f"{what}: output {j} has shape {g_a.shape} compiled, {r_a.shape} evaluated")
        if g_a.dtype != r_a.dtype:
            raise Mismatch(f"{what}: output {j} has dtype {g_a.dtype} compiled, {r_a.dtype} evaluated")
        if type(g) is not type(r):
            raise Mismatch(f"{what}: output {j} is a {type(g).__name__} compiled, {type(r).__name__} evaluated")
        if g_a.dtype.kind in "bi":
            bad = g_a != r_a
        else:
            sc = _scale(h_out[j]) if h_out is not None else _scale(r_a)
            bad = ~_close(g_a, r_a, rtol, sc)
        if not np.any(bad):
            continue
        if h_out is None:
            raise Unstable(f"{what}: evaluator raises in long double")
        h_a = np.asarray(h_out[j])
        if g_a.dtype.kind in "bi":
            accurate = r_a == h_a
            far = g_a != h_a
        else:
            sc = _scale(h_a)
            accurate = _close(r_a, h_a, rtol, sc)
            far = ~_close(g_a, h_a, 10 * rtol, sc)
        real = bad & accurate & far
        if np.any(real):
            i = tuple(int(x) for x in np.argwhere(real)[0])
            raise Mismatch(f"{what}: output {j}{list(i) if i else ''}: compiled {g_a[i]!r}, evaluated "
                           f"{r_a[i]!r}, long double {h_a[i]!r}")
        raise Unstable(f"{what}: output {j} differs where the evaluator is inaccurate")


def _hi_run(kernel, args):
    fn = kernel._lower_ir(kernel._param_types(args))
    return fn


def _hi_eval(fn, args):
    try:
        return "ok", interp.run(fn, args, dtype=HI)
    except RUNTIME_ERRORS as e:
        return "err", type(e)


def check(prog, seed: int, derivatives: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    res = {"status": "ok", "detail": "", "checks": []}
    try:
        _check(prog, rng, res, derivatives)
    except Mismatch as e:
        res.update(status="mismatch", detail=str(e))
    except Unstable as e:
        res.update(status="unstable", detail=str(e))
    except DslcError as e:
        res.update(status="compile_error", kind=_kind(e), detail=str(e))
    except Exception as e:  # noqa: BLE001  (anything else escaping is a bug to report)
        res.update(status="internal", kind=f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}",
                   detail=traceback.format_exc())
    return res


def _check(prog, rng, res, derivatives):
    f = compile_source(prog.source)["f"]
    args = make_inputs(prog, rng, allow_empty=not prog.smooth)
    fn = f._lower_ir(f._param_types(args))
    got = _eval(lambda: f(*args))
    ref = _eval(lambda: f(*args, target="interpret"))
    hi = _hi_eval(fn, args)
    compare("primal", got, ref, hi, prog.ftype)
    # the simplified IR evaluates to the same values (checks the simplifier on its own)
    ref_s = _eval(lambda: interp.call(f, args, simplify=True))
    compare("primal(simplified IR, evaluated)", ref_s, ref, hi, prog.ftype)
    res["checks"].append("primal")
    if not (derivatives and prog.smooth) or got[0] != "ok":
        return
    _check_derivatives(prog, f, args, rng, res, got)


def _tangent_like(rng, a, ftype):
    ft = np.float32 if ftype == "f32" else np.float64
    if np.ndim(a) == 0:
        return float(ft(rng.standard_normal()))
    return rng.standard_normal(np.shape(a)).astype(ft)


def _shift(args, fpos, tangents, h):
    out = list(args)
    for k, t in zip(fpos, tangents):
        out[k] = np.asarray(args[k], dtype=HI) + HI(h) * np.asarray(t, dtype=HI)
    return out


def _check_derivatives(prog, f, args, rng, res, got):
    fpos = [k for k, (_, kind, _) in enumerate(prog.params) if kind == "f"]
    tangents = [_tangent_like(rng, args[k], prog.ftype) for k in fpos]
    try:
        jfn = f.jvp._lower_ir(f.jvp._param_types(list(args) + tangents))
    except UnsupportedError as e:
        res["checks"].append("jvp unsupported: " + str(e).splitlines()[0])
        return
    jargs = list(args) + tangents
    jgot = _eval(lambda: f.jvp(*jargs))
    jref = _eval(lambda: f.jvp(*jargs, target="interpret"))
    jhi = _hi_eval(jfn, jargs)
    compare("jvp", jgot, jref, jhi, prog.ftype)
    nout = len(got[1])
    # the primal outputs of f.jvp are f's
    compare("jvp primal outputs", ("ok", jgot[1][:nout]), got, ("ok", jhi[1][:nout]) if jhi[0] == "ok" else jhi,
            prog.ftype)
    res["checks"].append("jvp")
    if jhi[0] != "ok":
        return
    # JVP (the derivative IR, evaluated in long double) against central differences (long double)
    fn = f._lower_ir(f._param_types(args))
    tout = [np.asarray(t, dtype=HI) for t in jhi[1][nout:]]
    fds = []
    for h in (1e-5, 1e-4):
        try:
            plus = interp.run(fn, _shift(args, fpos, tangents, h), dtype=HI)
            minus = interp.run(fn, _shift(args, fpos, tangents, -h), dtype=HI)
        except RUNTIME_ERRORS:
            return
        fds.append([(np.asarray(p, HI) - np.asarray(q, HI)) / HI(2 * h) for p, q in zip(plus, minus)])
    for j, (t, fd, fd2) in enumerate(zip(tout, fds[0], fds[1])):
        if not np.all(np.isfinite(t)) or not np.all(np.isfinite(fd)):
            continue
        sc = _scale(fd)
        if not np.all(_close(fd, fd2, 1e-4, sc)):
            continue                           # not smooth at this scale (or overflow): skip
        bad = ~_close(t, fd, 1e-6, sc)
        if np.any(bad):
            i = tuple(int(x) for x in np.argwhere(bad)[0])
            raise Mismatch(f"jvp vs finite differences: tangent output {j}{list(i) if i else ''}: "
                           f"jvp {float(t[i])!r}, central differences {float(fd[i])!r}")
    res["checks"].append("fd")
    if not prog.straight:
        return
    _check_vjp(prog, f, args, rng, res, fpos, tangents, got, jhi, nout)


def _check_vjp(prog, f, args, rng, res, fpos, tangents, got, jhi, nout):
    def cotangent(o):
        # an output's cotangent has the output's dtype; integer and bool outputs have a zero
        # derivative, so theirs is zero (and adds nothing to the dot-product test)
        dt = np.asarray(o).dtype
        if dt.kind in "biu":
            return np.zeros(np.shape(o), dt) if np.ndim(o) else dt.type(0)
        return _tangent_like(rng, o, prog.ftype) if np.ndim(o) else \
            float((np.float32 if prog.ftype == "f32" else np.float64)(rng.standard_normal()))
    cts = [cotangent(o) for o in got[1]]
    vargs = list(args) + cts
    try:
        vfn = f.vjp._lower_ir(f.vjp._param_types(vargs))
    except UnsupportedError as e:
        res["checks"].append("vjp unsupported: " + str(e).splitlines()[0])
        return
    vgot = _eval(lambda: f.vjp(*vargs))
    vref = _eval(lambda: f.vjp(*vargs, target="interpret"))
    vhi = _hi_eval(vfn, vargs)
    compare("vjp", vgot, vref, vhi, prog.ftype)
    compare("vjp primal outputs", ("ok", vgot[1][:nout]), got,
            ("ok", vhi[1][:nout]) if vhi[0] == "ok" else vhi, prog.ftype)
    res["checks"].append("vjp")
    if vhi[0] != "ok":
        return
    # dot-product test in long double: <u, J v> == <J^T u, v>
    jv = jhi[1][nout:]
    jtu = vhi[1][nout:]
    if len(jtu) != len(fpos):
        raise Mismatch(f"vjp returns {len(jtu)} cotangents for {len(fpos)} float parameters")
    lhs = sum(np.sum(np.asarray(u, HI) * np.asarray(t, HI)) for u, t in zip(cts, jv))
    rhs = sum(np.sum(np.asarray(c, HI) * np.asarray(v, HI)) for c, v in zip(jtu, tangents))
    mag = sum(float(np.sum(np.abs(np.asarray(u, HI) * np.asarray(t, HI)))) for u, t in zip(cts, jv)) + \
        sum(float(np.sum(np.abs(np.asarray(c, HI) * np.asarray(v, HI)))) for c, v in zip(jtu, tangents))
    if not (np.isfinite(lhs) and np.isfinite(rhs)):
        return
    if abs(float(lhs - rhs)) > 1e-9 * (1.0 + mag):
        raise Mismatch(f"dot-product test: <u, J v> = {float(lhs)!r}, <J^T u, v> = {float(rhs)!r}")
    res["checks"].append("dot")
