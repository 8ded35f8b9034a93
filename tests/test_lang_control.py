"""SPEC section 4, statements: assignment, tuples, stores, loops, branches, early return, kernel
calls; section 3: annotations, unannotated parameters, one compiled kernel for all extents."""
from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dsl import compile_file, compile_source, kernel

SETTINGS = settings(max_examples=25, deadline=None)
rng = np.random.default_rng(99)


# ---- tuples, unpacking, rebinding, augmented assignment --------------------------------------------
@kernel
def swap_stats(x: f64[n]) -> (f64, f64, f64[n]):
    a, b = sum(x), max(x)
    a, b = b, a
    t = (a, b)
    c, d = t
    y = x
    y = y * 2.0
    return c, d, y


@kernel
def augassign(x: f64, k: i64) -> (f64, i64, f64):
    y = x
    y += 1.0
    y -= 0.5
    y *= 3.0
    y /= 2.0
    j = k
    j += 2
    j -= 1
    j *= 5
    z = k
    z /= 2
    return y, j, z


@kernel
def augassign_arr(x: f64[n]) -> f64[n]:
    y = x * 1.0
    y += x
    y *= 2.0
    y -= 1.0
    y /= 4.0
    return y


def test_tuples_and_rebinding():
    x = rng.standard_normal(5)
    c, d, y = swap_stats(x)
    assert c == x.max() and d == pytest.approx(x.sum(), rel=1e-14)
    np.testing.assert_array_equal(y, x * 2.0)


def test_augmented_assignment():
    y, j, z = augassign(2.0, 3)
    assert y == ((2.0 + 1.0 - 0.5) * 3.0) / 2.0
    assert j == (3 + 2 - 1) * 5 and isinstance(j, np.int64)
    assert z == 1.5
    x = rng.standard_normal(6)
    np.testing.assert_allclose(augassign_arr(x), ((x * 1.0 + x) * 2.0 - 1.0) / 4.0, rtol=1e-14)


# ---- element and slice stores ------------------------------------------------------------------------
@kernel
def stores(x: f64[n]) -> f64[n]:
    y = zeros(n)
    for i in range(n):
        y[i] = x[i] * 2.0
    y[0] += 100.0
    y[-1] -= 1.0
    return y


@kernel
def stores_2d(A: f64[m, n], v: f64[n]) -> f64[m, n]:
    B = zeros((m, n))
    for i in range(m):
        B[i, :] = A[i, :] + v
    B[:, 0] = 7.0
    B[0, :] += 1.0
    return B


@kernel
def store_slice(x: f64[n], a: i64, b: i64) -> f64[n]:
    y = x * 1.0
    y[a:b] = 0.0
    return y


@kernel
def store_slice_arr(x: f64[n]) -> f64[n]:
    y = zeros(n)
    y[1:] = x[:-1]
    y[0:1] += x[-1:]
    return y


@kernel
def store_value_semantics(x: f64[n]) -> (f64[n], f64[n]):
    y = x * 1.0
    z = y
    y[0] = -1.0
    return y, z


@kernel
def store_int(n: i64) -> i64[n]:
    y = zeros(n, dtype=i64)
    for i in range(n):
        y[i] = i * i
    return y


@kernel
def store_cast(n: i64) -> f32[n]:
    y = zeros(n, dtype=f32)
    for i in range(n):
        y[i] = i
    return y


@kernel
def histogram(idx: i64[k], nbins: i64) -> i64[nbins]:
    h = zeros(nbins, dtype=i64)
    for j in range(k):
        h[idx[j]] += 1
    return h


def test_element_stores():
    for n in (1, 2, 9):
        x = rng.standard_normal(n)
        want = x * 2.0
        want[0] += 100.0
        want[-1] -= 1.0
        np.testing.assert_array_equal(stores(x), want)
    with pytest.raises(IndexError):
        stores(np.zeros(0))                     # y[0] on an empty array
    np.testing.assert_array_equal(store_int(5), np.arange(5) ** 2)
    r = store_cast(4)
    assert r.dtype == np.float32
    np.testing.assert_array_equal(r, np.arange(4))
    idx = rng.integers(0, 6, 50)
    np.testing.assert_array_equal(histogram(idx, 6), np.bincount(idx, minlength=6))
    with pytest.raises(IndexError):
        histogram(np.array([0, 6]), 6)


