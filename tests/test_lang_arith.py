"""SPEC section 4, scalar and elementwise arithmetic, against NumPy / Python semantics."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from dsl import kernel

SETTINGS = settings(max_examples=30, deadline=None)


# ---- literals ------------------------------------------------------------------------------------
@kernel
def lit_int() -> i64:
    return 42


@kernel
def lit_float() -> f64:
    return 2.5 + 1e-3


@kernel
def lit_bool() -> bool:
    return True


@kernel
def lit_neg(x: f64) -> f64:
    return -1.5e2 + x * -2


@kernel
def lit_tuple(x: f64) -> (f64, i64, bool):
    return (x, 7, False)


def test_literals():
    r = lit_int()
    assert r == 42 and isinstance(r, np.int64)
    r = lit_float()
    assert r == 2.501 and isinstance(r, np.float64)
    r = lit_bool()
    assert r == True and isinstance(r, np.bool_)  # noqa: E712
    assert lit_neg(3.0) == -150.0 - 6.0
    a, b, c = lit_tuple(1.5)
    assert (a, b, c) == (1.5, 7, False)
    assert isinstance(b, np.int64) and isinstance(c, np.bool_)


# ---- + - * / on arrays -------------------------------------------------------------------------------
@kernel
def arith_all(a: f64[n], b: f64[n]) -> (f64[n], f64[n], f64[n], f64[n], f64[n]):
    return a + b, a - b, a * b, a / b, -a


@kernel
def arith_all32(a: f32[n], b: f32[n]) -> (f32[n], f32[n], f32[n], f32[n], f32[n]):
    return a + b, a - b, a * b, a / b, -a


finite64 = st.floats(-1e6, 1e6, allow_nan=False, width=64)
finite32 = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@SETTINGS
@given(st.data())
def test_arith_f64(data):
    n = data.draw(st.integers(0, 20))
    a = data.draw(hnp.arrays(np.float64, n, elements=finite64))
    b = data.draw(hnp.arrays(np.float64, n, elements=finite64))
    with np.errstate(all="ignore"):
        want = (a + b, a - b, a * b, a / b, -a)
    got = arith_all(a, b)
    for g, w in zip(got, want):
        assert g.dtype == np.float64
        np.testing.assert_array_equal(g, w)


@SETTINGS
@given(st.data())
def test_arith_f32(data):
    n = data.draw(st.integers(0, 20))
    a = data.draw(hnp.arrays(np.float32, n, elements=finite32))
    b = data.draw(hnp.arrays(np.float32, n, elements=finite32))
    with np.errstate(all="ignore"):
        want = (a + b, a - b, a * b, a / b, -a)
    got = arith_all32(a, b)
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, w)


# ---- floor division and modulo ---------------------------------------------------------------------
@kernel
def fdm_i64(a: i64[n], b: i64[n]) -> (i64[n], i64[n]):
    return a // b, a % b


@kernel
def fdm_i32(a: i32[n], b: i32[n]) -> (i32[n], i32[n]):
    return a // b, a % b


@kernel
def fdm_f64(a: f64[n], b: f64[n]) -> (f64[n], f64[n]):
    return a // b, a % b


@kernel
def fdm_f32(a: f32[n], b: f32[n]) -> (f32[n], f32[n]):
    return a // b, a % b


@kernel
def fdm_scalar(a: i64, b: i64) -> (i64, i64):
    return a // b, a % b


@kernel
def fdm_scalar_f(a: f64, b: f64) -> (f64, f64):
    return a // b, a % b


nonzero_int = st.integers(-1000, 1000).filter(lambda v: v != 0)


@SETTINGS
@given(st.lists(st.tuples(st.integers(-10**6, 10**6), nonzero_int), max_size=20))
def test_floordiv_mod_int(pairs):
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    q, r = fdm_i64(a, b)
    np.testing.assert_array_equal(q, np.floor_divide(a, b))
    np.testing.assert_array_equal(r, np.mod(a, b))
    for x, y, qq, rr in zip(a.tolist(), b.tolist(), q.tolist(), r.tolist()):
        assert (qq, rr) == (x // y, x % y)       # Python semantics
    q, r = fdm_i32(a.astype(np.int32), b.astype(np.int32))
    assert q.dtype == np.int32
    np.testing.assert_array_equal(q, np.floor_divide(a, b))
    np.testing.assert_array_equal(r, np.mod(a, b))


def test_floordiv_mod_int_scalar_signs():
    for x in (-7, 7, 0, -1, 6, -6):
        for y in (-2, 2, 3, -3, 1, -1):
            q, r = fdm_scalar(x, y)
            assert (int(q), int(r)) == (x // y, x % y), (x, y)


def test_int_min_floordiv_minus_one_does_not_crash():
    a = np.array([np.iinfo(np.int64).min], dtype=np.int64)
    b = np.array([-1], dtype=np.int64)
    q, r = fdm_i64(a, b)
    assert r[0] == 0
    assert q[0] == np.iinfo(np.int64).min       # wraps like NumPy


@SETTINGS
@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(-50, 50).filter(lambda v: abs(v) > 1e-3)), max_size=20))
def test_floordiv_mod_float(pairs):
    a = np.array([p[0] for p in pairs], dtype=np.float64)
    b = np.array([p[1] for p in pairs], dtype=np.float64)
    q, r = fdm_f64(a, b)
    np.testing.assert_array_equal(q, np.floor_divide(a, b))
    np.testing.assert_allclose(r, np.mod(a, b), rtol=1e-12, atol=1e-12)
    assert np.all(np.signbit(r[r == 0]) == np.signbit(b[r == 0]))
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    q, r = fdm_f32(a32, b32)
    assert q.dtype == np.float32 and r.dtype == np.float32
    np.testing.assert_array_equal(q, np.floor_divide(a32, b32))
    np.testing.assert_allclose(r, np.mod(a32, b32), rtol=1e-5, atol=1e-5)


def test_float_floordiv_mod_python_semantics():
    for x in (-7.5, 7.5, -7.0, 7.0, 0.5, -0.5):
        for y in (-2.0, 2.0, 0.25, -3.0):
            q, r = fdm_scalar_f(x, y)
            assert q == x // y and r == pytest.approx(x % y), (x, y)


def test_float_floordiv_mod_by_zero_is_ieee():
    a = np.array([1.0, -1.0, 0.0, np.inf, np.nan])
    b = np.zeros(5)
    q, r = fdm_f64(a, b)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(q, np.floor_divide(a, b))
        np.testing.assert_array_equal(r, np.mod(a, b))


@pytest.mark.parametrize("fn,args", [
    (fdm_i64, (np.array([1, 2, 3]), np.array([1, 0, 1]))),
    (fdm_i32, (np.array([1], dtype=np.int32), np.array([0], dtype=np.int32))),
    (fdm_scalar, (5, 0)),
    (fdm_scalar, (0, 0)),
])
def test_int_division_by_zero(fn, args):
    with pytest.raises(ZeroDivisionError) as ei:
        fn(*args)
    assert "test_lang_arith.py:" in str(ei.value)


@kernel
def int_mod_only(a: i64, b: i64) -> i64:
    return a % b


def test_int_mod_by_zero():
    with pytest.raises(ZeroDivisionError):
        int_mod_only(3, 0)


@kernel
def int_truediv(a: i64, b: i64) -> f64:
    return a / b


def test_int_true_division_promotes():
    assert int_truediv(7, 2) == 3.5
    assert int_truediv(-7, 2) == -3.5
    assert int_truediv(1, 0) == np.inf


# ---- inf / nan ------------------------------------------------------------------------------------
@kernel
def ieee(a: f64[n], b: f64[n]) -> (f64[n], f64[n], f64[n], f64[n]):
    return a / b, a * b, a - b, sqrt(a)


def test_inf_nan_propagation():
    a = np.array([1.0, -1.0, 0.0, np.inf, np.nan, np.inf, -4.0])
    b = np.array([0.0, 0.0, 0.0, np.inf, 1.0, 0.0, 2.0])
    with np.errstate(all="ignore"):
        want = (a / b, a * b, a - b, np.sqrt(a))
    for g, w in zip(ieee(a, b), want):
        np.testing.assert_array_equal(g, w)


@kernel
def consts() -> (f64, f64, f64):
    return inf, -inf, nan


def test_inf_nan_names():
    a, b, c = consts()
    assert a == np.inf and b == -np.inf and np.isnan(c)


# ---- ** ------------------------------------------------------------------------------------------
@kernel
def pow_ff(a: f64[n], b: f64[n]) -> f64[n]:
    return a ** b


@kernel
def pow_consts(x: f64[n]) -> (f64[n], f64[n], f64[n], f64[n], f64[n]):
    return x ** 2, x ** -1, x ** 0.5, x ** -2.5, x ** 0


@kernel
def pow_f32(x: f32[n]) -> (f32[n], f32[n]):
    return x ** 2, x ** 1.5


@kernel
def pow_ii(a: i64[n], b: i64[n]) -> i64[n]:
    return a ** b


@kernel
def pow_i_negative(a: i64) -> f64:
    return a ** -1.0


@kernel
def pow_int_neg_exp(a: i64, b: i64) -> i64:
    return a ** b


@SETTINGS
@given(hnp.arrays(np.float64, st.integers(0, 10), elements=st.floats(0.01, 10)),
       st.floats(-3, 3))
def test_pow_float(x, e):
    np.testing.assert_allclose(pow_ff(x, np.full_like(x, e)), x ** e, rtol=1e-12)


def test_pow_consts():
    x = np.array([0.5, 1.0, 2.0, 3.0, 10.0])
    want = (x ** 2, x ** -1, x ** 0.5, x ** -2.5, x ** 0)
    for g, w in zip(pow_consts(x), want):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    x32 = x.astype(np.float32)
    r1, r2 = pow_f32(x32)
    assert r1.dtype == np.float32 and r2.dtype == np.float32
    np.testing.assert_allclose(r1, x32 ** 2, rtol=1e-6)
    np.testing.assert_allclose(r2, x32 ** np.float32(1.5), rtol=1e-6)


def test_pow_negative_base_nan():
    x = np.array([-2.0, -8.0])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(pow_ff(x, np.array([2.0, 1 / 3])), x ** np.array([2.0, 1 / 3]))


def test_pow_int():
    a = np.array([2, -3, 0, 5, 1, -1], dtype=np.int64)
    b = np.array([10, 3, 0, 0, 7, 5], dtype=np.int64)
    np.testing.assert_array_equal(pow_ii(a, b), a ** b)
    assert pow_i_negative(4) == 0.25
    with pytest.raises(ValueError):
        pow_int_neg_exp(2, -1)


# ---- comparisons -------------------------------------------------------------------------------------
@kernel
def cmp_all(a: f64[n], b: f64[n]) -> (bool[n], bool[n], bool[n], bool[n], bool[n], bool[n]):
    return a < b, a <= b, a > b, a >= b, a == b, a != b


@kernel
def chained(a: f64, b: f64, c: f64) -> (bool, bool):
    return a < b < c, a <= b > c


@kernel
def chained_arr(x: f64[n]) -> bool[n]:
    return 0.0 < x <= 1.0


@kernel
def cmp_int_float(a: i64, b: f64) -> bool:
    return a < b


@SETTINGS
@given(hnp.arrays(np.float64, st.integers(0, 10), elements=st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, 2.5])),
       st.data())
def test_comparisons(a, data):
    b = data.draw(hnp.arrays(np.float64, a.shape, elements=st.sampled_from([0.0, 1.0, np.nan, -np.inf, 2.5])))
    want = (a < b, a <= b, a > b, a >= b, a == b, a != b)
    for g, w in zip(cmp_all(a, b), want):
        assert g.dtype == np.bool_
        np.testing.assert_array_equal(g, w)


@SETTINGS
@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3))
def test_chained_comparisons(a, b, c):
    assert tuple(chained(a, b, c)) == (a < b < c, a <= b > c)


def test_chained_array_and_mixed():
    x = np.array([-1.0, 0.0, 0.5, 1.0, 1.5])
    np.testing.assert_array_equal(chained_arr(x), (0.0 < x) & (x <= 1.0))
    assert cmp_int_float(2, 2.5) and not cmp_int_float(3, 2.5)


# ---- and / or / not, conditional expressions --------------------------------------------------------------
@kernel
def boolops(a: bool, b: bool, c: bool) -> (bool, bool, bool, bool):
    return a and b, a or b, not a, a and not b or c


@kernel
def short_circuit_and(x: f64[n], i: i64) -> bool:
    return i < n and x[i] > 0.0


@kernel
def short_circuit_or(x: f64[n], i: i64) -> bool:
    return i >= n or x[i] > 0.0


@kernel
def count_positive_prefix(x: f64[n]) -> i64:
    i = 0
    while i < n and x[i] > 0.0:
        i += 1
    return i


@kernel
def truthy_numbers(a: i64, b: f64) -> (bool, bool, bool):
    return a and b, not a, a or b


@kernel
def ifexp(x: f64, c: bool) -> (f64, f64):
    return x if c else -x, 1.0 if x > 0 else 2


@kernel
def ifexp_short(x: f64[n], i: i64) -> f64:
    return x[i] if i < n else -1.0


@SETTINGS
@given(st.booleans(), st.booleans(), st.booleans())
def test_boolops(a, b, c):
    assert tuple(boolops(a, b, c)) == (a and b, a or b, not a, (a and not b) or c)


def test_short_circuit():
    x = np.array([1.0, -1.0, 2.0])
    assert short_circuit_and(x, 0) and not short_circuit_and(x, 1)
    assert not short_circuit_and(x, 3)            # x[3] is never evaluated
    assert not short_circuit_and(x, 100)
    assert short_circuit_or(x, 3) and short_circuit_or(x, 0) and not short_circuit_or(x, 1)
    assert count_positive_prefix(np.array([1.0, 2.0, 3.0])) == 3
    assert count_positive_prefix(np.array([1.0, -2.0, 3.0])) == 1
    assert count_positive_prefix(np.zeros(0)) == 0


def test_truthiness_of_numbers():
    assert tuple(bool(v) for v in truthy_numbers(0, 2.0)) == (False, True, True)
    assert tuple(bool(v) for v in truthy_numbers(3, 0.0)) == (False, False, True)
    assert tuple(bool(v) for v in truthy_numbers(3, 1.0)) == (True, False, True)


def test_ifexp():
    assert tuple(ifexp(2.0, True)) == (2.0, 1.0)
    assert tuple(ifexp(2.0, False)) == (-2.0, 1.0)
    assert tuple(ifexp(-2.0, True)) == (-2.0, 2.0)
    x = np.array([5.0, 6.0])
    assert ifexp_short(x, 1) == 6.0 and ifexp_short(x, 2) == -1.0 and ifexp_short(x, 10**9) == -1.0


# ---- promotion, f32 staying f32, casts ---------------------------------------------------------------
@kernel
def f32_with_literal(x: f32[n]) -> f32[n]:
    return x * 2.5 + 1.0 - 0.1


@kernel
def f32_scalar_literal(x: f32) -> f32:
    y = x * 0.1
    return y / 3.0


@kernel
def unannotated_f32(x):
    return x * 0.1 + 1


@kernel
def int_float_promote(a: i64[n], b: f64) -> f64[n]:
    return a + b


@kernel
def int_f32_promote(a: i32[n], b: f32[n]) -> f32[n]:
    return a * b


@kernel
def int_plus_float_literal(a: i64[n]) -> f64[n]:
    return a + 0.5


@kernel
def i32_i64_promote(a: i32[n], b: i64[n]) -> i64[n]:
    return a + b


@kernel
def f32_f64_promote(a: f32[n], b: f64[n]) -> f64[n]:
    return a + b


@kernel
def i32_literal(a: i32[n]) -> i32[n]:
    return a * 3 + 1


@kernel
def bool_arith(a: bool[n]) -> i64[n]:
    return a + a


def test_f32_stays_f32():
    x = np.array([1.0, 2.0, 3.3], dtype=np.float32)
    r = f32_with_literal(x)
    assert r.dtype == np.float32
    np.testing.assert_array_equal(r, x * np.float32(2.5) + np.float32(1.0) - np.float32(0.1))
    r = f32_scalar_literal(np.float32(0.7))
    assert isinstance(r, np.float32)
    assert r == np.float32(0.7) * np.float32(0.1) / np.float32(3.0)
    r = unannotated_f32(x)
    assert r.dtype == np.float32
    np.testing.assert_array_equal(r, x * np.float32(0.1) + np.float32(1))


def test_promotions():
    a = np.array([1, -2, 3])
    r = int_float_promote(a, 0.5)
    assert r.dtype == np.float64
    np.testing.assert_array_equal(r, a + 0.5)
    b = np.array([0.5, 1.5, 2.0], dtype=np.float32)
    r = int_f32_promote(a.astype(np.int32), b)
    assert r.dtype == np.float32
    np.testing.assert_array_equal(r, a.astype(np.float32) * b)
    np.testing.assert_array_equal(int_plus_float_literal(a), a + 0.5)
    r = i32_i64_promote(a.astype(np.int32), a)
    assert r.dtype == np.int64
    np.testing.assert_array_equal(r, 2 * a)
    r = f32_f64_promote(b, b.astype(np.float64))
    assert r.dtype == np.float64
    r = i32_literal(a.astype(np.int32))
    assert r.dtype == np.int32
    np.testing.assert_array_equal(r, a * 3 + 1)
    np.testing.assert_array_equal(bool_arith(np.array([True, False])), [2, 0])


@kernel
def casts(x: f64[n]) -> (f32[n], f64[n], i32[n], i64[n]):
    return f32(x), f64(f32(x)), i32(x), i64(x)


@kernel
def casts_scalar(x: f64, k: i64) -> (f32, i32, i64, f64):
    return f32(x), i32(x), i64(x) + k, f64(k) / 2


@kernel
def cast_bool(x: i64[n]) -> (f64[n], i64[n]):
    b = x > 0
    return f64(b), i64(b)


@SETTINGS
@given(hnp.arrays(np.float64, st.integers(0, 10), elements=st.floats(-1e6, 1e6)))
def test_casts(x):
    a, b, c, d = casts(x)
    assert (a.dtype, b.dtype, c.dtype, d.dtype) == (np.float32, np.float64, np.int32, np.int64)
    np.testing.assert_array_equal(a, x.astype(np.float32))
    np.testing.assert_array_equal(b, x.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(c, x.astype(np.int32))      # truncation toward zero
    np.testing.assert_array_equal(d, x.astype(np.int64))


def test_casts_scalar():
    a, b, c, d = casts_scalar(-2.7, 5)
    assert isinstance(a, np.float32) and a == np.float32(-2.7)
    assert isinstance(b, np.int32) and b == -2
    assert c == 3 and d == 2.5
    f, i = cast_bool(np.array([-1, 0, 3]))
    np.testing.assert_array_equal(f, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(i, [0, 0, 1])


# ---- unary minus and abs on ints ------------------------------------------------------------------------
@kernel
def int_unary(a: i64[n]) -> (i64[n], i64[n], i64[n]):
    return -a, abs(a), sign(a)


def test_int_unary():
    a = np.array([-3, 0, 5])
    n, b, s = int_unary(a)
    np.testing.assert_array_equal(n, -a)
    np.testing.assert_array_equal(b, np.abs(a))
    np.testing.assert_array_equal(s, np.sign(a))


def test_math_module_constants():
    assert math.isclose(float(lit_float()), 2.501)
