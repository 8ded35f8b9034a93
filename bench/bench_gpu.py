"""B1 on the GPU: `sum(sin(x) * exp(-x * x) + tanh(x) ** 2)` (float32), its JVP and its gradient at
n = 1e7 and 1e8 on device arrays, against JAX on the same GPU in the same run (when JAX has a GPU
backend), and against the device's copy bandwidth.

    python3 bench/bench_gpu.py [--repeat 21] [--warmup 3] [--sizes 1e7,1e8]

Times are medians of --repeat calls after --warmup calls, each call followed by a device
synchronisation (dslc calls are synchronous already; JAX's by block_until_ready). Copy bandwidth:
a device-to-device copy of n float32 (DeviceArray.copy_to_device, cuMemcpyDtoD), counted as the
bytes read plus the bytes written (2 * 4n) over its time. The JVP reads two arrays of n float32
(x and the tangent, 8n bytes); its "fraction of copy bandwidth" is 8n / time over that copy
bandwidth. Every dslc result is checked against NumPy in float64 first; a wrong one is reported
(and the exit status is 1) instead of being timed silently. Without a GPU it says so and exits 0.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

try:
    import dsl  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# JAX would otherwise reserve 75% of the GPU's memory at its first call, leaving dslc little
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402

from dsl import cuda, grad, kernel  # noqa: E402

RTOL = 1e-4                 # float32 results against float64 NumPy (sums of up to 1e8 terms)


@kernel
def b1(x: f32[n]) -> f32:
    return sum(sin(x) * exp(-x * x) + tanh(x) ** 2)


# ---- float64 NumPy references (hand-written derivative) ---------------------------------------------
def ref_terms(x):
    x = x.astype(np.float64)
    s, e, t = np.sin(x), np.exp(-x * x), np.tanh(x)
    return s * e + t * t, np.cos(x) * e - 2 * x * s * e + 2 * t * (1 - t * t)


def rel_err(got, want):
    """Normwise relative error: max |got - want| / max |want|."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


# ---- timing ---------------------------------------------------------------------------------------
def median_ms(fn, warmup, repeat, sync):
    for _ in range(warmup):
        fn()
        sync()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def jax_on_gpu():
    """(jax, its GPU device) or (None, why not)."""
    try:
        import jax
    except Exception as e:
        return None, f"JAX not importable ({type(e).__name__})"
    try:
        return jax, jax.devices("gpu")[0]
    except Exception:
        return None, f"JAX {jax.__version__} has no GPU backend here"


