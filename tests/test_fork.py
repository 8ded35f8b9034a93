"""`fork` (compiler/prims/control.py): the reverse sweep of a loop refills one segment of steps
while it walks back through the next, the two on two threads (FunctionCodegen.fork).

DSLC_FORK_MIN_NS=0 makes every fork after the first of a call go to the worker pool, however
short its regions; the setting is read when a kernel compiles (and keys the cache), so each test
compiles its kernels afresh from source. Oracles: float64 central differences and closed forms.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dsl import compile_source, grad, hvp, jacfwd, jacrev

SOURCE = textwrap.dedent("""
    def euler(x0: f64[d], A: f64[d, d], h: f64, steps: i64) -> f64:
        x = x0
        for t in range(steps):
            x = x + h * (-x + tanh(A @ x))
        return sum(x * x)

    def halve_until(x: f64[n], limit: f64) -> f64:
        s = 0.0
        while max(abs(x)) > limit:
            x = x * 0.7 + sin(x) * 0.1
            s += sum(x)
        return s + sum(x * x)

    def overwrite(x: f64[n], steps: i64) -> f64:
        y = zeros(n)
        for t in range(steps):
            for i in range(n):
                y[i] = y[i] * 0.5 + sin(x[i] * y[(i + 1) % n] + x[i])
        return sum(y * y)

    def power(a: f64, x0: f64, steps: i64) -> f64:
        x = x0
        for t in range(steps):
            x = x * a
        return x
