"""B1-B6 of issue 7 for dslc, NumPy (hand-written derivatives) and, when importable, JAX, PyTorch
(torch.func) and Numba, in one run: a table of medians, ratios to NumPy, and compile times.

    python3 bench/bench_all.py [--repeat 7] [--quick]

Every row is checked against NumPy before it is timed (a wrong answer prints FAIL instead of a
time). A transform dslc cannot do yet prints "n/a" with the reason. Two rows are there to explain
goals rather than to be goals: "B2 read floor" (one pass over B2's matrix: dslc's `sum`, NumPy's
`X @ W` alone), and B1 on one thread (DSLC_NUM_THREADS=1).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

try:
    import dsl  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from dsl import grad, jacfwd, jacrev, kernel  # noqa: E402
import dsl  # noqa: E402


# ---- kernels ------------------------------------------------------------------------------------
@kernel
def b1(x: f32[n]) -> f32:
    return sum(sin(x) * exp(-x * x) + tanh(x) ** 2)


@kernel
def b2(W: f32[k], b: f32, inputs: f32[n, k]) -> f32[n]:
    return sigmoid(inputs @ W + b)


@kernel
def read_once(inputs: f32[n, k]) -> f32:
    """One pass over B2's matrix and nothing else: the memory floor of any B2 primal."""
    return sum(inputs)


@kernel
def b3(X: f32[m, n]) -> f32:
    return sum(tanh(X) ** 2)


@kernel
def b4(X: f32[n, d], W1: f32[d, h], W2: f32[h, o], Y: f32[n, o]) -> f32:
    return mean((tanh(X @ W1) @ W2 - Y) ** 2)


@kernel
def b5(x0: f32[d], A: f32[d, d], h: f32, steps: i64) -> f32[d]:
    x = x0
    for t in range(steps):
        x = x + h * (-x + tanh(A @ x))
    return x


@kernel
def b6(x: f32[n]) -> f32:
    return sum(x * x + 1)


@kernel
def b6v(x: f32[n]) -> f32[n]:
    return x * x + 1


# ---- NumPy references (hand-written derivatives) ---------------------------------------------------
def np_b1(x):
    return np.sum(np.sin(x) * np.exp(-x * x) + np.tanh(x) ** 2)


def np_b1_jvp(x, v):
    s, e, t = np.sin(x), np.exp(-x * x), np.tanh(x)
    return np.sum(s * e + t * t), np.sum((np.cos(x) * e - 2 * x * s * e + 2 * t * (1 - t * t)) * v)


def np_b1_grad(x):
    s, e, t = np.sin(x), np.exp(-x * x), np.tanh(x)
    return np.cos(x) * e - 2 * x * s * e + 2 * t * (1 - t * t)


def np_b2(W, b, X):
    return 1 / (1 + np.exp(-(X @ W + b)))


def np_b2_jac(W, b, X):
    s = np_b2(W, b, X)
    return (s * (1 - s))[:, None] * X


def np_b3_grad(X):
    t = np.tanh(X)
    return 2 * t * (1 - t * t)


def np_b3_hvp(X, V):
    t = np.tanh(X)
    d = 1 - t * t
    return (2 * d * d - 4 * t * t * d) * V


def np_b4_grad(X, W1, W2, Y):
    H = np.tanh(X @ W1)
    R = H @ W2 - Y
    dR = 2 * R / R.size
    gW2 = H.T @ dR
    dH = (dR @ W2.T) * (1 - H * H)
    return X.T @ dH, gW2


def np_b5(x0, A, h, steps):
    x = x0
    for _ in range(steps):
        x = x + h * (-x + np.tanh(A @ x))
    return x


# ---- helpers ---------------------------------------------------------------------------------------
ROUNDS = 3      # each row's contenders take turns this many times (reversing the order each round)
SETTLE = 0.3    # seconds of quiet before each turn: other libraries' threads spin after a call
WARM = 0.05     # then this long (at least one call) of untimed calls


