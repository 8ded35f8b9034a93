"""The JIT's runtime pieces (compiler/codegen/runtime_module.py): the thread runtime and the loops
of small matrix products are compiled once per process and called by every kernel; kernel
modules only declare them; the disk cache keeps them; warm-start libraries link them in without
exporting them. Oracles: NumPy, and the symbol tables of what is built."""
from __future__ import annotations

import ctypes
import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from compiler.codegen import llvm as backend
from compiler.codegen import runtime_module
from dsl import kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@kernel
def products64(A: f64[m, k], B: f64[k, n], C: f64[n, k], D: f64[k, m]) -> (f64[m, n], f64[m, n], f64[m, n], f64[m, n]):
    return A @ B, A @ C.T, D.T @ B, D.T @ C.T


@kernel
def products32(A: f32[m, k], B: f32[k, n], C: f32[n, k], D: f32[k, m]) -> (f32[m, n], f32[m, n], f32[m, n], f32[m, n]):
    return A @ B, A @ C.T, D.T @ B, D.T @ C.T


@kernel
def products_int(A: i64[m, k], B: i64[k, n], C: i64[n, k]) -> (i64[m, n], i64[m, n]):
    return A @ B, A @ C.T


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (2, 3, 4), (3, 17, 5), (17, 9, 33), (31, 31, 31)])
def test_small_products_in_every_layout(m, k, n):
    """Below BLAS's threshold the products run the runtime's loops: A @ B, A @ C.T, D.T @ B and
    D.T @ C.T (B read by rows or by columns, A by rows or by columns)."""
    r = np.random.default_rng(m * 10000 + k * 100 + n)
    A, B, C, D = (r.standard_normal(s) for s in ((m, k), (k, n), (n, k), (k, m)))
    want = (A @ B, A @ C.T, D.T @ B, D.T @ C.T)
    for got, w in zip(products64(A, B, C, D), want):
        np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-12)
    for got, w in zip(products32(*(a.astype(np.float32) for a in (A, B, C, D))), want):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-4 * np.sqrt(k))
    Ai, Bi, Ci = (r.integers(-9, 10, s) for s in ((m, k), (k, n), (n, k)))
    for got, w in zip(products_int(Ai, Bi, Ci), (Ai @ Bi, Ai @ Ci.T)):
        np.testing.assert_array_equal(got, w)


@kernel
def probe(A: f32[m, k], C: f32[n, k]) -> f32[m, n]:
    return (A @ C.T) * 2.0


def _module_text(shared):
    lowered = probe.lower(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32))
    module, _ = backend.build_module(lowered._fn, "probe", vector_math="host", blas=True, threads=True,
                                     shared_runtime=shared)
    return module, str(module)


def test_kernel_modules_declare_the_runtime_and_others_define_it():
    module, text = _module_text(True)
    used = runtime_module.used_by(module)
    assert used == ["dslc.par.run", "dslc.rt.gemm.f32.t"], used
    for s in used:
        assert f'declare i64 @"{s}"' in text or f'declare void @"{s}"' in text, s
    assert not re.search(r'^define .*@"dslc\.(par|rt)\.', text, re.M)
    _, own = _module_text(False)                  # AOT libraries and printed modules: their own copy
    assert 'define internal i64 @"dslc.par.run"' in own
    assert 'define internal void @"dslc.rt.gemm.f32.t"' in own


PROG = '''
from __future__ import annotations
import numpy as np
from dsl import kernel

@kernel
def prog_mm(A: f32[m, k], B: f32[k, n]) -> f32[m, n]:
    return tanh(A @ B) + 1.0

@kernel
def prog_scaled(A: f32[m, k]) -> f32[m, k]:
    return tanh(A) * 2.0

A = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
B = np.linspace(0, 2, 20, dtype=np.float32).reshape(4, 5)
assert np.allclose(prog_mm(A, B), np.tanh(A @ B) + 1.0, rtol=1e-5, atol=1e-6)
assert np.allclose(prog_scaled(A), np.tanh(A) * 2.0, rtol=1e-5, atol=1e-6)
print("ok")
'''


def _run(prog, cache, **env):
    e = dict(os.environ, DSLC_CACHE_DIR=str(cache), PYTHONPATH=ROOT)
    e.update(env)
    r = subprocess.run([sys.executable, str(prog)], capture_output=True, text=True, env=e, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_pieces_are_cached_once_and_reused_by_the_next_process(tmp_path):
    prog, cache = tmp_path / "prog.py", tmp_path / "cache"
    prog.write_text(PROG)
    _run(prog, cache, DSLC_WARM_START="0")
    pieces = sorted(glob.glob(str(cache / (runtime_module.RUNTIME_PREFIX + "*.dslc"))))
    # the thread runtime (prog_scaled; prog_mm may call BLAS, so its loops run on one thread), the
    # f32 loops with B as stored (prog_mm's small product)
    used = ("dslc.par.run", "dslc.rt.gemm.f32.n")
    for symbol in used:                            # (others may be there too: runtime_module.prefetch)
        assert str(cache / (runtime_module._key(symbol) + ".dslc")) in pieces, (symbol, pieces)
    stamps = [os.path.getmtime(p) for p in pieces]
    _run(prog, cache, DSLC_WARM_START="0")
    assert set(pieces) <= set(glob.glob(str(cache / (runtime_module.RUNTIME_PREFIX + "*.dslc"))))
    assert [os.path.getmtime(p) for p in pieces] == stamps     # loaded, not rebuilt


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm start is Linux-only")
@pytest.mark.skipif(not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")),
                    reason="no C compiler to link warm-start libraries")
def test_warm_start_library_links_the_pieces_without_exporting_them(tmp_path):
    prog, cache = tmp_path / "prog.py", tmp_path / "cache"
    prog.write_text(PROG)
    _run(prog, cache)                               # compiles, then links the warm-start library
    libs = glob.glob(str(cache / "*.so"))
    assert len(libs) == 2, os.listdir(cache)        # one per kernel
    images = []
    for path in libs:
        lib = ctypes.CDLL(path)                     # every call it makes resolved
        with open(path, "rb") as f:
            images.append(f.read())
        for s in ("dslc.par.run", "dslc.rt.gemm.f32.n"):
            with pytest.raises(AttributeError):
                lib[s]                              # not exported
    for s in ("dslc.par.run", "dslc.rt.gemm.f32.n"):
        assert any(s.encode() in image for image in images), s      # but linked in
    _run(prog, cache)                               # and a warm process computes with it
