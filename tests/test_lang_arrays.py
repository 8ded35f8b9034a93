"""SPEC section 4, arrays: broadcasting, @, .T, dot, indexing, slices, shapes, math functions,
reductions and constructors, against NumPy on random inputs."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from dsl import kernel

SETTINGS = settings(max_examples=30, deadline=None)
rng = np.random.default_rng(1234)


def rand(*shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


# ---- broadcasting -------------------------------------------------------------------------------------
@kernel
def bc_scalar(x: f64[m, n], s: f64) -> (f64[m, n], f64[m, n]):
    return x + s, s / (x * x + 1.0)


@kernel
def bc_row(x: f64[m, n], v: f64[n]) -> f64[m, n]:
    return x * v - v


@kernel
def bc_outer(c: f64[m, 1], r: f64[1, n]) -> f64[m, n]:
    return c + r


@kernel
def bc_unannotated(a, b):
    return a * b + a


@SETTINGS
@given(st.integers(0, 5), st.integers(0, 5), st.floats(-10, 10))
def test_broadcast_scalar_row_outer(m, n, s):
    x, v = rand(m, n), rand(n)
    a, b = bc_scalar(x, s)
    np.testing.assert_allclose(a, x + s, rtol=1e-12)
    np.testing.assert_allclose(b, s / (x * x + 1.0), rtol=1e-12)
    np.testing.assert_allclose(bc_row(x, v), x * v - v, rtol=1e-12)
    c, r = rand(m, 1), rand(1, n)
    np.testing.assert_allclose(bc_outer(c, r), c + r, rtol=1e-12)


@st.composite
def rank_broadcast_shapes(draw):
    """Two shapes that broadcast by rank only: an unannotated parameter's extents are symbolic,
    so an axis whose extent is 1 only at run time does not stretch (see docs: broadcasting)."""
    full = draw(st.lists(st.integers(0, 4), max_size=3))
    ka, kb = draw(st.integers(0, len(full))), draw(st.integers(0, len(full)))
    return tuple(full[len(full) - ka:]), tuple(full[len(full) - kb:])


@SETTINGS
@given(rank_broadcast_shapes())
def test_broadcast_random_shapes(shapes):
    sa, sb = shapes
    a = rng.standard_normal(sa)
    b = rng.standard_normal(sb)
    if a.ndim == 0 or b.ndim == 0:
        a, b = (float(a) if a.ndim == 0 else a), (float(b) if b.ndim == 0 else b)
    got = bc_unannotated(a, b)
    want = np.asarray(a) * b + a
    assert np.shape(got) == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_broadcast_mismatch_at_run_time():
    with pytest.raises(ValueError):
        bc_unannotated(rand(3), rand(4))
    with pytest.raises(ValueError):
        bc_unannotated(rand(2, 3), rand(2))


# ---- @, .T, dot ----------------------------------------------------------------------------------------
@kernel
def mm_mm(a: f64[m, k], b: f64[k, n]) -> f64[m, n]:
    return a @ b


@kernel
def mm_mv(a: f64[m, k], v: f64[k]) -> f64[m]:
    return a @ v


@kernel
def mm_vm(v: f64[k], b: f64[k, n]) -> f64[n]:
    return v @ b


@kernel
def mm_vv(u: f64[k], v: f64[k]) -> f64:
    return u @ v


@kernel
def mm_f32(a: f32[m, k], b: f32[k, n]) -> f32[m, n]:
    return a @ b


@kernel
def mm_int(a: i64[m, k], b: i64[k, n]) -> i64[m, n]:
    return a @ b


@kernel
def transpose_ops(a: f64[m, n]) -> (f64[n, m], f64[n, n], f64[m], f64):
    return a.T, a.T @ a, dot(a, a[0, :]), dot(a[0, :], a[0, :])


@kernel
def transpose_expr(a: f64[m, n], v: f64[m]) -> f64[n, m]:
    return (a * 2.0).T + v


@kernel
def mm_fused_operands(a: f64[m, k], b: f64[k, n]) -> f64[m, n]:
    return (a + 1.0) @ (b * 2.0).T.T


@SETTINGS
@given(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6))
def test_matmul_forms(m, k, n):
    a, b, u, v = rand(m, k), rand(k, n), rand(k), rand(k)
    np.testing.assert_allclose(mm_mm(a, b), a @ b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mm_mv(a, v), a @ v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mm_vm(v, b), v @ b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mm_vv(u, v), u @ v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mm_fused_operands(a, b), (a + 1.0) @ (b * 2.0), rtol=1e-10, atol=1e-12)
    r = mm_f32(a.astype(np.float32), b.astype(np.float32))
    assert r.dtype == np.float32
    np.testing.assert_allclose(r, a.astype(np.float32) @ b.astype(np.float32), rtol=1e-4, atol=1e-5)
    ai, bi = rng.integers(-5, 5, (m, k)), rng.integers(-5, 5, (k, n))
    np.testing.assert_array_equal(mm_int(ai, bi), ai @ bi)


def test_matmul_inner_mismatch():
    with pytest.raises(ValueError):
        mm_mm(rand(2, 3), rand(4, 2))


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 6))
def test_transpose_and_dot(m, n):
    a = rand(m, n)
    t, g, d, s = transpose_ops(a)
    np.testing.assert_array_equal(t, a.T)
    np.testing.assert_allclose(g, a.T @ a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d, a @ a[0, :], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s, a[0] @ a[0], rtol=1e-12)
    v = rand(m)
    np.testing.assert_allclose(transpose_expr(a, v), (a * 2.0).T + v, rtol=1e-12)


# ---- indexing, slices, shape, len --------------------------------------------------------------------------
@kernel
def get_elem(x: f64[n], i: i64) -> f64:
    return x[i]


@kernel
def get_elem2(a: f64[m, n], i: i64, j: i64) -> f64:
    return a[i, j]


@kernel
def get_slice(x: f64[n], a: i64, b: i64):
    return x[a:b]


@kernel
def get_slice_open(x: f64[n], a: i64) -> (f64[:], f64[:], f64[n]):
    return x[a:], x[:a], x[:]


@kernel
def row_col(A: f64[m, n], i: i64, j: i64) -> (f64[n], f64[m]):
    return A[i, :], A[:, j]


@kernel
def row_implicit(A: f64[m, n], i: i64) -> f64[n]:
    return A[i]


@kernel
def sub_block(A: f64[m, n], a: i64, b: i64, c: i64, d: i64):
    return A[a:b, c:d]


@kernel
def shapes(A: f64[m, n], x: f64[k]) -> (i64, i64, i64, i64, i64, i64):
    return A.shape[0], A.shape[1], A.shape[-1], len(A), len(x), x.shape[0] + m * n


@kernel
def slice_arith(x: f64[n]) -> f64[:]:
    return x[1:] - x[:-1]


@kernel
def slice_lit_neg(x: f64[n]) -> (f64[:], f64, f64):
    return x[-3:-1], x[-1], x[-n]


bound = st.integers(-12, 12)


@SETTINGS
@given(st.integers(0, 10), bound, bound)
def test_slices_random_bounds(n, a, b):
    x = rand(n)
    np.testing.assert_array_equal(get_slice(x, a, b), x[a:b])
    r1, r2, r3 = get_slice_open(x, a)
    np.testing.assert_array_equal(r1, x[a:])
    np.testing.assert_array_equal(r2, x[:a])
    np.testing.assert_array_equal(r3, x)


@SETTINGS
@given(st.integers(0, 6), st.integers(0, 6), bound, bound, bound, bound)
def test_2d_slices(m, n, a, b, c, d):
    A = rand(m, n)
    np.testing.assert_array_equal(sub_block(A, a, b, c, d), A[a:b, c:d])


@SETTINGS
@given(st.integers(1, 8), st.data())
def test_negative_indices(n, data):
    x = rand(n)
    i = data.draw(st.integers(-n, n - 1))
    assert get_elem(x, i) == x[i]
    m = data.draw(st.integers(1, 5))
    A = rand(m, n)
    r, c = data.draw(st.integers(-m, m - 1)), data.draw(st.integers(-n, n - 1))
    assert get_elem2(A, r, c) == A[r, c]
    row, col = row_col(A, r, c)
    np.testing.assert_array_equal(row, A[r, :])
    np.testing.assert_array_equal(col, A[:, c])
    np.testing.assert_array_equal(row_implicit(A, r), A[r])


@kernel
def gather(x: f64[n], idx: i64[m]) -> f64[m]:
    y = zeros(m)
    for i in range(m):
        y[i] = x[idx[i]]
    return y


@kernel
def add_two(x: f64[n], y: f64[m]) -> f64[n]:
    return x + y


def test_index_out_of_bounds():
    x = rand(4)
    for i in (4, -5, 10**12, -(10**12)):
        with pytest.raises(IndexError) as ei:
            get_elem(x, i)
        assert "test_lang_arrays.py:" in str(ei.value)
        assert f"index {i} is out of bounds for axis of size 4" in str(ei.value)
        assert ei.value.details == (i, 4)
    with pytest.raises(IndexError):
        get_elem(np.zeros(0), 0)
    with pytest.raises(IndexError):
        get_elem2(rand(2, 3), 1, 3)
    with pytest.raises(IndexError):
        row_col(rand(2, 3), 2, 0)


def test_error_details_from_a_threaded_loop_and_a_shape_check():
    """The values an error message shows come from the failing site, also when a worker
    thread's chunk of a parallel loop fails."""
    x, idx = rand(100_000), np.arange(300_000, dtype=np.int64) % 100_000
    idx[234_567] = 10**6
    with pytest.raises(IndexError) as ei:
        gather(x, idx)
    assert "index 1000000 is out of bounds for axis of size 100000" in str(ei.value)
    assert "y[i] = x[idx[i]]" in str(ei.value)
    with pytest.raises(ValueError) as ei:
        add_two(rand(3), rand(4))
    assert "(extents 3 and 4)" in str(ei.value), str(ei.value)