def time_row(fns: dict, repeat: int, per_call_row: bool) -> dict:
    """Times of one row's contenders {name: callable}, measured in turns: round r runs every
    contender (in reversed order on odd rounds) for a block of `repeat` calls (per-call rows: two
    batches), each block after SETTLE seconds of quiet and WARM seconds of untimed calls (after the
    pause a threaded kernel's first few milliseconds ran up to 2x slower). On these shared
    2-CPU machines the background load drifts over seconds, so turns share it out; and a
    library's threads keep spinning after its calls (OpenBLAS's for over 100 ms, a whole CPU:
    measured with process_time across a sleep), so without the pause the next contender would
    be timed on one CPU. Result: the median of each contender's calls (per-call rows: the best
    batch), or an error string."""
    dsl.finish_compiling()           # time the final (-O3) code, and no compile thread competing
    out, samples, batch = {}, {}, {}
    for c, fn in fns.items():
        try:
            t = time.perf_counter()
            fn()
            first = time.perf_counter() - t
        except Exception as e:
            out[c] = f"err {type(e).__name__}"
            continue
        if first > 2.0:              # a very slow row: one more call is enough to show it
            t = time.perf_counter()
            fn()
            out[c] = time.perf_counter() - t
            continue
        samples[c] = []
        if per_call_row:             # about 0.1 s a batch
            batch[c] = max(_calls_in(fn, 0.01) * 10, 10)
    order = list(samples)
    for r in range(ROUNDS):
        for c in (order if r % 2 == 0 else order[::-1]):
            fn = fns[c]
            time.sleep(SETTLE)
            _calls_in(fn, WARM)      # untimed: this contender's threads (and the CPUs) wake up
            if per_call_row:
                samples[c] += [_timeit(fn, batch[c]) for _ in range(2)]
                continue
            for _ in range(repeat):
                t = time.perf_counter()
                fn()
                samples[c].append(time.perf_counter() - t)
    for c, ts in samples.items():
        out[c] = min(ts) if per_call_row else statistics.median(ts)
    return out


def _calls_in(fn, seconds):
    """Calls fn for `seconds` (at least once); returns how many calls that was."""
    t = time.perf_counter()
    k = 0
    while k == 0 or time.perf_counter() - t < seconds:
        fn()
        k += 1
    return k


def _timeit(fn, n):
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def fmt(s):
    if s is None:
        return "-"
    if isinstance(s, str):
        return s
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def close(a, b, rtol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=rtol * max(1.0, float(np.abs(b).max(initial=0))))


# ---- optional frameworks ------------------------------------------------------------------------------
def jax_rows(D, rows):
    try:
        import jax
        import jax.numpy as jnp
    except Exception:
        return
    x, v = D["x"], D["v"]
    f1 = lambda x: jnp.sum(jnp.sin(x) * jnp.exp(-x * x) + jnp.tanh(x) ** 2)  # noqa: E731
    jx, jv = jnp.asarray(x), jnp.asarray(v)
    add = lambda k, f: rows.setdefault(k, {}).__setitem__("jax", f)  # noqa: E731
    p1, j1, g1 = jax.jit(f1), jax.jit(lambda x, v: jax.jvp(f1, (x,), (v,))), jax.jit(jax.grad(f1))
    add("B1 primal", lambda: p1(jx).block_until_ready())
    add("B1 jvp", lambda: j1(jx, jv)[1].block_until_ready())
    add("B1 grad", lambda: g1(jx).block_until_ready())
    W, b, X = (jnp.asarray(D[k]) for k in ("W", "b", "inputs"))
    f2 = lambda W: jax.nn.sigmoid(X @ W + b)  # noqa: E731
    p2, jf2, jr2 = jax.jit(f2), jax.jit(jax.jacfwd(f2)), jax.jit(jax.jacrev(f2))
    add("B2 primal", lambda: p2(W).block_until_ready())
    add("B2 jacfwd", lambda: jf2(W).block_until_ready())
    add("B2 jacrev", lambda: jr2(W).block_until_ready())
    X3, V3 = jnp.asarray(D["X3"]), jnp.asarray(D["V3"])
    f3 = lambda X: jnp.sum(jnp.tanh(X) ** 2)  # noqa: E731
    p3, g3 = jax.jit(f3), jax.jit(jax.grad(f3))
    h3 = jax.jit(lambda X, V: jax.jvp(jax.grad(f3), (X,), (V,))[1])
    add("B3 primal", lambda: p3(X3).block_until_ready())
    add("B3 grad", lambda: g3(X3).block_until_ready())
    add("B3 hvp", lambda: h3(X3, V3).block_until_ready())
    X4, W1, W2, Y = (jnp.asarray(D[k]) for k in ("X4", "W1", "W2", "Y"))
    f4 = lambda W1, W2: jnp.mean((jnp.tanh(X4 @ W1) @ W2 - Y) ** 2)  # noqa: E731
    g4 = jax.jit(jax.grad(f4, argnums=(0, 1)))
    add("B4 grad", lambda: g4(W1, W2)[0].block_until_ready())
    x0, A = jnp.asarray(D["x0"]), jnp.asarray(D["A"])

    def f5(x0, A):
        def step(x, _):
            return x + 0.01 * (-x + jnp.tanh(A @ x)), None
        return jax.lax.scan(step, x0, None, length=1000)[0]
    p5 = jax.jit(f5)
    j5 = jax.jit(lambda x0, A: jax.jvp(f5, (x0, A), (x0, A))[1])
    v5 = jax.jit(lambda x0, A: jax.grad(lambda x0, A: jnp.sum(f5(x0, A)), argnums=(0, 1))(x0, A))
    add("B5 primal", lambda: p5(x0, A).block_until_ready())
    add("B5 jvp", lambda: j5(x0, A).block_until_ready())
    add("B5 vjp", lambda: v5(x0, A)[0].block_until_ready())
    xs = jnp.asarray(D["xs"])
    p6 = jax.jit(lambda x: x * x + 1)
    add("B6 primal (call)", lambda: p6(xs).block_until_ready())


