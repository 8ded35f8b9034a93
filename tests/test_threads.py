"""CPU threads (issue 7): big loop nests split into chunks run by POSIX threads.

The chunk count depends only on a loop's size, so every result must be bit-for-bit the same for
any DSLC_NUM_THREADS, and errors must be the ones a sequential run reports (first failing
element). Values are checked against NumPy in float64.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from dsl import grad, jvp, kernel

N = 1 << 20          # 16 chunks of 2**16 elements


@pytest.fixture
def num_threads(monkeypatch):
    def set_(k):
        monkeypatch.setenv("DSLC_NUM_THREADS", str(k))
    return set_


@kernel
def b1(x: f32[n]) -> f32:
    return sum(sin(x) * exp(-x * x) + tanh(x) ** 2)


@kernel
def stats(x: f64[n]) -> (f64, f64, f64):
    return sum(x), max(x), min(x * 2.0)


@kernel
def two_out(x: f64[n], y: f64[n]) -> (f64[n], f64[n]):
    s = sin(x) * y
    return s + 1.0, s * x


@kernel
def row_sums(X: f64[m, n]) -> f64[m]:
    return sum(exp(X) - X, axis=1)


@kernel
def col_sums(X: f64[m, n]) -> f64[n]:
    return sum(X * X, axis=0)


@kernel
def idiv(a: i64[n], b: i64[n]) -> i64[n]:
    return a // b


def _rng():
    return np.random.default_rng(7)


def _each_thread_count(num_threads, f, *args):
    outs = []
    for k in (1, 2, 3, 8):
        num_threads(k)
        outs.append(f(*args))
    return outs


def _same_bits(outs):
    first = outs[0] if isinstance(outs[0], tuple) else (outs[0],)
    for o in outs[1:]:
        o = o if isinstance(o, tuple) else (o,)
        for a, b in zip(first, o):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_full_reduction_same_for_any_thread_count(num_threads):
    x = _rng().standard_normal(N).astype(np.float32)
    outs = _each_thread_count(num_threads, b1, x)
    _same_bits(outs)
    x64 = x.astype(np.float64)
    ref = np.sum(np.sin(x64) * np.exp(-x64 * x64) + np.tanh(x64) ** 2)
    assert abs(float(outs[0]) - ref) <= 1e-5 * abs(ref)


def test_sibling_reductions(num_threads):
    x = _rng().standard_normal(3 * N + 12345)
    outs = _each_thread_count(num_threads, stats, x)
    _same_bits(outs)
    s, mx, mn = outs[0]
    assert abs(s - x.sum()) <= 1e-9 * np.abs(x).sum()
    assert mx == x.max() and mn == 2 * x.min()


def test_multi_output_elementwise(num_threads):
    r = _rng()
    x, y = r.standard_normal(N + 3), r.standard_normal(N + 3)
    outs = _each_thread_count(num_threads, two_out, x, y)
    _same_bits(outs)
    a, b = outs[0]
    np.testing.assert_allclose(a, np.sin(x) * y + 1.0, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(b, np.sin(x) * y * x, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("shape", [(4099, 300), (3, 100000), (1, 300000), (300000, 1)])
def test_axis_reductions(num_threads, shape):
    X = _rng().standard_normal(shape)
    outs = _each_thread_count(num_threads, row_sums, X)
    _same_bits(outs)
    np.testing.assert_allclose(outs[0], (np.exp(X) - X).sum(axis=1), rtol=1e-12)
    outs = _each_thread_count(num_threads, col_sums, X)
    _same_bits(outs)
    np.testing.assert_allclose(outs[0], (X * X).sum(axis=0), rtol=1e-12)


def test_derivatives(num_threads):
    x = _rng().standard_normal(N).astype(np.float32)
    v = np.ones_like(x)
    g = _each_thread_count(num_threads, grad(b1), x)
    _same_bits(g)
    x64 = x.astype(np.float64)
    s, e, t = np.sin(x64), np.exp(-x64 * x64), np.tanh(x64)
    ref = np.cos(x64) * e - 2 * x64 * s * e + 2 * t * (1 - t * t)
    np.testing.assert_allclose(g[0], ref, rtol=2e-5, atol=2e-6)
    outs = _each_thread_count(num_threads, lambda a: jvp(b1, (a,), (v,)), x)
    _same_bits([o[1] for o in outs])
    assert abs(float(outs[0][1]) - ref.sum()) <= 1e-4 * np.abs(ref).sum()


@pytest.mark.parametrize("bad", [[5], [N - 1], [70000, 900000], [900000, 70000, 1000]])
def test_first_error_wins(num_threads, bad):
    a = np.arange(N, dtype=np.int64)
    b = np.ones(N, dtype=np.int64)
    b[bad] = 0
    for k in (1, 2, 8):
        num_threads(k)
        with pytest.raises(ZeroDivisionError):
            idiv(a, b)
    b[bad] = 3
    np.testing.assert_array_equal(idiv(a, b), a // b)


@kernel
def ipow(a: i64[n], e: i64[n]) -> i64:
    return sum(a ** e)


def test_errors_inside_chunks_are_reported(num_threads):
    a = np.full(N, 2, dtype=np.int64)
    e = np.ones(N, dtype=np.int64)
    e[[77777, 987654]] = -1
    for k in (1, 2, 8):
        num_threads(k)
        with pytest.raises(ValueError, match="negative"):
            ipow(a, e)
    e[[77777, 987654]] = 3
    assert ipow(a, e) == 2 * (N - 2) + 16


def test_concurrent_python_threads(num_threads):
    num_threads(2)
    r = _rng()
    xs = [r.standard_normal(N) for _ in range(4)]
    expect = [(np.sin(x) * x + 1.0, np.sin(x) * x * x) for x in xs]
    got, errors = [None] * 4, []

    def work(k):
        try:
            for _ in range(3):
                got[k] = two_out(xs[k], xs[k])
        except Exception as e:       # surfaced below
            errors.append(e)
    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for (a, b), (ea, eb) in zip(got, expect):
        np.testing.assert_allclose(a, ea, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(b, eb, rtol=1e-14, atol=1e-15)


def test_bad_thread_counts_fall_back(monkeypatch):
    x = _rng().standard_normal(N)
    ref = stats(x)
    for v in ("0", "-3", "lots", "", "100000"):
        monkeypatch.setenv("DSLC_NUM_THREADS", v)
        assert stats(x) == ref


def test_big_loops_are_outlined_small_static_ones_are_not():
    x = np.ones(4, np.float32)
    text = b1.lower(x).llvm(optimized=False)
    assert "dslc.par.run" in text and "pthread_create" in text

    @kernel
    def small(x: f32[16]) -> f32:
        return sum(x * x)
    assert "dslc.par.run" not in small.lower(np.ones(16, np.float32)).llvm(optimized=False)


def test_library_runs_threads(tmp_path, num_threads):
    """An AOT shared library carries the same runtime (libc pthreads)."""
    import shutil
    from dsl import cli
    from runtime import load_library
    if not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler (cc/gcc/clang) found")
    src = tmp_path / "big.dsl"
    src.write_text("def big(x: f64[n]) -> f64:\n    return sum(sin(x) * x)\n")
    assert cli.main([str(src), "-o", str(tmp_path / "b"), "-q"]) == 0
    lib = load_library(str(tmp_path / "b"))
    x = _rng().standard_normal(N)
    outs = _each_thread_count(num_threads, lib.big, x)
    _same_bits(outs)
    assert abs(outs[0] - np.sum(np.sin(x) * x)) <= 1e-9 * np.abs(x).sum()


@kernel
def matvecs(A: f64[m, n], x: f64[n], y: f64[n]) -> (f64[m], f64[m]):
    return A @ x, A @ y


def test_big_matrix_vector_products(num_threads):
    r = _rng()
    A, x, y = r.standard_normal((3001, 400)), r.standard_normal(400), r.standard_normal(400)
    outs = _each_thread_count(num_threads, matvecs, A, x, y)
    _same_bits(outs)
    np.testing.assert_allclose(outs[0][0], A @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(outs[0][1], A @ y, rtol=1e-12, atol=1e-12)


def test_worker_pool_many_calls_changing_thread_counts(num_threads):
    """The persistent workers serve call after call: thread counts changing between calls,
    sizes giving 2..16 chunks, a failing chunk in between; results stay bit-identical."""
    r = _rng()
    xs = [r.standard_normal(n) for n in (3 << 16, 5 << 16, N)]
    ref = []
    num_threads(1)
    for x in xs:
        ref.append(stats(x))
    a = np.arange(1, N + 1, dtype=np.int64)
    b = np.ones(N, np.int64)
    b[700_001] = 0
    for i in range(60):
        num_threads((1, 2, 3, 2, 8)[i % 5])
        for x, want in zip(xs, ref):
            assert stats(x) == want
        if i % 7 == 0:
            with pytest.raises(ZeroDivisionError):
                idiv(a, b)


_FORK_CHILD = r"""
import os, sys, signal
sys.path.insert(0, {root!r})
import numpy as np
sys.path.insert(0, {tests!r})
import test_threads as T
os.environ["DSLC_NUM_THREADS"] = "2"
x = np.random.default_rng(1).standard_normal(T.N)
want = T.stats(x)                      # starts the module's workers
pid = os.fork()
if pid == 0:
    signal.alarm(20)                   # a hang in the child fails the test instead of the suite
    ok = T.stats(x) == want and T.stats(x * 2.0)[0] == 2.0 * want[0]
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status), T.stats(x) == want)
"""


def test_worker_pool_after_fork(tmp_path):
    """A forked child has none of its parent's workers: its first parallel loop starts its own."""
    import subprocess
    import sys
    tests = os.path.dirname(os.path.abspath(__file__))
    code = _FORK_CHILD.format(root=os.path.dirname(tests), tests=tests)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DSLC_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "child 0 True"


def test_worker_loop_allocates_no_stack_per_iteration():
    """A worker never returns, so an alloca inside its loop would grow its stack at every
    iteration until it overflowed: every alloca of the runtime is in its function's entry block."""
    import re
    text = b1.lower(np.ones(4, np.float32)).llvm(optimized=False)
    for name in ("dslc.par.pool_worker", "dslc.par.worker", "dslc.par.run"):
        m = re.search(r'define [^\n]*@"?' + re.escape(name) + r'"?\(', text)
        assert m, name
        body = text[m.end():text.index("\n}", m.end())].splitlines()
        labels = [k for k, line in enumerate(body) if re.match(r'^"?[\w.$-]+"?:', line)]
        assert len(labels) > 1, name
        late = [line.strip() for line in body[labels[1]:] if " alloca " in line]
        assert not late, f"{name}: alloca outside the entry block: {late}"
