"""GPU code generation without a GPU: the PTX of primal and derivative kernels assembles with
`ptxas -arch=sm_90`. Skipped (with the reason) where ptxas or libdevice is missing."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from dsl import grad, kernel
from gpu_tools import INSTALL_HINT, PTXAS, find_libdevice

pytestmark = pytest.mark.skipif(PTXAS is None or find_libdevice() is None, reason=INSTALL_HINT)


@kernel
def b1(x: f32[n]) -> f32:
    return sum(sin(x) * exp(-x * x) + tanh(x) ** 2)


@kernel
def euler(x0: f64[d], A: f64[d, d], h: f64, steps: i64) -> f64:
    x = x0
    for t in range(steps):
        x = x + h * (-x + tanh(A @ x))
    return sum(x)


@kernel
def mixed(x: f32[n], k: i64) -> (f32[n], i64):
    y = zeros(n)
    i = 0
    while i < n:
        y[i] = x[i] // 2.0 + x[i] % 3.0 + maximum(x[i], 0.0) ** 1.5 + log1p(abs(x[i])) - expm1(-x[i] * x[i])
        i += 1
    return where(y > 0.0, y, sqrt(abs(y))) + cos(x) * tan(x) / (1.0 + floor(x) ** 2), k // 3 + k % 5


def _assemble(ptx: str, tmp_path):
    src = tmp_path / "k.ptx"
    src.write_text(ptx)
    r = subprocess.run([PTXAS, "-arch=sm_90", str(src), "-o", str(tmp_path / "k.cubin")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case", ["b1", "b1.jvp", "grad(b1)", "euler", "grad(euler)", "euler.jvp", "mixed"])
def test_ptx_assembles(case, tmp_path):
    x = np.linspace(-1, 1, 5).astype(np.float32)
    xd, A = np.ones(3), np.eye(3)
    lowered = {
        "b1": lambda: b1.lower(x),
        "b1.jvp": lambda: b1.jvp.lower(x, x),
        "grad(b1)": lambda: grad(b1).lower(x),
        "euler": lambda: euler.lower(xd, A, 0.1, 3),
        "grad(euler)": lambda: grad(euler).lower(xd, A, 0.1, 3),
        "euler.jvp": lambda: euler.jvp.lower(xd, A, 0.1, 3, xd, A, 0.0),
        "mixed": lambda: mixed.lower(x, 7),
    }[case]()
    ptx = lowered.ptx()
    assert ".entry" in ptx and "sm_90" in ptx
    assert "llvm." not in ptx                   # math went through libdevice
    _assemble(ptx, tmp_path)


def test_a_float32_sum_converts_each_group_of_rows_once():
    # the unrolled group of a 1-D job sums its float32 terms first and widens the group's sum
    # (before: one float32 -> float64 conversion, a slow instruction, per element)
    from compiler.codegen import nvptx
    ptx = b1.lower(np.zeros(5, np.float32)).ptx()
    assert 1 <= ptx.count("cvt.f64.f32") < nvptx.UNROLL


@kernel
def affine200(x: f32[200]) -> f32[200]:
    return x * 2.0 + 1.0


def test_a_loop_nest_of_a_few_hundred_elements_is_a_job_of_the_whole_grid():
    # one GPU thread alone is slow (~0.02-0.3 us per element): from 2 * nvptx.GRAIN elements up,
    # a nest is spread over the grid, even when its extent is known at compile time
    ptx = affine200.lower(np.zeros(200, np.float32)).ptx()
    assert "grid_sync" in ptx and "_chunk" in ptx


def test_derived_kernel_names_do_not_reach_llvm():
    # 'grad(b1)' is not a valid symbol; it is sanitised, and .asm() (host) works too
    assert "grad_b1" in grad(b1).lower(np.ones(3, np.float32)).asm()


def test_dslc_target_cuda_writes_ptx_for_every_entry_point(tmp_path):
    import json

    from dsl.cli import main
    src = tmp_path / "k.dsl"
    src.write_text("def loss(w: f32[k], X: f32[n, k]) -> f32:\n"
                   "    return sum(tanh(X @ w) ** 2)\n\n"
                   "def scale(x: f64[n], a: f64) -> f64[n]:\n"
                   "    out = zeros(n)\n"
                   "    for i in range(n):\n"
                   "        out[i] = a * x[i]\n"
                   "    return out\n")
    out = tmp_path / "build"
    assert main([str(src), "-o", str(out), "--target", "cpu,cuda", "--derive", "jvp,vjp,grad", "-q"]) == 0
    ptx = (out / "k.ptx").read_text()
    for sym in ("loss", "loss_jvp", "loss_vjp", "loss_grad", "scale", "scale_jvp", "scale_vjp"):
        assert f".entry {sym}(" in ptx
    _assemble(ptx, tmp_path)
    manifest = json.loads((out / "k.json").read_text())
    assert manifest["targets"] == ["cpu", "cuda"] and manifest["ptx"] == "k.ptx"
