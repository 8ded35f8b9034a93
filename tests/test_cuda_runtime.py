"""The CUDA driver runtime (runtime/cuda.py, re-exported as `dsl.cuda`).

Four layers, so that most of it is checked on a machine without a GPU:
- without a driver: `is_available()` is False and never raises; every use raises CudaUnavailableError
  with the plain message; importing `dsl` / `runtime` never loads libcuda.
- driver-free pieces: the CUresult table, kernel-argument packing for cuLaunchKernel, the
  `__cuda_array_interface__` export and the zero-copy wrapping of foreign device arrays.
- a fake driver (FAKE_DRIVER_C below: the subset of libcuda the runtime binds, over host memory, built
  with the system C compiler and loaded through DSLC_CUDA_LIBRARY): allocation, copies, freeing, OOM,
  module loading with the JIT log, launches that read the packed arguments, errors, threads.
- the real GPU (marked, skipped without one): the same on an H100 with hand-written sm_90 PTX, and
  interop with CuPy / PyTorch when importable. The PTX itself is checked with `ptxas -arch=sm_90`
  wherever ptxas exists.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import glob
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

import runtime.cuda as rc
from dsl import cuda
from gpu_tools import PTXAS  # the system's, a CUDA toolkit's or the nvidia-cuda-nvcc wheel's

ROOT = Path(__file__).resolve().parent.parent
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc/clang) found")

# Evaluated once, with the real driver (no DSLC_CUDA_LIBRARY override).
_saved_override = os.environ.pop("DSLC_CUDA_LIBRARY", None)
rc._reset()
HAVE_GPU = cuda.is_available()
if _saved_override is not None:
    os.environ["DSLC_CUDA_LIBRARY"] = _saved_override
rc._reset()
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason="no CUDA GPU")

# --- hand-written PTX (sm_90) ---------------------------------------------------------------------------

PTX = r"""//
// Hand-written test kernels (tests/test_cuda_runtime.py).
//
.version 7.8
.target sm_90
.address_size 64

// y[i] = 2 * x[i] for i < n        (x, y: f32*, n: i64)
.visible .entry scale2(
	.param .u64 scale2_x,
	.param .u64 scale2_y,
	.param .u64 scale2_n
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<4>;
	.reg .f32 	%f<3>;
	.reg .b64 	%rd<9>;

	ld.param.u64 	%rd1, [scale2_x];
	ld.param.u64 	%rd2, [scale2_y];
	ld.param.u64 	%rd3, [scale2_n];
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %ntid.x;
	mov.u32 	%r3, %tid.x;
	mul.wide.u32 	%rd4, %r1, %r2;
	cvt.u64.u32 	%rd5, %r3;
	add.s64 	%rd4, %rd4, %rd5;
	setp.ge.s64 	%p1, %rd4, %rd3;
	@%p1 bra 	$L_done;
	shl.b64 	%rd6, %rd4, 2;
	cvta.to.global.u64 	%rd7, %rd1;
	add.s64 	%rd7, %rd7, %rd6;
	cvta.to.global.u64 	%rd8, %rd2;
	add.s64 	%rd8, %rd8, %rd6;
	ld.global.f32 	%f1, [%rd7];
	add.f32 	%f2, %f1, %f1;
	st.global.f32 	[%rd8], %f2;
$L_done:
	ret;
}

// y[i] = a * x[i] + b for i < n    (x, y: f64*, n: i32, a: f32, b: f64)
.visible .entry affine_f64(
	.param .u64 affine_f64_x,
	.param .u64 affine_f64_y,
	.param .u32 affine_f64_n,
	.param .f32 affine_f64_a,
	.param .f64 affine_f64_b
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<6>;
	.reg .f32 	%f<2>;
	.reg .f64 	%fd<5>;
	.reg .b64 	%rd<7>;

	ld.param.u64 	%rd1, [affine_f64_x];
	ld.param.u64 	%rd2, [affine_f64_y];
	ld.param.u32 	%r1, [affine_f64_n];
	ld.param.f32 	%f1, [affine_f64_a];
	ld.param.f64 	%fd1, [affine_f64_b];
	mov.u32 	%r2, %ctaid.x;
	mov.u32 	%r3, %ntid.x;
	mov.u32 	%r4, %tid.x;
	mad.lo.s32 	%r5, %r2, %r3, %r4;
	setp.ge.s32 	%p1, %r5, %r1;
	@%p1 bra 	$L_done2;
	mul.wide.s32 	%rd3, %r5, 8;
	cvta.to.global.u64 	%rd4, %rd1;
	add.s64 	%rd4, %rd4, %rd3;
	cvta.to.global.u64 	%rd5, %rd2;
	add.s64 	%rd5, %rd5, %rd3;
	ld.global.f64 	%fd2, [%rd4];
	cvt.f64.f32 	%fd3, %f1;
	fma.rn.f64 	%fd4, %fd3, %fd2, %fd1;
	st.global.f64 	[%rd5], %fd4;
$L_done2:
	ret;
}

