"""The GPU execution model (compiler/codegen/nvptx.py) on a real GPU: loop nests spread over the
grid (1-D by row, 2-D maps and reductions by element), reductions across blocks, jobs inside sequential loops, errors inside jobs, launch shapes,
and the device memory pool. Checked against NumPy (float64 where it matters). Skipped without a
GPU; the PTX of these kernels is assembled in CI by tests/test_ptx_all_kernels.py."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from compiler.codegen import nvptx
from dsl import cuda, grad, kernel

pytestmark = pytest.mark.skipif(not cuda.is_available(), reason="no CUDA GPU")

# sizes around the thresholds: below 2 * GRAIN runs in thread 0, unrolled groups of 4 rows, tails
_G2 = 2 * nvptx.GRAIN
SIZES = [1, 7, _G2 - 1, _G2, _G2 + 1, _G2 + 9, 8193, 65537, 1_000_003]


@kernel
def stats(x: f64[n]) -> (f64, f64, f64, f64[n]):
    return sum(x * x), max(x), min(exp(x)), sqrt(abs(x)) + 1.0


@kernel
def axes(A: f64[m, k]) -> (f64[m], f64[k], f64[m]):
    return sum(A, axis=1), max(A, axis=0), sum(A * A, axis=1)


@kernel
def planes(A: f32[m, k], r: f32[k], c: f32[m, 1]) -> (f32[m, k], f32, f32):
    B = exp(A * 0.5) * r + c
    return B, sum(B), max(A)


@kernel
def products(A: f64[m, k], B: f64[k, p], v: f64[k]) -> (f64[m, p], f64[m]):
    return A @ B, tanh(A @ v)


@kernel
def euler(x0: f64[d], A: f64[d, d], h: f64, steps: i64) -> f64:
    x = x0
    for t in range(steps):
        x = x + h * (-x + tanh(A @ x))
    return sum(x * x)


@kernel
def divide(a: i64[n], b: i64[n]) -> i64[n]:
    return a // b + 1


@kernel
def b1(x: f32[n]) -> f32:
    return sum(sin(x) * exp(-x * x) + tanh(x) ** 2)


@pytest.mark.parametrize("n", SIZES)
def test_maps_and_reductions_across_the_grid(n):
    x = np.random.default_rng(n).standard_normal(n)
    s, mx, mn, y = stats(cuda.to_device(x))
    np.testing.assert_allclose(s, np.sum(x * x), rtol=1e-12)
    assert mx == np.max(x) and mn == pytest.approx(np.min(np.exp(x)), rel=1e-15)
    np.testing.assert_allclose(y.get(), np.sqrt(np.abs(x)) + 1.0, rtol=1e-15)


@kernel
def squares32(x: f32[n]) -> f32:
    return sum(x * x)


@pytest.mark.parametrize("n", SIZES)
def test_float32_sums_are_accurate_across_the_grid(n):
    # a group of rows is summed in float32 before it joins the float64 total (nvptx.accumulate)
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    want = np.sum((x * x).astype(np.float64))
    assert squares32(cuda.to_device(x)) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("shape", [(3, 5), (5000, 3), (3, 70000), (700, 900)])
def test_axis_reductions(shape):
    A = np.random.default_rng(1).standard_normal(shape)
    got = axes(cuda.to_device(A))
    for g, want in zip(got, (A.sum(axis=1), A.max(axis=0), (A * A).sum(axis=1))):
        np.testing.assert_allclose(g.get(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 70000), (5000, 3), (700, 900)])
def test_two_dimensional_maps_and_reductions_split_by_element(shape):
    rng = np.random.default_rng(7)
    A = rng.standard_normal(shape).astype(np.float32)
    r = rng.standard_normal(shape[1]).astype(np.float32)
    c = rng.standard_normal((shape[0], 1)).astype(np.float32)
    B, total, top = planes(cuda.to_device(A), cuda.to_device(r), cuda.to_device(c))
    want = np.exp(A.astype(np.float64) * 0.5) * r + c
    np.testing.assert_allclose(B.get(), want, rtol=2e-6, atol=1e-5)
    assert total == pytest.approx(want.sum(), rel=1e-5, abs=1e-3)
    assert top == A.max()


def test_matrix_products():
    rng = np.random.default_rng(2)
    A, B, v = rng.standard_normal((900, 300)), rng.standard_normal((300, 70)), rng.standard_normal(300)
    C, w = products(cuda.to_device(A), cuda.to_device(B), cuda.to_device(v))
    np.testing.assert_allclose(C.get(), A @ B, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(w.get(), np.tanh(A @ v), rtol=1e-12, atol=1e-12)


def test_jobs_inside_a_sequential_loop_and_their_gradient():
    rng = np.random.default_rng(3)
    d = 600
    A, x0 = rng.standard_normal((d, d)) / np.sqrt(d), rng.standard_normal(d)

    def ref(x0, A, h, steps):
        x = x0.copy()
        for _ in range(steps):
            x = x + h * (-x + np.tanh(A @ x))
        return np.sum(x * x)
    dA, dx0 = cuda.to_device(A), cuda.to_device(x0)
    assert euler(dx0, dA, 0.05, 40) == pytest.approx(ref(x0, A, 0.05, 40), rel=1e-12)
    g = grad(euler)(dx0, dA, 0.05, 40)
    g = g[0] if isinstance(g, tuple) else g
    e = np.zeros(d)
    for k in (0, 17, 599):                  # central differences of the float64 reference
        e[:] = 0
        e[k] = 1e-6
        fd = (ref(x0 + e, A, 0.05, 40) - ref(x0 - e, A, 0.05, 40)) / 2e-6
        assert g.get()[k] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_an_error_inside_a_job_is_raised_and_the_next_call_is_clean():
    rng = np.random.default_rng(4)
    a, b = rng.integers(-1000, 1000, 200_000), rng.integers(1, 50, 200_000)
    b[123_456] = 0
    with pytest.raises(ZeroDivisionError, match="division"):
        divide(cuda.to_device(a), cuda.to_device(b))
    b[123_456] = 7
    np.testing.assert_array_equal(divide(cuda.to_device(a), cuda.to_device(b)).get(), a // b + 1)


def test_results_are_the_same_on_every_run():
    x = cuda.to_device(np.random.default_rng(5).standard_normal(3_000_001).astype(np.float32))
    first = b1(x)
    assert all(b1(x) == first for _ in range(5))
    assert first == pytest.approx(b1(x.get()), rel=1e-5)


def _raw_entry():
    x = np.random.default_rng(6).standard_normal(100_000).astype(np.float32)
    b1(cuda.to_device(x))
    (entry,) = b1.__dict__["_gpu_entries"].values()
    return entry.function, x


def _raw_args(dx, out, status):
    return [ctypes.c_void_p(dx.ptr), ctypes.c_int64(dx.shape[0]), ctypes.c_void_p(out.ptr),
            ctypes.c_void_p(status.ptr), ctypes.c_void_p(status.ptr + 8)]


def test_any_one_dimensional_launch_shape_gives_the_same_result():
    f, x = _raw_entry()
    dx, out, status = cuda.to_device(x), cuda.zeros((1,), np.float32), cuda.zeros((5,), np.int64)
    want = b1(x)
    for grid, block in [(1, 1), (1, 256), (3, 100), (40, 1024)]:
        cuda.launch(f, grid, block, _raw_args(dx, out, status))
        assert status.get()[0] == 0
        assert out.get()[0] == pytest.approx(want, rel=1e-5)


def test_unsupported_launch_shapes_return_status_minus_one():
    from compiler.codegen import nvptx
    f, x = _raw_entry()
    dx, out, status = cuda.to_device(x), cuda.zeros((1,), np.float32), cuda.zeros((5,), np.int64)
    for grid, block in [((2, 2), 32), (1, (16, 2)), (nvptx.MAX_BLOCKS + 1, 1)]:
        status.copy_to_device(np.zeros(5, np.int64))
        cuda.launch(f, grid, block, _raw_args(dx, out, status))
        assert status.get()[:1].view(np.int32)[0] == nvptx.BAD_LAUNCH


def test_big_freed_arrays_are_reused_and_released():
    a = cuda.empty((1 << 20,), np.float32)
    p = a.ptr
    del a
    b = cuda.empty((1 << 20,), np.float32)
    assert b.ptr == p
    del b
    assert cuda.release_pool() >= 4 << 20


def test_a_grid_that_cannot_gather_returns_an_error_instead_of_hanging():
    from compiler.codegen import nvptx
    f, x = _raw_entry()
    dx, out, status = cuda.to_device(x), cuda.zeros((1,), np.float32), cuda.zeros((5,), np.int64)
    # 2048 blocks of 1024 threads cannot all be resident on one GPU: a plain launch would deadlock
    # in the first grid barrier
    cuda.launch(f, nvptx.MAX_BLOCKS, 1024, _raw_args(dx, out, status))
    assert status.get()[:1].view(np.int32)[0] == nvptx.GRID_STUCK


@kernel
def scratch(x: f32[n], k: i64) -> f32:
    y = zeros(k)
    y[0] = x[0]
    return sum(y)


def test_a_temporary_larger_than_the_device_heap_is_a_memory_error():
    x = cuda.to_device(np.ones(4, np.float32))
    assert scratch(x, 1000) == 1.0
    with pytest.raises(MemoryError, match="out of memory"):
        scratch(x, 3 << 30)                   # 12 GiB: more than the malloc heap (at most 4 GiB)
    assert scratch(x, 1000) == 1.0            # and the context is still usable
