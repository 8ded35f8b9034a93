"""dslc quickstart: three kernels, each checked against NumPy.

Run:  python3 examples/quickstart.py      (exits non-zero if a result disagrees)
"""
from __future__ import annotations   # lets dims be written bare: f32[n, k]

import sys

import numpy as np

from dsl import kernel


# 1. Logistic regression predictions (the model of JAX's autodiff guide).
@kernel
def predict(W: f32[k], b: f32, inputs: f32[n, k]) -> f32[n]:
    return sigmoid(inputs @ W + b)


# 2. A `for` loop with a run-time trip count (n is bound from x's shape).
@kernel
def chain_energy(x: f64[n]) -> f64:
    s = 0.0
    for i in range(n - 1):
        d = x[i + 1] - x[i]
        s += d * d
    return s


# 3. A `while` loop: Newton's iteration for sqrt(a), elementwise, until it stops moving.
@kernel
def newton_sqrt(a: f64[n]) -> f64[n]:
    y = (a + 1.0) * 0.5
    step = 1.0
    it = 0
    while step > 1e-15 and it < 100:
        y_next = 0.5 * (y + a / y)
        step = max(abs(y_next - y) / y_next)
        y = y_next
        it += 1
    return y


def check(name, got, want, rtol):
    ok = np.allclose(got, want, rtol=rtol, atol=0.0)
    print(f"{name:13s} dslc  {np.array2string(np.asarray(got), precision=6)}")
    print(f"{'':13s} numpy {np.array2string(np.asarray(want), precision=6)}   {'ok' if ok else 'MISMATCH'}")
    return ok


def main():
    rng = np.random.default_rng(0)
    W = rng.standard_normal(3).astype(np.float32)
    b = np.float32(rng.standard_normal())
    inputs = np.array([[0.52, 1.12, 0.77],          # the guide's toy dataset
                       [0.88, -1.08, 0.15],
                       [0.52, 0.06, -1.30],
                       [0.74, -2.49, 1.39]], dtype=np.float32)
    x = rng.standard_normal(10)
    a = np.array([0.25, 2.0, 9.0, 1e6])

    results = [
        check("predict", predict(W, b, inputs), 1 / (1 + np.exp(-(inputs @ W + b))), rtol=1e-6),
        check("chain_energy", chain_energy(x), np.sum(np.diff(x) ** 2), rtol=1e-12),
        check("newton_sqrt", newton_sqrt(a), np.sqrt(a), rtol=1e-14),
    ]
    if not all(results):
        sys.exit("quickstart: a result differs from NumPy")
    print("all results match NumPy")


if __name__ == "__main__":
    main()
