"""runtime: the signature description (abi), the NumPy struct check (npstruct) and the generated callers
(call), exercised against hand-written C entry points (tests/c_runtime_fixture/kernels.c) built with
the system C compiler at test time."""
from __future__ import annotations

import copy
import ctypes
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from runtime import ABI_VERSION, OutputSpec, ParamSpec, Signature, Site, make_caller
from runtime import abi, npstruct
from runtime.call import check_arguments, status_error

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "c_runtime_fixture" / "kernels.c"
CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc) found")


def P(name, dtype, *dims):
    return {"name": name, "dtype": dtype, "dims": list(dims)}


def S(kind, message, line=7, col=12, text="    y[i] = x[i + 1]", file="k.py"):
    return {"kind": kind, "message": message, "file": file, "line": line, "col": col, "text": text}


def sig(name, params, outputs, tuple_result=False, sites=(), symbol=None):
    return {"name": name, "symbol": symbol or name, "abi": 1, "params": params, "outputs": outputs,
            "tuple_result": tuple_result, "sites": list(sites)}


SHAPE = S("shape", "shape mismatch", 3, 5, "    return a * x + y")
SIGS = {
    "axpy": sig("axpy", [P("a", "f32"), P("x", "f32", "n"), P("y", "f32", "n")], [P("out0", "f32", "n")],
                sites=[SHAPE]),
    "sq1": sig("sq1", [P("x", "f32", "n")], [P("out0", "f32", "n")], sites=[SHAPE]),
    "total": sig("total", [P("x", "f64", "n")], [P("out0", "f64")]),
    "stats": sig("stats", [P("x", "i32", "n"), P("k", "i64"), P("flag", "bool")],
                 [P("out0", "i64"), P("out1", "f64", "n"), P("out2", "bool")], tuple_result=True,
                 sites=[SHAPE]),
    "pad": sig("pad", [P("x", "f32", "n"), P("k", "i64")], [P("out0", "f32", ["add", "n", {"arg": "k"}])],
               sites=[SHAPE]),
    "padct": sig("padct", [P("x", "f32", "n"), P("k", "i64"), P("ct", "f32", ["add", "n", {"arg": "k"}])],
                 [P("out0", "f32", "n")], sites=[SHAPE]),
    "gather": sig("gather", [P("x", "f32", "n"), P("idx", "i64", "m")], [P("out0", "f32", "m")],
                  sites=[S("index", "index out of bounds", 7, 12, "    y[i] = x[idx[i]]"), SHAPE]),
    "idiv": sig("idiv", [P("a", "i64", "n"), P("b", "i64", "n")], [P("out0", "i64", "n")],
                sites=[S("zerodiv", "integer division by zero", 4, 14, "    return a // b"), SHAPE]),
    "fail": sig("fail", [P("mode", "i32")], [P("out0", "f64")],
                sites=[S("index", "index out of bounds"),
                       S("shape", "shapes of the operands of + differ", 8, 9, "    z = x + y"),
                       S("zerodiv", "integer division by zero", 9, 11, "    q = a // b"),
                       S("value", "negative extent in zeros()", 10, 9, "    z = zeros(k)")]),
    "matvec": sig("matvec", [P("A", "f64", "m", "n"), P("x", "f64", "n")], [P("out0", "f64", "m")],
                  sites=[SHAPE]),
    "rowsum": sig("rowsum", [P("A", "f64", "m", None)], [P("out0", "f64", "m")], sites=[SHAPE]),
    "square_rowsum": sig("square_rowsum", [P("A", "f64", "n", "n")], [P("out0", "f64", "n")],
                         sites=[SHAPE], symbol="rowsum"),
    "outer": sig("outer", [P("x", "f64", "n"), P("y", "f64", "m")], [P("out0", "f64", "n", "m")],
                 sites=[SHAPE]),
    "twice3": sig("twice3", [P("x", "f32", 3)], [P("out0", "f32", 3)], sites=[SHAPE]),
    "blocksum": sig("blocksum", [P("x", "f32", "n"), P("k", "i64")],
                    [P("out0", "f32", ["floordiv", "n", {"arg": "k"}])], sites=[SHAPE]),
    "negate": sig("negate", [P("m", "bool", "n")], [P("out0", "bool", "n")], sites=[SHAPE]),
    "scale_i32": sig("scale_i32", [P("x", "i32", "n"), P("s", "i32")], [P("out0", "i32", "n")],
                     sites=[SHAPE]),
    "mix": sig("mix", [P("a", "f32"), P("b", "f64"), P("c", "i32"), P("d", "i64"), P("e", "bool")],
               [P("o0", "f32"), P("o1", "f64"), P("o2", "i32"), P("o3", "i64"), P("o4", "bool")],
               tuple_result=True),
    "nap": sig("nap", [P("ms", "i64")], [P("out0", "i64")]),
    # parameters named after builtins the generated code must not depend on
    "axpy_builtins": sig("axpy_builtins", [P("type", "f32"), P("id", "f32", "n"), P("len", "f32", "n")],
                         [P("out0", "f32", "n")], sites=[SHAPE], symbol="axpy"),
    # a name the generated code cannot use as a local: positional fallback
    "axpy_mangled": sig("axpy_mangled", [P("_dslc_a", "f32"), P("x", "f32", "n"), P("y", "f32", "n")],
                        [P("out0", "f32", "n")], sites=[SHAPE], symbol="axpy"),
}
FAST = {"axpy", "sq1", "total", "pad", "matvec"}