def test_row_and_column_stores():
    A, v = rng.standard_normal((4, 3)), rng.standard_normal(3)
    want = A + v
    want[:, 0] = 7.0
    want[0, :] += 1.0
    np.testing.assert_array_equal(stores_2d(A, v), want)


@SETTINGS
@given(st.integers(0, 10), st.integers(-12, 12), st.integers(-12, 12))
def test_slice_store_random_bounds(n, a, b):
    x = rng.standard_normal(n)
    want = x.copy()
    want[a:b] = 0.0
    np.testing.assert_array_equal(store_slice(x, a, b), want)


def test_slice_store_shifts_and_value_semantics():
    for n in (1, 2, 6):
        x = rng.standard_normal(n)
        want = np.zeros(n)
        want[1:] = x[:-1]
        want[0:1] += x[-1:]
        np.testing.assert_array_equal(store_slice_arr(x), want)
    x = rng.standard_normal(3)
    y, z = store_value_semantics(x)
    assert y[0] == -1.0
    np.testing.assert_array_equal(z, x)          # z = y; y[0] = ... leaves z unchanged
    np.testing.assert_array_equal(y[1:], x[1:])


# ---- for loops ---------------------------------------------------------------------------------------
@kernel
def loop_stop(x: f64[n]) -> f64:
    s = 0.0
    for i in range(n):
        s += x[i] * i
    return s


@kernel
def loop_start_stop(x: f64[n], a: i64) -> f64:
    s = 0.0
    for i in range(a, n):
        s += x[i]
    return s


@kernel
def loop_step(a: i64, b: i64, c: i64) -> (i64, i64):
    s = 0
    count = 0
    for i in range(a, b, c):
        s += i
        count += 1
    return s, count


@kernel
def loop_reverse(x: f64[n]) -> f64[n]:
    y = zeros(n)
    j = 0
    for i in range(n - 1, -1, -1):
        y[j] = x[i]
        j += 1
    return y


@kernel
def chain_energy(x: f64[n]) -> f64:
    s = 0.0
    for i in range(n - 1):
        d = x[i + 1] - x[i]
        s += d * d
    return s


@kernel
def nested_loops(A: f64[m, n]) -> f64[n, m]:
    T = zeros((n, m))
    for i in range(m):
        for j in range(n):
            T[j, i] = A[i, j]
    return T


@kernel
def loop_array_carry(x: f64[n], steps: i64) -> f64[n]:
    y = x * 1.0
    for t in range(steps):
        y = y * 0.5 + 1.0
    return y


@kernel
def loop_int_to_float(k: i64) -> f64:
    s = 0
    for i in range(k):
        s = s + 0.5
    return s


@kernel
def loop_var_after(n: i64) -> i64:
    last = -1
    for i in range(n):
        last = i
    return last


@SETTINGS
@given(st.integers(0, 30), st.integers(-5, 35))
def test_for_loops(n, a):
    x = rng.standard_normal(n)
    assert loop_stop(x) == pytest.approx(float(np.dot(x, np.arange(n))), rel=1e-12, abs=1e-12)
    if a >= 0:
        assert loop_start_stop(x, a) == pytest.approx(x[a:].sum(), rel=1e-12, abs=1e-12)
    np.testing.assert_array_equal(loop_reverse(x), x[::-1])
    assert chain_energy(x) == pytest.approx(float(np.sum(np.diff(x) ** 2)), rel=1e-12, abs=1e-12)
    assert loop_var_after(n) == (n - 1 if n else -1)


@SETTINGS
@given(st.integers(-20, 20), st.integers(-20, 20), st.integers(-7, 7).filter(lambda v: v != 0))
def test_range_step(a, b, c):
    r = list(range(a, b, c))
    s, count = loop_step(a, b, c)
    assert (int(s), int(count)) == (sum(r), len(r))


def test_range_zero_step():
    with pytest.raises(ValueError):
        loop_step(0, 10, 0)