// writes to address 0: an illegal-address fault (sticky: run last)
.visible .entry crash(
	.param .u64 crash_p
)
{
	.reg .b32 	%r<2>;
	.reg .b64 	%rd<2>;
	mov.u32 	%r1, 1;
	mov.u64 	%rd1, 0;
	st.global.u32 	[%rd1], %r1;
	ret;
}
"""


# --- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture
def no_driver(monkeypatch, tmp_path):
    """The runtime as on a machine without libcuda.so.1 (whatever this machine has)."""
    monkeypatch.setenv("DSLC_CUDA_LIBRARY", str(tmp_path / "libcuda.so.1"))
    monkeypatch.delenv("DSLC_CUDA_DISABLE", raising=False)
    rc._reset()
    yield
    monkeypatch.undo()
    rc._reset()


FAKE_DRIVER_C = r"""/* A fake CUDA driver (the subset runtime/cuda.py binds), backed by host memory: "device" pointers are
   malloc'd host pointers and the kernels of any loaded module are the C functions below, run for every
   thread of the grid. Controlled by environment variables read at call time:
   FAKECUDA_INIT (cuInit's result), FAKECUDA_DEVICES (device count, default 1). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

static __thread void *current_ctx = NULL;
static int ctx_objects[8];
static int module_object;
static int pending_error = 0;
static long live_allocs = 0, retains = 0, unloads = 0, launches = 0, stream_syncs = 0;
static char last_image[256];
static size_t last_image_len = 0;
static unsigned last_num_options = 0;

long fake_live_allocs(void) { return live_allocs; }
long fake_retains(void) { return retains; }
long fake_unloads(void) { return unloads; }
long fake_launches(void) { return launches; }
long fake_stream_syncs(void) { return stream_syncs; }
size_t fake_last_image_len(void) { return last_image_len; }
unsigned fake_last_num_options(void) { return last_num_options; }
void fake_clear_current(void) { current_ctx = NULL; }
void fake_clear_error(void) { pending_error = 0; }

static int env_int(const char *name, int dflt) {
    const char *s = getenv(name);
    return s ? atoi(s) : dflt;
}

CUresult cuInit(unsigned flags) { return flags ? 1 : env_int("FAKECUDA_INIT", 0); }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return 0; }

static const char *names[][3] = {
    {"0", "CUDA_SUCCESS", "no error"},
    {"1", "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {"2", "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {"100", "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {"201", "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {"218", "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {"500", "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {"700", "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
};
static CUresult lookup(CUresult e, const char **p, int which) {
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (atoi(names[i][0]) == e) { *p = names[i][which]; return 0; }
    *p = NULL;
    return 1;
}
CUresult cuGetErrorName(CUresult e, const char **p) { return lookup(e, p, 1); }
CUresult cuGetErrorString(CUresult e, const char **p) { return lookup(e, p, 2); }

CUresult cuDeviceGetCount(int *n) { *n = env_int("FAKECUDA_DEVICES", 1); return 0; }
CUresult cuDeviceGet(int *d, int ordinal) {
    if (ordinal < 0 || ordinal >= env_int("FAKECUDA_DEVICES", 1)) return 101;
    *d = ordinal; return 0;
}
CUresult cuDeviceGetName(char *name, int len, int dev) { snprintf(name, len, "Fake GPU %d", dev); return 0; }
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
    (void)dev;
    switch (attr) {
    case 1: *v = 1024; break; case 16: *v = 132; break; case 75: *v = 9; break; case 76: *v = 0; break;
    default: *v = 0;
    }
    return 0;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { *ctx = &ctx_objects[dev]; retains++; return 0; }
CUresult cuCtxGetCurrent(void **ctx) { *ctx = current_ctx; return 0; }
CUresult cuCtxSetCurrent(void *ctx) { current_ctx = ctx; return 0; }
CUresult cuCtxSynchronize(void) {
    if (!current_ctx) return 201;
    return pending_error;  /* sticky, like the real thing */
}

#define NEED_CTX do { if (!current_ctx) return 201; } while (0)

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
    NEED_CTX;
    if (n == 0) return 1;
    if (n > ((size_t)1 << 40)) return 2;
    void *m = malloc(n);
    if (!m) return 2;
    memset(m, 0xAB, n);  /* garbage, so that zeros() must really clear */
    *p = (CUdeviceptr)(uintptr_t)m;
    live_allocs++;
    return 0;
}
CUresult cuMemFree_v2(CUdeviceptr p) { NEED_CTX; free((void *)(uintptr_t)p); live_allocs--; return 0; }
CUresult cuMemGetInfo_v2(size_t *f, size_t *t) { NEED_CTX; *f = (size_t)1 << 30; *t = (size_t)2 << 30; return 0; }
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) { NEED_CTX; memcpy((void *)(uintptr_t)d, s, n); return 0; }
CUresult cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n) { NEED_CTX; memcpy(d, (void *)(uintptr_t)s, n); return 0; }
CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) { NEED_CTX; memmove((void *)(uintptr_t)d, (void *)(uintptr_t)s, n); return 0; }
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) { NEED_CTX; memset((void *)(uintptr_t)d, v, n); return 0; }
CUresult cuPointerGetAttribute(void *data, int attr, CUdeviceptr p) {
    (void)p;
    if (attr != 9) return 1;
    *(int *)data = 0;
    return 0;
}
CUresult cuStreamSynchronize(void *s) { (void)s; NEED_CTX; stream_syncs++; return 0; }

CUresult cuModuleLoadDataEx(void **mod, const void *image, unsigned nopt, int *opts, void **vals) {
    NEED_CTX;
    const char *text = (const char *)image;
    last_image_len = strlen(text);
    last_num_options = nopt;
    snprintf(last_image, sizeof last_image, "%s", text);
    if (strstr(text, "SYNTAX_ERROR")) {
        for (unsigned i = 0; i < nopt; i++)
            if (opts[i] == 5) {  /* CU_JIT_ERROR_LOG_BUFFER; its size is option 6 */
                size_t size = 0;
                for (unsigned j = 0; j < nopt; j++) if (opts[j] == 6) size = (size_t)(uintptr_t)vals[j];
                snprintf((char *)vals[i], size, "ptxas application ptx input, line 3; fatal   : fake syntax error");
            }
        return 218;
    }
    *mod = &module_object;
    return 0;
}
CUresult cuModuleUnload(void *mod) { (void)mod; unloads++; return 0; }