@pytest.fixture(scope="session")
def lib(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler (cc/gcc) found")
    out = tmp_path_factory.mktemp("c_runtime") / "libfixture.so"
    proc = subprocess.run([CC, "-O2", "-shared", "-fPIC", str(FIXTURE), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return ctypes.CDLL(str(out))


def addr(lib, symbol):
    return ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value


def mk(lib, name, mode="c"):
    s = Signature.from_json(SIGS[name])
    if mode == "py":
        if s.symbol not in FAST:
            pytest.skip(f"{name} has no __py variant")
        f = make_caller(s, addr(lib, s.symbol), addr(lib, s.symbol + "__py"), keepalive=lib)
        assert f.fast_path == npstruct.FAST_PATH_OK
        return f
    f = make_caller(s, addr(lib, s.symbol), keepalive=lib)
    assert not f.fast_path
    return f


MODES = pytest.mark.parametrize("mode", ["c", "py"])
f32 = np.float32


# --- abi ---------------------------------------------------------------------------------------------------

def test_abi_version_exported():
    import runtime
    assert ABI_VERSION == 1 == runtime.ABI_VERSION
    assert set(runtime.__all__) >= {"Signature", "make_caller", "ABI_VERSION"}


@pytest.mark.parametrize("name", sorted(SIGS))
def test_signature_json_round_trip(name):
    s = Signature.from_json(SIGS[name])
    d = s.to_json()
    assert json.loads(json.dumps(d)) == d
    assert d == SIGS[name]
    assert Signature.from_json(d) == s
    assert Signature.from_json(json.dumps(d)) == s


def test_signature_python_construction_normalises():
    s = Signature("f", "f", [ParamSpec("x", "f32", ["n", ":"]), ParamSpec("k", "i64", [])],
                  [OutputSpec("out0", "f32", [["add", "n", {"arg": "k"}], 2])], False,
                  [Site("index", "index out of bounds", "k.py", 3, 4, "  x")])
    assert s.params[0].dims == ("n", None)
    assert s.outputs[0].dims == (("add", "n", abi.ArgRef("k")), 2)
    assert s.to_json()["outputs"][0]["dims"] == [["add", "n", {"arg": "k"}], 2]
    assert s.to_json()["params"][0]["dims"] == ["n", None]
    assert s.describe() == "f(x: f32[n, :], k: i64) -> f32[n + k, 2]"
    assert s.binders == {"n": (0, 0)}
    assert Signature.from_json(s.to_json()) == s


def _mutate(path, value):
    def f(d):
        target = d
        for k in path[:-1]:
            target = target[k]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return d
    return f


_DELETE = object()
BASE = SIGS["pad"]
MALFORMED = [
    (lambda d: [d], r"expected an object"),
    (lambda d: "{not json", r"not valid JSON"),
    (_mutate(["name"], _DELETE), r"missing key 'name'"),
    (_mutate(["abi"], _DELETE), r"missing key 'abi'"),
    (_mutate(["abi"], 2), r"ABI version 2.*supports version 1"),
    (_mutate(["abi"], "1"), r"abi: expected an integer"),
    (_mutate(["symbol"], "pad kernel"), r"symbol: 'pad kernel' is not a valid identifier"),
    (_mutate(["name"], ""), r"name: empty string"),
    (_mutate(["params"], {"x": 1}), r"params: expected a list"),
    (_mutate(["params", 0], "x"), r"params\[0\]: expected an object"),
    (_mutate(["params", 0, "dtype"], _DELETE), r"params\[0\]: missing key 'dtype'"),
    (_mutate(["params", 0, "dtype"], "f16"), r"params\[0\]\.dtype: unknown dtype 'f16'"),
    (_mutate(["params", 0, "name"], "1x"), r"params\[0\]\.name: '1x' is not a valid identifier"),
    (_mutate(["params", 0, "extra"], 1), r"params\[0\]: unexpected key 'extra'"),
    (_mutate(["params", 0, "dims"], "n"), r"params\[0\]\.dims: expected a list"),
    (_mutate(["params", 0, "dims"], [2.5]), r"params\[0\]\.dims\[0\]: malformed dimension 2\.5"),
    (_mutate(["params", 0, "dims"], [True]), r"params\[0\]\.dims\[0\]: malformed dimension True"),
    (_mutate(["params", 0, "dims"], [-1]), r"negative literal extent -1"),
    (_mutate(["params", 0, "dims"], ["n m"]), r"'n m' is not a valid dim name"),
    (_mutate(["params", 1, "name"], "x"), r"params\[1\]: duplicate parameter name 'x'"),
    (_mutate(["outputs", 0, "dims"], [["pow", "n", 2]]), r"malformed dimension expression"),
    (_mutate(["outputs", 0, "dims"], [["add", "n"]]), r"malformed dimension expression"),
    (_mutate(["outputs", 0, "dims"], [{"arg": "q"}]), r"does not name an integer scalar parameter"),
    (_mutate(["outputs", 0, "dims"], [{"arg": "x"}]), r"does not name an integer scalar parameter"),
    (_mutate(["outputs", 0, "dims"], [{"argh": "k"}]), r"malformed dimension"),
    (_mutate(["outputs", 0, "dims"], ["m"]), r"dim 'm' is not bound by any parameter's shape"),
    (_mutate(["outputs", 0, "dims"], [None]), r"malformed dimension None"),
    (_mutate(["outputs", 0, "dims"], [["add", "n", ["add", "n", ["mul", 2, ":"]]]]), r"not a valid dim name"),
    (_mutate(["outputs"], []), r"non-tuple result needs exactly one output"),
    (_mutate(["tuple_result"], 0), r"tuple_result: expected true or false"),
    (_mutate(["sites"], [{"kind": "oops", "message": "m"}]), r"sites\[0\]\.kind: unknown site kind 'oops'"),
    (_mutate(["sites"], [{"kind": "index"}]), r"sites\[0\]: missing key 'message'"),
    (_mutate(["sites"], [dict(S("index", "m"), line=-1)]), r"sites\[0\]\.line: expected an integer >= 0"),
    (_mutate(["sites"], [dict(S("index", "m"), col=True)]), r"sites\[0\]\.col: expected an integer"),
    (_mutate(["sites"], [dict(S("index", "m"), text=None)]), r"sites\[0\]\.text: expected a string"),
]


@pytest.mark.parametrize("mutate,pattern", MALFORMED)
def test_malformed_signature_json(mutate, pattern):
    data = mutate(copy.deepcopy(BASE))
    with pytest.raises(ValueError, match=pattern) as info:
        Signature.from_json(data)
    assert str(info.value).startswith("malformed signature")


def test_malformed_deeply_nested_dim():
    e = "n"
    for _ in range(200):
        e = ["add", e, 1]
    data = copy.deepcopy(BASE)
    data["outputs"][0]["dims"] = [e]
    with pytest.raises(ValueError, match="nested too deeply"):
        Signature.from_json(data)


def test_unknown_top_level_keys_are_ignored():
    data = dict(copy.deepcopy(BASE), derivative="jvp")
    assert Signature.from_json(data).name == "pad"


def test_python_construction_is_validated():
    with pytest.raises(ValueError, match="dim 'm' is not bound"):
        Signature("f", "f", [ParamSpec("x", "f32", ["n"])], [OutputSpec("o", "f32", ["m"])])
    with pytest.raises(ValueError, match="unknown dtype"):
        Signature("f", "f", [ParamSpec("x", "f16", [])], [OutputSpec("o", "f32", [])])


def test_dtype_tables_agree():
    assert set(abi.NUMPY_DTYPES) == set(abi.CTYPES) == set(abi.DTYPES) == set(abi.C_TYPE_NAMES)
    for k in abi.DTYPES:
        assert ctypes.sizeof(abi.CTYPES[k]) == abi.NUMPY_DTYPES[k].itemsize
        assert abi.dtype_name(abi.NUMPY_DTYPES[k]) == k
        assert abi.numpy_dtype(k) is abi.NUMPY_DTYPES[k]
        assert abi.ctype(k) is abi.CTYPES[k]
    assert abi.NUMPY_DTYPES["bool"] == np.bool_ and abi.CTYPES["bool"] is ctypes.c_uint8
    assert abi.dtype_name(np.complex64) is None
    with pytest.raises(ValueError):
        abi.numpy_dtype("f16")


def test_eval_dim_forms():
    dims, args = {"n": 7, "m": 3}, {"k": 2, "j": np.int64(-5)}
    assert abi.eval_dim(4, dims, args) == 4
    assert abi.eval_dim("n", dims, args) == 7
    assert abi.eval_dim({"arg": "k"}, dims, args) == 2
    assert abi.eval_dim(abi.ArgRef("j"), dims, args) == -5
    assert abi.eval_dim(["add", "n", {"arg": "k"}], dims, args) == 9
    assert abi.eval_dim(("sub", "m", "n"), dims, args) == -4
    assert abi.eval_dim(["mul", "n", ["max", "m", 5]], dims, args) == 35
    assert abi.eval_dim(["floordiv", "n", {"arg": "k"}], dims, args) == 3
    assert abi.eval_dim(["floordiv", "n", {"arg": "j"}], dims, args) == -2     # floors, like Python
    assert abi.eval_dim(["min", "m", 1], dims, args) == 1
    with pytest.raises(ValueError, match="not bound"):
        abi.eval_dim("q", dims, args)
    with pytest.raises(ValueError, match="division by zero"):
        abi.eval_dim(["floordiv", "n", 0], dims, args)
    with pytest.raises(ValueError, match="malformed"):
        abi.eval_dim(["pow", "n", 2], dims, args)
    with pytest.raises(ValueError, match="unknown argument"):
        abi.eval_dim({"arg": "zz"}, dims, args)


_OPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
        "floordiv": lambda a, b: a // b, "max": max, "min": min}
_leaf = st.one_of(st.integers(0, 50), st.sampled_from(["n", "m"]), st.just({"arg": "k"}))
_expr = st.recursive(_leaf, lambda sub: st.tuples(st.sampled_from(sorted(_OPS)), sub, sub).map(list),
                     max_leaves=8)


def _ref(e, env):
    if isinstance(e, int):
        return e
    if isinstance(e, str):
        return env[e]
    if isinstance(e, dict):
        return env["k"]
    return _OPS[e[0]](_ref(e[1], env), _ref(e[2], env))


@given(_expr, st.integers(0, 20), st.integers(0, 20), st.integers(-20, 20))
@settings(max_examples=300, deadline=None)
def test_eval_dim_matches_python(e, n, m, k):
    try:
        want = _ref(e, {"n": n, "m": m, "k": k})
    except ZeroDivisionError:
        with pytest.raises(ValueError):
            abi.eval_dim(e, {"n": n, "m": m}, {"k": k})
        return
    assert abi.eval_dim(e, {"n": n, "m": m}, {"k": k}) == want


def test_format_type():
    assert abi.format_type("f32", ()) == "f32"
    assert abi.format_type("f64", ("m", None, 3)) == "f64[m, :, 3]"
    assert abi.format_type("f32", (("mul", ("add", "n", abi.ArgRef("k")), 2),)) == "f32[(n + k) * 2]"
    assert abi.format_type("f32", (("max", "n", 1),)) == "f32[max(n, 1)]"


def test_runtime_imports_only_stdlib_and_numpy():
    code = ("import sys, runtime, runtime.call, runtime.abi, runtime.npstruct\n"
            "bad = [m for m in ('dsl', 'compiler', 'llvmlite', 'lark') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --- npstruct ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(sys.implementation.name != "cpython" or ctypes.sizeof(ctypes.c_void_p) != 8,
                    reason="fast path needs 64-bit CPython")
def test_numpy_struct_layout_is_recognised():
    if os.environ.get("DSLC_DISABLE_FAST_PATH", "") not in ("", "0"):
        pytest.skip("fast path disabled in this environment")
    assert npstruct.check_layout() == (True, "ok")
    assert npstruct.FAST_PATH_OK
    for a in npstruct._examples() + [np.zeros((4, 5), order="F"), np.arange(10.0)[::3]]:
        assert npstruct.data_address(a) == a.ctypes.data


def test_fast_path_can_be_disabled():
    code = ("import runtime.npstruct as n; print(n.FAST_PATH_OK, n.FAST_PATH_REASON); "
            "assert n.data_address(__import__('numpy').arange(3.0)) > 0")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, DSLC_DISABLE_FAST_PATH="1")).stdout
    assert out.startswith("False disabled")


# --- calling: results ---------------------------------------------------------------------------------------

@needs_cc
@MODES
def test_axpy_result(lib, mode):
    f = mk(lib, "axpy", mode)
    x = np.arange(6, dtype=f32)
    y = np.linspace(0, 1, 6, dtype=f32)
    r = f(f32(2.5), x, y)
    assert type(r) is np.ndarray and r.dtype == f32 and r.shape == (6,)
    np.testing.assert_array_equal(r, f32(2.5) * x + y)
    for a in (2, 2.0, True, np.float32(2.0), np.array(2.0, dtype=f32)):
        np.testing.assert_array_equal(f(a, x, y), f32(a) * x + y)
    r2 = f(2, x, y)
    assert r2 is not r and not np.shares_memory(r2, x) and not np.shares_memory(r2, y)
    assert f(1.0, np.zeros(0, f32), np.zeros(0, f32)).shape == (0,)
    assert f(a=1.0, x=x, y=y).shape == (6,)          # the kernel's parameter names work as keywords
    assert f.__name__ == "axpy" and f.__doc__ == "axpy(a: f32, x: f32[n], y: f32[n]) -> f32[n]"


@needs_cc
@MODES
def test_non_contiguous_and_unusual_arrays(lib, mode):
    f = mk(lib, "axpy", mode)
    base = np.arange(20, dtype=f32)
    x, y = base[::2], base[1::2][::-1]
    assert not x.flags.c_contiguous and not y.flags.c_contiguous
    np.testing.assert_array_equal(f(3.0, x, y), 3 * x + y)
    np.testing.assert_array_equal(x, base[::2])                           # inputs untouched
    ro = np.arange(4, dtype=f32)
    ro.flags.writeable = False
    np.testing.assert_array_equal(f(1.0, ro, ro), 2 * ro)
    be = np.arange(4, dtype=">f4")                                        # byte-swapped: same values
    np.testing.assert_array_equal(f(1.0, be, be), 2 * np.arange(4, dtype=f32))

    class Sub(np.ndarray):
        pass
    s = np.arange(4, dtype=f32).view(Sub)
    np.testing.assert_array_equal(f(1.0, s, s), 2 * np.arange(4, dtype=f32))
    mv = memoryview(np.arange(4, dtype=f32))
    np.testing.assert_array_equal(f(1.0, mv, mv), 2 * np.arange(4, dtype=f32))


@needs_cc
@MODES
def test_matvec_2d_and_fortran_order(lib, mode):
    f = mk(lib, "matvec", mode)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 3))
    x = rng.standard_normal(3)
    np.testing.assert_allclose(f(A, x), A @ x, rtol=1e-13)
    AF = np.asfortranarray(A)
    np.testing.assert_allclose(f(AF, x), A @ x, rtol=1e-13)
    np.testing.assert_allclose(f(A.T.copy().T, x), A @ x, rtol=1e-13)
    with pytest.raises(ValueError, match=r"^parameter 'x': expected f64\[n\] with n = 3 \(from parameter 'A'\), "
                                         r"got shape \(4,\)$"):
        f(A, np.zeros(4))


