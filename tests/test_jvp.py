"""SPEC section 5, forward mode: `jvp`, `f.jvp`, `f.jvp.jvp`, `dsl.testing.check_jvp`.

Oracles: float64 central finite differences of the primal kernel (through `check_jvp`, or written
out) and closed forms. Never another path of the derivative code."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dsl import jvp, kernel
from dsl.testing import check_jvp

SETTINGS = settings(max_examples=12, deadline=None)
rng = np.random.default_rng(2024)
DTYPES = [np.float64, np.float32]


def rand(*shape, dtype=np.float64, lo=-2.0, hi=2.0):
    return rng.uniform(lo, hi, shape).astype(dtype)


def fd(f, args, tangents, eps=1e-6):
    """float64 central differences of f along `tangents` (one per argument, None: held fixed)."""
    def moved(h):
        return [a if t is None else np.asarray(a, np.float64) + h * np.asarray(t, np.float64)
                for a, t in zip(args, tangents)]
    plus, minus = f(*moved(eps)), f(*moved(-eps))
    if isinstance(plus, tuple):
        return tuple((np.asarray(p) - np.asarray(m)) / (2 * eps) for p, m in zip(plus, minus))
    return (np.asarray(plus) - np.asarray(minus)) / (2 * eps)


# ---- the TensorFlow ForwardAccumulator figures -----------------------------------------------------
@kernel
def p35(x: f64) -> f64:
    return x ** 3.5


def test_tf_forward_accumulator_figures():
    y, t = jvp(p35, (1.1,), (1.0,))
    assert y == pytest.approx(1.1 ** 3.5, rel=1e-14)
    assert t == pytest.approx(4.4417057, abs=1e-6)
    assert t == pytest.approx(3.5 * 1.1 ** 2.5, rel=1e-14)
    out = p35.jvp.jvp(1.1, 1.0, 1.0, 0.0)
    assert len(out) == 4
    assert out[0] == pytest.approx(1.1 ** 3.5, rel=1e-14)
    assert out[1] == pytest.approx(4.4417057, abs=1e-6) and out[2] == pytest.approx(4.4417057, abs=1e-6)
    assert out[3] == pytest.approx(10.094786, abs=1e-6)
    assert out[3] == pytest.approx(3.5 * 2.5 * 1.1 ** 1.5, rel=1e-14)
    check_jvp(p35, (1.1,), order=2)


# ---- check_jvp itself can fail ---------------------------------------------------------------------
@kernel
def staircase(x: f64) -> f64:
    return floor(x * 4.0)


def test_check_jvp_reports_a_mismatch():
    # floor's derivative is 0 but across the jump the differences are huge: a detected mismatch
    with pytest.raises(AssertionError, match=r"output 0 .*max abs error"):
        check_jvp(staircase, (0.25,))
    check_jvp(staircase, (0.3,))


# ---- unary elementwise primitives, float32 and float64, arrays and scalars -------------------------
@kernel
def u_sin(x):
    return sin(x)


@kernel
def u_cos(x):
    return cos(x)


@kernel
def u_tan(x):
    return tan(x)


@kernel
def u_exp(x):
    return exp(x)


@kernel
def u_log(x):
    return log(x)


@kernel
def u_log1p(x):
    return log1p(x)


@kernel
def u_expm1(x):
    return expm1(x)


@kernel
def u_sqrt(x):
    return sqrt(x)


@kernel
def u_tanh(x):
    return tanh(x)


@kernel
def u_sigmoid(x):
    return sigmoid(x)


@kernel
def u_abs(x):
    return abs(x) * x


@kernel
def u_sign(x):
    return sign(x) * x + sign(x)


@kernel
def u_floor(x):
    return floor(x) * x


@kernel
def u_ceil(x):
    return ceil(x) + x * ceil(x)


@kernel
def u_neg(x):
    return -x * 2.0


UNARY = {  # kernel, domain (lo, hi), closed-form derivative of the kernel
    "sin": (u_sin, (-3, 3), np.cos),
    "cos": (u_cos, (-3, 3), lambda x: -np.sin(x)),
    "tan": (u_tan, (-1.2, 1.2), lambda x: 1 / np.cos(x) ** 2),
    "exp": (u_exp, (-3, 3), np.exp),
    "log": (u_log, (0.2, 4), lambda x: 1 / x),
    "log1p": (u_log1p, (-0.8, 4), lambda x: 1 / (1 + x)),
    "expm1": (u_expm1, (-3, 3), np.exp),
    "sqrt": (u_sqrt, (0.1, 4), lambda x: 0.5 / np.sqrt(x)),
    "tanh": (u_tanh, (-3, 3), lambda x: 1 - np.tanh(x) ** 2),
    "sigmoid": (u_sigmoid, (-4, 4), lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
    "abs": (u_abs, (-3, 3), lambda x: 2 * np.abs(x)),
    "sign": (u_sign, (-3, 3), np.sign),
    "floor": (u_floor, (-3, 3), np.floor),
    "ceil": (u_ceil, (-3, 3), np.ceil),
    "neg": (u_neg, (-3, 3), lambda x: -2.0 + 0 * x),
}


def _away_from_integers(x):
    return np.where(np.abs(x - np.round(x)) < 0.05, x + 0.1, x).astype(x.dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_primitives(name, dtype):
    f, (lo, hi), deriv = UNARY[name]
    x = _away_from_integers(rand(7, lo=lo, hi=hi, dtype=dtype))
    check_jvp(f, (x,))
    t = rand(7, dtype=dtype)
    y, ty = jvp(f, (x,), (t,))
    assert ty.dtype == dtype and ty.shape == x.shape
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(ty, deriv(x.astype(np.float64)) * t, rtol=tol, atol=tol)
    # the scalar (rank-0) form of the same rule
    xs = float(x[3])
    _, ts = jvp(f, (xs,), (1.0,))
    assert ts == pytest.approx(deriv(xs), rel=1e-12, abs=1e-12)


def test_nonsmooth_points_use_the_documented_subgradient():
    # abs'(0) = 0 (sign(0)), maximum/minimum pick the first argument on ties
    assert jvp(u_abs, (0.0,), (1.0,))[1] == 0.0
    assert jvp(bin_maximum, (1.5, 1.5), (2.0, 3.0))[1] == 2.0
    assert jvp(bin_minimum, (1.5, 1.5), (2.0, 3.0))[1] == 2.0


# ---- binary elementwise primitives ---------------------------------------------------------------
@kernel
def bin_add(x, y):
    return x + y


@kernel
def bin_sub(x, y):
    return x - y


@kernel
def bin_mul(x, y):
    return x * y


@kernel
def bin_div(x, y):
    return x / y


@kernel
def bin_floordiv(x, y):
    return (x // y) * x + y


@kernel
def bin_mod(x, y):
    return x % y


@kernel
def bin_pow(x, y):
    return x ** y


@kernel
def bin_maximum(x, y):
    return maximum(x, y)


@kernel
def bin_minimum(x, y):
    return minimum(x, y)


BINARY = {
    "add": bin_add, "sub": bin_sub, "mul": bin_mul, "div": bin_div, "floordiv": bin_floordiv,
    "mod": bin_mod, "pow": bin_pow, "maximum": bin_maximum, "minimum": bin_minimum,
}


def _binary_args(name, shapes, dtype):
    x = rand(*shapes[0], lo=0.3, hi=3.0, dtype=dtype) if name == "pow" else rand(*shapes[0], dtype=dtype)
    y = rand(*shapes[1], lo=0.5, hi=2.0, dtype=dtype) * (1 if name == "pow" else np.sign(rand(*shapes[1])))
    if name in ("floordiv", "mod"):   # keep x / y away from the integers (the jumps)
        q = x / y
        x = np.where(np.abs(q - np.round(q)) < 0.05, x + 0.1 * y, x).astype(dtype)
    if name in ("maximum", "minimum"):
        x = x + (np.abs(x - y) < 0.05) * np.asarray(0.2, dtype)
    y = y.astype(dtype)
    return [float(v) if v.ndim == 0 else v.astype(dtype) for v in (x, y)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shapes", [((5,), (5,)), ((4, 3), ()), ((), (3,)), ((2, 3), (3,))],
                         ids=["arr-arr", "arr-scalar", "scalar-arr", "broadcast-row"])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_primitives(name, shapes, dtype):
    args = _binary_args(name, shapes, dtype)
    check_jvp(BINARY[name], args)


def test_binary_closed_forms():
    x, y = 1.7, 0.6
    assert jvp(bin_div, (x, y), (1.0, 0.0))[1] == pytest.approx(1 / y)
    assert jvp(bin_div, (x, y), (0.0, 1.0))[1] == pytest.approx(-x / y ** 2)
    assert jvp(bin_pow, (x, y), (0.0, 1.0))[1] == pytest.approx(math.log(x) * x ** y)
    assert jvp(bin_pow, (x, y), (1.0, 0.0))[1] == pytest.approx(y * x ** (y - 1))
    assert jvp(bin_mod, (x, y), (0.0, 1.0))[1] == pytest.approx(-math.floor(x / y))
    assert jvp(bin_floordiv, (x, y), (0.0, 1.0))[1] == pytest.approx(1.0)


@kernel
def pow_forms(x: f64[n], p: f64, k: i64) -> (f64[n], f64[n], f64[n], f64[n], f64[n]):
    return x ** 2, x ** 2.5, x ** p, x ** k, 2.0 ** x


@kernel
def pow_zero_base(x: f64, y: f64) -> f64:
    return x ** y


def test_pow_exponent_forms():
    x = rand(6, lo=0.2, hi=3.0)
    check_jvp(pow_forms, (x, 1.3, 3))
    check_jvp(pow_forms, (x, -0.7, 0))
    _, ts = jvp(pow_forms, (x, 1.3, 3), (np.ones(6), 0.0))
    for got, want in zip(ts, [2 * x, 2.5 * x ** 1.5, 1.3 * x ** 0.3, 3 * x ** 2, np.log(2) * 2 ** x]):
        np.testing.assert_allclose(got, want, rtol=1e-13)
    _, tp = jvp(pow_forms, (x, 1.3, 3), (np.zeros(6), 1.0))
    np.testing.assert_allclose(tp[2], np.log(x) * x ** 1.3, rtol=1e-13)
    # 0 ** y: d/dy is the limit from the right (0), d/dx of 0 ** 2 is 0; no NaN
    assert jvp(pow_zero_base, (0.0, 2.0), (1.0, 1.0))[1] == 0.0


# ---- where and comparisons, casts, broadcasting of a scalar parameter -----------------------------
@kernel
def where_cmp(x: f64[n], y: f64[n], s: f64) -> (f64[n], f64[n], f64[n], f64[n], f64[n], f64[n]):
    return (where(x < y, x * y, sin(x)), where(x <= s, s * x, y), where(x > 0.0, x * x, y * s),
            where(x >= y, exp(x), s), where(x == y, x, y * y), where(x != s, x * s, 0.0))


@kernel
def where_f32(x: f32[n], y: f32[n]) -> f32[n]:
    return where((x > y) and (x > 0.0), x * y, y / 2.0) + (x * y if x[0] > 0.0 else y)


@pytest.mark.parametrize("seed", [0, 1])
def test_where_and_comparisons(seed):
    x, y = rand(8), rand(8)
    check_jvp(where_cmp, (x, y, 0.3), seed=seed)
    _, ts = jvp(where_cmp, (x, y, 0.3), (np.ones(8), np.zeros(8), 0.0))
    np.testing.assert_allclose(ts[0], np.where(x < y, y, np.cos(x)), rtol=1e-13)


def test_where_f32():
    x, y = rand(9, dtype=np.float32), rand(9, dtype=np.float32)
    check_jvp(where_f32, (x, y))


@kernel
def casts(x: f64[n], a: f32) -> (f32[n], f64, f64[n], f64):
    y = f32(x) * a
    z = f64(a * a)
    w = x * f64(i64(x * 3.0))
    return y, z, w, f64(i32(a)) + z


@kernel
def casts_f32(x: f32[n]) -> f32[n]:
    return f32(f64(x) * f64(x))


def test_casts():
    x = _away_from_integers(rand(5) * 3.0) / 3.0
    check_jvp(casts, (x, 0.7))
    check_jvp(casts_f32, (rand(5, dtype=np.float32),))
    _, ts = jvp(casts, (x, 0.7), (np.ones(5), 1.0))
    assert ts[0].dtype == np.float32 and ts[1].dtype == np.float64
    np.testing.assert_allclose(ts[2], np.trunc(3 * x), rtol=1e-14)   # the int cast is locally constant
    assert ts[3] == pytest.approx(2 * 0.7, rel=1e-6)


@kernel
def scalar_bcast(x: f64[m, n], s: f64, v: f64[n]) -> (f64[m, n], f64[n], f64):
    return x * s + v, s * v - s, sum(x / s)


@SETTINGS
@given(st.integers(0, 4), st.integers(0, 4), st.floats(0.5, 3.0))
def test_broadcast_scalar_param_against_array(m, n, s):
    x, v = rand(m, n), rand(n)
    check_jvp(scalar_bcast, (x, s, v))
    # only s moves: d(x*s + v)/ds = x
    _, ts = jvp(scalar_bcast, (x, s, v), (np.zeros((m, n)), 1.0, np.zeros(n)))
    np.testing.assert_allclose(ts[0], x, rtol=1e-14)
    np.testing.assert_allclose(ts[1], v - 1.0, rtol=1e-14)
    assert ts[2] == pytest.approx(-x.sum() / s ** 2, rel=1e-10, abs=1e-12)


@kernel
def unannotated_poly(a, b):
    return a * b * b + sin(a)


@st.composite
def rank_broadcast_shapes(draw):
    full = draw(st.lists(st.integers(1, 4), max_size=3))
    ka, kb = draw(st.integers(0, len(full))), draw(st.integers(0, len(full)))
    return tuple(full[len(full) - ka:]), tuple(full[len(full) - kb:])


@SETTINGS
@given(rank_broadcast_shapes(), st.sampled_from(DTYPES))
def test_broadcasting_random_shapes(shapes, dtype):
    a, b = (rand(*s, dtype=dtype) for s in shapes)
    a, b = (float(v) if v.ndim == 0 else v for v in (a, b))
    check_jvp(unannotated_poly, (a, b))


# ---- reductions ----------------------------------------------------------------------------------
@kernel
def reductions(x: f64[m, n]) -> (f64, f64, f64, f64, f64):
    return sum(x), max(x), min(x), mean(x), prod(x)


@kernel
def reductions_axis(x: f64[m, n]) -> (f64[n], f64[m], f64[n], f64[m], f64[n], f64[m], f64[n], f64[m], f64[n], f64[m]):
    return (sum(x, axis=0), sum(x, axis=1), max(x, axis=0), max(x, axis=1), min(x, axis=0),
            min(x, axis=1), mean(x, axis=0), mean(x, axis=1), prod(x, axis=0), prod(x, axis=1))


@kernel
def reductions_f32(x: f32[n]) -> (f32, f32, f32, f32, f32):
    return sum(x), max(x), min(x), mean(x), prod(x)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 5))
def test_reductions(m, n):
    x = rand(m, n, lo=0.5, hi=2.0) * np.where(rng.random((m, n)) < 0.3, -1, 1)
    check_jvp(reductions, (x,))
    check_jvp(reductions_axis, (x,))
    t = rand(m, n)
    _, ts = jvp(reductions, (x,), (t,))
    i, j = np.argmax(x), np.argmin(x)
    assert ts[1] == pytest.approx(t.flat[i]) and ts[2] == pytest.approx(t.flat[j])
    assert ts[4] == pytest.approx(np.sum(np.prod(x) / x * t), rel=1e-10, abs=1e-12)


def test_reductions_f32():
    check_jvp(reductions_f32, (rand(6, lo=0.5, hi=1.5, dtype=np.float32),))


@kernel
def max_ties(x: f64[n]) -> f64:
    return max(x)


def test_max_with_ties_is_finite():
    # at a tie the derivative is a fixed subgradient (the mean of the tied tangents), never NaN
    _, t = jvp(max_ties, (np.array([1.0, 3.0, 3.0]),), (np.array([5.0, 1.0, 2.0]),))
    assert t == pytest.approx(1.5)


@kernel
def prod_vec(x: f64[n]) -> f64:
    return prod(x)


@kernel
def prod_rows(x: f64[m, n]) -> f64[m]:
    return prod(x, axis=1)


def test_prod_with_zero_elements():
    # regression: the rule divided prod by x (0/0 = NaN at a zero element)
    _, t = jvp(prod_vec, (np.array([0.0, 2.0, 3.0]),), (np.array([1.0, 0.5, 0.25]),))
    assert t == pytest.approx(6.0)
    _, t = jvp(prod_vec, (np.array([0.0, 2.0, 0.0]),), (np.ones(3),))
    assert t == 0.0
    x = np.array([[0.0, 2.0, 3.0], [1.5, 2.0, 3.0], [0.0, 0.0, 1.0], [-0.0, 4.0, 0.5]])
    check_jvp(prod_rows, (x,))
    check_jvp(prod_rows, (x[[0, 1, 3]],), order=2)     # second order: at most one zero per row


@kernel
def polyval(c: f64[n], x: f64) -> f64:
    s = 0.0
    for k in range(n):
        s += c[k] * x ** k
    return s


def test_power_zero_exponent_at_zero_base():
    # regression: d/dx x**0 was 0 * 0**-1 = NaN at x == 0 (a polynomial's derivative at 0)
    c = np.array([1.0, 2.0, 3.0, 4.0])
    _, t = jvp(polyval, (c, 0.0), (np.zeros(4), 1.0))
    assert t == 2.0
    _, t = jvp(pow_forms, (np.zeros(3), 1.3, 0), (np.ones(3), 0.0))
    assert np.all(t[3] == 0.0)
    check_jvp(polyval, (c, 0.0), order=2)
    check_jvp(polyval, (c, -0.7), order=2)


# ---- matmul, transpose, dot ----------------------------------------------------------------------
@kernel
def mm_all(a: f64[m, k], b: f64[k, n], u: f64[k], v: f64[m]) -> (f64[m, n], f64[m], f64[n], f64, f64[n, m], f64, f64):
    return a @ b, a @ u, v @ a, u @ u, (a @ b).T, dot(u, b @ b.T @ u), dot(v, a.T.T @ u)


@kernel
def mm_f32(a: f32[m, k], b: f32[k, n]) -> (f32[m, n], f32[k, m]):
    return a @ b, a.T


@SETTINGS
@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3))
def test_matmul_forms(m, k, n):
    a, b, u, v = rand(m, k), rand(k, n), rand(k), rand(m)
    check_jvp(mm_all, (a, b, u, v))
    ta, tb = rand(m, k), rand(k, n)
    _, ts = jvp(mm_all, (a, b, u, v), (ta, tb, np.zeros(k), np.zeros(m)))
    np.testing.assert_allclose(ts[0], ta @ b + a @ tb, atol=1e-13)
    np.testing.assert_allclose(ts[4], (ta @ b + a @ tb).T, atol=1e-13)


def test_matmul_f32():
    check_jvp(mm_f32, (rand(3, 4, dtype=np.float32), rand(4, 2, dtype=np.float32)))


# ---- indexing, slices, stores --------------------------------------------------------------------
@kernel
def index_slices(x: f64[n], A: f64[m, n], i: i64, j: i64, a: i64, b: i64) -> (f64, f64, f64[:], f64[n], f64[m], f64[:], f64):
    return x[i] * x[j], A[i, j] * x[-1], x[a:b] * 2.0, A[i, :] * x, A[:, j], A[1:, a:b].T @ A[1:, 0], x[i:][0]


@SETTINGS
@given(st.integers(2, 6), st.integers(2, 5), st.data())
def test_indexing_and_slices(n, m, data):
    i = data.draw(st.integers(0, min(n, m) - 1))
    j = data.draw(st.integers(-n, n - 1))
    a = data.draw(st.integers(0, n))
    b = data.draw(st.integers(a, n))
    x, A = rand(n), rand(m, n)
    check_jvp(index_slices, (x, A, i, j, a, b))


@kernel
def element_stores(x: f64[n], s: f64) -> (f64[n], f64[n, 3], f64[n]):
    y = zeros(n)
    B = ones((n, 3))
    z = x * 1.0
    for i in range(n):
        y[i] = x[i] * x[i] + s
        B[i, 1] = s * x[i]
        B[i, :] *= x[i]
        z[i] += s * s
    if n > 1:
        z[1:] = sin(x[1:])
        y[0] = 3.0
    return y, B, z


@kernel
def slice_stores(A: f64[m, n], v: f64[n], s: f64) -> (f64[m, n], f64[m]):
    C = zeros((m, n))
    w = zeros(m)
    for i in range(m):
        C[i, :] = A[i, :] * v + s
        C[i, :] += v
        w[i] = dot(C[i, :], v)
    C[:, 0] = s
    return C, w


def test_element_and_slice_stores():
    x = rand(5)
    check_jvp(element_stores, (x, 0.4))
    check_jvp(element_stores, (x[:1], 0.4))
    _, ts = jvp(element_stores, (x, 0.4), (np.zeros(5), 1.0))
    np.testing.assert_allclose(ts[0], np.r_[0.0, np.ones(4)])
    np.testing.assert_allclose(ts[1][:, 1], x * x)
    check_jvp(slice_stores, (rand(4, 3), rand(3), -0.2))


# ---- loops -------------------------------------------------------------------------------------
@kernel
def for_loop(x: f64, v: f64[n], k: i64) -> (f64, f64[n]):
    y = 1.0
    w = v * 1.0
    for i in range(k):
        y = y * x + sin(y)
        w = w * x + 1.0
    return y, w


@kernel
def for_range_forms(x: f64[n], a: i64, b: i64) -> f64:
    s = 0.0
    for i in range(a, b):
        s += x[i] * x[i]
    for i in range(b - 1, a - 1, -1):
        s = s * 0.5 + x[i]
    for i in range(a, b, 2):
        s -= sin(x[i])
    return s


@pytest.mark.parametrize("k", [0, 1, 2, 7, 40])
def test_for_loops_runtime_trip_counts(k):
    v = rand(3)
    check_jvp(for_loop, (0.7, v, k))
    y, ty = jvp(for_loop, (0.7, v, k), (1.0, np.zeros(3)))
    if k == 0:   # the loop never runs: the outputs do not depend on x
        assert ty[0] == 0.0 and np.all(ty[1] == 0.0)
    if k == 1:   # y = x + sin(1)
        assert ty[0] == pytest.approx(1.0) and np.allclose(ty[1], v)


@pytest.mark.parametrize("a,b", [(0, 0), (2, 3), (0, 6), (1, 6), (4, 2)])
def test_for_range_forms(a, b):
    check_jvp(for_range_forms, (rand(6), a, b))


@kernel
def newton_sqrt(a: f64) -> f64:
    x = a
    i = 0
    while i < 30:
        x = 0.5 * (x + a / x)
        i += 1
    return x


@kernel
def grow_until(x: f64, a: f64) -> (f64, i64):
    n = 0
    while x < 10.0:
        x = x * a + 0.1
        n += 1
    return x, n


@kernel
def while_f32(x: f32[n], a: f32) -> f32[n]:
    y = x * 1.0
    i = 0
    while i < 5 and sum(y * y) < 100.0:
        y = y * a + sin(y)
        i += 1
    return y


def test_while_newton_steps():
    for a in (0.3, 2.0, 17.0):
        check_jvp(newton_sqrt, (a,))
        _, t = jvp(newton_sqrt, (a,), (1.0,))
        assert t == pytest.approx(0.5 / math.sqrt(a), rel=1e-12)


@pytest.mark.parametrize("x0,a", [(11.0, 2.0), (9.0, 1.3), (0.5, 1.7), (0.01, 3.1)])
def test_while_data_dependent_trip_count(x0, a):
    check_jvp(grow_until, (x0, a))
    (x, n), (tx, tn) = jvp(grow_until, (x0, a), (1.0, 0.0))
    assert tn == 0.0
    assert tx == pytest.approx(a ** int(n), rel=1e-12)


def test_while_f32():
    check_jvp(while_f32, (rand(4, dtype=np.float32), np.float32(1.1)))


# ---- branches ------------------------------------------------------------------------------------
@kernel
def piecewise(x: f64, y: f64[n]) -> (f64, f64[n]):
    if x < -1.0:
        r = x * x
        z = y * 2.0
    elif x < 1.0:
        r = sin(x) * 3.0
        z = y * x
    else:
        r = 5.0
        z = y
    return r, z


@pytest.mark.parametrize("x,dr", [(-2.0, -4.0), (0.5, 3 * math.cos(0.5)), (3.0, 0.0)])
def test_if_elif_else_follows_the_branch_taken(x, dr):
    y = rand(3)
    check_jvp(piecewise, (x, y))
    (r, z), (tr, tz) = jvp(piecewise, (x, y), (1.0, np.zeros(3)))
    assert tr == pytest.approx(dr, rel=1e-14)
    np.testing.assert_allclose(tz, y if -1 <= x < 1 else 0 * y)


@kernel
def early_return(x: f64, k: i64) -> f64:
    if k > 2:
        return x * x
    return exp(x)


def test_if_with_return():
    check_jvp(early_return, (0.3, 5))
    check_jvp(early_return, (0.3, 1))


# ---- element stores with loop-carried reads -----------------------------------------------------
@kernel
def prefix_sum(x: f64[n]) -> f64[n]:
    y = x * 1.0
    for i in range(1, n):
        y[i] += y[i - 1]
    return y


@kernel
def prefix_prod(x: f64[n]) -> f64[n]:
    y = zeros(n)
    y[0] = x[0]
    for i in range(1, n):
        y[i] = y[i - 1] * x[i]
    return y


@kernel
def recurrence_2d(x: f64[n], a: f64) -> f64[n, 2]:
    S = zeros((n, 2))
    S[0, :] = x[0]
    for i in range(1, n):
        S[i, 0] = S[i - 1, 1] * a + x[i]
        S[i, 1] = sin(S[i - 1, 0])
    return S


@SETTINGS
@given(st.integers(1, 9))
def test_loop_carried_stores(n):
    x = rand(n, lo=0.5, hi=1.5)
    check_jvp(prefix_sum, (x,))
    check_jvp(prefix_prod, (x,))
    check_jvp(recurrence_2d, (x, 0.8))
    t = rand(n)
    _, ty = jvp(prefix_sum, (x,), (t,))
    np.testing.assert_allclose(ty, np.cumsum(t), rtol=1e-13, atol=1e-14)
    _, tp = jvp(prefix_prod, (x,), (t,))
    np.testing.assert_allclose(tp, np.cumprod(x) * np.cumsum(t / x), rtol=1e-12)


# ---- kernels calling kernels ---------------------------------------------------------------------
@kernel
def inner_energy(x: f64[n], w: f64) -> f64:
    s = 0.0
    for i in range(n - 1):
        d = x[i + 1] - x[i]
        s += w * d * d
    return s


@kernel
def outer_calls(x: f64[n], w: f64) -> (f64, f64[n]):
    e = inner_energy(x, w)
    return e + inner_energy(sin(x), 2.0), sigmoid(x) * inner_energy(x * x, w)


def test_kernels_calling_kernels():
    check_jvp(outer_calls, (rand(5), 0.6))
    check_jvp(outer_calls, (rand(5), 0.6), order=2)


# ---- integer parameters, argument checks, result structure -------------------------------------
@kernel
def int_params(k: i64, x: f64[n], j: i32, s: f32) -> (f64[n], f32, i64):
    return x * f64(k) + f64(j), s * f32(j), k * 2


def test_integer_parameters_take_no_tangent():
    x = rand(4)
    y, t = jvp(int_params, (3, x, np.int32(2), 0.5), (np.ones(4), 2.0))
    np.testing.assert_allclose(t[0], 3 * np.ones(4))
    assert t[1] == pytest.approx(4.0) and t[1].dtype == np.float32
    assert t[2] == 0.0                     # an integer output gets a zero (float) tangent
    assert int_params.jvp.param_names((3, x, np.int32(2), 0.5)) == ["k", "x", "j", "s", "x_dot", "s_dot"]
    with pytest.raises(TypeError):
        int_params.jvp(3, x, np.int32(2), 0.5, np.ones(4), 2.0, 1)
    with pytest.raises(TypeError):
        int_params.jvp(3, x, np.int32(2), 0.5, np.ones(4))
    check_jvp(int_params, (3, x, np.int32(2), np.float32(0.5)))


@kernel
def two_params(x: f64[n], s: f32) -> f64[n]:
    return x * f64(s)


def test_tangent_with_wrong_shape_or_dtype_is_a_type_error():
    x = rand(3)
    with pytest.raises(TypeError, match="'x'"):
        two_params.jvp(x, np.float32(1.0), np.ones(4), np.float32(1.0))
    with pytest.raises(TypeError, match="'x'"):
        two_params.jvp(x, np.float32(1.0), np.ones((3, 1)), np.float32(1.0))
    with pytest.raises(TypeError, match="'x'"):
        two_params.jvp(x, np.float32(1.0), np.ones(3, np.float32), np.float32(1.0))
    with pytest.raises(TypeError, match="'s'"):
        two_params.jvp(x, np.float32(1.0), np.ones(3), np.float64(1.0))
    with pytest.raises(TypeError, match="'s'"):
        two_params.jvp(x, np.float32(1.0), np.ones(3), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="'x'"):
        jvp(two_params, (x, 1.0), (np.ones(2), 1.0))
    with pytest.raises(TypeError, match="'x'"):
        jvp(two_params, (x, 1.0), (1.0, 1.0))


@kernel
def single_out(x: f64[n]) -> f64:
    return sum(x * x)


@kernel
def tuple_out(x: f64[n], s: f64) -> (f64, f64[n]):
    return sum(x) * s, x * s


def test_jvp_result_structure():
    x = rand(3)
    y, t = jvp(single_out, (x,), (np.ones(3),))
    assert np.ndim(y) == 0 and np.ndim(t) == 0
    assert t == pytest.approx(2 * x.sum())
    ys, ts = jvp(tuple_out, [x, 2.0], [np.ones(3), 0.0])
    assert isinstance(ys, tuple) and isinstance(ts, tuple) and len(ys) == len(ts) == 2
    assert ts[0] == pytest.approx(6.0) and ts[1].shape == (3,)
    out = tuple_out.jvp(x, 2.0, np.ones(3), 0.0)
    assert isinstance(out, tuple) and len(out) == 4


# ---- unconnected outputs ------------------------------------------------------------------------
@kernel
def unconnected(x: f64[n], s: f32) -> (f64[n], f32, f64[n, 2], f64):
    return x * 2.0, s * s, zeros((n, 2)), 3.0


def test_output_not_depending_on_an_input_gets_a_zero_tangent():
    x = rand(4)
    _, ts = jvp(unconnected, (x, 1.5), (np.zeros(4), 1.0))
    assert np.all(ts[0] == 0.0) and ts[0].shape == (4,)
    assert ts[1] == pytest.approx(3.0) and ts[1].dtype == np.float32
    assert ts[2].shape == (4, 2) and np.all(ts[2] == 0.0)
    assert ts[3] == 0.0
    _, ts = jvp(unconnected, (x, 1.5), (np.ones(4), 0.0))
    np.testing.assert_allclose(ts[0], 2.0)
    assert ts[1] == 0.0 and ts[1].dtype == np.float32


# ---- second order ------------------------------------------------------------------------------
@kernel
def second_order_mix(x: f64[n], s: f64, k: i64) -> (f64, f64[n]):
    y = x * 1.0
    for i in range(k):
        y = tanh(y * s) + x
    acc = 0.0
    for i in range(1, n):
        acc += y[i] * y[i - 1] / (1.0 + s * s)
    return acc, exp(y) * sqrt(s)


@kernel
def mm_quad(a: f64[m, k], b: f64[k, n], u: f64[k]) -> (f64, f64[n]):
    w = a @ u
    return dot(w, w), (u @ b) * (w @ a @ b)


def test_second_order():
    x = rand(4, lo=-1, hi=1)
    check_jvp(second_order_mix, (x, 0.8, 3), order=2)
    check_jvp(where_f32, (rand(5, dtype=np.float32), rand(5, dtype=np.float32)), order=2)
    check_jvp(piecewise, (0.5, rand(3)), order=2)
    check_jvp(newton_sqrt, (2.0,), order=2)
    check_jvp(mm_quad, (rand(2, 3), rand(3, 2), rand(3)), order=2)
    check_jvp(prefix_prod, (rand(5, lo=0.5, hi=1.5),), order=2)
    check_jvp(reductions, (rand(2, 3, lo=0.5, hi=2.0),), order=2)
    # closed form: d2/dx2 sin(x) = -sin(x), along (t, 0)
    out = u_sin.jvp.jvp(0.7, 1.0, 1.0, 0.0)
    assert out[3] == pytest.approx(-math.sin(0.7), rel=1e-14)
    # third order through the same machinery
    out3 = p35.jvp.jvp.jvp(1.1, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    assert out3[-1] == pytest.approx(3.5 * 2.5 * 1.5 * 1.1 ** 0.5, rel=1e-13)


_ = fd


def test_none_tangent_is_a_symbolic_zero():
    from dsl import jvp as _jvp

    @kernel
    def stepper(x0: f64[d], A: f64[d, d], h: f64, steps: i64) -> f64[d]:
        x = x0
        for t in range(steps):
            x = x + h * (-x + tanh(A @ x))
        return x
    rng = np.random.default_rng(3)
    x0, A, dx = rng.standard_normal(4), rng.standard_normal((4, 4)) / 3, rng.standard_normal(4)
    y1, t1 = _jvp(stepper, (x0, A, 0.1, 6), (dx, None, None))
    y2, t2 = _jvp(stepper, (x0, A, 0.1, 6), (dx, np.zeros_like(A), 0.0))
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_allclose(t1, t2, rtol=1e-14, atol=1e-15)
    eps = 1e-6
    fd = (stepper(x0 + eps * dx, A, 0.1, 6) - stepper(x0 - eps * dx, A, 0.1, 6)) / (2 * eps)
    np.testing.assert_allclose(t1, fd, rtol=1e-6, atol=1e-9)
    # the specialised kernel has no code for the zero directions: one matmul fewer per step
    only_x = stepper._partial_jvps[(0,)]
    assert only_x.lower(x0, A, 0.1, 6, dx).ir("optimized").count("matmul(") == 2
    with pytest.raises(TypeError):
        _jvp(stepper, (x0, A, 0.1, 6), (dx, None))
