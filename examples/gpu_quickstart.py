"""A kernel and its gradient on the GPU, checked against the CPU.

    python3 examples/gpu_quickstart.py

Without an NVIDIA GPU and driver it says so and exits 0 (everything else in dslc runs on the CPU).
"""
from __future__ import annotations

import sys

import numpy as np

from dsl import cuda, grad, kernel


@kernel
def energy(x: f32[n], t: f32) -> f32:
    return sum(sin(x) * exp(-t * x * x) + tanh(x) ** 2)


def main() -> int:
    if not cuda.is_available():
        print(f"no GPU: {cuda.unavailable_reason()}; dslc runs on the CPU only here")
        return 0
    print(f"GPU: {cuda.device_name()}")
    x = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
    dx = cuda.to_device(x)                       # a cuda.DeviceArray: kernels given one run on the GPU
    e_gpu, e_cpu = energy(dx, 0.5), energy(x, 0.5)
    g_gpu = grad(energy)(dx, 0.5)                # a DeviceArray (d energy / d x)
    g_cpu = grad(energy)(x, 0.5)
    print(f"energy  GPU {e_gpu:.6f}  CPU {e_cpu:.6f}")
    print(f"grad[:3] GPU {g_gpu.get()[:3]}  CPU {g_cpu[:3]}")
    ok = np.isclose(e_gpu, e_cpu, rtol=1e-5) and np.allclose(g_gpu.get(), g_cpu, rtol=1e-4, atol=1e-6)
    print("GPU and CPU agree" if ok else "GPU and CPU DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