@needs_cc
@MODES
def test_scalar_result_is_numpy_scalar(lib, mode):
    f = mk(lib, "total", mode)
    r = f(np.arange(5.0))
    assert type(r) is np.float64 and r == 10.0
    assert f(np.zeros(0)) == 0.0


@needs_cc
def test_tuple_result_types(lib):
    f = mk(lib, "stats")
    x = np.arange(5, dtype=np.int32)
    s, half, nflag = f(x, 3, True)
    assert type(s) is np.int64 and s == 13
    assert type(half) is np.ndarray and half.dtype == np.float64
    np.testing.assert_array_equal(half, x / 2)
    assert type(nflag) is np.bool_ and nflag == np.False_
    s, _, nflag = f(x, np.int64(-1), np.True_)
    assert s == 9 and not nflag
    assert f(x, True, False)[0] == 11                                    # bool for an integer parameter
    assert type(f(x, 0, False)) is tuple


@needs_cc
def test_all_scalar_dtypes_round_trip(lib):
    f = mk(lib, "mix")
    r = f(1.5, 2.25, -7, 2**40, True)
    assert [type(v) for v in r] == [np.float32, np.float64, np.int32, np.int64, np.bool_]
    assert r == (1.5, 2.25, -7, 2**40, True)
    assert f(1, 2, np.int32(3), np.int64(4), np.bool_(False)) == (1.0, 2.0, 3, 4, False)
    assert f(0.1, 0.1, 0, 0, False)[0] == np.float32(0.1)
    assert f(1.0, 1.0, -(2**31), -(2**63), False)[2:4] == (-(2**31), -(2**63))
    assert f(1.0, 1.0, 2**31 - 1, 2**63 - 1, False)[2:4] == (2**31 - 1, 2**63 - 1)
    assert f(np.float32(3.5), np.float64(4.5), np.array(5, np.int32), np.array(6), np.array(True))[:2] == (3.5, 4.5)
    assert np.isnan(f(np.nan, np.inf, 0, 0, False)[0]) and f(0.0, np.inf, 0, 0, False)[1] == np.inf


