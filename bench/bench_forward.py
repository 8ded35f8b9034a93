"""Forward-mode benchmarks (issue 3): B1 JVP / primal, B5 Euler-loop JVP / primal and its memory,
jacfwd of `predict` vs separate JVP calls. Ratios are measured side by side in one run; JAX and
PyTorch columns appear when they are installed."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import dsl  # noqa: E402
from dsl import jacfwd, jvp, kernel  # noqa: E402


def median_time(fn, repeat=7, number=1):
    dsl.finish_compiling()        # time the final (-O3) code, not the first tier
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        ts.append((time.perf_counter() - t0) / number)
    return float(np.median(ts))


@kernel
def b1(x: f32[n]) -> f32:
    return sum(sin(x) * exp(-x * x) + tanh(x) ** 2)


@kernel
def euler(x0: f32[d], A: f32[d, d], h: f32, steps: i64) -> f32[d]:
    x = x0
    for t in range(steps):
        x = x + h * (-x + tanh(A @ x))
    return x


@kernel
def predict(W: f32[k], b: f32, inputs: f32[n, k]) -> f32[n]:
    return sigmoid(inputs @ W + b)


def row(name, ours, ref=None, refname="primal"):
    ratio = f"{ours / ref:6.2f}x {refname}" if ref else ""
    print(f"  {name:38s} {ours * 1e3:10.3f} ms  {ratio}")


def peak_rss_child(steps: int) -> float:
    """Peak RSS (MiB) of a fresh process running the B5 JVP with `steps` steps."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            "import bench_forward as B, numpy as np, resource; "
            "d=64; r=np.random.default_rng(0); x=r.standard_normal(d).astype(np.float32); "
            "A=(2*r.standard_normal((d,d))/np.sqrt(d)).astype(np.float32); "
            f"B.euler.jvp(x, A, np.float32(0.01), {steps}, x, A, np.float32(0)); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    rng = np.random.default_rng(0)
    print("B1 sum(sin(x)*exp(-x*x)+tanh(x)**2), x: 10^7 float32")
    x = rng.standard_normal(10**7).astype(np.float32)
    v = rng.standard_normal(10**7).astype(np.float32)
    b1(x), b1.jvp(x, v)
    tp = median_time(lambda: b1(x))
    tj = median_time(lambda: b1.jvp(x, v))
    tn = median_time(lambda: np.sum(np.sin(x) * np.exp(-x * x) + np.tanh(x) ** 2))
    row("dslc primal", tp)
    row("dslc jvp", tj, tp)
    row("numpy primal", tn, tp, "dslc primal")

    print("B5 1000 explicit-Euler steps of x + h*(-x + tanh(A@x)), d = 64")
    d = 64
    x0 = rng.standard_normal(d).astype(np.float32)
    A = (2 * rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)   # gain > 1: the state settles away from 0 (no denormals)
    h = np.float32(0.01)
    v0 = rng.standard_normal(d).astype(np.float32)
    euler(x0, A, h, 1000), jvp(euler, (x0, A, h, 1000), (v0, None, None))
    euler.jvp(x0, A, h, 1000, v0, A, np.float32(0))
    tp = median_time(lambda: euler(x0, A, h, 1000))
    tj = median_time(lambda: jvp(euler, (x0, A, h, 1000), (v0, None, None)))
    ta = median_time(lambda: euler.jvp(x0, A, h, 1000, v0, A, np.float32(0)))
    row("dslc primal", tp)
    row("dslc jvp along x0 (as JAX's anchor)", tj, tp)
    row("dslc jvp along x0, A and h", ta, tp)
    m1, m2 = peak_rss_child(1000), peak_rss_child(100000)
    print(f"  peak RSS of a process running the JVP: {m1:.1f} MiB at 1,000 steps, {m2:.1f} MiB at 100,000")

    print("jacfwd of predict w.r.t. W, inputs 4096x512")
    W = rng.standard_normal(512).astype(np.float32)
    b = np.float32(0.1)
    inputs = rng.standard_normal((4096, 512)).astype(np.float32)
    jf = jacfwd(predict)
    jf(W, b, inputs)
    tjac = median_time(lambda: jf(W, b, inputs), repeat=5)
    eye = np.eye(512, dtype=np.float32)
    zin = np.zeros_like(inputs)
    zb = np.float32(0)

    def separate():
        for i in range(512):
            predict.jvp(W, b, inputs, eye[i], zb, zin)
    tsep = median_time(separate, repeat=1)
    row("dslc jacfwd (one vector-mode pass)", tjac)
    row("512 separate dslc JVP calls", tsep, tjac, "jacfwd")
    try:
        import jax
        import jax.numpy as jnp
        jpred = lambda W: jax.nn.sigmoid(inputs @ W + b)  # noqa: E731
        jj = jax.jit(jax.jacfwd(jpred))
        jj(W).block_until_ready()
        row("jax jacfwd", median_time(lambda: jj(W).block_until_ready()), tjac, "dslc jacfwd")
        del jnp
    except ImportError:
        pass


if __name__ == "__main__":
    main()