typedef void (*kernel_fn)(void **params, long long i);
static void k_scale2(void **params, long long i) {
    float *x = *(float **)params[0], *y = *(float **)params[1];
    long long n = *(long long *)params[2];
    if (i < n) y[i] = 2.0f * x[i];
}
static void k_affine_f64(void **params, long long i) {
    double *x = *(double **)params[0], *y = *(double **)params[1];
    int n = *(int *)params[2];
    float a = *(float *)params[3];
    double b = *(double *)params[4];
    if (i < n) y[i] = (double)a * x[i] + b;
}
static void k_crash(void **params, long long i) { (void)params; (void)i; pending_error = 700; }

static struct { const char *name; kernel_fn fn; } kernels[] = {
    {"scale2", k_scale2}, {"affine_f64", k_affine_f64}, {"crash", k_crash},
};
CUresult cuModuleGetFunction(void **f, void *mod, const char *name) {
    NEED_CTX;
    if (mod != &module_object) return 400;
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
        if (!strcmp(kernels[i].name, name)) { *f = (void *)&kernels[i]; return 0; }
    return 500;
}
CUresult cuFuncGetAttribute(int *v, int attr, void *f) { (void)f; *v = attr == 0 ? 1024 : 16; return 0; }
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shm, void *stream, void **params, void **extra) {
    (void)shm; (void)stream; (void)extra;
    NEED_CTX;
    if (pending_error) return pending_error;
    if ((unsigned long long)bx * by * bz > 1024 || gx == 0 || gy == 0 || gz == 0) return 1;
    kernel_fn fn = ((typeof(kernels[0]) *)f)->fn;
    launches++;
    for (unsigned long long b = 0; b < gx; b++)
        for (unsigned long long t = 0; t < bx; t++) fn(params, (long long)(b * bx + t));
    return 0;
}
"""


@pytest.fixture(scope="session")
def fake_lib_path(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("fakecuda")
    src = d / "fakecuda.c"
    src.write_text(FAKE_DRIVER_C)
    out = d / "libfakecuda.so"
    proc = subprocess.run([CC, "-shared", "-fPIC", "-O1", "-Wall", str(src), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return str(out)


class Fake:
    """Handle on the loaded fake driver's counters."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        for name in ("fake_live_allocs", "fake_retains", "fake_unloads", "fake_launches", "fake_stream_syncs",
                     "fake_last_image_len"):
            getattr(self.lib, name).restype = ctypes.c_long

    def __getattr__(self, name):
        return getattr(self.lib, "fake_" + name)


@pytest.fixture
def fake(fake_lib_path, monkeypatch):
    monkeypatch.setenv("DSLC_CUDA_LIBRARY", fake_lib_path)
    monkeypatch.delenv("DSLC_CUDA_DISABLE", raising=False)
    monkeypatch.delenv("FAKECUDA_INIT", raising=False)
    monkeypatch.delenv("FAKECUDA_DEVICES", raising=False)
    rc._reset()
    f = Fake(fake_lib_path)
    f.clear_error()
    yield f
    gc.collect()
    monkeypatch.undo()
    rc._reset()


@pytest.fixture
def gpu(monkeypatch):
    if not HAVE_GPU:
        pytest.skip("no CUDA GPU")
    monkeypatch.delenv("DSLC_CUDA_LIBRARY", raising=False)
    monkeypatch.delenv("DSLC_CUDA_DISABLE", raising=False)
    rc._reset()
    assert cuda.is_available()
    yield
    monkeypatch.undo()
    rc._reset()


# --- without a driver ------------------------------------------------------------------------------------

def test_is_available_on_this_machine_is_a_bool_and_never_raises():
    rc._reset()
    assert cuda.is_available() in (True, False)
    assert cuda.device_count() >= 0
    has_lib = subprocess.run("ldconfig -p | grep -q 'libcuda.so.1 '", shell=True).returncode == 0
    if not has_lib and not os.environ.get("DSLC_CUDA_LIBRARY"):
        assert cuda.is_available() is False
        assert cuda.device_count() == 0
        assert "libcuda.so.1 not found" in cuda.unavailable_reason()


def test_unavailable_is_false_and_every_use_raises_the_plain_message(no_driver):
    assert cuda.is_available() is False
    assert cuda.is_available() is False      # cached, still no exception
    assert cuda.device_count() == 0
    assert "not found" in cuda.unavailable_reason()
    uses = [lambda: cuda.to_device(np.ones(3, np.float32)), lambda: cuda.empty((2, 3)),
            lambda: cuda.zeros(4, np.float64), lambda: cuda.DeviceArray((3,), np.float32),
            lambda: cuda.Module(PTX), lambda: cuda.synchronize(), lambda: cuda.mem_get_info(),
            lambda: cuda.to_device(np.ones(0))]
    for use in uses:
        with pytest.raises(cuda.CudaUnavailableError) as ei:
            use()
        msg = str(ei.value)
        assert msg.startswith("no CUDA GPU or driver is available on this machine (")
        assert "libcuda.so.1 not found" in msg
        assert msg.endswith("run on the CPU (the default) or on a machine with an NVIDIA GPU")
        assert isinstance(ei.value, RuntimeError)


def test_disable_switch(fake, monkeypatch):
    monkeypatch.setenv("DSLC_CUDA_DISABLE", "1")
    rc._reset()
    assert not cuda.is_available()
    assert "DSLC_CUDA_DISABLE" in cuda.unavailable_reason()


def test_cuinit_failure_and_zero_devices_are_unavailable(fake, monkeypatch):
    monkeypatch.setenv("FAKECUDA_INIT", "100")
    rc._reset()
    assert cuda.is_available() is False
    assert cuda.unavailable_reason() == ("cuInit returned CUDA_ERROR_NO_DEVICE: "
                                         "no CUDA-capable device is detected")
    with pytest.raises(cuda.CudaUnavailableError, match=r"\(cuInit returned CUDA_ERROR_NO_DEVICE"):
        cuda.to_device(np.zeros(2))
    monkeypatch.setenv("FAKECUDA_INIT", "999")   # a code the (fake) driver cannot name: our table does
    rc._reset()
    assert "CUDA_ERROR_UNKNOWN" in cuda.unavailable_reason()
    monkeypatch.setenv("FAKECUDA_INIT", "0")
    monkeypatch.setenv("FAKECUDA_DEVICES", "0")
    rc._reset()
    assert cuda.is_available() is False and cuda.device_count() == 0
    assert "0 devices" in cuda.unavailable_reason()