def test_shape_len_and_slice_arith():
    A, x = rand(3, 4), rand(5)
    assert tuple(int(v) for v in shapes(A, x)) == (3, 4, 4, 3, 5, 5 + 12)
    for n in (0, 1, 2, 7):
        x = rand(n)
        np.testing.assert_array_equal(slice_arith(x), x[1:] - x[:-1])
    x = rand(5)
    a, b, c = slice_lit_neg(x)
    np.testing.assert_array_equal(a, x[-3:-1])
    assert b == x[-1] and c == x[0]


def test_slice_step_error():
    from dsl import compile_source
    with pytest.raises(NotImplementedError) as ei:
        compile_source("def f(x: f64[n]) -> f64[:]:\n    return x[0:4:2]\n", filename="step.dsl")["f"](rand(5))
    assert "step.dsl:2:" in str(ei.value)


# ---- math functions ----------------------------------------------------------------------------------------
@kernel
def math64(x: f64[n]) -> (f64[n], f64[n], f64[n], f64[n], f64[n], f64[n], f64[n], f64[n], f64[n],
                           f64[n], f64[n], f64[n], f64[n], f64[n]):
    return (sin(x), cos(x), tan(x), exp(x), log(abs(x) + 0.5), log1p(abs(x)), expm1(x), sqrt(abs(x)),
            tanh(x), sigmoid(x), abs(x), sign(x), floor(x), ceil(x))


