"""Matrix-vector products sharing their matrix run in one pass over it (analysis.matvec_group):
results against NumPy for every row-block remainder, transposed views, and groups that cannot
form (a vector computed after the first product). Vector-matrix products (x @ A, the reverse
sweep's product) run as explicit SIMD column blocks (FunctionCodegen._vecmat): every block and
tail size against NumPy in float64."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.codegen.analysis import Analysis
from dsl import jvp, kernel


@kernel
def two(A: f64[m, n], x: f64[n], y: f64[n]) -> (f64[m], f64[m]):
    return A @ x, A @ y


@kernel
def three_t(A: f64[n, m], x: f64[n], y: f64[n], z: f64[n]) -> f64[m]:
    return A.T @ x + 2.0 * (A.T @ y) - A.T @ z


@kernel
def chained(A: f64[n, n], x: f64[n]) -> f64[n]:
    y = A @ x
    return A @ tanh(y) + y          # the second vector needs the first product: no group


@kernel
def euler(x0: f32[d], A: f32[d, d], h: f32, steps: i64) -> f32[d]:
    x = x0
    for t in range(steps):
        x = x + h * (-x + tanh(A @ x))
    return x


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 8, 9, 64, 67])
def test_grouped_products(m):
    r = np.random.default_rng(m)
    A, x, y = r.standard_normal((m, 5)), r.standard_normal(5), r.standard_normal(5)
    p, q = two(A, x, y)
    np.testing.assert_allclose(p, A @ x, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(q, A @ y, rtol=1e-13, atol=1e-13)
    B, z = r.standard_normal((5, m)), r.standard_normal(5)
    np.testing.assert_allclose(three_t(B, x, y, z), B.T @ x + 2 * (B.T @ y) - B.T @ z, rtol=1e-12, atol=1e-12)


def test_groups_form_only_when_legal():
    x = np.ones(3)
    groups = set(Analysis(_final(two, np.ones((2, 3)), x, x)).matvec_group.values())
    assert len(groups) == 1 and len(next(iter(groups))) == 2
    assert not Analysis(_final(chained, np.ones((3, 3)), x)).matvec_group
    A = np.random.default_rng(0).standard_normal((3, 3))
    np.testing.assert_allclose(chained(A, x), A @ np.tanh(A @ x) + A @ x, rtol=1e-13)


def _final(k, *args):
    """The IR code generation sees (after simplification)."""
    return k.lower(*args)._fn


def test_euler_jvp_groups_and_matches_finite_differences():
    r = np.random.default_rng(3)
    d = 11
    A = (2 * r.standard_normal((d, d)) / np.sqrt(d))
    x0, v = r.standard_normal(d), r.standard_normal(d)
    fn = _final(euler.jvp, x0.astype(np.float32), A.astype(np.float32), np.float32(0.1), 50,
                v.astype(np.float32), A.astype(np.float32), np.float32(0))
    assert any(len(g) == 2 for g in Analysis(fn).matvec_group.values())
    _, t = jvp(euler, (x0.astype(np.float32), A.astype(np.float32), np.float32(0.1), 50),
               (v.astype(np.float32), None, None))

    def f64(x):
        for _ in range(50):
            x = x + 0.1 * (-x + np.tanh(A @ x))
        return x
    eps = 1e-6
    fd = (f64(x0 + eps * v) - f64(x0 - eps * v)) / (2 * eps)
    np.testing.assert_allclose(t, fd, rtol=2e-3, atol=2e-4)


@kernel
def vecmat32(x: f32[k], A: f32[k, n]) -> f32[n]:
    return x @ A


@kernel
def vecmat64(x: f64[k], A: f64[k, n]) -> f64[n]:
    return x @ A


@kernel
def vecmat_loop(x0: f64[d], A: f64[d, d], steps: i64) -> f64[d]:
    x = x0
    for t in range(steps):
        x = tanh(x @ A)
    return x


@pytest.mark.parametrize("k", [0, 1, 2, 3, 64])
@pytest.mark.parametrize("n", [1, 7, 8, 15, 16, 17, 63, 64, 65, 100, 130, 257])
def test_vector_matrix_products(k, n):
    r = np.random.default_rng(1000 * k + n)
    x, A = r.standard_normal(k), r.standard_normal((k, n))
    want = x @ A
    np.testing.assert_allclose(vecmat64(x, A), want, rtol=1e-12, atol=1e-12)
    got32 = vecmat32(x.astype(np.float32), A.astype(np.float32))
    np.testing.assert_allclose(got32, want, rtol=1e-4, atol=1e-4 * np.sqrt(max(k, 1)))


def test_vector_matrix_products_in_a_loop():
    r = np.random.default_rng(5)
    d = 37
    x0, A = r.standard_normal(d), r.standard_normal((d, d)) / np.sqrt(d)
    want = x0
    for _ in range(20):
        want = np.tanh(want @ A)
    np.testing.assert_allclose(vecmat_loop(x0, A, 20), want, rtol=1e-12, atol=1e-12)


@kernel
def loop_products(A: f64[m, k], B: f64[k, m], x: f64[k], steps: i64) -> f64[k]:
    for t in range(steps):
        x = tanh(B @ (A @ x))
    return x


@kernel
def loop_pair(A: f32[m, k], x: f32[k], y: f32[k], steps: i64) -> (f32[m], f32[m]):
    u = A @ x
    v = A @ y
    for t in range(steps):
        u = A @ x + 0.5 * u
        v = A @ y - 0.5 * v
    return u, v


@pytest.mark.parametrize("m,k", [(1, 1), (3, 5), (17, 33), (64, 64), (70, 130), (300, 300)])
def test_loop_invariant_products_use_a_transposed_copy(m, k):
    """Inside a loop, products with a matrix defined outside every loop read a transposed copy
    made once per call (vector-matrix code); 300 x 300 is above the size limit (row blocks)."""
    r = np.random.default_rng(m * 1000 + k)
    A, B = r.standard_normal((m, k)) / np.sqrt(k), r.standard_normal((k, m)) / np.sqrt(m)
    x = r.standard_normal(k)
    want = x
    for _ in range(5):
        want = np.tanh(B @ (A @ want))
    np.testing.assert_allclose(loop_products(A, B, x, 5), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loop_products(A, B, x, 0), x, rtol=0, atol=0)
    A32, x32, y32 = (a.astype(np.float32) for a in (A, x, r.standard_normal(k)))
    u, v = A32.astype(np.float64) @ x32, A32.astype(np.float64) @ y32
    wu, wv = u, v
    for _ in range(3):
        wu, wv = u + 0.5 * wu, v - 0.5 * wv
    got = loop_pair(A32, x32, y32, 3)
    np.testing.assert_allclose(got[0], wu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], wv, rtol=1e-5, atol=1e-5)


@kernel
def loop_vecmats(A: f64[k, n], B: f64[k, n], x: f64[k], steps: i64) -> f64[k]:
    for t in range(steps):
        x = tanh((x @ A) @ B.T)
    return x


@kernel
def loop_vecmats32(A: f32[k, n], B: f32[k, n], x: f32[k], steps: i64) -> f32[k]:
    for t in range(steps):
        x = tanh((x @ A) @ B.T)
    return x


@pytest.mark.parametrize("k,n", [(1, 1), (5, 3), (33, 17), (64, 64), (64, 65), (130, 70), (300, 300)])
@pytest.mark.parametrize("offset", [0, 1, 5])
def test_loop_invariant_vector_matrix_products_use_an_aligned_copy(k, n, offset):
    """x @ A and x @ B.T inside a loop, A and B defined outside it: the products read a copy whose
    rows start on vector boundaries (B.T transposed into it), whatever the alignment of the
    caller's arrays (offset: elements into a larger buffer); 300 x 300 is above the size limit."""
    r = np.random.default_rng(k * 1000 + n + offset)
    A, B = r.standard_normal((k, n)) / np.sqrt(n), r.standard_normal((k, n)) / np.sqrt(n)
    x = r.standard_normal(k)
    want = x
    for _ in range(4):
        want = np.tanh((want @ A) @ B.T)

    def at(a, off):
        buf = np.empty(a.size + off, a.dtype)
        view = buf[off:].reshape(a.shape)
        view[...] = a
        return view
    np.testing.assert_allclose(loop_vecmats(at(A, offset), at(B, offset), x, 4), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loop_vecmats(A, B, x, 0), x, rtol=0, atol=0)
    A32, B32, x32 = (at(a.astype(np.float32), offset) for a in (A, B, x))
    np.testing.assert_allclose(loop_vecmats32(A32, B32, x32, 4), want, rtol=1e-4, atol=1e-4)


