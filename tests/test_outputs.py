"""Returned arrays computed straight into the caller's output buffers (no buffer of their own and no
copy at the return), and the extent check that must come before anything is written there."""
from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dsl import cli, kernel

SETTINGS = settings(max_examples=25, deadline=None)
ALLOC = re.compile(r"call .*@\"?(malloc|aligned_alloc)\"?\(")


def rand(*shape, seed=0):
    return np.random.default_rng(seed + 7 * len(shape)).standard_normal(shape)


@kernel
def prod(a: f64[m, k], b: f64[k, n]) -> f64[m, n]:
    return a @ b


@kernel
def prod_twice(a: f64[m, k], b: f64[k, n]) -> (f64[m, n], f64[m, n], f64[n, m], f64):
    c = a @ b
    return c, c, c.T, sum(c)


@kernel
def prod_then_read(a: f64[m, k], b: f64[k, n]) -> (f64[m, n], f64):
    c = a @ b
    s = 0.0
    for i in range(m):
        s += c[i, 0] * 2.0
    return c, s


@kernel
def materialised_and_product(x: f64[m, k], w: f64[k, n]) -> (f64[m, k], f64[m, n]):
    y = tanh(x) * 2.0                 # read by the product and returned: materialised once
    return y, y @ w


@kernel
def axis_sums(x: f64[m, n]) -> (f64[n], f64[m]):
    return sum(x, axis=0), sum(x * x, axis=1)


@kernel
def loop_result(a: f64[m, m], x: f64[m], t: i64) -> (f64[m], f64[m]):
    y = a @ x
    for s in range(t):
        y = a @ y * 0.5
    return y, a @ x


@SETTINGS
@given(st.integers(0, 5), st.integers(0, 5), st.integers(1, 5), st.integers(0, 3))
def test_returned_values_computed_in_their_output_buffers(m, k, n, t):
    a, b = rand(m, k), rand(k, n, seed=1)
    np.testing.assert_allclose(prod(a, b), a @ b, rtol=1e-12, atol=1e-12)
    c = a @ b
    c1, c2, ct, s = prod_twice(a, b)
    for got, want in ((c1, c), (c2, c), (ct, c.T)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert s == pytest.approx(c.sum(), rel=1e-12, abs=1e-12)
    c1[...] = 0.0                      # the returned arrays are separate buffers
    np.testing.assert_allclose(c2, c, rtol=1e-12, atol=1e-12)
    if m:
        got, s = prod_then_read(a, b)
        np.testing.assert_allclose(got, c, rtol=1e-12, atol=1e-12)
        assert s == pytest.approx(2.0 * c[:, 0].sum(), rel=1e-12, abs=1e-12)
    y, p = materialised_and_product(a, b)
    np.testing.assert_allclose(y, np.tanh(a) * 2.0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p, (np.tanh(a) * 2.0) @ b, rtol=1e-12, atol=1e-12)
    s0, s1 = axis_sums(a)
    np.testing.assert_allclose(s0, a.sum(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s1, (a * a).sum(axis=1), rtol=1e-12, atol=1e-12)
    sq, x = rand(m, m, seed=2) / 3.0, rand(m, seed=3)
    y = sq @ x
    want = y.copy()
    for _ in range(t):
        want = sq @ want * 0.5
    got, first = loop_result(sq, x, t)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(first, y, rtol=1e-12, atol=1e-12)


def test_a_returned_product_allocates_no_buffer():
    a, b = rand(3, 4), rand(4, 5)
    assert not ALLOC.findall(prod.lower(a, b).llvm(optimized=False))
    # returned twice: the second output is a copy of the first, still with no buffer of its own
    assert not ALLOC.findall(prod_twice.lower(a, b).llvm(optimized=False))


def test_output_extents_are_checked_before_anything_is_written(tmp_path):
    """Through the C ABI (where the caller passes the output's extents): a too-small output buffer
    is a nonzero status, and the product is not written into it (nor past it)."""
    src = tmp_path / "outs.dsl"
    src.write_text("def prod(a: f64[m, k], b: f64[k, n]) -> f64[m, n]:\n    return a @ b\n")
    assert cli.main([str(src), "-o", str(tmp_path / "b"), "-q"]) == 0
    lib = ctypes.CDLL(str(tmp_path / "b" / "libouts.so"))
    f = lib.prod
    i64, dp = ctypes.c_int64, ctypes.POINTER(ctypes.c_double)
    f.argtypes = [dp, i64, i64, dp, i64, i64, dp, i64, i64, ctypes.POINTER(i64)]
    f.restype = ctypes.c_int32
    a, b = np.ascontiguousarray(rand(6, 4)), np.ascontiguousarray(rand(4, 5, seed=1))
    p = lambda x: x.ctypes.data_as(dp)
    for om, on in ((6, 4), (5, 5), (6, 6), (0, 0)):
        out = np.full(64, 7.0)
        err = (i64 * 4)()
        st_ = f(p(a), 6, 4, p(b), 4, 5, p(out), om, on, err)
        assert st_ != 0, (om, on)
        assert (out == 7.0).all(), (om, on)
    out = np.full((6, 5), 7.0)
    assert f(p(a), 6, 4, p(b), 4, 5, p(out), 6, 5, (i64 * 4)()) == 0
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
