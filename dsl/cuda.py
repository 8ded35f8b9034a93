"""GPU helpers: `from dsl import cuda`.

    cuda.is_available()        # False (never raises) without an NVIDIA driver or GPU
    x = cuda.to_device(np_array)   # a cuda.DeviceArray; x.get() / np.asarray(x) copy back
    cuda.DeviceArray.from_cuda_array_interface(cupy_or_torch_array)   # zero-copy wrapper

Device arrays (and CuPy / PyTorch / JAX arrays exposing `__cuda_array_interface__`) passed to a kernel
run it on the GPU (SPEC section 6). Without a GPU, any use raises `cuda.CudaUnavailableError` saying so.
Freed arrays of 1 MiB or more are kept for reuse (DSLC_CUDA_POOL_MB, default 2048 MiB in all);
`cuda.release_pool()` hands them back to the driver.
This module re-exports the driver runtime in `runtime.cuda` (NumPy + ctypes only).
"""
from runtime.cuda import (CudaError, CudaOutOfMemoryError, CudaUnavailableError, DeviceArray, Function,
                          Module, as_device_array, compute_capability, device_count, device_name, empty,
                          is_available, is_device_array, launch, mem_get_info, release_pool, synchronize,
                          to_device, unavailable_reason, zeros)

__all__ = ["is_available", "device_count", "unavailable_reason", "to_device", "empty", "zeros",
           "DeviceArray", "is_device_array", "as_device_array", "CudaError", "CudaUnavailableError",
           "CudaOutOfMemoryError", "synchronize", "device_name", "compute_capability", "mem_get_info",
           "Module", "Function", "launch", "release_pool"]
