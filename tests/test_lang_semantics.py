"""Array value semantics (SPEC section 4, as in JAX): stores never affect other names bound to the
old value, through slices, loops, branches and parameters; checked against NumPy copies."""
from __future__ import annotations

import numpy as np

from dsl import kernel

rng = np.random.default_rng(0)


def chk(name, got, want):
    assert len(got) == len(want), name
    for g, w in zip(got, want):
        assert np.shape(g) == np.shape(w), name
        np.testing.assert_allclose(g, w, rtol=1e-12, err_msg=name)


@kernel
def shift_overlap(x: f64[n]) -> f64[n]:
    y = x * 1.0
    y[1:] = y[:-1]
    return y

@kernel
def shift_overlap2(x: f64[n]) -> f64[n]:
    y = x * 1.0
    y[:-1] = y[1:] + 0.0
    return y

@kernel
def alias_param(x: f64[n]) -> (f64[n], f64[n]):
    y = x
    y[0] = 5.0
    return y, x

@kernel
def swap_loop(x: f64[n], k: i64) -> (f64[n], f64[n]):
    a = x * 1.0
    b = x * 2.0
    for i in range(k):
        a, b = b, a
    return a, b

@kernel
def prefix(x: f64[n]) -> f64[n]:
    y = x * 1.0
    for i in range(1, n):
        y[i] = y[i - 1] + x[i]
    return y

@kernel
def ret_twice(x: f64[n]) -> (f64[n], f64[n], f64[n]):
    y = x + 1.0
    return y, y, x

@kernel
def red_slices(A: f64[m, n]) -> (f64[n], f64[m], f64):
    return sum(A[1:, :], axis=0), max(A.T, axis=0), sum(A.T @ A)

@kernel
def bcast_store(A: f64[m, n], v: f64[n]) -> f64[m, n]:
    B = A * 1.0
    for i in range(m):
        B[i, :] = v
    B[0, :] = 3.0
    return B

@kernel
def mean_int_axis(x: i64[m, n]) -> f64[n]:
    return mean(x, axis=0)

@kernel
def while_arr(x: f64[n]) -> f64[n]:
    y = x * 1.0
    while sum(y) > 1.0:
        y = y * 0.5
    return y

@kernel
def update_then_read(x: f64[n]) -> (f64, f64[n]):
    y = x * 1.0
    z = y + 1.0
    y[0] = 100.0
    return sum(z), y

@kernel
def carry_read_after(x: f64[n]) -> (f64[n], f64[n]):
    y = x * 1.0
    old = y
    for i in range(n):
        y[i] = 0.0
    return y, old

@kernel
def if_alias(x: f64[n], c: bool) -> (f64[n], f64[n]):
    y = x * 1.0
    z = y
    if c:
        y[0] = -1.0
    return y, z

@kernel
def lazy_then_store(x: f64[n]) -> f64[n]:
    y = zeros(n)
    t = x * 2.0
    y[:] = t
    y[0] = t[1] if n > 1 else 0.0
    return y

@kernel
def where_scalar(c: bool, x: f64[n]) -> f64[n]:
    return where(c, x, 0.0)

@kernel
def mm_T(A: f64[m, n], B: f64[m, k]) -> f64[n, k]:
    return A.T @ B

@kernel
def loop_keep_old(x: f64[n], k: i64) -> (f64[n], f64[n]):
    y = x * 1.0
    prev = x * 0.0
    for t in range(k):
        prev = y
        y[t % n] = y[t % n] + 1.0
    return y, prev

@kernel
def loop_two_same(x: f64[n], k: i64) -> (f64[n], f64[n]):
    a = x * 1.0
    b = x * 1.0
    for t in range(k):
        a = b
        b[0] = b[0] + 1.0
    return a, b

@kernel
def loop_both_same(x: f64[n], k: i64) -> (f64[n], f64[n]):
    a = x * 1.0
    b = a
    for t in range(k):
        a[0] = a[0] + 1.0
        b = a
    return a, b

@kernel
def if_swap(x: f64[n], c: bool) -> (f64[n], f64[n]):
    a = x * 1.0
    b = x * 2.0
    if c:
        a, b = b, a
        a[0] = 99.0
    return a, b

@kernel
def if_same_both(x: f64[n], c: bool) -> (f64[n], f64[n]):
    a = x * 1.0
    b = x * 2.0
    if c:
        b = a
    else:
        a = b
    a[0] = 7.0
    return a, b

@kernel
def while_stores(x: f64[n]) -> f64[n]:
    y = x * 1.0
    i = 0
    while i < n:
        y[i] = y[i] * y[i]
        i += 2
    return y