@needs_cc
@MODES
def test_output_dim_expression(lib, mode):
    f = mk(lib, "pad", mode)
    x = np.arange(4, dtype=f32)
    np.testing.assert_array_equal(f(x, 3), np.r_[x, np.zeros(3, f32)])
    np.testing.assert_array_equal(f(x, -2), x[:2])
    assert f(x, -4).shape == (0,)
    with pytest.raises(ValueError, match=r"output 'out0': the extent n \+ k of axis 0 would be -1 "
                                         r"\(n = 4 from parameter 'x', k = -5\)"):
        f(x, -5)


@needs_cc
def test_floordiv_output_dim(lib):
    f = mk(lib, "blocksum")
    x = np.arange(7, dtype=f32)
    np.testing.assert_array_equal(f(x, 2), [1, 5, 9])
    with pytest.raises(ValueError, match=r"output 'out0': the extent n // k of axis 0 cannot be computed: "
                                         r"division by zero"):
        f(x, 0)


@needs_cc
def test_parameter_dim_expression(lib):
    f = mk(lib, "padct")
    x = np.zeros(4, f32)
    np.testing.assert_array_equal(f(x, 2, np.arange(6, dtype=f32)), np.arange(4, dtype=f32))
    np.testing.assert_array_equal(f(x, -1, np.arange(3, dtype=f32)), [0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"^parameter 'ct': expected f32\[n \+ k\] with n \+ k = 6 "
                                         r"\(n = 4 from parameter 'x', k = 2\), got shape \(5,\)$"):
        f(x, 2, np.zeros(5, f32))


@needs_cc
def test_anonymous_literal_and_repeated_dims(lib):
    rowsum = mk(lib, "rowsum")
    for c in (0, 1, 4):
        A = np.arange(3.0 * c).reshape(3, c)
        np.testing.assert_array_equal(rowsum(A), A.sum(axis=1))
    sq = mk(lib, "square_rowsum")
    np.testing.assert_array_equal(sq(np.ones((3, 3))), [3, 3, 3])
    with pytest.raises(ValueError, match=r"^parameter 'A': expected f64\[n, n\] with n = 3 \(from its axis 0\), "
                                         r"got shape \(3, 4\)$"):
        sq(np.ones((3, 4)))
    t3 = mk(lib, "twice3")
    np.testing.assert_array_equal(t3(np.ones(3, f32)), [2, 2, 2])
    with pytest.raises(ValueError, match=r"^parameter 'x': expected f32\[3\], got shape \(4,\)$"):
        t3(np.ones(4, f32))
    outer = mk(lib, "outer")
    r = outer(np.arange(3.0), np.arange(4.0))
    assert r.shape == (3, 4)
    np.testing.assert_array_equal(r, np.outer(np.arange(3.0), np.arange(4.0)))


@needs_cc
def test_bool_and_int32_arrays(lib):
    neg = mk(lib, "negate")
    m = np.array([True, False, True])
    r = neg(m)
    assert r.dtype == np.bool_
    np.testing.assert_array_equal(r, ~m)
    with pytest.raises(TypeError, match=r"^parameter 'm': expected bool\[n\], got uint8 array of shape \(3,\)$"):
        neg(m.astype(np.uint8))
    sc = mk(lib, "scale_i32")
    np.testing.assert_array_equal(sc(np.arange(4, dtype=np.int32), -3), np.arange(4) * -3)
    with pytest.raises(ValueError, match=r"^parameter 's': 2147483648 is out of range for i32"):
        sc(np.arange(4, dtype=np.int32), 2**31)


@needs_cc
def test_builtin_and_reserved_parameter_names(lib):
    x = np.arange(3, dtype=f32)
    f = mk(lib, "axpy_builtins")
    np.testing.assert_array_equal(f(2.0, x, x), 3 * x)
    np.testing.assert_array_equal(f(type=2.0, id=x, len=x), 3 * x)
    with pytest.raises(TypeError, match=r"parameter 'id': expected f32\[n\], got float64"):
        f(2.0, x.astype(float), x)
    g = mk(lib, "axpy_mangled")
    np.testing.assert_array_equal(g(2.0, x, x), 3 * x)
    with pytest.raises(ValueError, match=r"parameter 'y': expected f32\[n\] with n = 3"):
        g(2.0, x, x[:2])


# --- calling: argument errors ---------------------------------------------------------------------------------

X4 = np.arange(4, dtype=f32)


@needs_cc
@MODES
@pytest.mark.parametrize("args,exc,pattern", [
    ((1.0, X4.astype(np.float64), X4), TypeError,
     r"^parameter 'x': expected f32\[n\], got float64 array of shape \(4,\)$"),
    ((1.0, X4, X4.astype(np.int32)), TypeError, r"^parameter 'y': expected f32\[n\], got int32 array"),
    ((1.0, X4.reshape(2, 2), X4), TypeError,
     r"^parameter 'x': expected f32\[n\], got float32 array of shape \(2, 2\)$"),
    ((1.0, np.array(1.0, f32), X4), TypeError,
     r"^parameter 'x': expected f32\[n\], got float32 array of shape \(\)$"),
    ((1.0, X4, np.zeros(5, f32)), ValueError,
     r"^parameter 'y': expected f32\[n\] with n = 4 \(from parameter 'x'\), got shape \(5,\)$"),
    ((1.0, 2.0, X4), TypeError, r"^parameter 'x': expected f32\[n\], got float$"),
    ((1.0, np.float32(2.0), X4), TypeError, r"^parameter 'x': expected f32\[n\], got numpy.float32 scalar$"),
    ((1.0, [1.0, 2.0], X4), TypeError, r"^parameter 'x': expected f32\[n\], got list \(pass a NumPy array"),
    ((1.0, None, X4), TypeError, r"^parameter 'x': expected f32\[n\], got None$"),
    ((1.0, "abcd", X4), TypeError, r"^parameter 'x': expected f32\[n\], got str$"),
    ((X4, X4, X4), TypeError, r"^parameter 'a': expected f32, got float32 array of shape \(4,\)$"),
    ((np.float64(1.0), X4, X4), TypeError, r"^parameter 'a': expected f32, got numpy.float64 scalar"),
    ((np.array(1.0), X4, X4), TypeError, r"^parameter 'a': expected f32, got float64 array of shape \(\)$"),
    (("1.0", X4, X4), TypeError, r"^parameter 'a': expected f32, got str$"),
    ((1j, X4, X4), TypeError, r"^parameter 'a': expected f32, got complex$"),
    ((None, X4, X4), TypeError, r"^parameter 'a': expected f32, got None$"),
    ((1.0, X4), TypeError, r"missing 1 required positional argument: 'y'"),
    ((1.0, X4, X4, X4), TypeError, r"takes 3 positional arguments but 4 were given"),
])
def test_axpy_argument_errors(lib, mode, args, exc, pattern):
    f = mk(lib, "axpy", mode)
    with pytest.raises(exc, match=pattern) as info:
        f(*args)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


@needs_cc
@pytest.mark.parametrize("args,exc,pattern", [
    ((X4.astype(np.int32), 2.0, True), TypeError, r"^parameter 'k': expected i64, got float$"),
    ((X4.astype(np.int32), np.int32(2), True), TypeError, r"^parameter 'k': expected i64, got numpy.int32 scalar"),
    ((X4.astype(np.int32), np.float64(2), True), TypeError, r"^parameter 'k': expected i64, got numpy.float64"),
    ((X4.astype(np.int32), 2**63, True), ValueError, r"^parameter 'k': 9223372036854775808 is out of range for i64"),
    ((X4.astype(np.int32), 1, 1), TypeError, r"^parameter 'flag': expected bool, got int$"),
    ((X4.astype(np.int32), 1, np.int64(1)), TypeError, r"^parameter 'flag': expected bool, got numpy.int64 scalar"),
    ((X4.astype(np.int64), 1, True), TypeError, r"^parameter 'x': expected i32\[n\], got int64 array"),
])
def test_scalar_argument_errors(lib, args, exc, pattern):
    f = mk(lib, "stats")
    with pytest.raises(exc, match=pattern):
        f(*args)


@needs_cc
def test_device_array_is_refused(lib):
    class Dev:
        __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (0, False), "version": 3}
    with pytest.raises(TypeError, match=r"parameter 'x': expected f32\[n\], got Dev \(a device array"):
        mk(lib, "axpy")(1.0, Dev(), X4)