def test_a_library_that_is_not_a_cuda_driver(monkeypatch):
    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("no libm")
    monkeypatch.setenv("DSLC_CUDA_LIBRARY", libm)
    rc._reset()
    try:
        assert cuda.is_available() is False
        assert "not a usable CUDA driver" in cuda.unavailable_reason()
    finally:
        monkeypatch.undo()
        rc._reset()


def test_importing_dsl_or_runtime_does_not_load_the_driver(fake_lib_path):
    code = textwrap.dedent("""
        import dsl, runtime, runtime.cuda
        from dsl import cuda
        maps = lambda: open('/proc/self/maps').read()
        assert 'libfakecuda' not in maps(), 'loaded at import'
        assert runtime.cuda._loaded is False
        assert cuda.is_available()
        assert 'libfakecuda' in maps()
        print('ok')
    """)
    env = dict(os.environ, DSLC_CUDA_LIBRARY=fake_lib_path)
    env.pop("DSLC_CUDA_DISABLE", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_dsl_cuda_exports():
    import dsl
    assert dsl.cuda is cuda
    for name in ("is_available", "to_device", "DeviceArray", "device_count", "CudaUnavailableError",
                 "CudaError", "empty", "zeros"):
        assert hasattr(cuda, name), name
    assert issubclass(cuda.CudaUnavailableError, RuntimeError)
    assert issubclass(cuda.CudaError, RuntimeError)
    assert issubclass(cuda.CudaOutOfMemoryError, MemoryError)
    assert issubclass(cuda.CudaOutOfMemoryError, cuda.CudaError)


# --- driver-free pieces ----------------------------------------------------------------------------------

def test_curesult_names():
    assert rc.error_name(0) == "CUDA_SUCCESS"
    assert rc.error_name(1) == "CUDA_ERROR_INVALID_VALUE"
    assert rc.error_name(2) == "CUDA_ERROR_OUT_OF_MEMORY"
    assert rc.error_name(100) == "CUDA_ERROR_NO_DEVICE"
    assert rc.error_name(218) == "CUDA_ERROR_INVALID_PTX"
    assert rc.error_name(222) == "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"
    assert rc.error_name(500) == "CUDA_ERROR_NOT_FOUND"
    assert rc.error_name(700) == "CUDA_ERROR_ILLEGAL_ADDRESS"
    assert rc.error_name(701) == "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"
    assert rc.error_name(999) == "CUDA_ERROR_UNKNOWN"
    assert rc.error_name(12345) == "CUresult 12345"


def test_curesult_table_matches_cuda_h():
    headers = sorted(glob.glob("/usr/local/cuda*/include/cuda.h"))
    if not headers:
        pytest.skip("no cuda.h")
    import re
    text = open(headers[-1]).read()
    body = text[text.index("typedef enum cudaError_enum"):]
    body = body[:body.index("} CUresult;")]
    found = dict((int(v), k) for k, v in re.findall(r"\b(CUDA_(?:SUCCESS|ERROR_\w+))\s*=\s*(\d+)", body))
    assert len(found) > 80
    for code, name in found.items():
        assert rc.error_name(code) == name


def _deref(params, i, ctype):
    return ctypes.cast(params[i], ctypes.POINTER(ctype))[0]


def test_pack_kernel_args_points_at_typed_values(no_driver):
    dev = rc.DeviceArray._wrap(0xDEAD0000, (4,), np.float32)
    empty_dev = rc.DeviceArray._wrap(0, (0,), np.float32)

    class Foreign:
        __cuda_array_interface__ = {"shape": (2,), "typestr": "<f8", "data": (0xBEEF00, False), "version": 3}

    args = [dev, 7, -(2 ** 40), 2.5, np.float32(1.25), np.float64(-3.5), np.int32(-9), np.int64(2 ** 40),
            np.uint32(4000000000), True, np.bool_(False), ctypes.c_int16(-3), ctypes.c_float(0.5),
            empty_dev, None, Foreign()]
    params, keep = rc.pack_kernel_args(args)
    assert isinstance(params, ctypes.Array) and params._type_ is ctypes.c_void_p
    assert len(params) == len(args) == len(keep)
    expect = [(ctypes.c_void_p, 0xDEAD0000), (ctypes.c_int64, 7), (ctypes.c_int64, -(2 ** 40)),
              (ctypes.c_double, 2.5), (ctypes.c_float, 1.25), (ctypes.c_double, -3.5), (ctypes.c_int32, -9),
              (ctypes.c_int64, 2 ** 40), (ctypes.c_uint32, 4000000000), (ctypes.c_uint8, 1),
              (ctypes.c_uint8, 0), (ctypes.c_int16, -3), (ctypes.c_float, 0.5), (ctypes.c_void_p, None),
              (ctypes.c_void_p, None), (ctypes.c_void_p, 0xBEEF00)]
    for i, ((ctype, value), kept) in enumerate(zip(expect, keep)):
        assert type(kept) is ctype, (i, type(kept), ctype)
        assert params[i] == ctypes.addressof(kept)            # entry i points at value i
        assert _deref(params, i, ctype) == value, i
    # 8-byte slots really hold 8 bytes: read back the raw bytes of the int64 and the pointer
    assert ctypes.string_at(params[1], 8) == (7).to_bytes(8, "little", signed=True)
    assert ctypes.string_at(params[0], 8) == (0xDEAD0000).to_bytes(8, "little")
    assert ctypes.string_at(params[4], 4) == np.float32(1.25).tobytes()


def test_pack_kernel_args_edge_cases(no_driver):
    params, keep = rc.pack_kernel_args([])
    assert params is None and keep == []
    params, keep = rc.pack_kernel_args([2 ** 63])                 # beyond int64: unsigned
    assert type(keep[0]) is ctypes.c_uint64 and _deref(params, 0, ctypes.c_uint64) == 2 ** 63
    with pytest.raises(OverflowError, match="kernel argument 0"):
        rc.pack_kernel_args([2 ** 64])
    with pytest.raises(TypeError, match=r"kernel argument 1: cannot pass ndarray"):
        rc.pack_kernel_args([1, np.ones(3)])
    with pytest.raises(TypeError, match=r"kernel argument 0: cannot pass str"):
        rc.pack_kernel_args(["x"])


def test_cuda_array_interface_export(no_driver):
    d = rc.DeviceArray._wrap(0x7F0000001000, (3, 4), np.dtype(np.float32))
    cai = d.__cuda_array_interface__
    assert cai == {"shape": (3, 4), "typestr": "<f4", "data": (0x7F0000001000, False), "strides": None,
                   "version": 3, "stream": None}
    assert d.shape == (3, 4) and d.dtype == np.float32 and d.size == 12 and d.nbytes == 48
    assert d.ndim == 2 and d.itemsize == 4 and d.strides == (16, 4) and len(d) == 3
    assert d.ptr == 0x7F0000001000
    assert rc.DeviceArray._wrap(1, (2,), np.dtype(np.int64)).__cuda_array_interface__["typestr"] == "<i8"
    assert rc.DeviceArray._wrap(1, (2,), np.dtype(np.bool_)).__cuda_array_interface__["typestr"] == "|b1"
    assert "DeviceArray(shape=(3, 4), dtype=float32" in repr(d)
    with pytest.raises(TypeError, match="ambiguous"):
        bool(d)
    with pytest.raises(TypeError):
        np.ones((3, 4), np.float32) + d                         # no silent copy to the host


class FakeForeign:
    """What CuPy / PyTorch / Numba expose."""

    def __init__(self, shape, typestr, ptr, strides=None, readonly=False, **extra):
        self.__cuda_array_interface__ = dict(shape=shape, typestr=typestr, data=(ptr, readonly),
                                             strides=strides, version=3, **extra)


def test_wrapping_foreign_device_memory_is_zero_copy_and_driver_free(no_driver):
    obj = FakeForeign((5, 2), "<f8", 0x10000)
    d = cuda.DeviceArray.from_cuda_array_interface(obj)
    assert isinstance(d, cuda.DeviceArray)
    assert d.shape == (5, 2) and d.dtype == np.float64 and d.ptr == 0x10000 and d.nbytes == 80
    assert d.owner is obj and not d.readonly
    assert d.__cuda_array_interface__["data"] == (0x10000, False)
    # the same through the helpers
    assert cuda.is_device_array(obj) and cuda.is_device_array(d) and not cuda.is_device_array(np.ones(2))
    assert cuda.as_device_array(d) is d
    assert cuda.to_device(obj).ptr == 0x10000                     # no copy, no driver
    with pytest.raises(TypeError, match="no implicit casts"):
        cuda.to_device(obj, dtype=np.float32)
    # keeps the owner alive
    o2 = FakeForeign((3,), "<i4", 0x20000, readonly=True)
    ref = weakref.ref(o2)
    w = cuda.DeviceArray.from_cuda_array_interface(o2)
    del o2
    gc.collect()
    assert ref() is not None and w.readonly and w.dtype == np.int32
    del w
    gc.collect()
    assert ref() is None
    # explicit C-contiguous strides are fine; so are size-0 and size-1 axes with odd strides
    assert cuda.DeviceArray.from_cuda_array_interface(FakeForeign((2, 3), "<f4", 8, strides=(12, 4))).shape == (2, 3)
    assert cuda.DeviceArray.from_cuda_array_interface(FakeForeign((1, 3), "<f4", 8, strides=(4, 4))).size == 3
    assert cuda.DeviceArray.from_cuda_array_interface(FakeForeign((0, 3), "<f4", 0, strides=(0, 0))).size == 0
    # 0-d
    z = cuda.DeviceArray.from_cuda_array_interface(FakeForeign((), "<f4", 8))
    assert z.shape == () and z.size == 1 and z.nbytes == 4
    with pytest.raises(TypeError, match="0-d"):
        len(z)
    # stream None / 1 / 2 need no wait and no driver
    for s in (None, 1, 2):
        assert cuda.DeviceArray.from_cuda_array_interface(FakeForeign((2,), "<f4", 8, stream=s)).ptr == 8


def test_wrapping_rejects_what_it_cannot_use(no_driver):
    wrap = cuda.DeviceArray.from_cuda_array_interface
    with pytest.raises(ValueError, match=r"strides \(4, 8\).*not C-contiguous.*contiguous"):
        wrap(FakeForeign((2, 3), "<f4", 8, strides=(4, 8)))          # a transposed (Fortran) view
    with pytest.raises(ValueError, match="not C-contiguous"):
        wrap(FakeForeign((4,), "<f4", 8, strides=(8,)))              # a step-2 slice
    with pytest.raises(ValueError, match="masked"):
        wrap(FakeForeign((4,), "<f4", 8, mask=object()))
    with pytest.raises(TypeError, match="byte order"):
        wrap(FakeForeign((4,), ">f4", 8))
    with pytest.raises(TypeError, match="numbers or booleans"):
        wrap(FakeForeign((4,), "|O", 8))
    with pytest.raises(ValueError, match="null data pointer"):
        wrap(FakeForeign((4,), "<f4", 0))
    with pytest.raises(ValueError, match="stream 0 is disallowed"):
        wrap(FakeForeign((4,), "<f4", 8, stream=0))
    with pytest.raises(ValueError, match="malformed"):
        wrap(type("X", (), {"__cuda_array_interface__": {"shape": (2,)}})())
    with pytest.raises(TypeError, match="does not expose __cuda_array_interface__"):
        wrap(np.ones(3))


def test_reshape_views_share_memory(no_driver):
    d = rc.DeviceArray._wrap(4096, (2, 6), np.dtype(np.float32))
    v = d.reshape(3, 4)
    assert v.shape == (3, 4) and v.ptr == d.ptr and v.owner is d
    assert d.reshape((12,)).shape == (12,) and d.reshape(-1, 2).shape == (6, 2)
    with pytest.raises(ValueError, match="cannot reshape"):
        d.reshape(5, 2)


# --- against the fake driver -----------------------------------------------------------------------------

@needs_cc
def test_fake_driver_device_info(fake):
    assert cuda.is_available() and cuda.device_count() == 1 and cuda.unavailable_reason() is None
    assert cuda.device_name() == "Fake GPU 0"
    assert cuda.compute_capability() == (9, 0)
    assert cuda.mem_get_info() == (1 << 30, 2 << 30)
    assert rc.driver_version() == 13000
    with pytest.raises(ValueError, match="CUDA device 3 does not exist"):
        cuda.empty(3, device=3)


@needs_cc
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.bool_, np.uint8, np.complex64])
def test_fake_round_trip(fake, dtype):
    host = (np.arange(24).reshape(2, 3, 4) % 3).astype(dtype)
    d = cuda.to_device(host)
    assert d.shape == host.shape and d.dtype == host.dtype and d.nbytes == host.nbytes
    back = d.get()
    assert back.dtype == host.dtype and np.array_equal(back, host)
    assert np.array_equal(np.asarray(d), host)
    assert np.asarray(d, dtype=np.complex128).dtype == np.complex128
    out = np.empty_like(host)
    assert d.get(out=out) is out and np.array_equal(out, host)