def torch_rows(D, rows):
    try:
        import torch
        from torch.func import grad as tgrad, jvp as tjvp
    except Exception:
        return
    add = lambda k, f: rows.setdefault(k, {}).__setitem__("torch", f)  # noqa: E731
    x, v = torch.from_numpy(D["x"]), torch.from_numpy(D["v"])
    f1 = lambda x: torch.sum(torch.sin(x) * torch.exp(-x * x) + torch.tanh(x) ** 2)  # noqa: E731
    add("B1 primal", lambda: f1(x))
    add("B1 jvp", lambda: tjvp(f1, (x,), (v,)))
    add("B1 grad", lambda: tgrad(f1)(x))
    X3 = torch.from_numpy(D["X3"])
    f3 = lambda X: torch.sum(torch.tanh(X) ** 2)  # noqa: E731
    add("B3 primal", lambda: f3(X3))
    add("B3 grad", lambda: tgrad(f3)(X3))
    xs = torch.from_numpy(D["xs"])
    add("B6 primal (call)", lambda: xs * xs + 1)


def numba_rows(D, rows):
    try:
        import numba
    except Exception:
        return

    @numba.njit(fastmath=True, parallel=True)
    def nb1(v):
        s = 0.0
        for i in numba.prange(v.shape[0]):
            a = v[i]
            s += np.sin(a) * np.exp(-a * a) + np.tanh(a) ** 2
        return s
    rows.setdefault("B1 primal", {})["numba"] = lambda: nb1(D["x"])