@kernel
def math32(x: f32[n]) -> (f32[n], f32[n], f32[n], f32[n], f32[n], f32[n], f32[n], f32[n], f32[n],
                           f32[n], f32[n], f32[n], f32[n], f32[n]):
    return (sin(x), cos(x), tan(x), exp(x), log(abs(x) + 0.5), log1p(abs(x)), expm1(x), sqrt(abs(x)),
            tanh(x), sigmoid(x), abs(x), sign(x), floor(x), ceil(x))


@kernel
def math_scalar(x: f64) -> (f64, f64, f64, f64):
    return sin(x), exp(x), sqrt(abs(x)), sigmoid(x)


@kernel
def math_int_arg(k: i64) -> (f64, f64):
    return sqrt(k), exp(k)


@kernel
def np_prefixed(x: f64[n]) -> f64[n]:
    return np.sin(x) + np.maximum(x, 0.0)


@kernel
def binmath(a: f64[n], b: f64[n]) -> (f64[n], f64[n], f64[n], f64[n], f64[n]):
    return minimum(a, b), maximum(a, b), where(a > b, a, b), where(a > 0.0, 1.0, b), maximum(a, 0.0)


@kernel
def binmath_int(a: i64[n], b: i64[n]) -> (i64[n], i64[n], i64[n]):
    return minimum(a, b), maximum(a, b), where(a > b, a - b, 0)