@needs_cc
def test_fake_conversions_and_copies(fake):
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    d = cuda.to_device(x.T)                                     # non-contiguous host input: copied
    assert np.array_equal(d.get(), x.T)
    assert np.array_equal(cuda.to_device(x.astype(">f8")).get(), x)   # byte-swapped input
    assert cuda.to_device(3.5).shape == () and cuda.to_device(3.5).get() == 3.5
    assert cuda.to_device([1, 2, 3], dtype=np.float32).dtype == np.float32
    with pytest.raises(TypeError, match="numbers or booleans"):
        cuda.to_device(np.array(["a"]))
    d2 = cuda.empty((3, 4), np.float64).copy_to_device(x)
    assert np.array_equal(d2.get(), x)
    d3 = cuda.empty((3, 4), np.float64).copy_to_device(d2)      # device to device
    assert np.array_equal(d3.get(), x)
    assert np.array_equal(d3.copy().get(), x) and d3.copy().ptr != d3.ptr
    with pytest.raises(ValueError, match="no implicit casts"):
        d2.copy_to_device(x.astype(np.float32))
    with pytest.raises(ValueError, match="no implicit casts"):
        d2.copy_to_device(np.ones((4, 3)))
    with pytest.raises(ValueError, match="C-contiguous"):
        d2.get(out=np.empty((4, 3)))
    with pytest.raises(ValueError, match="without a copy"):
        np.asarray(d2, copy=False) if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else d2.__array__(copy=False)
    ro = cuda.DeviceArray.from_cuda_array_interface(FakeForeign((3, 4), "<f8", d2.ptr, readonly=True))
    assert np.array_equal(ro.get(), x)                          # foreign memory read in place
    with pytest.raises(ValueError, match="read-only"):
        ro.copy_to_device(x)
    assert np.array_equal(d2.reshape(12).get(), x.ravel())