def test_loop_trip_counts():
    for steps in (0, 1, 2, 50):
        x = rng.standard_normal(4)
        want = x.copy()
        for _ in range(steps):
            want = want * 0.5 + 1.0
        np.testing.assert_allclose(loop_array_carry(x, steps), want, rtol=1e-14)
    for k in (0, 1, 7):
        r = loop_int_to_float(k)
        assert r == 0.5 * k
    A = rng.standard_normal((3, 5))
    np.testing.assert_array_equal(nested_loops(A), A.T)


# ---- while ------------------------------------------------------------------------------------------------
@kernel
def collatz(n: i64) -> i64:
    steps = 0
    while n != 1:
        if n % 2 == 0:
            n = n // 2
        else:
            n = 3 * n + 1
        steps += 1
    return steps


@kernel
def newton_sqrt(a: f64) -> f64:
    x = a
    it = 0
    while abs(x * x - a) > 1e-12 * a and it < 100:
        x = 0.5 * (x + a / x)
        it += 1
    return x


@kernel
def while_zero(x: f64[n]) -> f64:
    s = 1.0
    while s > 10.0:
        s -= 1.0
    return s + sum(x)


def _collatz(n):
    k = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        k += 1
    return k


def test_while():
    for n in (1, 2, 3, 27, 97):
        assert collatz(n) == _collatz(n)
    for a in (0.25, 2.0, 1e6):
        assert newton_sqrt(a) == pytest.approx(np.sqrt(a), rel=1e-12)
    assert while_zero(np.ones(3)) == 4.0


# ---- if / elif / else, early return -------------------------------------------------------------------------
@kernel
def classify(x: f64) -> i64:
    if x < 0.0:
        r = -1
    elif x == 0.0:
        r = 0
    elif x < 10.0:
        r = 1
    else:
        r = 2
    return r


@kernel
def early_return(x: f64[n]) -> f64:
    if n == 0:
        return -1.0
    s = 0.0
    for i in range(n):
        s += x[i]
    if s > 0.0:
        return s
    elif s < -1.0:
        return -s
    return 0.0


@kernel
def early_return_tuple(x: f64, k: i64) -> (f64, i64):
    if k > 0:
        return x * k, k
    else:
        return x, 0


@kernel
def if_array(x: f64[n], flag: bool) -> f64[n]:
    y = x * 1.0
    if flag:
        y = y + 1.0
    else:
        y[0] = 5.0
    return y


@kernel
def if_in_loop(x: f64[n]) -> (f64, f64):
    pos = 0.0
    neg = 0.0
    for i in range(n):
        if x[i] > 0:
            pos += x[i]
        else:
            neg -= x[i]
    return pos, neg


@kernel
def if_no_else(x: f64) -> f64:
    y = x
    if y < 0:
        y = -y
    return y


def test_if_elif_else():
    for x, want in ((-3.0, -1), (0.0, 0), (5.0, 1), (50.0, 2)):
        assert classify(x) == want
    assert if_no_else(-2.5) == 2.5 and if_no_else(1.5) == 1.5
    x = rng.standard_normal(7)
    np.testing.assert_array_equal(if_array(x, True), x + 1.0)
    w = x.copy()
    w[0] = 5.0
    np.testing.assert_array_equal(if_array(x, False), w)
    p, n_ = if_in_loop(x)
    assert p == pytest.approx(x[x > 0].sum()) and n_ == pytest.approx(-x[x <= 0].sum())


def test_early_return():
    assert early_return(np.zeros(0)) == -1.0
    assert early_return(np.array([1.0, 2.0])) == 3.0
    assert early_return(np.array([-1.0, -2.0])) == 3.0
    assert early_return(np.array([-0.5])) == 0.0
    a, b = early_return_tuple(2.0, 3)
    assert (a, b) == (6.0, 3)
    a, b = early_return_tuple(2.0, -3)
    assert (a, b) == (2.0, 0)


# ---- kernels calling kernels ----------------------------------------------------------------------------------
@kernel
def sq_norm(v: f64[k]) -> f64:
    return sum(v * v)


@kernel
def helper_pair(a, b):
    return a + b, a - b


