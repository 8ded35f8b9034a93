"""Primal-kernel benchmarks: dslc vs NumPy (and JAX / PyTorch / Numba when importable).

    python3 bench/bench_primal.py [--n 10000000] [--repeat 7]

B1     sum(sin(x)*exp(-x*x) + tanh(x)**2) on n float32 values (median of --repeat runs)
tiny   x*x + 1 on 16 float32 values: per-call latency (the cost of a call, not of the work)
alloc  peak bytes traced by tracemalloc during one B1 call (NumPy's temporaries are traced,
       memory malloc'd inside a dslc kernel is not: dslc should show ~0)
start  compile time of the first call (empty cache), and the time to the first result of a
       fresh process that finds the kernel in the same on-disk cache ($DSLC_CACHE_DIR)
"""
from __future__ import annotations

import time

_T0 = time.perf_counter()            # --warm-start child: the clock starts before any import

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import timeit  # noqa: E402
import tracemalloc  # noqa: E402

try:
    import dsl  # noqa: F401
except ImportError:                  # run from a checkout without `pip install .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import dsl  # noqa: E402
from dsl import kernel  # noqa: E402


@kernel
def b1(x: f32[n]) -> f32:
    return sum(sin(x) * exp(-x * x) + tanh(x) ** 2)


@kernel
def tiny(x: f32[n]) -> f32[n]:
    return x * x + 1


def b1_numpy(x):
    return np.sum(np.sin(x) * np.exp(-x * x) + np.tanh(x) ** 2)


def tiny_numpy(x):
    return x * x + 1


# ---- measurement helpers ---------------------------------------------------------------------
def median_time(fn, repeat):
    fn()                                            # warm-up (compilation, caches, page faults)
    dsl.finish_compiling()                          # time the final (-O3) code, not the first tier
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def per_call(fn, target_s=0.2):
    fn()
    dsl.finish_compiling()
    n = max(1, int(target_s / max(timeit.timeit(fn, number=100) / 100, 1e-9)))
    return min(timeit.repeat(fn, number=n, repeat=5)) / n


def peak_traced(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


# ---- optional frameworks: each returns (b1 fn, tiny fn) or None ---------------------------------
def jax_impl(x, xs):
    import jax
    import jax.numpy as jnp
    jx, jxs = jax.device_put(x), jax.device_put(xs)
    fb1 = jax.jit(lambda v: jnp.sum(jnp.sin(v) * jnp.exp(-v * v) + jnp.tanh(v) ** 2))
    ftiny = jax.jit(lambda v: v * v + 1)
    return (lambda: fb1(jx).block_until_ready()), (lambda: ftiny(jxs).block_until_ready())


def torch_impl(x, xs):
    import torch
    tx, txs = torch.from_numpy(x), torch.from_numpy(xs)
    return (lambda: torch.sum(torch.sin(tx) * torch.exp(-tx * tx) + torch.tanh(tx) ** 2)), \
           (lambda: txs * txs + 1)


def numba_impl(x, xs):
    import numba

    @numba.njit(fastmath=True)
    def nb1(v):
        s = np.float32(0)
        for i in range(v.shape[0]):
            a = v[i]
            s += np.sin(a) * np.exp(-a * a) + np.tanh(a) ** 2
        return s

    @numba.njit
    def ntiny(v):
        return v * v + 1
    return (lambda: nb1(x)), (lambda: ntiny(xs))


def optional_columns(x, xs):
    out = {}
    for name, make in (("jax", jax_impl), ("torch", torch_impl), ("numba", numba_impl)):
        try:
            out[name] = make(x, xs)
        except Exception:                           # not importable (or broken): skip silently
            pass
    return out


# ---- start-up ---------------------------------------------------------------------------------
def warm_start_child():
    """Runs in a fresh process: time from interpreter start of this script to B1's first result."""
    x = np.linspace(-3, 3, 1000, dtype=np.float32)
    t_call = time.perf_counter()
    b1(x)
    t_end = time.perf_counter()
    print(f"{t_end - _T0:.6f} {t_end - t_call:.6f}")


def start_times(cache_dir):
    env = dict(os.environ, DSLC_CACHE_DIR=cache_dir)
    root = os.path.dirname(os.path.dirname(os.path.abspath(dsl.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--warm-start"], env=env,
                         check=True, capture_output=True, text=True).stdout.split()
    wall = time.perf_counter() - t
    return float(out[0]), float(out[1]), wall


# ---- main ---------------------------------------------------------------------------------------
def fmt_t(s):
    if s is None:
        return "-"
    return f"{s * 1e6:.2f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10**7)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--warm-start", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.warm_start:
        return warm_start_child()

    # compile time with an empty on-disk cache, then a fresh process that finds it warm
    cache_dir = tempfile.mkdtemp(prefix="dslc-bench-cache-")
    os.environ["DSLC_CACHE_DIR"] = cache_dir
    xsmall = np.linspace(-3, 3, 1000, dtype=np.float32)
    t = time.perf_counter()
    b1(xsmall)
    compile_s = time.perf_counter() - t
    warm_total, warm_call, warm_wall = start_times(cache_dir)

    rng = np.random.default_rng(0)
    x = rng.standard_normal(args.n).astype(np.float32)
    xs = rng.standard_normal(16).astype(np.float32)

    r_dslc, r_np = float(b1(x)), float(b1_numpy(x))
    rel = abs(r_dslc - r_np) / abs(r_np)
    rows = {"dslc": (lambda: b1(x), lambda: tiny(xs)),
            "numpy": (lambda: b1_numpy(x), lambda: tiny_numpy(xs))}
    rows.update(optional_columns(x, xs))
    res = {}
    for name, (fb1, ftiny) in rows.items():
        try:
            res[name] = (median_time(fb1, args.repeat), per_call(ftiny))
        except Exception:
            continue
    peak = {"dslc": peak_traced(lambda: b1(x)), "numpy": peak_traced(lambda: b1_numpy(x))}

    np_b1, np_tiny = res["numpy"]
    print(f"dslc primal benchmarks  (n = {args.n:,} float32, median of {args.repeat}; "
          f"{os.cpu_count()} CPUs, numpy {np.__version__})")
    print(f"B1 result: dslc {r_dslc:.6g}  numpy {r_np:.6g}  (relative difference {rel:.1e})")
    print()
    print(f"{'':8s} {'B1 time':>11s} {'vs numpy':>9s} {'tiny call':>11s} {'vs numpy':>9s} {'B1 peak traced':>15s}")
    for name, (tb1, tt) in res.items():
        pk = f"{peak[name] / 1e6:.3f} MB" if name in peak else "-"
        print(f"{name:8s} {fmt_t(tb1):>11s} {np_b1 / tb1:>8.2f}x {fmt_t(tt):>11s} {np_tiny / tt:>8.2f}x {pk:>15s}")
    print()
    print(f"first call (parse + lower + LLVM compile, empty cache): {fmt_t(compile_s)}")
    print(f"fresh process, warm disk cache: first result {fmt_t(warm_total)} after start "
          f"(imports included; the call itself {fmt_t(warm_call)}); process wall {fmt_t(warm_wall)}")
    print(f"B1 allocates no traced temporaries: {'yes' if peak['dslc'] < 1e6 else 'NO'} "
          f"(dslc {peak['dslc']} bytes, numpy {peak['numpy'] / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