def _np_math(x):
    sig = 1.0 / (1.0 + np.exp(-x))
    return (np.sin(x), np.cos(x), np.tan(x), np.exp(x), np.log(np.abs(x) + 0.5), np.log1p(np.abs(x)),
            np.expm1(x), np.sqrt(np.abs(x)), np.tanh(x), sig, np.abs(x), np.sign(x), np.floor(x), np.ceil(x))


@SETTINGS
@given(hnp.arrays(np.float64, st.integers(0, 16), elements=st.floats(-20, 20)))
def test_math_f64(x):
    names = "sin cos tan exp log log1p expm1 sqrt tanh sigmoid abs sign floor ceil".split()
    for name, g, w in zip(names, math64(x), _np_math(x)):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-300, err_msg=name)


@SETTINGS
@given(hnp.arrays(np.float32, st.integers(0, 16), elements=st.floats(-10, 10, width=32)))
def test_math_f32(x):
    names = "sin cos tan exp log log1p expm1 sqrt tanh sigmoid abs sign floor ceil".split()
    want = _np_math(x.astype(np.float64))
    for name, g, w in zip(names, math32(x), want):
        assert g.dtype == np.float32, name
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=name)


def test_math_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -1e308, 800.0, -800.0])
    with np.errstate(all="ignore"):
        want = _np_math(x)
        got = math64(x)
    names = "sin cos tan exp log log1p expm1 sqrt tanh sigmoid abs sign floor ceil".split()
    for name, g, w in zip(names, got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, err_msg=name)
    a, b, c, d = math_scalar(0.3)
    assert (a, b, c, d) == pytest.approx((np.sin(0.3), np.exp(0.3), np.sqrt(0.3), 1 / (1 + np.exp(-0.3))), rel=1e-14)
    s, e = math_int_arg(4)
    assert s == 2.0 and e == pytest.approx(np.exp(4), rel=1e-14)
    x = rand(6)
    np.testing.assert_allclose(np_prefixed(x), np.sin(x) + np.maximum(x, 0.0), rtol=1e-14)


@SETTINGS
@given(hnp.arrays(np.float64, st.integers(0, 10), elements=st.sampled_from([0.0, -1.0, 2.5, np.nan, np.inf, -3.0])),
       st.data())
def test_minimum_maximum_where(a, data):
    b = data.draw(hnp.arrays(np.float64, a.shape, elements=st.sampled_from([0.0, 1.0, np.nan, -np.inf, -3.0])))
    g = binmath(a, b)
    want = (np.minimum(a, b), np.maximum(a, b), np.where(a > b, a, b), np.where(a > 0.0, 1.0, b), np.maximum(a, 0.0))
    for gi, wi in zip(g, want):
        np.testing.assert_array_equal(gi, wi)
    ai = rng.integers(-5, 5, a.shape)
    bi = rng.integers(-5, 5, a.shape)
    for gi, wi in zip(binmath_int(ai, bi), (np.minimum(ai, bi), np.maximum(ai, bi), np.where(ai > bi, ai - bi, 0))):
        np.testing.assert_array_equal(gi, wi)


# ---- reductions ----------------------------------------------------------------------------------------------
@kernel
def red_all(x: f64[a, b, c]) -> (f64, f64, f64, f64, f64):
    return sum(x), max(x), min(x), mean(x), prod(x)


@kernel
def red_axis0(x: f64[a, b, c]):
    return sum(x, axis=0), max(x, axis=0), min(x, axis=0), mean(x, axis=0), prod(x, axis=0)


@kernel
def red_axis_neg(x: f64[a, b, c]):
    return sum(x, axis=-1), max(x, axis=-1), min(x, axis=-2), mean(x, axis=-1), prod(x, axis=1)


@kernel
def red_axis_tuple(x: f64[a, b, c]):
    return sum(x, axis=(0, 2)), max(x, axis=(1, 2)), min(x, axis=(0, -1)), mean(x, axis=(0, 1)), prod(x, axis=(0, 1, 2))


@kernel
def red_int(x: i64[n, m]) -> (i64, i64[m], i64, f64, i64):
    return sum(x), sum(x, axis=0), max(x), mean(x), prod(x)