# ---- main ----------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="smaller B1 (10^6) for a smoke run")
    ap.add_argument("--compile-only", action="store_true",
                    help="compile every row's kernel in the usual order, print the compile times, stop")
    ap.add_argument("--keep-cache", action="store_true",
                    help="use the usual disk cache (default: a fresh one, so compile times are cold)")
    args = ap.parse_args()
    if not args.keep_cache:
        import tempfile
        os.environ["DSLC_CACHE_DIR"] = tempfile.mkdtemp(prefix="dslc-bench-cache-")
    rng = np.random.default_rng(0)
    f32 = np.float32
    n1 = 10**6 if args.quick else 10**7
    D = {"x": rng.standard_normal(n1).astype(f32), "v": rng.standard_normal(n1).astype(f32),
         "W": rng.standard_normal(512).astype(f32), "b": f32(0.1),
         "inputs": rng.standard_normal((4096, 512)).astype(f32),
         "X3": rng.standard_normal((1000, 1000)).astype(f32), "V3": rng.standard_normal((1000, 1000)).astype(f32),
         "X4": rng.standard_normal((1024, 256)).astype(f32), "W1": (rng.standard_normal((256, 256)) / 16).astype(f32),
         "W2": (rng.standard_normal((256, 10)) / 16).astype(f32), "Y": rng.standard_normal((1024, 10)).astype(f32),
         "x0": rng.standard_normal(64).astype(f32), "A": (2 * rng.standard_normal((64, 64)) / 8).astype(f32),
         "xs": rng.standard_normal(16).astype(f32)}
    x, v, W, b, X = D["x"], D["v"], D["W"], D["b"], D["inputs"]
    X3, V3, X4, W1, W2, Y, x0, A, xs = (D[k] for k in ("X3", "V3", "X4", "W1", "W2", "Y", "x0", "A", "xs"))
    h = f32(0.01)

    # compile times (first call: parse + lower + AD + LLVM), and the dslc callables
    compile_t = {}
    dslc = {}

    def mk(name, make, call, check, compiles=True):
        print(f"# compiling {name} ...", file=sys.stderr, flush=True)
        try:
            t = time.perf_counter()
            k = make()
            out = call(k)
            if compiles:                             # not a row that reuses another row's code
                compile_t[name] = time.perf_counter() - t
            ok = check(out)
            dslc[name] = (lambda: call(k)) if ok else "FAIL"
        except Exception as e:                       # a transform not available yet
            dslc[name] = f"n/a ({type(e).__name__})"

    def one_thread(call):
        """`call` with dslc's loops on the calling thread only (DSLC_NUM_THREADS is read per loop)."""
        def run(k):
            before = os.environ.get("DSLC_NUM_THREADS")
            os.environ["DSLC_NUM_THREADS"] = "1"
            try:
                return call(k)
            finally:
                if before is None:
                    del os.environ["DSLC_NUM_THREADS"]
                else:
                    os.environ["DSLC_NUM_THREADS"] = before
        return run

    e1 = np_b1(x.astype(np.float64))
    mk("B1 primal", lambda: b1, lambda k: k(x), lambda o: close(o, e1, 1e-4))
    mk("B1 jvp", lambda: b1, lambda k: k.jvp(x, v), lambda o: close(o[1], np_b1_jvp(x.astype(np.float64), v)[1], 1e-3))
    mk("B1 grad", lambda: grad(b1), lambda k: k(x), lambda o: close(o, np_b1_grad(x), 1e-4))
    mk("B1 primal, 1 thread", lambda: b1, one_thread(lambda k: k(x)), lambda o: close(o, e1, 1e-4), False)
    mk("B1 jvp, 1 thread", lambda: b1, one_thread(lambda k: k.jvp(x, v)),
       lambda o: close(o[1], np_b1_jvp(x.astype(np.float64), v)[1], 1e-3), False)
    mk("B2 primal", lambda: b2, lambda k: k(W, b, X), lambda o: close(o, np_b2(W, b, X), 1e-4))
    mk("B2 read floor", lambda: read_once, lambda k: k(X), lambda o: close(o, np.sum(X.astype(np.float64)), 1e-4))
    dX = np.zeros_like(X)      # the inputs' tangent, made once: allocating 8 MB is not the JVP's work
    mk("B2 jvp", lambda: b2, lambda k: k.jvp(W, b, X, v[:512], f32(0), dX),
       lambda o: close(o[1], np_b2_jac(W, b, X) @ v[:512], 1e-3))
    mk("B2 vjp", lambda: b2, lambda k: k.vjp(W, b, X, v[:4096]), lambda o: close(o[1], np_b2_jac(W, b, X).T @ v[:4096], 1e-3))
    mk("B2 jacfwd", lambda: jacfwd(b2), lambda k: k(W, b, X), lambda o: close(o, np_b2_jac(W, b, X), 1e-4))
    mk("B2 jacrev", lambda: jacrev(b2), lambda k: k(W, b, X), lambda o: close(o, np_b2_jac(W, b, X), 1e-4))
    mk("B3 primal", lambda: b3, lambda k: k(X3), lambda o: close(o, np.sum(np.tanh(X3.astype(np.float64)) ** 2), 1e-4))
    mk("B3 grad", lambda: grad(b3), lambda k: k(X3), lambda o: close(o, np_b3_grad(X3), 1e-4))
    mk("B3 hvp", lambda: grad(b3), lambda k: k.jvp(X3, V3), lambda o: close(o[1], np_b3_hvp(X3, V3), 1e-3))
    mk("B4 grad", lambda: grad(b4, argnums=(1, 2)), lambda k: k(X4, W1, W2, Y),
       lambda o: all(close(a, r, 1e-3) for a, r in zip(o, np_b4_grad(X4, W1, W2, Y))))
    e5 = np_b5(x0, A, h, 1000)
    mk("B5 primal", lambda: b5, lambda k: k(x0, A, h, 1000), lambda o: close(o, e5, 1e-4))
    mk("B5 jvp", lambda: b5, lambda k: k.jvp(x0, A, h, 1000, x0, A, f32(0)), lambda o: close(o[0], e5, 1e-4))
    mk("B5 vjp", lambda: b5, lambda k: k.vjp(x0, A, h, 1000, np.ones(64, f32)), lambda o: close(o[0], e5, 1e-4))
    mk("B6 primal (call)", lambda: b6v, lambda k: k(xs), lambda o: close(o, xs * xs + 1, 1e-6))
    mk("B6 jvp (call)", lambda: b6v, lambda k: k.jvp(xs, xs), lambda o: close(o[1], 2 * xs * xs, 1e-6))
    mk("B6 grad (call)", lambda: grad(b6), lambda k: k(xs), lambda o: close(o, 2 * xs, 1e-6))

    if args.compile_only:
        print_compile_times(compile_t, args.keep_cache)
        return

    rows = {
        "B1 primal": {"numpy": lambda: np_b1(x)}, "B1 jvp": {"numpy": lambda: np_b1_jvp(x, v)},
        "B1 grad": {"numpy": lambda: np_b1_grad(x)}, "B2 primal": {"numpy": lambda: np_b2(W, b, X)},
        "B2 read floor": {"numpy": lambda: X @ W},
        "B2 jvp": {"numpy": lambda: np_b2_jac(W, b, X) @ v[:512]},
        "B2 vjp": {"numpy": lambda: np_b2_jac(W, b, X).T @ v[:4096]},
        "B2 jacfwd": {"numpy": lambda: np_b2_jac(W, b, X)}, "B2 jacrev": {"numpy": lambda: np_b2_jac(W, b, X)},
        "B3 primal": {"numpy": lambda: np.sum(np.tanh(X3) ** 2)}, "B3 grad": {"numpy": lambda: np_b3_grad(X3)},
        "B3 hvp": {"numpy": lambda: np_b3_hvp(X3, V3)}, "B4 grad": {"numpy": lambda: np_b4_grad(X4, W1, W2, Y)},
        "B5 primal": {"numpy": lambda: np_b5(x0, A, h, 1000)}, "B5 jvp": {}, "B5 vjp": {},
        "B6 primal (call)": {"numpy": lambda: xs * xs + 1}, "B6 jvp (call)": {"numpy": lambda: (xs * xs + 1, 2 * xs * xs)},
        "B6 grad (call)": {"numpy": lambda: 2 * xs},
    }
    for name, f in dslc.items():
        rows.setdefault(name, {})["dslc"] = f
    for extra in (jax_rows, torch_rows, numba_rows):
        try:
            extra(D, rows)
        except Exception as e:
            print(f"# {extra.__name__} skipped: {type(e).__name__}: {e}")

    cols = ["dslc", "numpy", "jax", "torch", "numba"]
    present = [c for c in cols if any(c in r for r in rows.values())]
    res = {}
    for name, r in rows.items():
        fns = {c: r[c] for c in present if callable(r.get(c))}
        for c in present:
            if c not in fns:
                res[(name, c)] = r.get(c)
        for c, took in time_row(fns, args.repeat, "(call)" in name).items():
            res[(name, c)] = took
            print(f"# {name:18s} {c:6s} {fmt(took)}", file=sys.stderr, flush=True)

    threads = os.environ.get("DSLC_NUM_THREADS", "-")
    print(f"dslc {getattr(dsl, '__version__', '')} | {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs | numpy {np.__version__} | python {platform.python_version()} | "
          f"median of {ROUNDS} x {args.repeat} calls in turns (per-call rows: best of {2 * ROUNDS} batches) | "
          f"B1 n = {n1:,}")
    head = f"{'benchmark':18s}" + "".join(f"{c:>12s}" for c in present) + "".join(
        f"{'dslc/' + c:>12s}" for c in present if c != "dslc")
    print(head)
    print("-" * len(head))
    for name in rows:
        line = f"{name:18s}" + "".join(f"{fmt(res.get((name, c))):>12s}" for c in present)
        d = res.get((name, "dslc"))
        for c in present:
            if c == "dslc":
                continue
            o = res.get((name, c))
            ok = isinstance(d, float) and isinstance(o, float)
            line += f"{(f'{d / o:.2f}x' if ok else '-'):>12s}"
        print(line)
    print()
    print_compile_times(compile_t, args.keep_cache)
    print(f"DSLC_NUM_THREADS={threads}")
    print_goals(res, compile_t)


