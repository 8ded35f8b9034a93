"""The reference evaluator (dsl/interpret.py) and a short, deterministic differential fuzz run.

Random well-typed kernels (tests/fuzz/gen.py) are compiled and compared with the evaluator; smooth
ones also have their JVP checked against finite differences and, when straight-line, their VJP by
the dot-product test (tests/fuzz/check.py). The long run is `python bench/fuzz.py --n 10000`.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import dsl.interpret as interp
from dsl import compile_source, grad, jacfwd

from fuzz.check import check
from fuzz.gen import programs, random_program

def FUZZ(n):
    return settings(max_examples=n, derandomize=True, deadline=None, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


def _assert_ok(prog, r):
    assert r["status"] in ("ok", "unstable"), f"{r['status']}: {r.get('kind', '')}\n{prog.source}\n{r['detail']}"


# ---- the evaluator's own semantics -----------------------------------------------------------------
SRC = '''
def arith(a: i64, b: i64):
    return a // b, a % b

def fdiv(x: f64[n], y: f64[n]):
    return x // y, x % y

def extremes(x: f64[n], y: f64[n]):
    return maximum(x, y), minimum(x, y), max(x), min(x)

def slices(x: f64[n], a: i64, b: i64):
    return sum(x[a:b]), x[a]

def loops(x: f32[n], k: i64):
    s = 0.0
    j = 0
    while j < k:
        s += x[j % n]
        j += 1
    y = zeros(n)
    for i in range(n - 1, -1, -2):
        y[i] = s * x[i]
    return y, s

def casts(x: f64[n]):
    return i64(x), i32(x), bool(x[0])

def smooth(x: f64[n], A: f64[m, n], s: f64) -> f64:
    return sum(sin(A @ x) * s) + prod(x)
'''


@pytest.fixture(scope="module")
def ks():
    return compile_source(SRC, filename="semantics.dsl")


def test_evaluator_matches_python_integer_semantics(ks):
    for a, b in [(-7, 2), (7, -2), (-7, -2), (7, 2), (-2 ** 63, -1), (0, 3)]:
        q, r = ks["arith"](a, b, target="interpret")
        assert (q, r) == ks["arith"](a, b)
        assert type(q) is np.int64
    with pytest.raises(ZeroDivisionError, match=r"semantics.dsl:3:"):
        ks["arith"](1, 0, target="interpret")


def test_evaluator_float_division_maximum_and_nan(ks):
    x = np.array([-7.5, 7.5, 0.0, np.nan, 1.0, -0.0])
    y = np.array([2.0, -2.0, 0.0, 1.0, np.inf, 0.0])
    for got, want in zip(ks["fdiv"](x, y, target="interpret"), ks["fdiv"](x, y)):
        np.testing.assert_array_equal(got, want)
    mx, mn, big, small = ks["extremes"](x, y, target="interpret")
    np.testing.assert_array_equal(mx, ks["extremes"](x, y)[0])
    assert np.signbit(mx[5]) and np.isnan(mx[3]) and np.isnan(big) and np.isnan(small)
    np.testing.assert_array_equal(mn, ks["extremes"](x, y)[1])


def test_evaluator_slices_clamp_and_indices_wrap(ks):
    x = np.arange(5.0)
    for a, b in [(1, 100), (-2, 5), (-5, 2), (3, 1), (-1, -1), (0, -100)]:
        assert ks["slices"](x, a, b, target="interpret") == ks["slices"](x, a, b)
    with pytest.raises(IndexError, match=r"semantics.dsl:12:.*out of bounds"):
        ks["slices"](x, 5, 6, target="interpret")
    with pytest.raises(ValueError, match="max"):
        ks["extremes"](np.zeros(0), np.zeros(0), target="interpret")


def test_evaluator_loops_f32_and_widening(ks):
    x = np.linspace(-1, 1, 5).astype(np.float32)
    y, s = ks["loops"](x, 7, target="interpret")
    y2, s2 = ks["loops"](x, 7)
    assert y.dtype == np.float32 and type(s) is np.float32
    np.testing.assert_allclose(y, y2, rtol=1e-6)
    fn = ks["loops"]._lower_ir(ks["loops"]._param_types((x, 7)))
    y64, s64 = interp.run(fn, [x, 7], dtype=np.float64)
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, y2, rtol=1e-5)


def test_evaluator_casts_saturate(ks):
    x = np.array([np.nan, 1e300, -1e300, -2.7, 2.7])
    for got, want in zip(ks["casts"](x, target="interpret"), ks["casts"](x)):
        np.testing.assert_array_equal(got, want)


def test_evaluator_runs_derivative_kernels(ks):
    f = ks["smooth"]
    rng = np.random.default_rng(0)
    x, A = rng.standard_normal(3), rng.standard_normal((2, 3))
    for k in (f.jvp, f.vjp):
        extra = (x, A, 0.5) if k is f.jvp else (1.0,)
        for got, want in zip(k(x, A, 0.7, *extra, target="interpret"), k(x, A, 0.7, *extra)):
            np.testing.assert_allclose(got, want, rtol=1e-12)
    for k in (grad(f), jacfwd(f, argnums=(0, 1))):
        got, want = k(x, A, 0.7, target="interpret"), k(x, A, 0.7)
        for g, w in zip(got if isinstance(got, tuple) else [got], want if isinstance(want, tuple) else [want]):
            np.testing.assert_allclose(g, w, rtol=1e-12)


def test_evaluator_rejects_bad_arguments_like_compiled(ks):
    with pytest.raises(ValueError, match="'y'"):
        ks["fdiv"](np.zeros(3), np.zeros(4), target="interpret")
    with pytest.raises(TypeError):
        ks["fdiv"](np.zeros(3, np.float32), np.zeros(3), target="interpret")


# ---- differential fuzzing ----------------------------------------------------------------------------
def test_fixed_seeds_smoke():
    """A few fixed seeds of the long run's generator (one of each mode)."""
    for seed, kw in [(1, {}), (2, {}), (4, {"smooth": True}), (8, {"smooth": True, "straight": True})]:
        prog = random_program(seed, **kw)
        _assert_ok(prog, check(prog, seed))


@FUZZ(30)
@given(programs())
def test_fuzz_primal(prog):
    _assert_ok(prog, check(prog, 0, derivatives=False))


@FUZZ(7)
@given(programs(smooth=True))
def test_fuzz_jvp_with_control_flow(prog):
    r = check(prog, 1)
    _assert_ok(prog, r)


@FUZZ(7)
@given(programs(smooth=True, straight=True))
def test_fuzz_jvp_vjp_dot_product(prog):
    r = check(prog, 2)
    _assert_ok(prog, r)
    if r["status"] == "ok":
        assert "fd" in r["checks"], r["checks"]
