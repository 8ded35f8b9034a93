"""Libraries built by `dslc`, loaded without the compiler: `runtime.load_library` in a fresh process
(compared with the JIT entry point by entry point), a corrupt or mismatched library, and the C example
under examples/c_api built with the system C compiler."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import dsl
from dsl import cli
from runtime import LibraryError, load_library

ROOT = Path(__file__).resolve().parent.parent
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc/clang) found")

SOURCE = '''\
def lsq(x: f64[n], A: f64[m, n], b: f64[m]) -> f64:
    """Least squares: 0.5 * |A x - b|^2."""
    r = A @ x - b
    return 0.5 * sum(r * r)

def axpy(a: f32, x: f32[n], y: f32[n]) -> f32[n]:
    return a * x + y

def sq_norm(v: f64[n]) -> f64:
    return dot(v, v)

def normalize(v: f64[n]) -> f64[n]:
    return v / sqrt(sq_norm(v))

def stats(x: f64[n], k: i64) -> (f64[n], f64):
    return tanh(x) * 2.0, sum(exp(x)) * f64(k)

def pick(x: f64[n], i: i64) -> f64:
    return x[i] * x[i]
'''
KERNELS = ["lsq", "axpy", "sq_norm", "normalize", "stats", "pick"]
SCALAR_OUT = {"lsq", "sq_norm", "pick"}


def _primals(rng):
    m, n = 4, 5
    return {
        "lsq": [rng.standard_normal(n), rng.standard_normal((m, n)), rng.standard_normal(m)],
        "axpy": [1.5, rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)],
        "sq_norm": [rng.standard_normal(n)],
        "normalize": [rng.standard_normal(n)],
        "stats": [rng.standard_normal(n), 3],
        "pick": [rng.standard_normal(n), 2],
    }


def _like(rng, v):
    if isinstance(v, np.ndarray):
        return rng.standard_normal(v.shape).astype(v.dtype)
    if isinstance(v, np.generic):
        return v.dtype.type(rng.standard_normal())
    return float(rng.standard_normal())


def _is_float(v):
    return isinstance(v, float) or (isinstance(v, (np.ndarray, np.generic)) and v.dtype.kind == "f")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("lib")
    src = d / "mixed.dsl"
    src.write_text(SOURCE)
    out = d / "build"
    rc = cli.main([str(src), "-o", str(out), "--derive", "jvp,vjp,grad", "-q"])
    assert rc == 0
    return src, out


def _jit_cases(src, rng):
    """{entry-point name: (args, JIT result)} for every kernel and derivative."""
    ks = dsl.compile_file(str(src))
    cases = {}
    for name, primals in _primals(rng).items():
        k = ks[name]
        out = k(*primals)
        cases[name] = (primals, out)
        tangents = [_like(rng, p) for p in primals if _is_float(p)]
        cases[name + "_jvp"] = (primals + tangents, k.jvp(*(primals + tangents)))
        outs = out if isinstance(out, tuple) else (out,)
        cts = [_like(rng, o) for o in outs]
        cases[name + "_vjp"] = (primals + cts, k.vjp(*(primals + cts)))
        if name in SCALAR_OUT:
            cases[name + "_grad"] = (primals, dsl.grad(k)(*primals))
    return cases


_CHILD = r'''
import importlib.abc, pickle, sys
BLOCKED = ("dsl", "compiler", "llvmlite", "lark")

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} must not be imported by a program loading a dslc library")
        return None

sys.meta_path.insert(0, _Block())
import numpy as np
from runtime import load_library

so, cases_path, out_path = sys.argv[1:4]
with open(cases_path, "rb") as f:
    cases = pickle.load(f)
lib = load_library(so)
results = {name: getattr(lib, name)(*args) for name, args in cases.items()}
errors = {}
for label, call in (("index", lambda: lib.pick(np.arange(3.0), 7)),
                    ("shape", lambda: lib.lsq(np.ones(5), np.ones((4, 3)), np.ones(4))),
                    ("dtype", lambda: lib.axpy(1.0, np.ones(3), np.ones(3)))):
    try:
        call()
        errors[label] = None
    except Exception as e:
        errors[label] = (type(e).__name__, str(e))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
with open(out_path, "wb") as f:
    pickle.dump({"results": results, "dir": dir(lib), "repr": repr(lib), "loaded": loaded,
                 "errors": errors, "fast": {n: getattr(lib, n).fast_path for n in lib.kernels}}, f)
'''


def _assert_same(a, b, name):
    assert isinstance(a, tuple) == isinstance(b, tuple), name
    aa, bb = (a, b) if isinstance(a, tuple) else ((a,), (b,))
    assert len(aa) == len(bb), name
    for x, y in zip(aa, bb):
        assert type(x) is type(y), (name, type(x), type(y))
        assert np.asarray(x).dtype == np.asarray(y).dtype, name
        assert np.shape(x) == np.shape(y), name
        rtol = 1e-5 if np.asarray(x).dtype == np.float32 else 1e-11
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol, err_msg=name)


def test_library_in_fresh_process_matches_jit(built, tmp_path):
    src, out = built
    rng = np.random.default_rng(5)
    cases = _jit_cases(src, rng)
    expected_names = set(KERNELS) | {k + s for k in KERNELS for s in ("_jvp", "_vjp")} | \
        {k + "_grad" for k in SCALAR_OUT}
    assert set(cases) == expected_names
    cases_path, out_path, child = tmp_path / "cases.pkl", tmp_path / "out.pkl", tmp_path / "child.py"
    cases_path.write_bytes(pickle.dumps({n: a for n, (a, _) in cases.items()}))
    child.write_text(_CHILD)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(child), str(out / "libmixed.so"), str(cases_path), str(out_path)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    got = pickle.loads(out_path.read_bytes())
    assert got["loaded"] == []                       # neither the compiler nor the front end
    assert expected_names <= set(got["dir"])
    assert "lsq_grad(x: f64[n], A: f64[m, n], b: f64[m]) -> f64[n]" in got["repr"]
    assert set(got["fast"]) == expected_names
    for name, (_, want) in cases.items():
        _assert_same(got["results"][name], want, name)
    # statuses and argument checks become the same exceptions as in the JIT
    kind, msg = got["errors"]["index"]
    assert kind == "IndexError" and "index 7 is out of bounds for axis of size 3" in msg
    assert re.search(r"mixed\.dsl:\d+:\d+: ", msg) and "return x[i] * x[i]" in msg
    assert got["errors"]["shape"][0] == "ValueError"
    kind, msg = got["errors"]["dtype"]
    assert kind == "TypeError" and "parameter 'x'" in msg


def test_load_library_in_process_and_paths(built):
    _, out = built
    lib = load_library(out / "libmixed.so")
    assert lib is not None and "lsq_grad" in dir(lib) and "lsq_grad" in lib
    x, A, b = np.ones(3), np.eye(3), np.zeros(3)
    np.testing.assert_allclose(lib.lsq_grad(x, A, b), x)
    assert lib["sq_norm"](np.array([3.0, 4.0])) == np.float64(25.0)
    # the manifest or the directory work too
    assert set(load_library(str(out / "mixed.json")).kernels) == set(lib.kernels)
    assert set(load_library(str(out)).kernels) == set(lib.kernels)
    with pytest.raises(AttributeError, match="no entry point 'axpy_grad'.*it has: lsq"):
        lib.axpy_grad


def _copy(out, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(out, d)
    return d


def _edit_manifest(d, fn):
    p = d / "mixed.json"
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m))


def test_corrupt_so_is_refused(built, tmp_path):
    d = _copy(built[1], tmp_path)
    so = d / "libmixed.so"
    data = bytearray(so.read_bytes())
    data[len(data) // 2] ^= 0xFF
    so.write_bytes(bytes(data))
    with pytest.raises(LibraryError, match=r"does not match its manifest.*corrupt.*rebuild") as e:
        load_library(so)
    assert isinstance(e.value, ValueError) and str(so) in str(e.value)


def test_manifest_hash_mismatch(built, tmp_path):
    d = _copy(built[1], tmp_path)
    _edit_manifest(d, lambda m: m.update(sha256="0" * 64))
    with pytest.raises(LibraryError, match="does not match its manifest"):
        load_library(d / "libmixed.so")


def test_manifest_wrong_abi_and_format(built, tmp_path):
    d = _copy(built[1], tmp_path)
    _edit_manifest(d, lambda m: m.update(abi=99))
    with pytest.raises(LibraryError, match=r"ABI version 99.*supports version 1.*dslc"):
        load_library(d / "libmixed.so")
    _edit_manifest(d, lambda m: m.update(abi=1, format_version=7))
    with pytest.raises(LibraryError, match="format version 7"):
        load_library(d / "mixed.json")
    _edit_manifest(d, lambda m: m.update(format_version=1, kernels=[{"name": "x"}]))
    with pytest.raises(LibraryError, match="malformed"):
        load_library(d / "mixed.json")


def test_manifest_broken_json(built, tmp_path):
    d = _copy(built[1], tmp_path)
    p = d / "mixed.json"
    p.write_text(p.read_text()[:100])
    with pytest.raises(LibraryError, match=r"not valid JSON.*corrupt"):
        load_library(d / "libmixed.so")


def test_missing_files(built, tmp_path):
    d = _copy(built[1], tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_library(d / "libnothere.so")
    (d / "libmixed.so").unlink()
    with pytest.raises(FileNotFoundError, match=r"libmixed\.so.*missing"):
        load_library(d / "mixed.json")
    d2 = _copy(built[1], tmp_path / "b")
    (d2 / "mixed.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"manifest.*mixed\.json.*missing"):
        load_library(d2 / "libmixed.so")


def test_unloadable_so(built, tmp_path):
    d = _copy(built[1], tmp_path)
    so = d / "libmixed.so"
    so.write_bytes(b"this is not an ELF file")
    import hashlib
    _edit_manifest(d, lambda m: m.update(sha256=hashlib.sha256(so.read_bytes()).hexdigest()))
    with pytest.raises(LibraryError, match="cannot load the shared library"):
        load_library(so)


def test_rebuilt_library_reloads_new_code(tmp_path):
    src = tmp_path / "r.dsl"
    src.write_text("def f(x: f64) -> f64:\n    return x + 1.0\n")
    assert cli.main([str(src), "-o", str(tmp_path / "b"), "-q"]) == 0
    assert load_library(tmp_path / "b" / "libr.so").f(1.0) == 2.0
    src.write_text("def f(x: f64) -> f64:\n    return x * 10.0\n")
    assert cli.main([str(src), "-o", str(tmp_path / "b"), "-q"]) == 0
    assert load_library(tmp_path / "b" / "libr.so").f(1.0) == 10.0      # not the old mapping


# --- the C example ---------------------------------------------------------------------------------

EXAMPLE = ROOT / "examples" / "c_api"


def _numpy_reference():
    X = np.array([[0.5, -1.2, 2.0], [1.5, 0.3, -0.7], [-0.8, 0.9, 0.1], [2.2, -0.4, 1.3],
                  [-1.1, -1.5, 0.6], [0.0, 2.1, -1.8]])
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    w, b = np.array([0.25, -0.5, 0.75]), 0.1
    z = X @ w + b
    p = 1.0 / (1.0 + np.exp(-z))
    return {"loss": np.mean(np.logaddexp(0.0, z) - y * z), "grad_w": X.T @ (p - y) / len(y),
            "grad_b": np.mean(p - y), "predict": p}


def _check_c_output(text):
    ref = _numpy_reference()
    vals = {}
    for line in text.splitlines():
        m = re.match(r"(\w+) = (.*)", line)
        if m and m.group(1) in ref:
            vals[m.group(1)] = np.array([float(v) for v in m.group(2).split()])
    assert set(vals) == set(ref), text
    for k, v in ref.items():
        np.testing.assert_allclose(vals[k], np.atleast_1d(v), rtol=1e-12, err_msg=k)
    assert re.search(r"mismatched extents -> status [1-9]\d* \(nonzero: yes\)", text)


@needs_cc
def test_c_example(tmp_path):
    build = tmp_path / "build"
    if shutil.which("make"):
        env = dict(os.environ, PYTHONPATH=str(ROOT), CC=CC)
        r = subprocess.run(["make", "-s", f"DSLC={sys.executable} -m dsl.cli", f"BUILD={build}", "run"],
                           cwd=EXAMPLE, capture_output=True, text=True, env=env, timeout=300)
    else:
        assert cli.main([str(EXAMPLE / "kernels.dsl"), "-o", str(build), "--derive", "grad,vjp", "-q"]) == 0
        cc = subprocess.run([*CC.split(), "-O2", "-I", str(build), "-o", str(build / "main"),
                             str(EXAMPLE / "main.c"), "-L", str(build), "-lkernels",
                             f"-Wl,-rpath,{build}", "-lm"], capture_output=True, text=True, timeout=120)
        assert cc.returncode == 0, cc.stderr
        r = subprocess.run([str(build / "main")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    _check_c_output(r.stdout)
    # the library the example built loads from Python too
    lib = load_library(build / "libkernels.so")
    ref = _numpy_reference()
    X = np.array([[0.5, -1.2, 2.0], [1.5, 0.3, -0.7], [-0.8, 0.9, 0.1], [2.2, -0.4, 1.3],
                  [-1.1, -1.5, 0.6], [0.0, 2.1, -1.8]])
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(lib.loss_grad(np.array([0.25, -0.5, 0.75]), 0.1, X, y), ref["grad_w"],
                               rtol=1e-12)


@needs_cc
def test_header_compiles_and_links(built, tmp_path):
    _, out = built
    c = tmp_path / "use.c"
    c.write_text(textwrap.dedent('''\
        #include "mixed.h"
        int main(void) {
            double x[2] = {3.0, 4.0}, r = 0.0;
            int64_t err[4];
            int32_t st = sq_norm(x, 2, &r, err);
            return (st == 0 && r == 25.0) ? 0 : 1;
        }
    '''))
    exe = tmp_path / "use"
    cc = subprocess.run([*CC.split(), "-Wall", "-Werror", "-I", str(out), "-o", str(exe), str(c), "-L", str(out),
                         "-lmixed", f"-Wl,-rpath,{out}", "-lm"], capture_output=True, text=True, timeout=120)
    assert cc.returncode == 0, cc.stderr
    assert subprocess.run([str(exe)], timeout=60).returncode == 0