def print_compile_times(compile_t, keep_cache):
    print("dslc compile times (first call: front end + AD + LLVM O3 + JIT; disk cache " +
          ("as found" if keep_cache else "empty: cold") + "):")
    for name, t in compile_t.items():
        print(f"  {name:18s} {fmt(t)}")


# issue 7's goals; JAX's anchors (measured on this project's machines) stand in where JAX is absent
JAX_ANCHORS = {"B1 primal": 56e-3, "B3 primal": 281e-6, "B3 grad": 273e-6, "B3 hvp": 702e-6,
               "B4 grad": 2.31e-3, "B5 primal": 209e-6, "B5 jvp": 406e-6, "B5 vjp": 481e-6}


def print_goals(res, compile_t):
    def t(name, col="dslc"):
        v = res.get((name, col))
        return v if isinstance(v, float) else None

    def jax(name):
        v = t(name, "jax")
        return (v, "JAX") if v is not None else (JAX_ANCHORS.get(name), "JAX anchor")

    goals = []

    def goal(text, value, limit, unit=""):
        ok = value is not None and limit is not None and value <= limit
        shown = "-" if value is None else (f"{value:.2f}{unit}" if unit != "s" else fmt(value))
        lim = "-" if limit is None else (f"{limit:.2f}{unit}" if unit != "s" else fmt(limit))
        goals.append(f"  {'MET    ' if ok else 'NOT MET'}  {text:58s} {shown:>10s} <= {lim}")

    p1 = t("B1 primal")
    for ref in ("numpy", "jax"):
        r = t("B1 primal", ref) if ref == "numpy" else jax("B1 primal")[0]
        goal(f"B1 primal 3x faster than {ref} (dslc x 3 / {ref})", p1 and r and 3 * p1 / r, 1.0)
    goal("B1 jvp / dslc primal", p1 and t("B1 jvp") and t("B1 jvp") / p1, 1.5)
    p1one, j1one = t("B1 primal, 1 thread"), t("B1 jvp, 1 thread")
    if p1one and j1one:
        goals.append(f"           (on one thread: {j1one / p1one:.2f}; the JVP needs cos beside sin and a second "
                     "float64 sum: docs/performance.md)")
    goal("B1 grad / dslc primal", p1 and t("B1 grad") and t("B1 grad") / p1, 2.0)
    floor = min(filter(None, (t("B2 read floor"), t("B2 read floor", "numpy"))), default=None)
    for name in ("B2 primal", "B2 jvp", "B2 vjp"):
        n = t(name, "numpy")
        goal(f"{name} / numpy", t(name) and n and t(name) / n, 1.0)
        if name == "B2 primal" and floor and n and t(name):
            goals.append(f"           (memory floor: one pass over the 8 MB matrix, {fmt(floor)}; B2 primal takes "
                         f"{t(name) / floor:.2f}x that in dslc, {n / floor:.2f}x in numpy)")
    for name in ("B2 jacfwd", "B2 jacrev"):
        goal(f"{name} (time)", t(name), 2e-3, "s")
    for name, factor in (("B3 primal", 1), ("B3 grad", 1), ("B3 hvp", 1), ("B4 grad", 1.2),
                         ("B5 primal", 1), ("B5 jvp", 1), ("B5 vjp", 1)):
        ref, label = jax(name)
        goal(f"{name} / {label}" + (f" (<= {factor})" if factor != 1 else ""),
             t(name) and ref and t(name) / ref, factor)
    for name, lim in (("B6 primal (call)", 3e-6), ("B6 jvp (call)", 4e-6), ("B6 grad (call)", 4e-6)):
        goal(f"{name} per call", t(name), lim, "s")
    goal("B4 grad compiled cold", compile_t.get("B4 grad"), 0.150, "s")
    print("\ngoals (issue 7; warm start: bench/bench_startup.py):")
    print("\n".join(goals))


if __name__ == "__main__":
    main()