@kernel
def layer32(W: f32[k], b: f32, X: f32[n, k]) -> f32[n]:
    return sigmoid(X @ W + b)


@kernel
def layer64(W: f64[k], b: f64, X: f64[n, k]) -> f64[n]:
    return sigmoid(X @ W + b)


# 2048 x 512 = 2**20 elements: BLAS's gemv in the JIT (blas.GEMV_MIN); one row fewer: the row blocks
@pytest.mark.parametrize("n", [2048, 2047])
@pytest.mark.parametrize("k", [layer32, layer64], ids=["f32", "f64"])
def test_a_large_matrix_vector_product(k, n):
    dt = np.float32 if k is layer32 else np.float64
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 512)).astype(dt)
    W = (rng.standard_normal(512) / 16).astype(dt)
    b = dt(0.25)
    z = X.astype(np.float64) @ W.astype(np.float64) + 0.25
    want = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(k(W, b, X), want, rtol=2e-6 if dt is np.float32 else 1e-13)
    from compiler.codegen import blas
    if blas.available():
        assert ("dslc_cblas_" + ("s" if dt is np.float32 else "d") + "gemv") in k.lower(W, b, X).llvm()


@kernel
def two_products(A: f32[n, k], dA: f32[n, k], x: f32[k], y: f32[k]) -> f32[n]:
    return A @ y + dA @ x


