"""Every fully annotated kernel of the test suite (tests/suite_kernels.py), its JVP (`k.jvp`) and its
VJP (`k.vjp`) run with target="cuda" on the inputs the CPU gets, and give the CPU's results, or an
exception of the same type. The CPU results are themselves checked against NumPy by the tests that
define the kernels. Also: CuPy arrays and PyTorch CUDA tensors are kernel inputs without a copy
(runtime-level interop is in tests/test_cuda_runtime.py). Skipped without a GPU."""
from __future__ import annotations

import sys
import threading
import time
import zlib

import numpy as np
import pytest

from dsl import cuda, kernel
from suite_kernels import GPU_UNSUPPORTED, args_for, like, suite_kernels

pytestmark = pytest.mark.skipif(not cuda.is_available(), reason="no CUDA GPU")

SLOW_S = 120                # a run longer than this is reported on stderr while it runs (a hang?)
TARGET = "cuda"             # "cpu" checks this test's own plumbing without a GPU


def _host(v):
    return np.asarray(v.get() if isinstance(v, cuda.DeviceArray) else v)


def _outcome(f):
    """('ok', outputs as NumPy values) or ('raised', exception)."""
    try:
        r = f()
    except Exception as e:
        return "raised", e
    return "ok", tuple(_host(v) for v in (r if isinstance(r, tuple) else (r,)))