def jax_calls(jax, dev, x, v):
    import jax.numpy as jnp

    def f(x):
        return jnp.sum(jnp.sin(x) * jnp.exp(-x * x) + jnp.tanh(x) ** 2)
    jx, jv = jax.device_put(x, dev), jax.device_put(v, dev)
    prim, jvp, g = jax.jit(f), jax.jit(lambda x, v: jax.jvp(f, (x,), (v,))), jax.jit(jax.grad(f))
    return {"primal": lambda: prim(jx).block_until_ready(),
            "jvp": lambda: jax.block_until_ready(jvp(jx, jv)),
            "grad": lambda: g(jx).block_until_ready()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--sizes", default="1e7,1e8")
    a = ap.parse_args(argv)
    if not cuda.is_available():
        print(f"bench_gpu: no CUDA GPU ({cuda.unavailable_reason()}); nothing to measure")
        return 0
    sizes = [int(float(s)) for s in a.sizes.split(",")]
    jax, jdev = jax_on_gpu()
    print(f"device: {cuda.device_name()} (sm_{''.join(map(str, cuda.compute_capability()))}); JAX: {jdev}")
    print(f"median of {a.repeat} calls after {a.warmup} warm-ups, each synchronised\n")
    g_b1 = grad(b1)
    rows, wrong, copy_bw = [], [], {}
    for n in sizes:
        rng = np.random.default_rng(n)
        x = rng.uniform(-2.0, 2.0, n).astype(np.float32)
        v = rng.standard_normal(n).astype(np.float32)
        dx, dv = cuda.to_device(x), cuda.to_device(v)
        calls = {"primal": lambda: b1(dx), "jvp": lambda: b1.jvp(dx, dv), "grad": lambda: g_b1(dx)}

        # correctness first (this also compiles the three kernels)
        terms, dterms = ref_terms(x)
        want = {"primal": (terms.sum(),), "jvp": (terms.sum(), (dterms * v.astype(np.float64)).sum()),
                "grad": (dterms,)}
        del terms
        errs = {}
        for op, fn in calls.items():
            got = fn()
            got = got if isinstance(got, tuple) else (got,)
            got = [g.get() if isinstance(g, cuda.DeviceArray) else g for g in got]
            errs[op] = max(rel_err(g, w) for g, w in zip(got, want[op]))
            if not errs[op] <= RTOL:
                wrong.append(f"n={n:.0e} {op}: relative error {errs[op]:.2e} > {RTOL:.0e}")
        del dterms, want

        # copy bandwidth: read + write bytes of a device-to-device copy
        dst = cuda.empty(n, np.float32)
        t_copy = median_ms(lambda: dst.copy_to_device(dx), a.warmup, a.repeat, cuda.synchronize)
        copy_bw[n] = 2 * 4 * n / (t_copy * 1e-3)

        jcalls = jax_calls(jax, jdev, x, v) if jax else {}
        for op, fn in calls.items():
            t = median_ms(fn, a.warmup, a.repeat, cuda.synchronize) if errs[op] <= RTOL else None
            tj = median_ms(jcalls[op], a.warmup, a.repeat, lambda: None) if op in jcalls else None
            moved = {"primal": 4 * n, "jvp": 8 * n, "grad": 8 * n}[op]   # grad: reads x, writes the gradient
            rows.append((n, op, t, tj, errs[op], moved))

    print(f"{'n':>6s} {'op':7s} {'dslc ms':>9s} {'JAX ms':>9s} {'JAX/dslc':>9s} {'rel err':>9s} "
          f"{'dslc GB/s':>10s}  note")
    for n, op, t, tj, err, nbytes in rows:
        note = ""
        if op == "jvp" and t:
            note = f"{nbytes / (t * 1e-3) / copy_bw[n]:.0%} of copy bandwidth ({copy_bw[n] / 1e9:.0f} GB/s)"
        print(f"{n:6.0e} {op:7s} {fmt(t):>9s} {fmt(tj):>9s} "
              f"{(f'{tj / t:.2f}x' if t and tj else '-'):>9s} {err:9.1e} "
              f"{(f'{nbytes / (t * 1e-3) / 1e9:.0f}' if t else '-'):>10s}  {note}")
    print("\n(copy bandwidth = (bytes read + bytes written) / time of a device-to-device copy of n float32; "
          "JVP bytes = 2 arrays of n float32 read)")

    print("\nGOALS")
    for n, op, t, tj, _, _ in rows:
        if tj is None or t is None:
            status = "NOT MET" if t is None else "N/A    "
            shown = "wrong result" if t is None else "no JAX on this GPU"
        else:
            status, shown = ("MET    " if tj / t >= 2 else "NOT MET"), f"{tj / t:.2f}x"
        print(f"  {status}  n={n:.0e} {op:6s} at least 2x faster than JAX (JAX/dslc)      {shown:>12s} >= 2.00x")
    big = max(sizes)
    jvp_big = next((r for r in rows if r[0] == big and r[1] == "jvp"), None)
    if jvp_big and jvp_big[2]:
        frac = jvp_big[5] / (jvp_big[2] * 1e-3) / copy_bw[big]
        print(f"  {'MET    ' if frac >= 0.7 else 'NOT MET'}  n={big:.0e} jvp    reaches 70% of copy bandwidth"
              f"                {frac:>11.0%} >= 70%")
    else:
        print(f"  NOT MET  n={big:.0e} jvp    reaches 70% of copy bandwidth (no valid time)")
    if wrong:
        print("\nWRONG RESULTS (not timed):\n  " + "\n  ".join(wrong))
        return 1
    return 0


def fmt(ms):
    return "-" if ms is None else f"{ms:.3f}"


if __name__ == "__main__":
    sys.exit(main())