@kernel
def calls_kernels(A: f64[m, n]) -> (f64[m], f64[n], f64[n]):
    r = zeros(m)
    for i in range(m):
        r[i] = sq_norm(A[i, :])
    s, d = helper_pair(A[0, :], A[-1, :])
    return r, s, d


def test_kernel_calls_kernel():
    A = rng.standard_normal((4, 3))
    r, s, d = calls_kernels(A)
    np.testing.assert_allclose(r, (A * A).sum(axis=1), rtol=1e-14)
    np.testing.assert_array_equal(s, A[0] + A[-1])
    np.testing.assert_array_equal(d, A[0] - A[-1])


DSL_FILE = '''
def scale(x: f64[n], a: f64) -> f64[n]:
    return x * a

@kernel
def norm2(x: f64[n]) -> f64:
    return sqrt(sum(scale(x, 1.0) * x))

def normalise(x: f64[n]) -> f64[n]:
    return scale(x, 1.0 / norm2(x))
'''


def test_compile_file(tmp_path):
    p = tmp_path / "kernels.dsl"
    p.write_text(DSL_FILE)
    ks = compile_file(str(p))
    assert set(ks) == {"scale", "norm2", "normalise"}
    x = rng.standard_normal(5)
    np.testing.assert_allclose(ks["normalise"](x), x / np.linalg.norm(x), rtol=1e-14)
    assert ks["norm2"](x) == pytest.approx(np.linalg.norm(x), rel=1e-14)


def test_kernel_defined_inside_a_function():
    def make(c):
        @kernel
        def inner(x: f64[n]) -> f64[n]:
            return x * 3.0 + 1.0
        return inner
    k = make(3.0)
    x = rng.standard_normal(4)
    np.testing.assert_array_equal(k(x), x * 3.0 + 1.0)


# ---- unannotated parameters, one compilation for all extents, zero-length arrays --------------------------------
@kernel
def generic(x, s):
    return x * s + 1


def test_unannotated_specialised_per_dtype_and_rank():
    r = generic(np.arange(3.0), 2.0)
    assert r.dtype == np.float64
    np.testing.assert_array_equal(r, np.arange(3.0) * 2.0 + 1)
    r = generic(np.arange(3, dtype=np.float32), 2.0)
    assert r.dtype == np.float32
    r = generic(np.arange(6).reshape(2, 3), 3)
    assert r.dtype == np.int64
    np.testing.assert_array_equal(r, np.arange(6).reshape(2, 3) * 3 + 1)
    r = generic(2.0, 3.0)
    assert r == 7.0
    n = len(generic._callers)
    generic(np.arange(10.0), 1.0)            # same signature, new extent: no new compilation
    generic(np.arange(6).reshape(3, 2), 5)
    assert len(generic._callers) == n == 4


@kernel
def saxpy(a: f32, x: f32[n], y: f32[n]) -> f32[n]:
    return a * x + y


def test_one_compilation_for_extents_1_to_1e6():
    saxpy._callers.clear()
    saxpy._fixed = None
    for n in (1, 2, 3, 17, 1000, 10**6):
        x = rng.standard_normal(n).astype(np.float32)
        y = rng.standard_normal(n).astype(np.float32)
        r = saxpy(0.5, x, y)
        assert r.dtype == np.float32
        np.testing.assert_allclose(r, np.float32(0.5) * x + y, rtol=1e-6)
    assert len(saxpy._callers) == 1


@kernel
def red_max_of(x: f64[n]) -> f64:
    return max(x)


def test_zero_length_arrays():
    e = np.zeros(0)
    assert loop_stop(e) == 0.0
    np.testing.assert_array_equal(saxpy(1.0, e.astype(np.float32), e.astype(np.float32)), e)
    np.testing.assert_array_equal(nested_loops(np.zeros((0, 3))), np.zeros((3, 0)))
    with pytest.raises(IndexError):
        stores_2d(np.zeros((0, 3)), np.ones(3))     # B[0, :] on an empty B
    r, s, d = calls_kernels(np.zeros((1, 0)))
    assert r.shape == (1,) and s.shape == d.shape == (0,)
    np.testing.assert_array_equal(generic(np.zeros((0, 4)), 2.0), np.ones((0, 4)))
    np.testing.assert_array_equal(store_slice(e, 0, 5), e)
    with pytest.raises(ValueError):
        red_max_of(e)