@kernel
def red_f32(x: f32[n]) -> (f32, f32, f32):
    return sum(x), mean(x), max(x)


@kernel
def red_bool(x: f64[n]) -> i64:
    return sum(x > 0.0)


@kernel
def red_fused(x: f64[n], y: f64[n]) -> f64:
    return sum(x * y + 1.0)


def _reds(x, axis):
    return (x.sum(axis=axis), x.max(axis=axis), x.min(axis=axis), x.mean(axis=axis), x.prod(axis=axis))


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))
def test_reductions(a, b, c):
    x = rand(a, b, c)
    g = red_all(x)
    for gi, wi in zip(g, _reds(x, None)):
        assert np.ndim(gi) == 0
        np.testing.assert_allclose(gi, wi, rtol=1e-12)
    for gi, wi in zip(red_axis0(x), _reds(x, 0)):
        np.testing.assert_allclose(gi, wi, rtol=1e-12)
    want = (x.sum(axis=-1), x.max(axis=-1), x.min(axis=-2), x.mean(axis=-1), x.prod(axis=1))
    for gi, wi in zip(red_axis_neg(x), want):
        assert gi.shape == wi.shape
        np.testing.assert_allclose(gi, wi, rtol=1e-12)
    want = (x.sum(axis=(0, 2)), x.max(axis=(1, 2)), x.min(axis=(0, 2)), x.mean(axis=(0, 1)), x.prod())
    for gi, wi in zip(red_axis_tuple(x), want):
        assert np.shape(gi) == np.shape(wi)
        np.testing.assert_allclose(gi, wi, rtol=1e-12)


def test_reductions_int_f32_bool():
    xi = rng.integers(-4, 5, (3, 4))
    s, s0, mx, mn, p = red_int(xi)
    assert s == xi.sum() and isinstance(s, np.int64)
    np.testing.assert_array_equal(s0, xi.sum(axis=0))
    assert mx == xi.max() and p == xi.prod()
    assert mn == pytest.approx(xi.mean(), rel=1e-14) and isinstance(mn, np.float64)
    x = rand(100).astype(np.float32)
    s, m, mx = red_f32(x)
    assert isinstance(s, np.float32) and isinstance(m, np.float32) and isinstance(mx, np.float32)
    np.testing.assert_allclose([s, m, mx], [x.sum(dtype=np.float64), x.mean(dtype=np.float64), x.max()], rtol=1e-5, atol=1e-5)
    x = rand(9)
    assert red_bool(x) == (x > 0).sum()
    y = rand(9)
    assert red_fused(x, y) == pytest.approx((x * y + 1.0).sum(), rel=1e-12)


def test_reductions_empty():
    x = np.zeros((0, 3, 2))
    with pytest.raises(ValueError):
        red_all(x)                 # max of an empty array has no identity (as in NumPy)
    with pytest.raises(ValueError):
        red_axis0(x)
    y = np.zeros((2, 3, 0))
    with pytest.raises(ValueError):
        red_axis_neg(y)
    s, mx, mn, mean_, p = red_axis0(np.zeros((2, 0, 3)))
    assert s.shape == mx.shape == mn.shape == mean_.shape == p.shape == (0, 3)
    assert red_fused(np.zeros(0), np.zeros(0)) == 0.0


@kernel
def red_sum_prod_empty(x: f64[n]) -> (f64, f64, f64):
    return sum(x), prod(x), mean(x)


def test_sum_prod_mean_of_empty():
    s, p, m = red_sum_prod_empty(np.zeros(0))
    assert s == 0.0 and p == 1.0 and np.isnan(m)


# ---- constructors ---------------------------------------------------------------------------------------
@kernel
def ctors(x: f64[n]) -> (f64[n], f64[n], f64[n], f64[n], f64[n, 3]):
    return zeros(n), ones(n), full(n, 2.5), zeros_like(x), ones((n, 3))


@kernel
def ctors_f32(x: f32[n]):
    return zeros(n), ones((2, n)), full(n, 7), zeros_like(x)


@kernel
def ctors_dtype(n: i64):
    return zeros(n, dtype=i64), ones((n, 2), dtype=f32), full(n, 3, dtype=i32), zeros(n, dtype=bool), full(n, 1.5, dtype=f64)