def _differs(a, b):
    """Why GPU output b differs from CPU output a, or None."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{b.dtype}{list(b.shape)} instead of {a.dtype}{list(a.shape)}"
    if a.dtype.kind in "biu":
        return None if np.array_equal(a, b) else "integers differ"
    # absolute error in units of the output's largest magnitude: summation order and libdevice's
    # math differ from the CPU's, so small elements computed from large terms differ more
    tol = 1e-4 if a.dtype == np.float32 else 1e-9
    finite = np.abs(a[np.isfinite(a)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    if np.allclose(b, a, rtol=tol, atol=tol * scale, equal_nan=True):
        return None
    a, b = np.atleast_1d(a, b)
    with np.errstate(invalid="ignore"):
        err = np.abs(a.astype(np.float64) - b)
    err[np.isnan(err) & (np.isnan(a) != np.isnan(b))] = np.inf
    k = int(np.nanargmax(err)) if not np.isnan(err).all() else 0
    return f"max abs diff {float(err.flat[k]):.3g} at {k} (CPU {float(a.flat[k])!r}, GPU {float(b.flat[k])!r})"


def _context_alive():
    try:
        return cuda.to_device(np.ones(2)).get().sum() == 2
    except Exception:
        return False


class _Watch:
    """Reports on stderr a run that takes longer than SLOW_S (the test cannot interrupt a launch)."""

    def __init__(self):
        self.current, self.since, self.done = None, 0.0, False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        reported = None
        while not self.done:
            time.sleep(5)
            cur = self.current
            if cur is not None and cur != reported and time.monotonic() - self.since > SLOW_S:
                print(f"\n[test_gpu_all_kernels] {cur} has run for more than {SLOW_S} s", file=sys.__stderr__)
                reported = cur

    def start(self, name):
        self.current, self.since = name, time.monotonic()


def _compare(name, cpu, gpu, mismatches, watch):
    watch.start(name)
    a, b = _outcome(cpu), _outcome(gpu)
    watch.current = None
    if a[0] == "raised" or b[0] == "raised":
        ta, tb = (type(v[1]).__name__ if v[0] == "raised" else "ok" for v in (a, b))
        if ta != tb:
            detail = f": {b[1]}" if b[0] == "raised" else ""
            mismatches.append(f"{name}: CPU {ta}, GPU {tb}{detail}"[:400])
        return a
    if len(a[1]) != len(b[1]):
        mismatches.append(f"{name}: {len(b[1])} outputs instead of {len(a[1])}")
        return a
    for i, (x, y) in enumerate(zip(*(a[1], b[1]))):
        why = _differs(x, y)
        if why:
            mismatches.append(f"{name}: output {i}: {why}")
            break
    return a


SHARDS = 8                  # independent parts (each compiles ~110 kernels): `pytest -n 8` runs them at once


@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_suite_kernel_and_its_derivatives_give_the_cpu_results_on_the_gpu(shard):
    mismatches, cases, watch = [], 0, _Watch()
    kernels = suite_kernels()
    assert len(kernels) > 250, "the test suite's kernels were not found"
    try:
        for label, k in kernels[shard::SHARDS]:
            args = args_for(label, k)
            floats = [i for i, p in enumerate(k._declared) if p.dtype in ("f32", "f64")]
            rng = np.random.default_rng(zlib.crc32(label.encode()) + 1)
            out = None
            if f"{label} (primal)" not in GPU_UNSUPPORTED:
                cases += 1
                out = _compare(f"{label} (primal)", lambda: k(*args), lambda: k(*args, target=TARGET),
                               mismatches, watch)
            if floats and f"{label} (jvp)" not in GPU_UNSUPPORTED:
                tangents = like([args[i] for i in floats], rng)
                cases += 1
                _compare(f"{label} (jvp)", lambda: k.jvp(*args, *tangents),
                         lambda: k.jvp(*args, *tangents, target=TARGET), mismatches, watch)
            # the VJP takes one cotangent per output: only where the primal ran and every output is a float
            if floats and out and out[0] == "ok" and all(o.dtype.kind == "f" for o in out[1]) \
                    and f"{label} (vjp)" not in GPU_UNSUPPORTED:
                cts = like(out[1], rng)
                cases += 1
                _compare(f"{label} (vjp)", lambda: k.vjp(*args, *cts), lambda: k.vjp(*args, *cts, target=TARGET),
                         mismatches, watch)
            if TARGET == "cuda" and not _context_alive():   # a sticky fault: every later launch would fail
                mismatches.append(f"{label}: the CUDA context is no longer usable; stopped here")
                break
    finally:
        watch.done = True
    print(f"\n{cases} runs compared, {len(mismatches)} mismatches")
    assert not mismatches, f"{len(mismatches)} mismatches, the first 20:\n" + "\n".join(mismatches[:20])
    assert cases >= len(kernels[shard::SHARDS])      # at least the primal of each


# --- foreign device arrays as kernel inputs ----------------------------------------------------------

@kernel
def scaled_sum(x: f32[n], y: f32[n], a: f32) -> (f32[n], f32):
    z = a * x + y
    return z, sum(z * z)


@kernel
def rows(A: f64[m, k], v: f64[k]) -> f64[m]:
    return tanh(A @ v)


@pytest.fixture
def no_copies(monkeypatch):
    """Fails any host-to-device or device-to-device copy into a DeviceArray."""
    def refuse(self, src):
        raise AssertionError("a kernel input was copied")
    monkeypatch.setattr(cuda.DeviceArray, "copy_to_device", refuse)


def test_cupy_arrays_are_inputs_without_a_copy(no_copies):
    cp = pytest.importorskip("cupy")
    x = np.linspace(-1, 1, 10_001, dtype=np.float32)
    y = np.cos(x)
    want_z, want_s = scaled_sum(x, y, 2.0)
    z, s = scaled_sum(cp.asarray(x), cp.asarray(y), 2.0)
    np.testing.assert_allclose(z.get(), want_z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s, want_s, rtol=1e-5)
    assert cp.asarray(z).data.ptr == z.ptr                    # and the output goes to CuPy as it is


def test_torch_cuda_tensors_are_inputs_without_a_copy(no_copies):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA")
    A = torch.linspace(-1, 1, 3 * 500, dtype=torch.float64, device="cuda").reshape(3, 500)
    v = torch.cos(torch.arange(500, dtype=torch.float64, device="cuda"))
    torch.cuda.synchronize()
    got = rows(A, v)
    want = np.tanh(A.cpu().numpy() @ v.cpu().numpy())
    np.testing.assert_allclose(got.get(), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="mixed host and device"):
        rows(A, v.cpu().numpy())
