"""Accuracy of the (vectorised) transcendental functions against higher-precision references.

float32 results are compared with NumPy's float64 functions (exact to < 1 float32 ulp after
rounding), float64 results with NumPy's long double (x87 80-bit) functions. The error is
measured in ulps of the result's own type (np.spacing of the reference), so a correctly rounded
result has error <= 0.5. The inputs cover wide ranges and the edges: +-0, +-inf, NaN, denormals,
huge arguments of sin/cos/tan, exp overflow and underflow. Loops are long enough to run the
vector body and odd-sized so that the scalar remainder runs too.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from dsl import kernel
from compiler.codegen import vmath

HAVE_LONGDOUBLE = np.finfo(np.longdouble).nmant >= 63

# documented bounds (docs/performance.md): libmvec's and glibc's own
F32_ULPS = {"sin": 2, "cos": 2, "tan": 4, "exp": 3, "log": 4, "log1p": 2, "expm1": 3, "tanh": 2,
            "sigmoid": 4, "pow": 1}
F64_ULPS = {"sin": 1, "cos": 1, "tan": 1, "exp": 1, "log": 2, "log1p": 2, "expm1": 1, "tanh": 3,
            "sigmoid": 3, "pow": 1}


@kernel
def k_sin32(x: f32[n]) -> f32[n]:
    return sin(x)


@kernel
def k_cos32(x: f32[n]) -> f32[n]:
    return cos(x)


@kernel
def k_tan32(x: f32[n]) -> f32[n]:
    return tan(x)


@kernel
def k_exp32(x: f32[n]) -> f32[n]:
    return exp(x)


@kernel
def k_log32(x: f32[n]) -> f32[n]:
    return log(x)


@kernel
def k_log1p32(x: f32[n]) -> f32[n]:
    return log1p(x)


@kernel
def k_expm132(x: f32[n]) -> f32[n]:
    return expm1(x)


@kernel
def k_tanh32(x: f32[n]) -> f32[n]:
    return tanh(x)


@kernel
def k_sigmoid32(x: f32[n]) -> f32[n]:
    return sigmoid(x)


@kernel
def k_pow32(x: f32[n], y: f32[n]) -> f32[n]:
    return x ** y


@kernel
def k_sin64(x: f64[n]) -> f64[n]:
    return sin(x)


@kernel
def k_cos64(x: f64[n]) -> f64[n]:
    return cos(x)


@kernel
def k_tan64(x: f64[n]) -> f64[n]:
    return tan(x)


@kernel
def k_exp64(x: f64[n]) -> f64[n]:
    return exp(x)


@kernel
def k_log64(x: f64[n]) -> f64[n]:
    return log(x)


@kernel
def k_log1p64(x: f64[n]) -> f64[n]:
    return log1p(x)


@kernel
def k_expm164(x: f64[n]) -> f64[n]:
    return expm1(x)


@kernel
def k_tanh64(x: f64[n]) -> f64[n]:
    return tanh(x)


@kernel
def k_sigmoid64(x: f64[n]) -> f64[n]:
    return sigmoid(x)


@kernel
def k_pow64(x: f64[n], y: f64[n]) -> f64[n]:
    return x ** y


@kernel
def k_square32(x: f32[n]) -> f32[n]:
    return x ** 2 + x ** 1 + x ** 0


KERNELS = {("sin", "f32"): k_sin32, ("cos", "f32"): k_cos32, ("tan", "f32"): k_tan32,
           ("exp", "f32"): k_exp32, ("log", "f32"): k_log32, ("log1p", "f32"): k_log1p32,
           ("expm1", "f32"): k_expm132, ("tanh", "f32"): k_tanh32, ("sigmoid", "f32"): k_sigmoid32,
           ("sin", "f64"): k_sin64, ("cos", "f64"): k_cos64, ("tan", "f64"): k_tan64,
           ("exp", "f64"): k_exp64, ("log", "f64"): k_log64, ("log1p", "f64"): k_log1p64,
           ("expm1", "f64"): k_expm164, ("tanh", "f64"): k_tanh64, ("sigmoid", "f64"): k_sigmoid64}


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


REF = {"sin": np.sin, "cos": np.cos, "tan": np.tan, "exp": np.exp, "log": np.log, "log1p": np.log1p,
       "expm1": np.expm1, "tanh": np.tanh, "sigmoid": _sigmoid}


def _logspace(rng, lo, hi, n):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def inputs(name, dtype, rng):
    fi = np.finfo(dtype)
    big = 1e30 if dtype == np.float32 else 1e300
    n = 200_003
    if name in ("sin", "cos", "tan"):
        parts = [rng.uniform(-10, 10, n), rng.uniform(-1e4, 1e4, n // 4),
                 _logspace(rng, 1e-30, big, n // 4) * rng.choice([-1, 1], n // 4),
                 np.arange(-200, 200) * np.pi / 4]   # near multiples of pi/4
    elif name == "exp":
        lim = 110 if dtype == np.float32 else 750
        parts = [rng.uniform(-lim, lim, n), rng.uniform(-1, 1, n // 4), _logspace(rng, 1e-30, 1, n // 8)]
    elif name == "log":
        parts = [_logspace(rng, float(fi.smallest_subnormal), float(fi.max), n), rng.uniform(0.5, 2, n // 4)]
    elif name == "log1p":
        parts = [_logspace(rng, 1e-30, float(fi.max) / 2, n), -_logspace(rng, 1e-30, 1, n // 2)]
    elif name == "expm1":
        lim = 100 if dtype == np.float32 else 720
        parts = [rng.uniform(-lim, lim, n), _logspace(rng, 1e-30, 1, n // 4) * rng.choice([-1, 1], n // 4)]
    elif name == "tanh":
        parts = [rng.uniform(-20, 20, n), _logspace(rng, 1e-30, 1e3, n // 4) * rng.choice([-1, 1], n // 4)]
    else:   # sigmoid
        parts = [rng.uniform(-120, 120, n), rng.uniform(-5, 5, n)]
    x = np.concatenate(parts).astype(dtype)
    return x[np.isfinite(x)]


def ulp_error(got, ref, dtype):
    """|got - ref| in ulps of dtype at ref (ref in a wider type); 0 where both agree exactly,
    inf where one is non-finite and the other is not."""
    with np.errstate(all="ignore"):
        refd = ref.astype(dtype)
        sp = np.spacing(np.abs(refd)).astype(ref.dtype)
        # the ulp below a power of two is half as large: measure with the smaller one
        sp = np.minimum(sp, np.spacing(np.abs(np.nextafter(refd, dtype(0)))).astype(ref.dtype))
        sp = np.where(sp == 0, np.asarray(np.finfo(dtype).smallest_subnormal, ref.dtype), sp)
        err = np.abs(got.astype(ref.dtype) - ref) / sp
    same = (got == refd) | (np.isnan(got) & np.isnan(refd))
    err = np.where(same, 0.0, err)
    return np.where(np.isfinite(err), err, np.inf)


def reference(name, x, dtype):
    wide = np.float64 if dtype == np.float32 else np.longdouble
    with np.errstate(all="ignore"):
        return REF[name](x.astype(wide))


CASES = [(nm, dt) for dt in ("f32", "f64") for nm in ("sin", "cos", "tan", "exp", "log", "log1p", "expm1",
                                                         "tanh", "sigmoid")]


@pytest.mark.parametrize("name,dt", CASES)
def test_accuracy(name, dt):
    if dt == "f64" and not HAVE_LONGDOUBLE:
        pytest.skip("no 80-bit long double for a float64 reference")
    dtype = np.float32 if dt == "f32" else np.float64
    rng = np.random.default_rng(7)
    x = inputs(name, dtype, rng)
    got = KERNELS[(name, dt)](x)
    ref = reference(name, x, dtype)
    err = ulp_error(got, ref, dtype)
    bound = (F32_ULPS if dt == "f32" else F64_ULPS)[name]
    worst = int(np.argmax(err))
    assert err[worst] <= bound, f"{name} {dt}: {err[worst]:.2f} ulp at x={x[worst]!r} " \
                                f"(got {got[worst]!r}, ref {ref[worst]!r})"


SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 1e-45, -1e-45, 1e-310, 1e30, -1e30, 1e300,
            3.4e38, -3.4e38, 88.8, -104.0, 710.0, -746.0, 2 ** -130, 0.5]


@pytest.mark.parametrize("name,dt", CASES)
def test_special_values(name, dt):
    """Exact agreement with NumPy (glibc) on the edges, signed zeros included."""
    dtype = np.float32 if dt == "f32" else np.float64
    with np.errstate(all="ignore"):
        x = np.array(SPECIALS * 3, dtype=dtype)     # long enough to take the vector path too
        want = REF[name](x)
        if name == "sigmoid":    # NumPy's 1/(1+exp(-x)) underflows to 0 early in float32
            want = REF[name](x.astype(np.float64 if dt == "f32" else np.longdouble)).astype(dtype)
    got = KERNELS[(name, dt)](x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = ~np.isfinite(want) | (want == 0)
    np.testing.assert_array_equal(got[fin], want[fin])
    np.testing.assert_array_equal(np.signbit(got[fin]), np.signbit(want[fin]))
    np.testing.assert_allclose(got[~fin], want[~fin], rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dt", ["f32", "f64"])
def test_pow(dt):
    dtype = np.float32 if dt == "f32" else np.float64
    k = k_pow32 if dt == "f32" else k_pow64
    rng = np.random.default_rng(3)
    n = 100_001
    x = np.concatenate([_logspace(rng, 1e-3, 1e3, n), -np.round(rng.uniform(1, 20, 1000))]).astype(dtype)
    y = np.concatenate([rng.uniform(-10, 10, n), np.round(rng.uniform(-8, 8, 1000))]).astype(dtype)
    wide = np.float64 if dt == "f32" else np.longdouble
    with np.errstate(all="ignore"):
        ref = np.power(x.astype(wide), y.astype(wide))
    err = ulp_error(k(x, y), ref, dtype)
    bound = (F32_ULPS if dt == "f32" else F64_ULPS)["pow"]
    assert err.max() <= bound, f"pow {dt}: {err.max():.2f} ulp"
    sx = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 2.0, -2.0, 0.5] * 4, dtype)
    sy = np.array([0.0, 1.0, -1.0, 0.5, 2.0, np.inf, -np.inf, np.nan, 3.0, -3.0] * 4, dtype)[::-1].copy()
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(k(sx, sy), np.power(sx, sy))


def test_literal_exponents_are_exact():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3.0, -1.5e20, 1e-30] * 5, np.float32)
    with np.errstate(all="ignore"):
        want = x * x + x + np.float32(1)
    np.testing.assert_array_equal(k_square32(x), want)


def test_fused_loop_is_vectorised():
    """With libmvec available, a fused transcendental loop calls the vector variants."""
    if not vmath.host_isas():
        pytest.skip("no libmvec on this host (scalar fallback in use)")
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    llvm_text = kernel_b1.lower(x).llvm()
    assert "_ZGV" in llvm_text and "_sinf" in llvm_text


@kernel
def kernel_b1(x: f32[n]) -> f32:
    return sum(sin(x) * exp(-x * x) + tanh(x) ** 2)


@kernel
def k_sincos32(x: f32[n]) -> (f32[n], f32[n]):
    return sin(x), cos(x)


def sincos_inputs(rng):
    """The sin/cos inputs, plus every float32 next to k*pi/2 up to the fast path's 2**16 limit,
    and arguments on both sides of the limit mixed within one vector."""
    k = np.arange(1, int(2 ** 16 / (np.pi / 2)) + 2, dtype=np.float64)
    near = (k * np.pi / 2).astype(np.float32)
    edge = np.float32(2 ** 16) + np.arange(-64, 64, dtype=np.float32) * np.float32(2 ** -7)
    mixed = np.stack([rng.uniform(-3, 3, 4096), rng.uniform(6e4, 7e4, 4096)], 1).ravel()
    parts = [inputs("sin", np.float32, rng), near, np.nextafter(near, np.float32(0)),
             np.nextafter(near, np.float32(np.inf)), edge, -edge, mixed]
    return np.concatenate([p.astype(np.float32) for p in parts])


def test_sincos_accuracy():
    """sin and cos of one float32 value are computed together (vmath.sincos_wrapper): <= 1.5 ulp."""
    x = sincos_inputs(np.random.default_rng(11))
    s, c = k_sincos32(x)
    for got, name in ((s, "sin"), (c, "cos")):
        err = ulp_error(got, reference(name, x, np.float32), np.float32)
        worst = int(np.argmax(err))
        assert err[worst] <= 1.5, f"paired {name}: {err[worst]:.2f} ulp at x={x[worst]!r}"


def test_sincos_special_values():
    with np.errstate(over="ignore"):
        x = np.array(SPECIALS * 3, dtype=np.float32)
    s, c = k_sincos32(x)
    with np.errstate(all="ignore"):
        for got, want in ((s, np.sin(x)), (c, np.cos(x))):
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            fin = want == 0
            np.testing.assert_array_equal(np.signbit(got[fin]), np.signbit(want[fin]))
            np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=3e-7, atol=0)


def test_sincos_only_when_paired():
    """A lone sin keeps libmvec's sinf; sin and cos of one value (a JVP of sin) share one call."""
    if not vmath.host_isas():
        pytest.skip("no libmvec on this host (scalar fallback in use)")
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    assert "sincosf" not in kernel_b1.lower(x).llvm()
    jvp_text = kernel_b1.jvp.lower(x, x).llvm()
    assert "__dslc_vm_sincosf" in jvp_text and "@__dslc_vm_sinf" not in jvp_text