""")


@pytest.fixture
def forking(monkeypatch):
    monkeypatch.setenv("DSLC_FORK_MIN_NS", "0")
    monkeypatch.setenv("DSLC_NUM_THREADS", "2")
    return compile_source(SOURCE, "<fork-test>")


def fd(f, x, eps=1e-6):
    x = np.asarray(x, dtype=float)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, dn = x.copy(), x.copy()
        up[i] += eps
        dn[i] -= eps
        g[i] = (f(up) - f(dn)) / (2 * eps)
    return g


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 10, 150])
def test_forked_reverse_loop_matches_finite_differences(forking, steps):
    euler = forking["euler"]
    rng = np.random.default_rng(steps)
    d = 6
    x0, A = rng.standard_normal(d), 2 * rng.standard_normal((d, d)) / np.sqrt(d)
    gx, gA, gh = grad(euler, argnums=(0, 1, 2))(x0, A, 0.05, steps)
    np.testing.assert_allclose(gx, fd(lambda z: euler(z, A, 0.05, steps), x0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gA, fd(lambda z: euler(x0, z, 0.05, steps), A), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gh, fd(lambda z: euler(x0, A, float(z), steps), 0.05), rtol=1e-6, atol=1e-8)
    # the reference evaluator runs the same IR, forks included, one region after the other
    np.testing.assert_allclose(grad(euler)(x0, A, 0.05, steps, target="interpret"), gx, rtol=1e-12, atol=1e-14)


def test_forked_while_loop_and_stores_match_finite_differences(forking):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(5) * 3
    f = forking["halve_until"]
    np.testing.assert_allclose(grad(f)(x, 0.01), fd(lambda z: f(z, 0.01), x), rtol=1e-6, atol=1e-8)
    g = forking["overwrite"]
    for steps in (1, 4, 40):
        np.testing.assert_allclose(grad(g)(x, steps), fd(lambda z: g(z, steps), x), rtol=1e-6, atol=1e-8)


def test_forked_derivatives_of_derivatives_match_closed_forms(forking):
    """A derivative pass given a kernel with forks sees their regions inline: grad of grad
    (x0 a^T: closed forms), and forward over reverse and reverse over reverse through a forked
    loop."""
    p = forking["power"]
    a, x0, T = 1.01, 0.7, 60
    g1 = grad(p)
    np.testing.assert_allclose(g1(a, x0, T), T * x0 * a ** (T - 1), rtol=1e-12)
    np.testing.assert_allclose(grad(g1)(a, x0, T), T * (T - 1) * x0 * a ** (T - 2), rtol=1e-12)
    euler = forking["euler"]
    rng = np.random.default_rng(1)
    d, steps = 4, 30
    x0v, A = rng.standard_normal(d), rng.standard_normal((d, d)) / 2
    gx = grad(euler)
    H = jacfwd(gx)(x0v, A, 0.1, steps)
    cols = [(gx(x0v + e, A, 0.1, steps) - gx(x0v - e, A, 0.1, steps)) / 2e-6 for e in np.eye(d) * 1e-6]
    np.testing.assert_allclose(H, np.stack(cols, axis=1), rtol=1e-5, atol=1e-7)
    # reverse over reverse: the vector-mode sweep slices tapes of the inner sweep's cotangents
    np.testing.assert_allclose(jacrev(gx)(x0v, A, 0.1, steps), H, rtol=1e-9, atol=1e-12)
    v = rng.standard_normal(d)
    hv = hvp(euler, (x0v, A, 0.1, steps), (v, np.zeros_like(A), 0.0))[0]      # the x0 entry
    np.testing.assert_allclose(hv, H @ v, rtol=1e-6, atol=1e-8)


def test_forked_and_sequential_runs_agree_bit_for_bit(monkeypatch):
    """The two regions share no state, so running them at once changes no bit."""
    rng = np.random.default_rng(5)
    d, steps = 8, 400
    x0, A = rng.standard_normal(d), 2 * rng.standard_normal((d, d)) / np.sqrt(d)
    results = []
    for setting in ("0", str(10 ** 15)):
        monkeypatch.setenv("DSLC_FORK_MIN_NS", setting)
        euler = compile_source(SOURCE, "<fork-test>")["euler"]
        results.append(grad(euler, argnums=(0, 1))(x0, A, 0.01, steps))
    for forked, sequential in zip(*results):
        np.testing.assert_array_equal(forked, sequential)


def test_a_fork_hands_a_region_to_a_worker(tmp_path):
    """In a fresh process whose only kernel is a reverse loop (no loop nest big enough for
    threads), forks are what starts the pool's worker; the gradient stays right."""
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})
        from dsl import compile_source, grad
        euler = compile_source({SOURCE!r}, "<fork-test>")["euler"]
        rng = np.random.default_rng(0)
        x0, A = rng.standard_normal(6), rng.standard_normal((6, 6)) / 3
        g = grad(euler)
        g(x0, A, 0.1, 0)                       # compiled; no step, no fork
        before = len(os.listdir("/proc/self/task"))
        out = g(x0, A, 0.1, 2000)
        print(len(os.listdir("/proc/self/task")) - before)
        e = 1e-6
        u = np.eye(6)[2] * e
        print(abs(out[2] - (euler(x0 + u, A, 0.1, 2000) - euler(x0 - u, A, 0.1, 2000)) / (2 * e)))
    """)
    env = dict(os.environ, DSLC_FORK_MIN_NS="0", DSLC_NUM_THREADS="2", DSLC_TIERED="0",
               DSLC_WARM_START="0", DSLC_CACHE_DIR=str(tmp_path), OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    new_threads, err = out.stdout.split()
    assert int(new_threads) == 1            # the pool's one worker (2 threads in all)
    assert float(err) < 1e-6


def test_forks_in_a_library_and_with_subnormals_flushed(monkeypatch, tmp_path):
    """A `dslc` library carries its own thread runtime, FORK_PINNED included; a kernel flushing
    subnormals hands the worker a chunk that sets its own floating-point mode."""
    from dsl import cli
    from runtime import load_library
    monkeypatch.setenv("DSLC_FORK_MIN_NS", "0")
    monkeypatch.setenv("DSLC_NUM_THREADS", "2")
    src = tmp_path / "euler.dsl"
    src.write_text(SOURCE)
    assert cli.main([str(src), "-o", str(tmp_path / "build"), "--derive", "grad", "-q"]) == 0
    lib = load_library(tmp_path / "build" / "libeuler.so")
    rng = np.random.default_rng(11)
    d, steps = 5, 500
    x0, A = rng.standard_normal(d), 2 * rng.standard_normal((d, d)) / np.sqrt(d)
    want = fd(lambda z: lib.euler(z, A, 0.01, steps), x0)
    np.testing.assert_allclose(lib.euler_grad(x0, A, 0.01, steps), want, rtol=1e-6, atol=1e-8)
    monkeypatch.setenv("DSLC_FLUSH_DENORMALS", "1")
    euler = compile_source(SOURCE, "<fork-test>")["euler"]
    np.testing.assert_allclose(grad(euler)(x0, A, 0.01, steps), want, rtol=1e-6, atol=1e-8)


def test_forks_of_two_python_threads_at_once(forking):
    """A kernel called from two threads at once: one call's forks get the pool, the other's find
    it busy and run both regions in their own thread; every result is the one-thread result."""
    import threading
    euler = forking["euler"]
    rng = np.random.default_rng(2)
    d, steps = 6, 900
    x0, A = rng.standard_normal(d), 2 * rng.standard_normal((d, d)) / np.sqrt(d)
    g = grad(euler, argnums=(0, 1))
    want = g(x0, A, 0.01, steps)
    got = [[], []]

    def work(out):
        for _ in range(15):
            out.append(g(x0, A, 0.01, steps))
    threads = [threading.Thread(target=work, args=(o,)) for o in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got[0]) == len(got[1]) == 15
    for out in got[0] + got[1]:
        for a, w in zip(out, want):
            np.testing.assert_array_equal(a, w)
