"""Reverse mode (straight-line kernels) against closed forms and float64 central differences."""
from __future__ import annotations

import numpy as np
import pytest

from dsl import UnsupportedError, grad, jvp, kernel, value_and_grad, vjp


def fd_grad(f, args, k, eps=1e-6):
    x = np.array(args[k], dtype=np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        a1, a2 = list(args), list(args)
        a1[k], a2[k] = (xp if x.shape else float(xp)), (xm if x.shape else float(xm))
        g[i] = (f(*a1) - f(*a2)) / (2 * eps)
    return g


@kernel
def b1(x: f64[n]) -> f64:
    return sum(sin(x) * exp(-x * x) + tanh(x) ** 2)


@kernel
def loss(W: f64[k], b: f64, inputs: f64[n, k], y: f64[n]) -> f64:
    p = sigmoid(inputs @ W + b)
    return -sum(y * log(p) + (1 - y) * log(1 - p))


@kernel
def mixed(A: f64[m, k], B: f64[k, n], v: f64[n], s: f64) -> f64:
    C = A @ B
    w = C @ v
    z = maximum(w, 0.1) / (1 + abs(w))
    t = C.T
    return sum(z * z) + s * sum(t[1, :]) + mean(sqrt(C * C + 1.0)) + max(w) - min(v) + prod(cos(v))


@kernel
def stores(x: f64[n]) -> f64:
    y = zeros(n)
    y[0] = x[1] * x[2]
    y[1:3] = x[0:2] * 3.0
    y[2] += x[0]
    y[0] = y[0] * 2.0
    return sum(y * x) + x[-1] ** 2


@kernel
def cube(v: f64[n]) -> f64:
    return sum(v ** 3)


@kernel
def sumtanh2(X: f64[m, n]) -> f64:
    return sum(tanh(X) ** 2)


@kernel
def looped(x: f64[n]) -> f64:
    s = 0.0
    for i in range(n):
        s += x[i] * x[i]
    return s


def test_b1_grad_closed_form():
    x = np.random.default_rng(0).standard_normal(50)
    ref = (np.cos(x) * np.exp(-x * x) + np.sin(x) * np.exp(-x * x) * (-2 * x)
           + 2 * np.tanh(x) * (1 - np.tanh(x) ** 2))
    np.testing.assert_allclose(grad(b1)(x), ref, rtol=1e-12, atol=1e-14)


def test_logistic_loss_grad_closed_form_and_argnums_tuple():
    rng = np.random.default_rng(1)
    W, b, X, y = rng.standard_normal(3), 0.2, rng.standard_normal((4, 3)), np.array([1.0, 0, 1, 0])
    p = 1 / (1 + np.exp(-(X @ W + b)))
    gW, gb = grad(loss, argnums=(0, 1))(W, b, X, y)
    np.testing.assert_allclose(gW, X.T @ (p - y), rtol=1e-12)
    np.testing.assert_allclose(gb, np.sum(p - y), rtol=1e-12)
    v, (gW2, gb2) = value_and_grad(loss, argnums=(0, 1))(W, b, X, y)
    np.testing.assert_allclose(v, -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)), rtol=1e-12)
    np.testing.assert_allclose(gW2, gW)


def test_gradient_equals_forward_mode_columns():
    # TensorFlow's dense-layer example: the gradient equals the JVPs along the basis vectors
    rng = np.random.default_rng(2)
    W, b, X, y = rng.standard_normal(3), 0.1, rng.standard_normal((5, 3)), rng.random(5)
    g = grad(loss)(W, b, X, y)
    cols = [jvp(loss, (W, b, X, y), (e, 0.0, np.zeros_like(X), np.zeros_like(y)))[1] for e in np.eye(3)]
    np.testing.assert_allclose(g, cols, rtol=1e-10)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_mixed_primitives_against_finite_differences(k):
    rng = np.random.default_rng(3)
    args = [rng.standard_normal((3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5), 0.7]
    g = grad(mixed, argnums=k)(*args)
    np.testing.assert_allclose(g, fd_grad(mixed, args, k), rtol=1e-5, atol=1e-6)


def test_stores_with_overwrites_against_finite_differences():
    x = np.random.default_rng(4).standard_normal(6)
    np.testing.assert_allclose(grad(stores)(x), fd_grad(stores, [x], 0), rtol=1e-6, atol=1e-8)


def test_vjp_pullback_structure():
    rng = np.random.default_rng(5)
    W, b, X, y = rng.standard_normal(3), 0.3, rng.standard_normal((4, 3)), rng.random(4)
    out, pb = vjp(loss, W, b, X, y)
    np.testing.assert_allclose(out, loss(W, b, X, y))
    cW, cb, cX, cy = pb(2.0)
    np.testing.assert_allclose(cW, 2 * grad(loss)(W, b, X, y), rtol=1e-12)
    np.testing.assert_allclose(cX, 2 * fd_grad(loss, [W, b, X, y], 2), rtol=1e-5, atol=1e-7)


def test_tf_forward_over_backward_hvp():
    # TensorFlow: HVP of sum(v**3) at [1, 2] along [1, 0] is [6, 0]
    _, hv = jvp(grad(cube), (np.array([1.0, 2.0]),), (np.array([1.0, 0.0]),))
    np.testing.assert_allclose(hv, [6.0, 0.0])


def test_jax_hvp_of_sum_tanh_squared_against_finite_differences():
    rng = np.random.default_rng(6)
    X, V = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    _, hv = jvp(grad(sumtanh2), (X,), (V,))
    eps = 1e-5
    ref = (grad(sumtanh2)(X + eps * V) - grad(sumtanh2)(X - eps * V)) / (2 * eps)
    t = np.tanh(X)
    closed = (2 * (1 - t ** 2) ** 2 - 4 * t ** 2 * (1 - t ** 2)) * V
    np.testing.assert_allclose(hv, closed, rtol=1e-10)
    np.testing.assert_allclose(hv, ref, rtol=1e-6, atol=1e-8)


def test_grad_of_non_scalar_output_is_type_error():
    @kernel
    def vec(x: f64[n]) -> f64[n]:
        return x * 2.0
    with pytest.raises(TypeError, match="scalar"):
        grad(vec)(np.ones(3))


def test_argnums_twice_is_value_error():
    with pytest.raises(ValueError):
        grad(loss, argnums=(0, 0))




def test_lowered_ir_shows_the_stages_of_a_derivative_kernel():
    text = grad(b1).lower(np.ones(3)).ir()
    assert "// before differentiation (b1)" in text and "// after simplification" in text
    source = grad(b1).lower(np.ones(3)).ir("source")
    assert "sin(" in source and "cos(" not in source          # the primal, before the AD pass
    assert "cos(" in grad(b1).lower(np.ones(3)).ir("optimized")