@needs_cc
def test_generic_checker_agrees(lib):
    s = Signature.from_json(SIGS["pad"])
    values, shapes = check_arguments(s, (X4[::2], np.int64(3)))
    assert values[0].flags.c_contiguous and values[1] == 3 and type(values[1]) is int
    assert shapes == [(5,)]
    with pytest.raises(TypeError, match="takes 2 arguments but 1 were given"):
        check_arguments(s, (X4,))


# --- calling: status -> exception -----------------------------------------------------------------------------

@needs_cc
def test_index_error_with_source_line_and_caret(lib):
    f = mk(lib, "gather")
    x = np.arange(10, dtype=f32)
    np.testing.assert_array_equal(f(x, np.array([9, 0, 3])), [9, 0, 3])
    with pytest.raises(IndexError) as info:
        f(x, np.array([1, 10]))
    assert str(info.value) == ("k.py:7:12: index 10 is out of bounds for axis of size 10\n"
                               "        y[i] = x[idx[i]]\n"
                               "               ^")
    e = info.value
    assert e.status == 1 and e.details == (10, 10) and e.site.kind == "index"
    with pytest.raises(IndexError, match="index -1 is out of bounds for axis of size 10"):
        f(x, np.array([-1]))


@needs_cc
def test_zero_division_status(lib):
    f = mk(lib, "idiv")
    np.testing.assert_array_equal(f(np.array([7, -7, 7]), np.array([2, 2, -2])), [3, -4, -4])
    with pytest.raises(ZeroDivisionError) as info:
        f(np.array([1, 2]), np.array([1, 0]))
    assert str(info.value) == "k.py:4:14: integer division by zero\n        return a // b\n                 ^"


