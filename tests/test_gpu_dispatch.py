"""Dispatch to the GPU (SPEC section 6). Without a GPU: clear errors, host path unaffected. With
one (the GPU tests skip here): results equal the CPU's for primal and derivative kernels."""
from __future__ import annotations

import numpy as np
import pytest

from dsl import cuda, grad, jvp, kernel
from dsl import gpu

GPU = cuda.is_available()


class FakeDeviceArray:
    """Anything exposing __cuda_array_interface__ counts as a device array."""

    def __init__(self, shape, typestr="<f4"):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (0, False),
                                         "version": 3, "strides": None}


@kernel
def energy(x: f32[n], w: f32) -> f32:
    return sum(w * x * x + sin(x))


@kernel
def axpy(a: f32, x: f32[n], y: f32[n]) -> f32[n]:
    return a * x + y


@kernel
def steps(x0: f64[d], A: f64[d, d], h: f64, k: i64) -> f64:
    x = x0
    for t in range(k):
        x = x + h * (-x + tanh(A @ x))
    return sum(x * x)


@pytest.mark.skipif(GPU, reason="checks the behaviour without a GPU")
def test_without_gpu_every_route_says_so_and_cpu_still_works():
    x = np.linspace(-1, 1, 5).astype(np.float32)
    for call in (lambda: energy(x, 2.0, target="cuda"), lambda: grad(energy)(x, 2.0, target="cuda"),
                 lambda: energy(FakeDeviceArray((5,)), 2.0), lambda: cuda.to_device(x)):
        with pytest.raises(cuda.CudaUnavailableError, match="no CUDA GPU"):
            call()
    assert np.isclose(energy(x, 2.0), np.sum(2 * x * x + np.sin(x)), rtol=1e-6)


def test_unknown_target_is_a_value_error():
    with pytest.raises(ValueError, match="unknown target"):
        energy(np.ones(3, np.float32), 1.0, target="tpu")


def test_mixed_host_and_device_inputs_are_a_type_error():
    with pytest.raises(TypeError, match="mixed host and device"):
        gpu.check_placement(axpy, (1.0, np.ones(3, np.float32), FakeDeviceArray((3,))), forced=False)
    gpu.check_placement(axpy, (1.0, np.ones(3, np.float32), FakeDeviceArray((3,))), forced=True)
    gpu.check_placement(axpy, (1.0, FakeDeviceArray((3,)), FakeDeviceArray((3,))), forced=False)


@pytest.mark.skipif(not GPU, reason="no CUDA GPU")
def test_gpu_results_equal_cpu_results():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000).astype(np.float32)
    y = rng.standard_normal(1000).astype(np.float32)
    dx, dy = cuda.to_device(x), cuda.to_device(y)
    out = axpy(2.0, dx, dy)
    assert isinstance(out, cuda.DeviceArray)
    np.testing.assert_allclose(out.get(), 2 * x + y, rtol=1e-6)
    np.testing.assert_allclose(energy(dx, 0.5), energy(x, 0.5), rtol=1e-5)
    # float32 elements near zero (-0.0033 on an H100: 6e-8 apart) need an absolute tolerance too
    np.testing.assert_allclose(grad(energy)(dx, 0.5).get(), grad(energy)(x, 0.5), rtol=1e-5, atol=1e-6)
    x0, A = rng.standard_normal(8), rng.standard_normal((8, 8)) / 3
    np.testing.assert_allclose(grad(steps)(cuda.to_device(x0), cuda.to_device(A), 0.1, 25).get(),
                               grad(steps)(x0, A, 0.1, 25), rtol=1e-10)
    np.testing.assert_allclose(energy(x, 0.5, target="cuda"), energy(x, 0.5), rtol=1e-5)
    _, t_gpu = jvp(energy, (dx, 0.5), (dy, 1.0))
    _, t_cpu = jvp(energy, (x, 0.5), (y, 1.0))
    np.testing.assert_allclose(t_gpu, t_cpu, rtol=1e-5)


@pytest.mark.skipif(not GPU, reason="no CUDA GPU")
def test_gpu_errors_are_exceptions_with_the_kernel_line():
    @kernel
    def at(x: f32[n], i: i64) -> f32:
        return x[i]
    with pytest.raises(IndexError, match="out of bounds"):
        at(cuda.to_device(np.ones(3, np.float32)), 7)
    with pytest.raises(TypeError, match="mixed host and device"):
        axpy(1.0, np.ones(3, np.float32), cuda.to_device(np.ones(3, np.float32)))