def test_noncontiguous_input_is_copied():
    A = rng.standard_normal((6, 4))
    col = A[:, 1]
    assert not col.flags.c_contiguous
    assert sq_norm(col) == pytest.approx(float(col @ col), rel=1e-14)
    np.testing.assert_array_equal(nested_loops(A.T), A)


# ---- annotation spellings ------------------------------------------------------------------------------------------
NO_FUTURE_MODULE = textwrap.dedent('''
    import numpy as np
    from dsl import kernel, f32, f64, i64, bool_

    @kernel
    def axpy(a: f32, x: f32["n"], y: f32["n"]) -> f32["n"]:
        return a * x + y

    @kernel
    def rowsum(A: f64["m", "n"]) -> f64["m"]:
        return sum(A, axis=1)

    @kernel
    def count(k: i64) -> i64:
        return k + 1

    @kernel
    def positive(x: f64["n"], flags: bool_["n"]) -> bool_["n"]:
        return (x > 0.0) == flags
''')


def test_string_dims_without_future_import(tmp_path, monkeypatch):
    (tmp_path / "nofuture_mod.py").write_text(NO_FUTURE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    mod = importlib.import_module("nofuture_mod")
    x = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(mod.axpy(2.0, x, x), 3 * x)
    A = rng.standard_normal((3, 2))
    np.testing.assert_allclose(mod.rowsum(A), A.sum(axis=1), rtol=1e-14)
    assert mod.count(4) == 5
    np.testing.assert_array_equal(mod.positive(np.array([1.0, -1.0]), np.array([True, True])), [True, False])
    with pytest.raises(ValueError):
        mod.axpy(2.0, x, x[:3])


def test_string_dims_in_source():
    ks = compile_source('def f(x: f64["n"], y: f64[n]) -> f64["n"]:\n    return x + y\n')
    np.testing.assert_array_equal(ks["f"](np.ones(3), np.ones(3)), np.full(3, 2.0))
    with pytest.raises(ValueError) as ei:
        ks["f"](np.ones(3), np.ones(2))
    assert "'y'" in str(ei.value)


# ---- loop-carried arrays written in place (control._in_place_ok) -----------------------------
@kernel
def carry_row_broadcast(M: f64[m, n], steps: i64) -> f64[m, n]:
    for t in range(steps):
        M = M + M[0, :]               # every row reads row 0 of the old value: not in place
    return M


@kernel
def carry_transpose(M: f64[n, n], steps: i64) -> f64[n, n]:
    for t in range(steps):
        M = M.T * 2.0 + 1.0           # reads the old value elsewhere: not in place
    return M


@kernel
def carry_swap(x: f64[n], y: f64[n], steps: i64) -> (f64[n], f64[n]):
    for t in range(steps):
        x, y = y + 1.0, x * 2.0       # each new value reads the other carry
    return x, y


@kernel
def carry_chain(x: f64[n], y: f64[n], steps: i64) -> (f64[n], f64[n]):
    for t in range(steps):
        x = x + y * 0.5 - sum(x) / 100.0   # x in place; y is read by the new x
        y = tanh(y) + x
    return x, y


@kernel
def carry_while(x: f64[n], limit: f64) -> f64[n]:
    while max(x) < limit:
        x = where(x > 0.0, x * 2.0, 1.0 - x)
    return x


def test_loop_carries_written_in_place_only_when_elementwise():
    r = np.random.default_rng(3)
    M = r.standard_normal((5, 7))
    want = M.copy()
    for _ in range(3):
        want = want + want[0, :]
    np.testing.assert_allclose(carry_row_broadcast(M, 3), want, rtol=1e-14)
    S = r.standard_normal((6, 6))
    want = S.copy()
    for _ in range(3):
        want = want.T * 2.0 + 1.0
    np.testing.assert_allclose(carry_transpose(S, 3), want, rtol=1e-14)
    x, y = r.standard_normal(9), r.standard_normal(9)
    wx, wy = x.copy(), y.copy()
    for _ in range(4):
        wx, wy = wy + 1.0, wx * 2.0
    gx, gy = carry_swap(x, y, 4)
    np.testing.assert_allclose(gx, wx, rtol=1e-14)
    np.testing.assert_allclose(gy, wy, rtol=1e-14)
    wx, wy = x.copy(), y.copy()
    for _ in range(4):
        wx = wx + wy * 0.5 - np.sum(wx) / 100.0
        wy = np.tanh(wy) + wx
    gx, gy = carry_chain(x, y, 4)
    np.testing.assert_allclose(gx, wx, rtol=1e-12)
    np.testing.assert_allclose(gy, wy, rtol=1e-12)
    wx = x.copy()
    while wx.max() < 50.0:
        wx = np.where(wx > 0.0, wx * 2.0, 1.0 - wx)
    np.testing.assert_allclose(carry_while(x, 50.0), wx, rtol=1e-14)


@kernel
def carried_through_inner_loop(M: f64[n, n], x: f64[n], outer: i64, inner: i64) -> f64[n, n]:
    for s in range(outer):
        for t in range(inner):
            M = M * 0.5                  # the inner loop takes the outer carry's buffer
        M = M + x[0]                     # a new value that does not read the outer buffer
    return M


@kernel
def unchanged_through_inner_loop(M: f64[n, n], x: f64[n], outer: i64, inner: i64) -> f64[n, n]:
    for s in range(outer):
        y = x
        for t in range(inner):
            y = y * 0.5
            M = M
        M = M + y[0]
    return M


@pytest.mark.parametrize("outer,inner", [(0, 0), (1, 0), (0, 3), (1, 1), (3, 3), (4, 2)])
def test_outer_carry_moved_into_an_inner_loop(outer, inner):
    """An inner loop that carries the outer loop's array takes its buffer; the outer loop's new
    value must then go to a buffer of its own (it was written over the emptied slot: a crash)."""
    M, x = np.arange(9.0).reshape(3, 3), np.array([2.0, 1.0, 0.0])
    want, want2 = M.copy(), M.copy()
    for _ in range(outer):
        want = want * 0.5 ** inner + 2.0
        want2 = want2 + 2.0 * 0.5 ** inner
    np.testing.assert_allclose(carried_through_inner_loop(M, x, outer, inner), want, rtol=1e-15)
    np.testing.assert_allclose(unchanged_through_inner_loop(M, x, outer, inner), want2, rtol=1e-15)


@kernel
def carries_rotated(x: f64[n], steps: i64) -> (f64[n], f64[n], f64[n]):
    a, b, c = x, x * 2.0, x + 1.0
    for t in range(steps):
        a, b, c = b, c, a            # a rotation: each buffer changes slots, none is copied
    return a, b, c


@kernel
def carries_shifted(x: f64[n], steps: i64) -> (f64[n], f64[n]):
    a, b = x, x * 0.5
    for t in range(steps):
        a, b = b, tanh(a) + b        # a takes b's buffer; b's new value reads the old a and b
        b = b * 1.0                  # materialised apart from the carry
    return a, b


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 4, 7])
def test_loop_carries_that_change_places(steps):
    """A loop that yields one carried value in another's place moves its buffer there (no copy):
    every value still ends where the loop put it."""
    x = np.linspace(-1.0, 2.0, 6)
    want = [x.copy(), x * 2.0, x + 1.0]
    for _ in range(steps):
        want = [want[1], want[2], want[0]]
    for got, w in zip(carries_rotated(x, steps), want):
        np.testing.assert_array_equal(got, w)
    # no allocation site in the loop: the rotation copies nothing
    assert not re.search(r"alloc\.grow[.\d]*:", carries_rotated.lower(x, steps).llvm(optimized=False))
    a, b = x.copy(), x * 0.5
    for _ in range(steps):
        a, b = b, np.tanh(a) + b
    ga, gb = carries_shifted(x, steps)
    np.testing.assert_allclose(ga, a, rtol=1e-15)
    np.testing.assert_allclose(gb, b, rtol=1e-15)