def test_scalar_fallback_matches(monkeypatch):
    """DSLC_VECTOR_MATH=0 (the path other CPUs take) gives plain libm results."""
    monkeypatch.setenv("DSLC_VECTOR_MATH", "0")
    assert vmath.host_isas() == ()

    @kernel
    def f(x: f32[n]) -> f32[n]:
        return sin(x) * exp(-x * x) + tanh(x) ** 2 + log1p(abs(x))

    x = np.random.default_rng(0).standard_normal(10_001).astype(np.float32)
    xd = x.astype(np.float64)
    want = np.sin(xd) * np.exp(-xd * xd) + np.tanh(xd) ** 2 + np.log1p(np.abs(xd))
    np.testing.assert_allclose(f(x), want, rtol=2e-6, atol=1e-6)
    assert "_ZGV" not in f.lower(x).llvm()


def test_config_tag_in_cache_key(monkeypatch):
    """Turning vector math off changes the toolchain tag, hence the JIT cache key."""
    from compiler.codegen import llvm as backend
    on = backend.toolchain_version()
    monkeypatch.setenv("DSLC_VECTOR_MATH", "0")
    off = backend.toolchain_version()
    assert "/vm-scalar" in off
    # with vector math on (this host has an ISA for it) the tag, hence the cache key, differs
    assert ("/vm-scalar" in on) or on != off



def test_kernels_with_vector_math_realign_their_stack():
    """Vectors live across libmvec calls are spilled to the stack; a kernel and each of its
    outlined loops realign the stack to the vector width so that no spill slot straddles two cache
    lines (the ABI guarantees 16 bytes only)."""
    isas = vmath.host_isas()
    if not isas:
        pytest.skip("no libmvec on this host (scalar fallback in use)")
    x = np.linspace(-1, 1, 1 << 18, dtype=np.float32)    # big enough for a threaded loop
    text = kernel_b1.jvp.lower(x, x).llvm()
    width = 64 if "e" in isas else 32
    groups = dict(re.findall(r"^attributes #(\d+) = \{(.*)\}$", text, re.M))
    defines = re.findall(r"^define .*@(kernel_b1_jvp(?:\.chunk)?)\(.*\)[^#\n]* #(\d+) \{$", text, re.M)
    assert sorted(name for name, _ in defines) == ["kernel_b1_jvp", "kernel_b1_jvp.chunk"]
    for name, group in defines:
        assert f"alignstack={width}" in groups[group], (name, groups[group])