@needs_cc
def test_every_status_kind(lib):
    f = mk(lib, "fail")
    assert f(0) == 1.5
    with pytest.raises(IndexError, match=r"^k\.py:7:12: index 10 is out of bounds for axis of size 10\n"):
        f(1)
    with pytest.raises(ValueError, match=r"^k\.py:8:9: shapes of the operands of \+ differ "
                                         r"\(extents 3 and 4\)\n        z = x \+ y\n            \^$"):
        f(2)
    with pytest.raises(ZeroDivisionError, match=r"^k\.py:9:11: integer division by zero\n"):
        f(3)
    with pytest.raises(ValueError, match=r"^k\.py:10:9: negative extent in zeros\(\)\n"):
        f(4)
    with pytest.raises(IndexError, match=r"^k\.py:7:12: index out of bounds\n") as info:   # err not filled
        f(5)
    assert info.value.details is None
    with pytest.raises(RuntimeError, match=r"kernel 'fail' returned unknown status 99"):
        f(6)
    with pytest.raises(RuntimeError, match=r"unknown status -3"):
        f(7)
    assert f(0) == 1.5                                                    # still usable afterwards


def test_status_error_without_location():
    s = Signature("g", "g", [], [OutputSpec("o", "f64", [])], False, [Site("value", "bad value")])
    e = status_error(s, 1)
    assert type(e) is ValueError and str(e) == "bad value"
    assert isinstance(status_error(s, 2, display="g.jvp"), RuntimeError)
    assert "'g.jvp'" in str(status_error(s, 2, display="g.jvp"))


