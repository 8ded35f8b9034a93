# A logistic-regression loss, compiled ahead of time by `dslc` (see README.md in this directory).
#
#   dslc kernels.dsl -o build --derive grad,vjp
#
# gives build/libkernels.so with `loss`, `loss_grad` (d loss / d w), `loss_vjp` (all cotangents),
# `predict` and `predict_vjp`, and build/kernels.h with their prototypes.

def predict(w: f64[k], b: f64, X: f64[n, k]) -> f64[n]:
    """Class-1 probabilities of the rows of X."""
    return sigmoid(X @ w + b)

def loss(w: f64[k], b: f64, X: f64[n, k], y: f64[n]) -> f64:
    """Mean logistic loss (negative log-likelihood) of labels y in {0, 1}."""
    z = X @ w + b
    return mean(log1p(exp(-abs(z))) + maximum(z, 0.0) - y * z)