@needs_cc
def test_fake_zeros_really_clears(fake):
    e = cuda.empty(16, np.uint8)                  # the fake fills new memory with 0xAB
    assert (e.get() == 0xAB).all()
    z = cuda.zeros((4, 4), np.float32)
    assert z.get().dtype == np.float32 and not z.get().any()


@needs_cc
def test_fake_zero_size_arrays_allocate_nothing(fake):
    before = fake.live_allocs()
    for d in (cuda.empty(0), cuda.zeros((3, 0), np.float64), cuda.to_device(np.ones((0, 5), np.int32))):
        assert d.ptr == 0 and d.nbytes == 0 and d.size == 0
        assert d.get().shape == d.shape and d.get().dtype == d.dtype
        params, keep = rc.pack_kernel_args([d])
        assert keep[0].value is None
    assert fake.live_allocs() == before


@needs_cc
def test_fake_memory_is_freed_by_gc(fake):
    gc.collect()
    before = fake.live_allocs()
    arrays = [cuda.empty(100) for _ in range(10)]
    views = [a.reshape(10, 10) for a in arrays]
    assert fake.live_allocs() == before + 10
    del arrays
    gc.collect()
    assert fake.live_allocs() == before + 10                    # views keep their base alive
    del views
    gc.collect()
    assert fake.live_allocs() == before
    # wrappers of foreign memory never free it
    a = cuda.empty(4)
    w = cuda.DeviceArray.from_cuda_array_interface(FakeForeign((4,), "<f4", a.ptr))
    del w
    gc.collect()
    assert fake.live_allocs() == before + 1


@needs_cc
def test_fake_out_of_memory_is_a_memory_error(fake):
    with pytest.raises(MemoryError) as ei:
        cuda.empty((1 << 20, 1 << 20), np.float64)
    e = ei.value
    assert isinstance(e, cuda.CudaOutOfMemoryError) and isinstance(e, cuda.CudaError)
    assert e.nbytes == 8 << 40 and e.device == 0 and e.code == 2 and e.name == "CUDA_ERROR_OUT_OF_MEMORY"
    assert "cannot allocate 8796093022208 bytes (8.0 TiB) on CUDA device 0" in str(e)
    assert "1.0 GiB free of 2.0 GiB" in str(e)