@kernel
def ctors_like_dtype(x: f32[n, m]):
    return zeros_like(x, dtype=i32), zeros_like(x, dtype=f64)


@kernel
def ctors_no_float_params(n: i64):
    return zeros(n), full((2, n), 0.25)


def test_constructors():
    for n in (0, 1, 5):
        x = rand(n)
        a, b, c, d, e = ctors(x)
        for g, w in zip((a, b, c, d, e), (np.zeros(n), np.ones(n), np.full(n, 2.5), np.zeros_like(x), np.ones((n, 3)))):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
        x32 = x.astype(np.float32)
        gs = ctors_f32(x32)
        for g, shape in zip(gs, [(n,), (2, n), (n,), (n,)]):
            assert g.dtype == np.float32 and g.shape == shape
        np.testing.assert_array_equal(gs[2], np.full(n, 7.0))
        gs = ctors_dtype(n)
        for g, w in zip(gs, (np.zeros(n, np.int64), np.ones((n, 2), np.float32), np.full(n, 3, np.int32),
                             np.zeros(n, bool), np.full(n, 1.5))):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
        a, b = ctors_like_dtype(np.ones((n, 2), np.float32))
        assert a.dtype == np.int32 and b.dtype == np.float64 and a.shape == b.shape == (n, 2)
        a, b = ctors_no_float_params(n)
        assert a.dtype == np.float64 and b.dtype == np.float64
        np.testing.assert_array_equal(b, np.full((2, n), 0.25))


@kernel
def red_identity_axes(x: f64[a, b, c]):
    return sum(x, axis=(0, 2)), prod(x, axis=1), mean(x, axis=-1), sum(x, axis=(-3, -2, -1))


@SETTINGS
@given(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)))
def test_sum_prod_mean_axes_with_empty_extents(shape):
    x = rng.standard_normal(shape)
    got = red_identity_axes(x)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # mean of an empty slice is nan
        want = (x.sum(axis=(0, 2)), x.prod(axis=1), x.mean(axis=-1), x.sum())
    for g, w in zip(got, want):
        assert np.shape(g) == np.shape(w)
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


# ---- shapes that follow integer arguments, slices of slices, slice stores -------------------------------------
@kernel
def n_and_dim(n: i64, x: f64[n]) -> f64:
    return sum(x) * n


@kernel
def out_from_int(x: f64[n], k: i64):
    return x[k:], zeros(k + 1)


@kernel
def slice_of_slice(x: f64[n], a: i64):
    y = x[a:]
    return y[1:-1]


@kernel
def upper_ones(n: i64) -> f64[n, n]:
    A = zeros((n, n))
    for i in range(n):
        A[i, i:] = 1.0
    return A


@kernel
def store_len_mismatch(n: i64) -> f64[n]:
    y = zeros(n)
    y[2:5] = ones(3)
    return y


@kernel
def prefix_sums(x: f64[n]) -> f64:
    s = 0.0
    for i in range(n):
        s += sum(x[:i])
    return s


def test_int_arguments_in_shapes():
    assert n_and_dim(3, np.ones(3)) == 9.0
    with pytest.raises(ValueError) as ei:
        n_and_dim(4, np.ones(3))                 # the dim 'n' and the argument n disagree
    assert "'n'" in str(ei.value)
    for k in (0, 2, 7):
        a, z = out_from_int(np.arange(5.0), k)
        np.testing.assert_array_equal(a, np.arange(5.0)[k:])
        assert z.shape == (k + 1,)
    with pytest.raises(ValueError):
        out_from_int(np.arange(5.0), -2)         # zeros(-1)
    for a in range(-8, 8):
        x = np.arange(6.0)
        np.testing.assert_array_equal(slice_of_slice(x, a), x[a:][1:-1])
    np.testing.assert_array_equal(upper_ones(4), np.triu(np.ones((4, 4))))
    want = np.zeros(6)
    want[2:5] = 1.0
    np.testing.assert_array_equal(store_len_mismatch(6), want)
    with pytest.raises(ValueError):
        store_len_mismatch(3)                    # y[2:5] has extent 1 when n == 3
    x = rng.standard_normal(7)
    assert prefix_sums(x) == pytest.approx(sum(x[:i].sum() for i in range(7)), rel=1e-12)
