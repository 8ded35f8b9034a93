"""Concurrency and cache integrity: threads calling kernels at once, first calls racing to compile,
processes sharing one disk cache, corrupt and read-only cache directories."""
import os
import stat
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import compiler.pipeline as pipeline
from compiler import cache
from dsl import compile_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SRC = '''
def axpy(a: f64, x: f64[n], y: f64[n]) -> f64[n]:
    return a * x + y

def norm2(x: f64[n]) -> f64:
    s = 0.0
    for i in range(n):
        s += x[i] * x[i]
    return s

def mv(A: f32[m, n], x: f32[n]) -> f32[m]:
    return tanh(A @ x)
'''


def _run_threads(n, target):
    errors = []

    def wrap(k):
        try:
            target(k)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    ts = [threading.Thread(target=wrap, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors[:3]


def test_threads_calling_same_and_different_kernels():
    ks = compile_source(SRC, filename="conc.dsl")
    rng = np.random.default_rng(0)

    def work(k):
        r = np.random.default_rng(k)
        for _ in range(200):
            n = int(r.integers(0, 50))
            x, y = r.standard_normal(n), r.standard_normal(n)
            which = (k + _) % 3
            if which == 0:
                np.testing.assert_allclose(ks["axpy"](0.5, x, y), 0.5 * x + y, rtol=1e-12)
            elif which == 1:
                np.testing.assert_allclose(ks["norm2"](x), float(x @ x), rtol=1e-10)
            else:
                A = r.standard_normal((3, n)).astype(np.float32)
                xf = x.astype(np.float32)
                np.testing.assert_allclose(ks["mv"](A, xf), np.tanh(A @ xf), rtol=1e-4, atol=1e-5)
    del rng
    _run_threads(12, work)


def test_racing_first_calls_compile_once(monkeypatch):
    ks = compile_source(SRC.replace("axpy", "axpy_race"), filename="race.dsl")
    f = ks["axpy_race"]
    count = {"n": 0}
    lock = threading.Lock()
    real = pipeline.compile_function

    def counting(*a, **kw):
        with lock:
            count["n"] += 1
        return real(*a, **kw)
    kmod = sys.modules["dsl.kernel"]
    monkeypatch.setattr(kmod, "compile_function", counting)
    barrier = threading.Barrier(16)
    x = np.arange(5.0)

    def work(k):
        barrier.wait()
        np.testing.assert_allclose(f(2.0, x, x), 3 * x)
        np.testing.assert_allclose(f.jvp(2.0, x, x, 1.0, x, x), (3 * x, 4 * x))
    _run_threads(16, work)
    assert count["n"] == 2, f"{count['n']} compilations for 2 signatures (primal and jvp)"
    assert len(f._callers) == 1


_PROC = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import numpy as np
    from dsl import compile_source
    ks = compile_source({src!r}, filename="shared.dsl")
    x = np.arange(6.0)
    for _ in range(3):
        assert np.allclose(ks["axpy"](2.0, x, x), 3 * x)
        assert abs(ks["norm2"](x) - 55.0) < 1e-9
        A = np.ones((2, 6), np.float32)
        assert np.allclose(ks["mv"](A, x.astype(np.float32)), np.tanh(15.0))
        assert np.allclose(ks["axpy"].jvp(2.0, x, x, 1.0, x, x)[1], 4 * x)
    print("ok")
""")


def _spawn(cache_dir, n=4):
    env = dict(os.environ, DSLC_CACHE_DIR=str(cache_dir))
    code = _PROC.format(root=ROOT, src=SRC)
    procs = [subprocess.Popen([sys.executable, "-W", "always", "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        outs.append((p.returncode, out, err))
    return outs


def test_processes_share_one_disk_cache(tmp_path):
    d = tmp_path / "cache"
    for rc, out, err in _spawn(d, 4):
        assert rc == 0 and out.strip() == "ok", err[-2000:]
    entries = [p for p in os.listdir(d) if p.endswith(".dslc") and not p.startswith("runtime-")]
    assert len(entries) == 4, entries          # axpy, norm2, mv, axpy.jvp (and the runtime's pieces)
    assert not [p for p in os.listdir(d) if p.startswith(".tmp-")], "temporary files left behind"
    # a warm process reads them back
    for rc, out, err in _spawn(d, 1):
        assert rc == 0 and out.strip() == "ok", err[-2000:]


def test_truncated_or_corrupt_entry_is_detected_and_rebuilt(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    for rc, out, err in _spawn(d, 1):
        assert rc == 0, err[-2000:]
    monkeypatch.setenv("DSLC_CACHE_DIR", str(d))
    entries = sorted(p for p in os.listdir(d) if p.endswith(".dslc"))
    assert entries
    for k, e in enumerate(entries):
        path = d / e
        data = path.read_bytes()
        if k % 3 == 0:
            path.write_bytes(data[: len(data) // 2])            # truncated
        elif k % 3 == 1:
            b = bytearray(data)
            b[len(b) - 10] ^= 0xFF                               # one flipped byte in the object code
            path.write_bytes(bytes(b))
        else:
            path.write_bytes(b"garbage")
        assert cache.load(e[:-5]) is None, f"corrupt entry {e} was accepted"
    for e in entries:
        path = d / e
        if path.exists():
            path.unlink()
    # corrupt again, then let the processes rebuild
    for rc, out, err in _spawn(d, 1):
        assert rc == 0, err[-2000:]
    for e in os.listdir(d):
        if e.endswith(".dslc"):
            (d / e).write_bytes((d / e).read_bytes()[:100])
    for rc, out, err in _spawn(d, 2):
        assert rc == 0 and out.strip() == "ok", err[-2000:]
    for e in os.listdir(d):
        if e.endswith(".dslc"):
            assert cache.load(e[:-5]) is not None, f"{e} was not rebuilt whole"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_cache_directory_warns_and_works(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    os.chmod(d, stat.S_IRUSR | stat.S_IXUSR)
    try:
        for rc, out, err in _spawn(d, 1):
            assert rc == 0 and out.strip() == "ok", err[-2000:]
            assert "cannot write the kernel cache" in err
    finally:
        os.chmod(d, stat.S_IRWXU)


def test_unwritable_cache_path_warns_and_works(tmp_path):
    """A cache 'directory' that is a regular file (so unwritable even for root)."""
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    for rc, out, err in _spawn(f, 1):
        assert rc == 0 and out.strip() == "ok", err[-2000:]
        assert "cannot write the kernel cache" in err and "DSLC_CACHE_DIR" in err