@kernel
def nested_carry(A: f64[m, n]) -> f64[m, n]:
    B = A * 1.0
    for i in range(m):
        row = B[i, :]
        for j in range(1, n):
            row[j] = row[j] + row[j - 1]
        B[i, :] = row
    return B

@kernel
def init_from_param_loop(x: f64[n], k: i64) -> f64[n]:
    y = x
    for t in range(k):
        y = y + 1.0
    return y

@kernel
def param_carry_store(x: f64[n], k: i64) -> (f64[n], f64[n]):
    y = x
    for t in range(k):
        y[0] = y[0] + 1.0
    return y, x


def test_stores_and_aliasing():
    x = rng.standard_normal(5)
    y = x.copy(); y[1:] = x[:-1]; chk("shift_overlap", [shift_overlap(x)], [y])
    y = x.copy(); y[:-1] = x[1:]; chk("shift_overlap2", [shift_overlap2(x)], [y])
    y = x.copy(); y[0] = 5; chk("alias_param", alias_param(x), [y, x])
    for k in (0, 1, 2, 3):
        a, b = x, 2 * x
        for _ in range(k): a, b = b, a
        chk(f"swap_loop{k}", swap_loop(x, k), [a, b])
    chk("prefix", [prefix(x)], [np.cumsum(x)])
    chk("ret_twice", ret_twice(x), [x + 1, x + 1, x])
    A = rng.standard_normal((3, 4))
    chk("red_slices", red_slices(A), [A[1:].sum(0), A.T.max(0), (A.T @ A).sum()])
    v = rng.standard_normal(4)
    B = np.tile(v, (3, 1)); B[0] = 3.0; chk("bcast_store", [bcast_store(A, v)], [B])
    Ai = rng.integers(0, 9, (3, 4)); chk("mean_int_axis", [mean_int_axis(Ai)], [Ai.mean(0)])
    xx = np.abs(x) + 1
    y = xx.copy()
    while y.sum() > 1: y = y * 0.5
    chk("while_arr", [while_arr(xx)], [y])
    y = x.copy(); y[0] = 100; chk("update_then_read", update_then_read(x), [(x + 1).sum(), y])
    chk("carry_read_after", carry_read_after(x), [np.zeros(5), x])
    y = x.copy(); y[0] = -1; chk("if_alias T", if_alias(x, True), [y, x])
    chk("if_alias F", if_alias(x, False), [x, x])
    y = 2 * x; y[0] = 2 * x[1]; chk("lazy_then_store", [lazy_then_store(x)], [y])
    chk("where_scalar", [where_scalar(True, x), where_scalar(False, x)], [x, 0 * x])
    B2 = rng.standard_normal((3, 2)); chk("mm_T", [mm_T(A, B2)], [A.T @ B2])


def test_aliasing_through_loops_and_branches():
    x = rng.standard_normal(4)
    for k in (0, 1, 3):
        y = x.copy(); prev = x * 0
        for t in range(k):
            prev = y.copy(); y[t % 4] += 1
        chk(f"loop_keep_old{k}", loop_keep_old(x, k), [y, prev])
        a = x.copy(); b = x.copy()
        for t in range(k):
            a = b.copy(); b[0] += 1
        chk(f"loop_two_same{k}", loop_two_same(x, k), [a, b])
        a = x.copy(); b = a.copy()
        for t in range(k):
            a[0] += 1; b = a.copy()
        chk(f"loop_both_same{k}", loop_both_same(x, k), [a, b])
        y = x.copy()
        for t in range(k): y = y + 1
        chk(f"init_from_param_loop{k}", [init_from_param_loop(x, k)], [y])
        y = x.copy(); y[0] += k
        chk(f"param_carry_store{k}", param_carry_store(x, k), [y, x])
    a, b = 2 * x, x.copy(); a[0] = 99; chk("if_swapT", if_swap(x, True), [a, b])
    chk("if_swapF", if_swap(x, False), [x, 2 * x])
    a = x.copy(); b = x.copy(); a[0] = 7; chk("if_same_bothT", if_same_both(x, True), [a, b])
    a = 2 * x; b = 2 * x; a[0] = 7; chk("if_same_bothF", if_same_both(x, False), [a, b])
    y = x.copy(); y[::2] **= 2; chk("while_stores", [while_stores(x)], [y])
    A = rng.standard_normal((3, 4)); chk("nested_carry", [nested_carry(A)], [np.cumsum(A, axis=1)])