# --- make_caller itself ---------------------------------------------------------------------------------------

@needs_cc
def test_make_caller_arguments(lib):
    s = Signature.from_json(SIGS["sq1"])
    with pytest.raises(ValueError, match="c_func_address"):
        make_caller(s, 0)
    with pytest.raises(ValueError, match="py_func_address"):
        make_caller(s, addr(lib, "sq1"), "sq1__py")
    f = make_caller(SIGS["sq1"], addr(lib, "sq1"), target_name="sq1.jvp")      # a dict is accepted
    assert f.__name__ == "sq1.jvp" and f.signature == s and "def " in f.source
    with pytest.raises(TypeError, match=r"sq1\.jvp\(\) takes 1 positional argument but 2 were given"):
        f(X4, X4)
    with pytest.raises(ValueError, match="malformed signature"):
        make_caller(dict(SIGS["sq1"], abi=7), addr(lib, "sq1"))


@needs_cc
def test_fast_path_selection(lib):
    s = Signature.from_json(SIGS["sq1"])
    f = make_caller(s, addr(lib, "sq1"), addr(lib, "sq1__py"))
    assert f.fast_path is npstruct.FAST_PATH_OK
    code = ("import ctypes, sys, numpy as np\n"
            "from runtime import Signature, make_caller\n"
            f"lib = ctypes.CDLL({str(lib._name)!r})\n"
            "a = lambda n: ctypes.cast(getattr(lib, n), ctypes.c_void_p).value\n"
            f"f = make_caller(Signature.from_json({SIGS['sq1']!r}), a('sq1'), a('sq1__py'))\n"
            "assert not f.fast_path\n"
            "x = np.arange(5, dtype=np.float32)\n"
            "assert (f(x[::-1]) == x[::-1] ** 2 + 1).all()\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env=dict(os.environ, DSLC_DISABLE_FAST_PATH="1"))


@needs_cc
@MODES
def test_concurrent_calls(lib, mode):
    f = mk(lib, "axpy", mode)
    g = mk(lib, "gather")
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(300):
                n = int(rng.integers(0, 50))
                x, y = rng.standard_normal(n).astype(f32), rng.standard_normal(n).astype(f32)
                np.testing.assert_array_equal(f(1.5, x, y), f32(1.5) * x + y)
                bad = int(rng.integers(10, 1000))
                try:
                    g(np.zeros(10, f32), np.array([0, bad]))
                except IndexError as e:
                    assert e.details == (bad, 10), (e.details, bad)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


@needs_cc
def test_gil_is_released_during_the_call(lib):
    nap = mk(lib, "nap")
    assert nap(1) == 1
    t0 = time.perf_counter()
    threads = [threading.Thread(target=nap, args=(300,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - t0 < 1.0          # 1.2 s if the calls were serialised


@needs_cc
@MODES
@given(n=st.integers(0, 40), a=st.floats(-1e3, 1e3, width=32), stride=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_axpy_matches_numpy(lib, mode, n, a, stride, seed):
    f = mk(lib, "axpy", mode)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n * stride).astype(f32)[::stride]
    y = rng.standard_normal(n * stride).astype(f32)[::stride]
    np.testing.assert_array_equal(f(a, x, y), f32(a) * x + y)


_scalar_values = st.one_of(
    st.integers(-(2**64), 2**64), st.floats(allow_nan=False), st.booleans(), st.none(), st.text(max_size=2),
    st.sampled_from([np.float32(1.5), np.float64(2.5), np.int32(3), np.int64(4), np.bool_(True),
                     np.array(5, np.int64), np.array(6, np.int32), np.arange(2)]))


@needs_cc
@given(k=_scalar_values)
@settings(max_examples=200, deadline=None)
def test_integer_parameter_accepts_exactly_the_documented_kinds(lib, k):
    f = mk(lib, "pad")
    x = np.arange(3, dtype=f32)
    ok = (type(k) in (int, bool) or (isinstance(k, (np.ndarray, np.generic)) and k.dtype == np.int64
                                       and np.ndim(k) == 0))
    if ok and -(2**63) <= int(k) < 2**63:
        if 3 + int(k) < 0:
            with pytest.raises(ValueError, match="output 'out0'"):
                f(x, k)
        elif int(k) < 100:
            assert f(x, k).shape == (3 + int(k),)
    elif ok:
        with pytest.raises(ValueError, match="out of range for i64"):
            f(x, k)
    else:
        with pytest.raises(TypeError, match=r"^parameter 'k': expected i64, got "):
            f(x, k)