@needs_cc
def test_fake_module_and_launch(fake):
    m = cuda.Module(PTX, name="test.ptx")
    assert fake.last_image_len() == len(PTX.encode())           # NUL-terminated: the driver saw it all
    assert fake.last_num_options() == 4                         # error and info log buffers
    f = m.get_function("scale2")
    assert m["scale2"] is f and f.max_threads_per_block == 1024 and "scale2" in repr(f)
    n = 1000
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    dx, dy = cuda.to_device(x), cuda.zeros(n, np.float32)
    launches = fake.launches()
    f((n + 255) // 256, 256, dx, dy, n)                         # n: Python int -> int64
    assert fake.launches() == launches + 1
    assert np.array_equal(dy.get(), 2 * x)
    # f64 pointers, an i32, an f32 and an f64 scalar
    g = m.get_function("affine_f64")
    xd = np.linspace(-1, 1, 37)
    ax, ay = cuda.to_device(xd), cuda.zeros(37, np.float64)
    cuda.launch(g, (2,), (32, 1, 1), [ax, ay, np.int32(37), np.float32(0.5), -1.25])
    assert np.array_equal(ay.get(), np.float64(np.float32(0.5)) * xd - 1.25)
    # foreign device memory as an argument
    wy = FakeForeign((n,), "<f4", dy.ptr)
    f(4, 256, dx, wy, n)
    assert np.array_equal(dy.get(), 2 * x)


@needs_cc
def test_fake_module_errors(fake):
    with pytest.raises(cuda.CudaError) as ei:
        cuda.Module("// SYNTAX_ERROR\n", name="bad.ptx")
    msg = str(ei.value)
    assert msg.startswith("cuModuleLoadDataEx failed (loading bad.ptx on CUDA device 0): "
                          "CUDA_ERROR_INVALID_PTX: a PTX JIT compilation failed")
    assert "fake syntax error" in msg                            # the JIT's error log
    assert ei.value.code == 218 and ei.value.function == "cuModuleLoadDataEx"
    m = cuda.Module(PTX.encode())
    with pytest.raises(cuda.CudaError, match=r"cuModuleGetFunction failed \(looking up kernel 'nope' "
                                             r"in <ptx>\): CUDA_ERROR_NOT_FOUND: named symbol not found"):
        m.get_function("nope")
    with pytest.raises(TypeError):
        cuda.Module(12)
    f = m.get_function("scale2")
    d = cuda.zeros(4)
    with pytest.raises(cuda.CudaError, match=r"cuLaunchKernel failed \(launching kernel 'scale2' with grid "
                                             r"\(1, 1, 1\), block \(2048, 1, 1\).*CUDA_ERROR_INVALID_VALUE"):
        f(1, 2048, d, d, 4)
    for bad in (0, (1, 0), (1, 1, 1, 1), -3):
        with pytest.raises(ValueError, match="block must be"):
            f(1, bad, d, d, 4)
    unloads = fake.unloads()
    del m, f
    gc.collect()
    assert fake.unloads() == unloads + 1


@needs_cc
def test_fake_sticky_kernel_fault(fake):
    m = cuda.Module(PTX)
    with pytest.raises(cuda.CudaError) as ei:
        m["crash"](1, 1, None)
    msg = str(ei.value)
    assert "cuCtxSynchronize failed (running kernel 'crash'" in msg
    assert "CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered" in msg
    assert "restart the Python process" in msg
    fake.clear_error()


@needs_cc
def test_fake_contexts_per_thread(fake):
    x = cuda.to_device(np.arange(8, dtype=np.float32))
    retains = fake.retains()
    results, errors = [], []

    def work():
        try:   # a fresh thread has no current context: the runtime must make the primary one current
            fake.clear_current()
            results.append(x.get().sum() + cuda.to_device(np.ones(3)).get().sum())
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and results == [31.0] * 4
    assert fake.retains() == retains                            # retained once per process


@needs_cc
def test_fake_waits_for_a_producer_stream(fake):
    d = cuda.zeros(4)
    syncs = fake.stream_syncs()
    w = cuda.DeviceArray.from_cuda_array_interface(FakeForeign((4,), "<f4", d.ptr, stream=0x5000))
    assert fake.stream_syncs() == syncs + 1 and w.ptr == d.ptr
    assert w.device == 0                                        # asked of the driver


# --- PTX validity ----------------------------------------------------------------------------------------

@pytest.mark.skipif(PTXAS is None, reason="ptxas not found")
def test_hand_written_ptx_assembles_for_sm_90(tmp_path):
    src = tmp_path / "k.ptx"
    src.write_text(PTX)
    proc = subprocess.run([PTXAS, "-arch=sm_90", str(src), "-o", str(tmp_path / "k.cubin")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "k.cubin").read_bytes()[:4] == b"\x7fELF"


# --- on a real GPU ---------------------------------------------------------------------------------------

@needs_gpu
def test_gpu_info(gpu):
    assert cuda.device_count() >= 1
    major, minor = cuda.compute_capability()
    assert major >= 7
    assert cuda.device_name()
    free, total = cuda.mem_get_info()
    assert 0 < free <= total


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.bool_])
def test_gpu_round_trip(gpu, dtype):
    host = (np.arange(3 * 1000 + 7) % 5).astype(dtype).reshape(-1, 1)
    d = cuda.to_device(host)
    assert d.ptr and d.shape == host.shape and d.dtype == host.dtype
    assert np.array_equal(d.get(), host) and np.array_equal(np.asarray(d), host)
    d2 = d.copy()
    assert d2.ptr != d.ptr and np.array_equal(d2.get(), host)
    z = cuda.zeros(host.shape, dtype)
    assert not z.get().any()
    assert cuda.empty(0, dtype).get().shape == (0,)