@kernel
def vector_matrix(g: f32[n], A: f32[n, k]) -> f32[k]:
    return g @ A


def test_products_beside_other_threaded_work_keep_the_generated_loops():
    """Only a kernel's single matrix-vector product calls gemv, and a vector @ matrix product
    never calls sgemm: OpenBLAS's threads spin after a call and take the CPUs from the kernel's
    own threaded loops (docs/performance.md)."""
    rng = np.random.default_rng(5)
    A, dA = rng.standard_normal((2048, 512)).astype(np.float32), rng.standard_normal((2048, 512)).astype(np.float32)
    x, y = rng.standard_normal(512).astype(np.float32), rng.standard_normal(512).astype(np.float32)
    g = rng.standard_normal(2048).astype(np.float32)
    f64 = np.float64
    np.testing.assert_allclose(two_products(A, dA, x, y), A.astype(f64) @ y + dA.astype(f64) @ x,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(vector_matrix(g, A), g.astype(f64) @ A, rtol=1e-4, atol=1e-3)
    assert "dslc_cblas_" not in two_products.lower(A, dA, x, y).llvm()
    assert "dslc_cblas_" not in vector_matrix.lower(g, A).llvm()


@kernel
def tanh_layer_sum(X: f32[n, d], W: f32[d, h]) -> f32:
    return sum(tanh(X @ W))


@kernel
def tanh_sum(X: f32[n, d]) -> f32:
    return sum(tanh(X))


def test_a_kernel_calling_blas_leaves_the_threads_to_it():
    """OpenBLAS's threads spin after a call: a kernel that calls BLAS runs its own loop nests as
    one chunk on the calling thread (codegen/llvm.py build_module); others keep their threads."""
    from compiler.codegen import blas
    rng = np.random.default_rng(11)
    X, W = rng.standard_normal((1024, 256)).astype(np.float32), (rng.standard_normal((256, 256)) / 16).astype(np.float32)
    want = np.sum(np.tanh(X.astype(np.float64) @ W.astype(np.float64)))
    np.testing.assert_allclose(tanh_layer_sum(X, W), want, rtol=1e-4)
    np.testing.assert_allclose(tanh_sum(X), np.sum(np.tanh(X.astype(np.float64))), rtol=1e-4)
    assert "dslc.par.run" in tanh_sum.lower(X).llvm()
    text = tanh_layer_sum.lower(X, W).llvm()
    if blas.available():
        assert "dslc_cblas_sgemm" in text and "dslc.par.run" not in text
    else:
        assert "dslc.par.run" in text
