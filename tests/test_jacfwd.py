"""SPEC section 5, `jacfwd`: full Jacobians by vector-mode forward differentiation (all basis tangents
in one pass), shape out.shape + in.shape. Oracles: closed forms and float64 central finite
differences; "vector mode equals W separate JVPs" compares against `f.jvp` with unit tangents."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dsl import jacfwd, jvp, kernel

SETTINGS = settings(max_examples=10, deadline=None)
rng = np.random.default_rng(77)


def rand(*shape, dtype=np.float64, lo=-1.5, hi=1.5):
    return rng.uniform(lo, hi, shape).astype(dtype)


def fd_jacobian(f, args, k, eps=1e-6):
    """float64 central-difference Jacobian(s) of f w.r.t. args[k]: a list, one per output."""
    x = np.asarray(args[k], np.float64)
    if x.size == 0:
        return [np.zeros(np.shape(v) + x.shape) for v in as_list(f(*args))]
    cols = []
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = eps
        e = e.reshape(x.shape)

        def at(h):
            a = list(args)
            a[k] = float(x + h) if x.ndim == 0 else x + h
            r = f(*a)
            return [np.asarray(v, np.float64) for v in (r if isinstance(r, tuple) else (r,))]
        cols.append([(p - m) / (2 * eps) for p, m in zip(at(e), at(-e))])
    outs = []
    for o in range(len(cols[0])):
        stacked = np.stack([c[o] for c in cols], axis=-1)            # out.shape + (size,)
        outs.append(stacked.reshape(stacked.shape[:-1] + x.shape))
    return outs


def jvp_columns(f, args, k):
    """The Jacobian(s) assembled from one `f.jvp` call per unit tangent of args[k]."""
    floats = [j for j, a in enumerate(args) if np.asarray(a).dtype.kind == "f"]
    x = np.asarray(args[k])
    if x.size == 0:
        return [np.zeros(np.shape(v) + x.shape) for v in as_list(f(*args))]
    cols = []
    for j in range(x.size):
        ts = []
        for p in floats:
            t = np.zeros_like(np.asarray(args[p]))
            if p == k:
                t.flat[j] = 1
            ts.append(float(t) if np.ndim(args[p]) == 0 else t)
        out = f.jvp(*args, *ts)
        cols.append([np.asarray(v) for v in out[len(out) // 2:]])
    res = []
    for o in range(len(cols[0])):
        stacked = np.stack([c[o] for c in cols], axis=-1)
        res.append(stacked.reshape(stacked.shape[:-1] + x.shape))
    return res


def as_list(r):
    return list(r) if isinstance(r, tuple) else [r]


# ---- the JAX guide's predict ----------------------------------------------------------------------
@kernel
def predict(W: f64[k], b: f64, inputs: f64[n, k]) -> f64[n]:
    return sigmoid(inputs @ W + b)


@kernel
def predict32(W: f32[k], b: f32, inputs: f32[n, k]) -> f32[n]:
    return sigmoid(inputs @ W + b)


INPUTS = np.array([[0.52, 1.12, 0.77],
                   [0.88, -1.08, 0.15],
                   [0.52, 0.06, -1.30],
                   [0.74, -2.49, 1.39]])


def _s(W, b, inputs):
    return 1 / (1 + np.exp(-(inputs @ W + b)))


def test_predict_jacobian_wrt_W_closed_form():
    W, b = np.array([0.3, -0.8, 1.1]), 0.25
    J = jacfwd(predict)(W, b, INPUTS)
    s = _s(W, b, INPUTS)
    assert J.shape == (4, 3)
    np.testing.assert_allclose(J, (s * (1 - s))[:, None] * INPUTS, rtol=1e-13)
    np.testing.assert_allclose(J, fd_jacobian(predict, (W, b, INPUTS), 0)[0], rtol=1e-7, atol=1e-9)
    J32 = jacfwd(predict32)(W.astype(np.float32), np.float32(b), INPUTS.astype(np.float32))
    assert J32.dtype == np.float32
    np.testing.assert_allclose(J32, (s * (1 - s))[:, None] * INPUTS, rtol=2e-5, atol=1e-6)


def test_predict_jacobian_wrt_scalar_b_and_inputs():
    W, b = np.array([0.3, -0.8, 1.1]), 0.25
    s = _s(W, b, INPUTS)
    Jb = jacfwd(predict, 1)(W, b, INPUTS)
    assert Jb.shape == (4,)
    np.testing.assert_allclose(Jb, s * (1 - s), rtol=1e-13)
    # w.r.t. the rank-2 `inputs`: d s_i / d inputs_jk = delta_ij s_i (1 - s_i) W_k
    Ji = jacfwd(predict, 2)(W, b, INPUTS)
    assert Ji.shape == (4, 4, 3)
    want = np.einsum("ij,i,k->ijk", np.eye(4), s * (1 - s), W)
    np.testing.assert_allclose(Ji, want, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(Ji, fd_jacobian(predict, (W, b, INPUTS), 2)[0], rtol=1e-7, atol=1e-9)


def test_argnums_tuple():
    W, b = np.array([0.3, -0.8, 1.1]), 0.25
    s = _s(W, b, INPUTS)
    out = jacfwd(predict, (0, 1))(W, b, INPUTS)
    assert isinstance(out, tuple) and len(out) == 2
    np.testing.assert_allclose(out[0], (s * (1 - s))[:, None] * INPUTS, rtol=1e-13)
    np.testing.assert_allclose(out[1], s * (1 - s), rtol=1e-13)
    one = jacfwd(predict, (1,))(W, b, INPUTS)          # a tuple argnums returns a tuple
    assert isinstance(one, tuple) and len(one) == 1
    neg = jacfwd(predict, -1)(W, b, INPUTS)            # negative argnums count from the end
    assert neg.shape == (4, 4, 3)


def test_argnums_errors():
    with pytest.raises(ValueError, match="twice"):
        jacfwd(predict, (0, 0))
    with pytest.raises(ValueError, match="twice"):
        jacfwd(predict, (1, 2, 1))


@kernel
def with_int(x: f64[n], k: i64) -> f64[n]:
    return x * f64(k)


def test_jacfwd_wrt_integer_parameter_is_an_error():
    with pytest.raises(TypeError, match="integer parameter 'k'"):
        jacfwd(with_int, 1)(rand(3), 2)
    np.testing.assert_allclose(jacfwd(with_int, 0)(rand(3), 2), 2 * np.eye(3))


# ---- elementwise functions give diagonal Jacobians -----------------------------------------------
@kernel
def ew_vec(x: f64[n]) -> f64[n]:
    return sin(x) * exp(x) + x ** 3


@kernel
def ew_vec32(x: f32[n]) -> f32[n]:
    return tanh(x) * x


@SETTINGS
@given(st.integers(0, 6))
def test_elementwise_jacobian_is_diagonal(n):
    x = rand(n)
    J = jacfwd(ew_vec)(x)
    assert J.shape == (n, n)
    d = np.cos(x) * np.exp(x) + np.sin(x) * np.exp(x) + 3 * x ** 2
    np.testing.assert_allclose(J, np.diag(d), rtol=1e-13, atol=0)
    x32 = x.astype(np.float32)
    J32 = jacfwd(ew_vec32)(x32)
    x64 = x32.astype(np.float64)
    np.testing.assert_allclose(J32, np.diag(np.tanh(x64) + x64 * (1 - np.tanh(x64) ** 2)), rtol=1e-5, atol=1e-6)


# ---- vector mode equals W separate JVPs -----------------------------------------------------------
@kernel
def mixed(A: f64[m, k], B: f64[k, n], u: f64[k], v: f64[m], s: f64) -> (f64[m, n], f64[m], f64[n], f64, f64[k, m], f64[n]):
    As = A * s
    return (As @ B, As @ u, v @ As, (u * s) @ (u * s), (A.T * s) * 2.0,
            (v * s) @ A @ (B * s))


@SETTINGS
@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3))
def test_batched_matmul_forms(m, k, n):
    args = (rand(m, k), rand(k, n), rand(k), rand(m), 0.7)
    for argnum in range(5):
        got = as_list(jacfwd(mixed, argnum)(*args))
        for g, want, cols in zip(got, fd_jacobian(mixed, args, argnum), jvp_columns(mixed, args, argnum)):
            assert g.shape == want.shape
            np.testing.assert_allclose(g, want, rtol=1e-7, atol=1e-8)
            np.testing.assert_allclose(g, cols, rtol=1e-13, atol=1e-13)


@kernel
def program(x: f64[n], w: f64[n, 2], c: f64[n, 1], r: f64[1, 2], a: f64, steps: i64) -> (f64[n], f64, f64[n, 2], f64[2]):
    y = zeros(n)
    acc = 0.0
    for i in range(n):
        y[i] = x[i] * a + acc
        acc += sin(y[i])
    t = 0
    z = a
    while t < steps and z < 50.0:
        z = z * 1.5 + acc * 0.1
        t += 1
    if acc > 0.0:
        q = y * z
    elif acc > -1.0:
        q = exp(y) - z
    else:
        q = y
    P = w * c + r * a
    P[0, :] = P[0, :] * x[0]
    red = max(P, axis=0) + prod(P, axis=0) + mean(w, axis=0) * min(x)
    return where(q > 0.0, q, q * q), sum(q) * z + dot(x, x), P, red


@settings(max_examples=6, deadline=None)
@given(st.integers(1, 5), st.integers(0, 6), st.data())
def test_vector_mode_equals_separate_jvps(n, steps, data):
    seed = data.draw(st.integers(0, 2 ** 16))
    g = np.random.default_rng(seed)
    args = (g.uniform(-1, 1, n), g.uniform(-1, 1, (n, 2)), g.uniform(-1, 1, (n, 1)),
            g.uniform(-1, 1, (1, 2)), float(g.uniform(0.5, 1.5)), steps)
    for argnum in range(5):
        got = as_list(jacfwd(program, argnum)(*args))
        x = np.asarray(args[argnum])
        for o, (gj, cols, want) in enumerate(zip(got, jvp_columns(program, args, argnum),
                                                  fd_jacobian(program, args, argnum))):
            out_shape = np.shape(program(*args)[o])
            assert gj.shape == out_shape + x.shape
            np.testing.assert_allclose(gj, cols, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(gj, want, rtol=1e-6, atol=1e-6)


@kernel
def indexed(A: f64[m, n], i: i64, j: i64) -> (f64, f64[n], f64[m], f64[:, :], f64[m, n]):
    B = A * 1.0
    B[i, j] = A[j, i] * A[i, j]
    B[j, :] += A[i, :] * 2.0
    B[i, 1:] = A[j, 0]               # a scalar stored into a slice: its tangent is broadcast
    return A[i, j] * A[j, i] + A[-1, 0], A[i, :] * A[j, :], A[:, j], A[1:, j:], B


@SETTINGS
@given(st.integers(2, 4), st.integers(0, 1), st.integers(0, 1))
def test_indexing_in_vector_mode(n, i, j):
    args = (rand(n, n + 1), i, 1 - j if i == j else j)
    got = jacfwd(indexed, 0)(*args)
    for g, want, cols in zip(got, fd_jacobian(indexed, args, 0), jvp_columns(indexed, args, 0)):
        np.testing.assert_allclose(g, want, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(g, cols, rtol=1e-14, atol=1e-14)


# ---- rank-2 inputs (reshape), composition --------------------------------------------------------
@kernel
def matfun(A: f64[m, n], B: f64[n, m]) -> (f64[m, m], f64, f64[n, m]):
    return A @ B, sum(A * A) + prod(B), A.T * 3.0


def test_jacobian_wrt_rank2_inputs():
    A, B = rand(2, 3), rand(3, 2)
    JA = jacfwd(matfun, 0)(A, B)
    assert [j.shape for j in JA] == [(2, 2, 2, 3), (2, 3), (3, 2, 2, 3)]
    np.testing.assert_allclose(JA[0], np.einsum("ik,lj->ijkl", np.eye(2), B), atol=1e-15)
    np.testing.assert_allclose(JA[1], 2 * A, rtol=1e-15)
    np.testing.assert_allclose(JA[2], 3.0 * np.einsum("il,jk->ijkl", np.eye(3), np.eye(2)))
    JB = jacfwd(matfun, 1)(A, B)
    np.testing.assert_allclose(JB[0], np.einsum("ik,jl->ijkl", A, np.eye(2)), atol=1e-15)
    np.testing.assert_allclose(JB[1], np.prod(B) / B, rtol=1e-13)
    for got, want in zip(JB, fd_jacobian(matfun, (A, B), 1)):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


@kernel
def tensor3(T: f64[a, b, c], s: f64) -> (f64[a, c], f64):
    return sum(T * T, axis=1) * s, sum(T ** 3)


def test_jacobian_wrt_rank3_input_and_hessian_of_a_matrix_function():
    T = rand(2, 3, 2)
    J, g = jacfwd(tensor3, 0)(T, 0.5)
    assert J.shape == (2, 2, 2, 3, 2) and g.shape == (2, 3, 2)
    want = np.einsum("ik,jl,kml->ijkml", np.eye(2), np.eye(2), 2 * T * 0.5)
    np.testing.assert_allclose(J, want, rtol=1e-14)
    np.testing.assert_allclose(g, 3 * T ** 2, rtol=1e-14)
    for got, fd in zip((J, g), fd_jacobian(tensor3, (T, 0.5), 0)):
        np.testing.assert_allclose(got, fd, rtol=1e-7, atol=1e-9)
    # the reshape's own JVP, in vector mode (jacfwd of jacfwd) and single-tangent mode (jvp of jacfwd)
    A = rand(2, 3)
    H = jacfwd(jacfwd(cube_sum))(A)
    assert H.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(H, np.diag(6 * A.ravel()).reshape(2, 3, 2, 3), rtol=1e-14)
    V, TB = rand(2, 3), rand(3, 2)
    _, dJ = jvp(jacfwd(matfun, 0), (A, rand(3, 2)), (V, TB))
    np.testing.assert_allclose(dJ[0], np.einsum("ik,lj->ijkl", np.eye(2), TB), atol=1e-15)
    np.testing.assert_allclose(dJ[1], 2 * V, rtol=1e-14)       # d/dt of the gradient 2A along V
    assert np.all(dJ[2] == 0)
    # vector mode over a product that is already batched: the Jacobian of the Jacobian of A @ B
    H = jacfwd(jacfwd(matfun, 0), 1)(A, rand(3, 2))[0]
    assert H.shape == (2, 2, 2, 3, 3, 2)
    np.testing.assert_allclose(H, np.einsum("ik,lp,jq->ijklpq", np.eye(2), np.eye(3), np.eye(2)), atol=1e-15)


@kernel
def sq_products(A: f64[m, k], B: f64[k, n], u: f64[k]) -> (f64[m, n], f64[m], f64[n], f64[n, m]):
    S = A * A
    return S @ B, S @ u, u @ (B * B), (B * B).T @ S.T


@pytest.mark.parametrize("inner,outer", [(0, 0), (1, 0)])
def test_second_derivatives_through_batched_products(inner, outer):
    # the inner jacfwd makes batched matmuls (lhs- and rhs-batched); the outer one differentiates
    # them in vector mode, where a term can be batched on both sides
    args = (rand(2, 3), rand(3, 2), rand(3))
    G = jacfwd(sq_products, inner)
    got = jacfwd(G, outer)(*args)
    for g, want in zip(got, fd_jacobian(G, args, outer)):
        np.testing.assert_allclose(g, want, rtol=1e-7, atol=1e-8)


@kernel
def cube_sum(A: f64[m, n]) -> f64:
    return sum(A ** 3)


@kernel
def cubic(x: f64[n]) -> f64:
    return sum(x ** 3) + x[0] * x[1]


@kernel
def p35(x: f64) -> f64:
    return x ** 3.5


def test_jacfwd_composes():
    x = rand(3)
    H = jacfwd(jacfwd(cubic))(x)
    want = np.diag(6 * x)
    want[0, 1] = want[1, 0] = 1.0
    np.testing.assert_allclose(H, want, rtol=1e-14)
    # jacfwd of a jvp kernel: d/dx of (x**3.5, 3.5 x**2.5 t)
    J = jacfwd(p35.jvp)(1.1, 1.0)
    assert J[0] == pytest.approx(3.5 * 1.1 ** 2.5, rel=1e-14)
    assert J[1] == pytest.approx(3.5 * 2.5 * 1.1 ** 1.5, rel=1e-14)
    assert jacfwd(p35)(1.1) == pytest.approx(3.5 * 1.1 ** 2.5, rel=1e-14)


def test_chunked_jacfwd_equals_one_pass_and_closed_form():
    from dsl import jacfwd as _jacfwd

    @kernel
    def mixer(x: f64[n], A: f64[m, n]) -> f64[m]:
        return tanh(A @ x) * sum(x * x)
    rng = np.random.default_rng(11)
    x, A = rng.standard_normal(13), rng.standard_normal((5, 13))
    y = np.tanh(A @ x)
    ref = ((1 - y ** 2)[:, None] * A) * np.sum(x * x) + np.outer(y, 2 * x)
    for chunk in (None, 1, 4, 13, 100):
        np.testing.assert_allclose(_jacfwd(mixer, chunk_size=chunk)(x, A), ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        _jacfwd(mixer, chunk_size=0)