@needs_gpu
def test_gpu_free_on_gc(gpu):
    gc.collect()
    free0, _ = cuda.mem_get_info()
    arrays = [cuda.empty(64 << 20, np.uint8) for _ in range(8)]   # 512 MiB
    free1, _ = cuda.mem_get_info()
    assert free0 - free1 >= 500 << 20
    del arrays
    gc.collect()
    # freed arrays of 1 MiB or more wait in the reuse pool until it is released
    assert cuda.release_pool() >= 512 << 20
    free2, _ = cuda.mem_get_info()
    assert free2 > free1 + (400 << 20)


@needs_gpu
def test_gpu_out_of_memory(gpu):
    with pytest.raises(MemoryError) as ei:
        cuda.empty(1 << 50, np.uint8)                           # 1 PiB
    assert isinstance(ei.value, cuda.CudaOutOfMemoryError) and ei.value.nbytes == 1 << 50
    assert cuda.to_device(np.ones(4)).get().sum() == 4          # still usable afterwards


@needs_gpu
def test_gpu_ptx_kernels(gpu):
    m = cuda.Module(PTX)
    n = 1_000_003
    x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    dx, dy = cuda.to_device(x), cuda.zeros(n, np.float32)
    m["scale2"]((n + 255) // 256, 256, dx, dy, n)
    assert np.array_equal(dy.get(), 2 * x)
    xd = np.linspace(-3, 3, 1001)
    ax, ay = cuda.to_device(xd), cuda.zeros(1001, np.float64)
    cuda.launch(m["affine_f64"], 4, 256, [ax, ay, np.int32(1001), np.float32(0.5), -1.25])
    np.testing.assert_allclose(ay.get(), 0.5 * xd - 1.25, rtol=1e-15, atol=1e-15)
    assert 1 <= m["scale2"].max_threads_per_block <= 1024


@needs_gpu
def test_gpu_errors(gpu):
    with pytest.raises(cuda.CudaError) as ei:
        cuda.Module(".version 7.8\n.target sm_90\n.address_size 64\n.visible .entry k() { bogus; }\n")
    assert ei.value.name in ("CUDA_ERROR_INVALID_PTX", "CUDA_ERROR_INVALID_IMAGE")
    assert "bogus" in str(ei.value) or "error" in str(ei.value).lower()
    m = cuda.Module(PTX)
    with pytest.raises(cuda.CudaError, match="CUDA_ERROR_NOT_FOUND"):
        m.get_function("nope")
    d = cuda.zeros(4)
    with pytest.raises(cuda.CudaError, match="cuLaunchKernel failed") as ei:
        m["scale2"](1, 2048, d, d, 4)                           # > 1024 threads per block
    assert ei.value.name == "CUDA_ERROR_INVALID_VALUE"
    m["scale2"](1, 32, d, d, 4)                                 # the context survived


@needs_gpu
def test_gpu_illegal_address_is_an_exception_not_a_crash():
    # sticky: run in a child process so this process's context stays usable
    code = textwrap.dedent("""
        import sys
        import runtime.cuda as rc
        sys.path.insert(0, 'tests')
        from test_cuda_runtime import PTX
        m = rc.Module(PTX)
        try:
            m['crash'](1, 1, None)
        except rc.CudaError as e:
            print(e.name)
            print(e)
    """)
    env = dict(os.environ)
    env.pop("DSLC_CUDA_LIBRARY", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "CUDA_ERROR_ILLEGAL_ADDRESS"
    assert "restart the Python process" in out.stdout


@needs_gpu
def test_gpu_threads(gpu):
    m = cuda.Module(PTX)
    errors = []

    def work(k):
        try:
            x = np.full(4096, k, np.float32)
            dx, dy = cuda.to_device(x), cuda.empty(4096, np.float32)
            m["scale2"](16, 256, dx, dy, 4096)
            assert np.array_equal(dy.get(), 2 * x)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


@needs_gpu
def test_gpu_cupy_interop(gpu):
    cp = pytest.importorskip("cupy")
    a = cp.arange(10, dtype=cp.float32)
    d = cuda.DeviceArray.from_cuda_array_interface(a)
    assert d.ptr == a.data.ptr and d.shape == (10,) and d.dtype == np.float32
    assert np.array_equal(d.get(), np.arange(10, dtype=np.float32))
    out = cuda.zeros(10, np.float32)
    cuda.Module(PTX)["scale2"](1, 32, a, out, 10)              # a CuPy array straight into a launch
    cp.cuda.runtime.deviceSynchronize()
    back = cp.asarray(out)                                      # and ours into CuPy, without a copy
    assert back.data.ptr == out.ptr
    assert np.array_equal(cp.asnumpy(back), 2 * np.arange(10, dtype=np.float32))
    with pytest.raises(ValueError, match="not C-contiguous"):
        cuda.DeviceArray.from_cuda_array_interface(cp.ones((3, 4), cp.float32).T)


@needs_gpu
def test_gpu_torch_interop(gpu):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    t = torch.arange(12, dtype=torch.float64, device="cuda").reshape(3, 4)
    d = cuda.DeviceArray.from_cuda_array_interface(t)
    assert d.ptr == t.data_ptr() and d.shape == (3, 4) and d.dtype == np.float64
    torch.cuda.synchronize()
    assert np.array_equal(d.get(), np.arange(12.0).reshape(3, 4))
    y = cuda.to_device(np.arange(5, dtype=np.float32))
    ty = torch.as_tensor(y, device="cuda")                      # consumes __cuda_array_interface__
    assert ty.data_ptr() == y.ptr and ty.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="not C-contiguous"):
        cuda.DeviceArray.from_cuda_array_interface(t.T)
