"""Reverse mode through for / while / if, stores in loops, higher order, jacrev / hessian / hvp,
and the O(sqrt(T)) memory of checkpointed loops. Oracles: float64 central differences and
closed forms."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from dsl import grad, hessian, hvp, jacfwd, jacrev, kernel, value_and_grad, vjp
from dsl.testing import check_grads, check_vjp


def fd(f, x, eps=1e-6):
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


@kernel
def squares(x: f64[n]) -> f64:
    s = 0.0
    for i in range(n):
        s += x[i] * x[i]
    return s


@kernel
def chain_energy(x: f64[n]) -> f64:
    s = 0.0
    for i in range(n - 1):
        d = x[i + 1] - x[i]
        s += d * d
    return s


@kernel
def backwards_stride(x: f64[n]) -> f64:
    s = 1.0
    for i in range(n - 1, -1, -2):
        s = s * cos(x[i]) + x[i]
    return s


@kernel
def euler(x0: f64[d], A: f64[d, d], h: f64, steps: i64) -> f64:
    x = x0
    for t in range(steps):
        x = x + h * (-x + tanh(A @ x))
    return sum(x * x)


@kernel
def prefix_product(x: f64[n]) -> f64:
    y = x * 1.0
    for i in range(1, n):
        y[i] += y[i - 1] * x[i]
    return sum(sin(y))


@kernel
def overwrite_then_read(x: f64[n]) -> f64:
    y = zeros(n)
    s = 0.0
    for i in range(n):
        y[i] = x[i] * 2.0
        s += y[i] * y[(i + 1) % n]
        y[i] = sin(x[i])           # overwrites a value that was read above
    return s + sum(y * x)


@kernel
def newton_sqrt(a: f64) -> f64:
    x = a
    k = 0
    while k < 6 and x > 0.0:
        x = 0.5 * (x + a / x)
        k += 1
    return x


@kernel
def data_dependent_while(x: f64[n], lim: f64) -> f64:
    s = 0.0
    i = 0
    while i < n and s < lim:
        s += exp(x[i])
        i += 1
    return s * x[0]


@kernel
def branch_per_element(x: f64[n]) -> f64:
    s = 0.0
    for i in range(n):
        if x[i] > 0.0:
            s += x[i] ** 2
        elif x[i] > -0.5:
            s -= sin(x[i])
        else:
            s += 3.0 * x[i]
    return s


@kernel
def nested_loops(A: f64[m, n]) -> f64:
    s = 0.0
    for i in range(m):
        r = 0.0
        for j in range(n):
            r = r * 0.5 + A[i, j] ** 2
        s += tanh(r)
    return s


@kernel
def branch_outside(x: f64[n], c: f64) -> f64:
    if c > 0.0:
        y = sum(x * x) * c
    else:
        y = sum(sin(x))
    return y


def test_loops_with_zero_one_and_many_steps():
    rng = np.random.default_rng(0)
    d = 4
    x0, A = rng.standard_normal(d), rng.standard_normal((d, d)) / 3
    for steps in (0, 1, 2, 37, 101):
        g = grad(euler)(x0, A, 0.1, steps)
        np.testing.assert_allclose(g, fd(lambda z: euler(z, A, 0.1, steps), x0), rtol=1e-6, atol=1e-8)
    gA = grad(euler, argnums=1)(x0, A, 0.1, 20)
    np.testing.assert_allclose(gA, fd(lambda z: euler(x0, z, 0.1, 20), A), rtol=1e-6, atol=1e-8)
    gh = grad(euler, argnums=2)(x0, A, 0.1, 20)
    np.testing.assert_allclose(gh, fd(lambda z: euler(x0, A, float(z), 20), 0.1), rtol=1e-6)


def _loop_carries(text):
    """The carried types of every `for` in the simplified IR text of a kernel."""
    body = text.split("// after simplification")[-1]
    return [line.split("{types=")[1].split("}")[0] for line in body.splitlines() if "= for(" in line]


def test_a_tape_only_another_argument_needs_is_dropped():
    """grad with respect to x0 alone: the reverse sweep's refill keeps the tape of tanh' (which
    the x0 gradient reads) but not the tape of states (only A's gradient would read it)."""
    rng = np.random.default_rng(3)
    d = 5
    x0, A = rng.standard_normal(d), rng.standard_normal((d, d)) / 3
    only_x0, both = grad(euler), grad(euler, argnums=(0, 1))
    carries_x0 = _loop_carries(only_x0.lower(x0, A, 0.1, 9).ir())
    carries_both = _loop_carries(both.lower(x0, A, 0.1, 9).ir())
    # distinct tapes carried by a loop (the walk over segments carries each twice: one buffer
    # refilled while the other is walked)
    widest = lambda cs: max(len(set(re.findall(r"f64\[\?\d+", c))) for c in cs)
    assert widest(carries_x0) == 1 and widest(carries_both) == 2, (carries_x0, carries_both)
    np.testing.assert_allclose(only_x0(x0, A, 0.1, 9), fd(lambda z: euler(z, A, 0.1, 9), x0),
                               rtol=1e-6, atol=1e-8)
    gx, gA = both(x0, A, 0.1, 9)
    np.testing.assert_allclose(gA, fd(lambda z: euler(x0, z, 0.1, 9), A), rtol=1e-6, atol=1e-8)


@kernel
def euler_squared(x0: f64[d], A: f64[d, d], h: f64, steps: i64) -> f64:
    x = x0
    for t in range(steps):
        x = x + h * tanh(A @ (x * x))
    return sum(x * x)


@kernel
def euler_two_products(x0: f64[d], A: f64[d, d], h: f64, steps: i64) -> f64:
    x = x0
    for t in range(steps):
        x = x + h * (tanh(A @ x) - A @ (x * 0.5))
    return sum(x)


@pytest.mark.parametrize("k", [euler, euler_squared, euler_two_products])
@pytest.mark.parametrize("steps", [0, 1, 2, 37, 101])
def test_matrix_gradient_through_a_loop_of_products(k, steps):
    """The gradient of a matrix used as `A @ v` in a loop: each checkpoint segment's outer
    products u v^T are summed by one product U^T V after the segment's walk (U and V one row per
    step; V is the state tape itself when v is the state); two products of A in a step add
    two outer products and keep the per-step accumulation."""
    rng = np.random.default_rng(steps)
    d = 5
    x0, A = rng.standard_normal(d) * 0.5, rng.standard_normal((d, d)) / 3
    gx, gA = grad(k, argnums=(0, 1))(x0, A, 0.1, steps)
    np.testing.assert_allclose(gA, fd(lambda z: k(x0, z, 0.1, steps), A), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gx, fd(lambda z: k(z, A, 0.1, steps), x0), rtol=1e-6, atol=1e-8)


def test_segment_outer_products_become_one_matrix_product():
    x0, A = np.ones(3), np.eye(3)
    text = grad(euler, argnums=1).lower(x0, A, 0.1, 9).ir().split("// after simplification")[-1]
    walk = text.split("^region0(%qr.")[1].split("yield(")[0]
    assert "f64[d, d]" not in walk.split("\n")[0], walk          # the walk carries no d x d sum
    assert "transpose(" in text.split("^region0(%qr.")[1]


@kernel
def dead_and_live_carries(x: f64[n], steps: i64) -> f64[n]:
    y = x
    junk = x
    feeds = x
    for t in range(steps):
        junk = junk * 2.0 + y            # result unused, feeds nothing else: dropped
        y = 0.5 * y + 0.1 * feeds
        feeds = feeds + 1.0              # result unused but read by y: kept
    return y


def test_dead_loop_carries_go_and_live_ones_stay():
    carries = _loop_carries(dead_and_live_carries.lower(np.zeros(3), 4).ir())
    assert carries == ["(f64[n], f64[n])"], carries
    x = np.random.default_rng(4).standard_normal(3)
    y, feeds = x.copy(), x.copy()
    for _ in range(4):
        y, feeds = 0.5 * y + 0.1 * feeds, feeds + 1.0
    np.testing.assert_allclose(dead_and_live_carries(x, 4), y, rtol=1e-15)


@pytest.mark.parametrize("k", [squares, chain_energy, backwards_stride, prefix_product,
                               overwrite_then_read, branch_per_element])
@pytest.mark.parametrize("n", [1, 2, 9])
def test_loop_kernels_against_finite_differences(k, n):
    x = np.random.default_rng(n).standard_normal(n)
    np.testing.assert_allclose(grad(k)(x), fd(k, x), rtol=1e-6, atol=1e-8)


def test_empty_loop_gives_zero_gradient():
    np.testing.assert_array_equal(grad(squares)(np.zeros(0)), np.zeros(0))


def test_while_loops():
    assert abs(grad(newton_sqrt)(2.0) - 0.5 / np.sqrt(2.0)) < 1e-12
    x = np.random.default_rng(1).standard_normal(6) * 0.3
    for lim in (0.5, 2.5, 100.0):      # 1 trip, a few, all of them
        g = grad(data_dependent_while)(x, lim)
        np.testing.assert_allclose(g, fd(lambda z: data_dependent_while(z, lim), x), rtol=1e-6, atol=1e-8)


def test_nested_loops_and_branches():
    A = np.random.default_rng(2).standard_normal((3, 4))
    np.testing.assert_allclose(grad(nested_loops)(A), fd(nested_loops, A), rtol=1e-6, atol=1e-8)
    x = np.random.default_rng(3).standard_normal(5)
    for c in (1.5, -1.0):
        np.testing.assert_allclose(grad(branch_outside)(x, c), fd(lambda z: branch_outside(z, c), x),
                                   rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(grad(branch_outside, argnums=1)(x, c),
                                   fd(lambda z: branch_outside(x, float(z)), c), rtol=1e-6, atol=1e-8)


def test_vjp_dot_product_and_check_grads_on_loops():
    x = np.random.default_rng(4).standard_normal(7)
    for k in (prefix_product, branch_per_element, chain_energy):
        check_vjp(k, (x,))
        check_grads(k, (x,), modes=("fwd", "rev"), order=2)


def test_second_order_through_a_loop():
    @kernel
    def poly_loop(x: f64) -> f64:
        s = x
        for i in range(3):
            s = s * x + sin(s)
        return s
    e = 1e-5
    g2 = grad(grad(poly_loop))(0.3)
    ref = (grad(poly_loop)(0.3 + e) - grad(poly_loop)(0.3 - e)) / (2 * e)
    assert abs(g2 - ref) < 1e-6 * max(1, abs(ref))


def test_third_order_closed_form():
    @kernel
    def s3(x: f64) -> f64:
        return sin(x) * x ** 3
    x = 0.7
    ref = -np.cos(x) * x ** 3 - 9 * np.sin(x) * x ** 2 + 18 * np.cos(x) * x + 6 * np.sin(x)
    assert abs(grad(grad(grad(s3)))(x) - ref) < 1e-10


@kernel
def predict(W: f64[k], b: f64, inputs: f64[n, k]) -> f64[n]:
    return sigmoid(inputs @ W + b)


@kernel
def sumtanh2(X: f64[m, n]) -> f64:
    return sum(tanh(X) ** 2)


def test_jacrev_predict_closed_form():
    rng = np.random.default_rng(5)
    W, b, X = rng.standard_normal(3), 0.3, rng.standard_normal((4, 3))
    s = 1 / (1 + np.exp(-(X @ W + b)))
    np.testing.assert_allclose(jacrev(predict)(W, b, X), (s * (1 - s))[:, None] * X, rtol=1e-12)
    np.testing.assert_allclose(jacrev(predict, argnums=1)(W, b, X), s * (1 - s), rtol=1e-12)


def test_hessian_and_hvp_of_sum_tanh_squared():
    # JAX guide: hvp(f, (X,), (V,)) == tensordot(hessian(f)(X), V, 2)
    rng = np.random.default_rng(6)
    X, V = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    t = np.tanh(X)
    d2 = 2 * (1 - t ** 2) ** 2 - 4 * t ** 2 * (1 - t ** 2)
    H = hessian(sumtanh2)(X)
    assert H.shape == (3, 4, 3, 4)
    np.testing.assert_allclose(H.reshape(12, 12), np.diag(d2.ravel()), atol=1e-12)
    hv = hvp(sumtanh2, (X,), (V,))
    np.testing.assert_allclose(hv, np.tensordot(H, V, 2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hv, d2 * V, rtol=1e-10, atol=1e-12)


def test_tf_forward_over_backward_hvp():
    @kernel
    def cube(v: f64[n]) -> f64:
        return sum(v ** 3)
    np.testing.assert_allclose(hvp(cube, (np.array([1.0, 2.0]),), (np.array([1.0, 0.0]),)), [6.0, 0.0])


def test_unconnected_none_and_zero():
    @kernel
    def only_x(x: f64[n], y: f64[n]) -> f64:
        return sum(x * x)
    x, y = np.ones(3), np.ones(3)
    gx, gy = grad(only_x, argnums=(0, 1), unconnected="none")(x, y)
    np.testing.assert_array_equal(gx, 2 * x)
    assert gy is None
    gx, gy = grad(only_x, argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(gy, np.zeros(3))


def test_tuple_argnums_return_tuples():
    x = np.random.default_rng(7).standard_normal(4)
    (g,) = grad(squares, argnums=(0,))(x)
    np.testing.assert_allclose(g, 2 * x)
    v, (g,) = value_and_grad(squares, argnums=(0,))(x)
    np.testing.assert_allclose(v, np.sum(x * x))
    out, pb = vjp(squares, x)
    np.testing.assert_allclose(pb(1.0)[0], 2 * x)


def test_jacrev_matches_jacfwd_through_a_loop():
    @kernel
    def cumulative(x: f64[n]) -> f64[n]:
        y = x * 1.0
        for i in range(1, n):
            y[i] = y[i - 1] * cos(x[i]) + y[i]
        return y
    x = np.random.default_rng(8).standard_normal(5)
    np.testing.assert_allclose(jacrev(cumulative)(x), jacfwd(cumulative)(x), rtol=1e-12, atol=1e-14)


def test_jacrev_of_grad_through_a_loop():
    """Reverse over reverse: the outer, vector-mode sweep slices the inner sweep's tapes of
    cotangents (a slice's extents were probed with batched zeros: a type error)."""
    rng = np.random.default_rng(4)
    d = 4
    x0, A = rng.standard_normal(d), rng.standard_normal((d, d)) / 2
    gx = grad(euler)
    H = jacrev(gx)(x0, A, 0.1, 30)
    cols = [(gx(x0 + e, A, 0.1, 30) - gx(x0 - e, A, 0.1, 30)) / 2e-6 for e in np.eye(d) * 1e-6]
    np.testing.assert_allclose(H, np.stack(cols, axis=1), rtol=1e-5, atol=1e-7)


_MEMORY_PROBE = textwrap.dedent('''
    from __future__ import annotations
    import resource, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from dsl import grad, kernel

    @kernel
    def damped(x0: f64[d], h: f64, steps: i64) -> f64:
        x = x0
        for t in range(steps):
            x = x + h * (x * x - x)
        return sum(x)

    g = grad(damped)
    x0 = np.full(256, 0.5)
    g(x0, 0.001, 10)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    g(x0, 0.001, int(sys.argv[1]))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
''')


def test_reverse_loop_memory_grows_like_sqrt_T(tmp_path):
    """Storing every step of 200,000 steps of a 256-float state would take 400 MiB; the
    checkpointed reverse loop keeps ~3 sqrt(T) states (one per segment, and the tapes of the
    segment being walked and of the one being refilled: ~2.7 MiB)."""
    script = tmp_path / "probe.py"
    script.write_text(_MEMORY_PROBE.format(root=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    grow = {}
    for steps in (2_000, 200_000):
        out = subprocess.run([sys.executable, str(script), str(steps)], capture_output=True, text=True,
                             timeout=300, env=dict(os.environ))
        assert out.returncode == 0, out.stderr
        grow[steps] = int(out.stdout.strip().splitlines()[-1]) / 1024      # MiB
    all_states_mib = 200_000 * 256 * 8 / 2 ** 20
    assert grow[200_000] < 40, (grow, all_states_mib)


def test_reverse_over_forward_through_a_rank2_reshape():
    @kernel
    def sumsq(X: f64[m, n]) -> f64:
        return sum(X * X * X)
    X = np.random.default_rng(9).standard_normal((2, 3))
    H = jacrev(jacfwd(sumsq))(X)            # jacfwd of a matrix input ends in a reshape
    assert H.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(H.reshape(6, 6), np.diag(6 * X.ravel()), atol=1e-12)
    np.testing.assert_allclose(hessian(sumsq)(X).reshape(6, 6), np.diag(6 * X.ravel()), atol=1e-12)


@kernel
def _scaled_mv(W: f64[m, k], x: f64[k], s: f64) -> f64:
    return sum(tanh((W * s) @ x))


@kernel
def _scaled_mm_left(W: f64[m, k], X: f64[k, n], s: f64) -> f64:
    return sum(tanh((W * s) @ X) ** 2)


@kernel
def _scaled_mm_right(W: f64[m, k], X: f64[k, n], s: f64) -> f64:
    return sum(tanh(W @ (X * s)) ** 2)


@pytest.mark.parametrize("f", [_scaled_mv, _scaled_mm_left, _scaled_mm_right])
@pytest.mark.parametrize("argnum", [0, 1])
def test_reverse_over_vector_mode_forward_through_batched_products(f, argnum):
    # jacfwd along s pushes a (1-wide) batch of tangents: its products are batched matmuls,
    # whose transposes the gradient needs
    rng = np.random.default_rng(10)
    args = [rng.standard_normal((2, 3)), rng.standard_normal(3) if f is _scaled_mv else rng.standard_normal((3, 4)), 0.7]
    d = jacfwd(f, argnums=2)
    g = grad(d, argnums=argnum)(*args)
    np.testing.assert_allclose(g, fd(lambda z: d(*[z if i == argnum else a for i, a in enumerate(args)]), args[argnum]),
                               rtol=1e-6, atol=1e-8)


def test_unsupported_combination_is_a_located_error():
    from dsl import UnsupportedError
    rng = np.random.default_rng(11)
    with pytest.raises(UnsupportedError, match="use jacfwd"):
        jacrev(jacfwd(_scaled_mm_left, argnums=0), argnums=1)(rng.standard_normal((2, 3)),
                                                              rng.standard_normal((3, 4)), 0.7)


@kernel
def unchanged_carry(M: f64[n, n], x: f64[n], steps: i64) -> f64[n, n]:
    y = x
    for t in range(steps):
        y = y * 0.5
        M = M                            # yielded unchanged: the loop does not carry it
    return M + y[0]


def test_a_carry_yielded_unchanged_is_not_carried():
    assert _loop_carries(unchanged_carry.lower(np.eye(2), np.ones(2), 3).ir()) == ["(f64[n],)"]
    M, x = np.arange(9.0).reshape(3, 3), np.array([2.0, 1.0, 0.0])
    np.testing.assert_allclose(unchanged_carry(M, x, 3), M + 2.0 * 0.5 ** 3, rtol=1e-15)
    np.testing.assert_allclose(unchanged_carry(M, x, 0), M + 2.0, rtol=1e-15)


@kernel
def mse(x: f64[n, k], w: f64[k, o], y: f64[n, o]) -> f64:
    return mean((x @ w - y) ** 2)


def test_a_power_kept_only_for_its_shape_is_dropped():
    """The reverse pass reads only the extents of `r ** 2`; simplification takes them from `r`'s
    own operand, so `r ** 2` is not computed and `r` fuses into its one real user."""
    rng = np.random.default_rng(5)
    x, w, y = rng.standard_normal((6, 3)), rng.standard_normal((3, 2)), rng.standard_normal((6, 2))
    g = grad(mse, argnums=1)
    text = g.lower(x, w, y).ir().split("// after simplification")[-1]
    assert text.count("pow(") == 1, text
    np.testing.assert_allclose(g(x, w, y), fd(lambda z: mse(x, z, y), w), rtol=1e-6, atol=1e-8)


@kernel
def broadcast_means(a: f64[m], b: f64[n, m], c: f64[1, m], s: f64) -> (f64, f64, f64, f64[m]):
    return mean(a + b), mean(c * b), mean(s * b - a), mean(b / (c + 3.0), axis=0)


@pytest.mark.parametrize("n,m", [(1, 1), (1, 4), (5, 1), (3, 7), (0, 2)])
def test_extents_of_broadcast_results(n, m):
    """`mean` divides by the extents of an elementwise result, which simplification takes from
    the operand that sets each axis (not a broadcast one)."""
    rng = np.random.default_rng(n * 10 + m)
    a, b, c = rng.standard_normal(m), rng.standard_normal((n, m)), rng.standard_normal((1, m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # NumPy: mean of an empty array
        want = [np.mean(a + b), np.mean(c * b), np.mean(2.5 * b - a), np.mean(b / (c + 3.0), axis=0)]
    got = broadcast_means(a, b, c, 2.5)
    for g_, w_ in zip(got, want):
        np.testing.assert_allclose(g_, w_, rtol=1e-12, atol=1e-12, equal_nan=True)


@kernel
def extent_of_a_mismatched_sum(x: f64[n, a], y: f64[n, b]) -> i64:
    z = x + y
    return z.shape[0]


def test_extent_query_keeps_the_shape_check():
    """`z.shape[0]` alone does not drop `x + y`'s run-time check of the other axis."""
    assert extent_of_a_mismatched_sum(np.ones((2, 3)), np.ones((2, 3))) == 2
    with pytest.raises(ValueError, match="could not be broadcast"):
        extent_of_a_mismatched_sum(np.ones((2, 3)), np.ones((2, 4)))
