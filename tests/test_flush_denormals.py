"""DSLC_FLUSH_DENORMALS=1: subnormal float results and inputs become zero inside kernels (on the
calling thread and on the worker pool's threads), nowhere else; the default keeps IEEE
subnormals. Oracle: IEEE float32 arithmetic (a product of two 1e-20s is the subnormal 1e-40)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not sys.platform.startswith("linux"),
                                reason="MXCSR flushing is x86-64 only; elsewhere the setting is ignored")

SCRIPT = textwrap.dedent('''
    from __future__ import annotations
    import json, os, sys
    import numpy as np
    import dsl
    from dsl import grad, kernel

    @kernel
    def scale(x: f32[n], y: f32) -> f32[n]:
        return x * y

    @kernel
    def total(x: f32[n], y: f32) -> f32:
        return sum(x * y)

    @kernel
    def square(x: f32) -> f32:
        return x * x

    @kernel
    def scale_later(x: f32[n], y: f32) -> f32[n]:
        return x * y

    big = np.full(1 << 19, 1e-20, np.float32)       # 8 chunks: the pool's workers take some
    tiny = np.float32(1e-20)
    out = {}
    out["map"] = [int(np.count_nonzero(scale(big, tiny))) for _ in range(6)]
    out["sum"] = [float(total(big, tiny)) for _ in range(6)]
    out["inputs"] = float(scale(np.full(3, 1e-40, np.float32), np.float32(1e10))[0])
    out["grad"] = float(grad(square)(np.float32(1e-39)))
    a, b = 1e-160, 1e-150
    out["python"] = a * b                           # a subnormal double, outside any kernel
    dsl.finish_compiling()                          # the final code, too
    out["final_map"] = [int(np.count_nonzero(scale(big, tiny))) for _ in range(6)]
    out["final_sum"] = [float(total(big, tiny)) for _ in range(6)]
    # a kernel compiled without the setting, on a pool whose threads a flushing call created
    os.environ["DSLC_FLUSH_DENORMALS"] = "0"
    out["later_map"] = [int(np.count_nonzero(scale_later(big, tiny))) for _ in range(6)]
    print(json.dumps(out))
''')

N = 1 << 19
IEEE_SUM = N * float(np.float32(1e-20) * np.float32(1e-20))      # 1e-40 each, summed in float64


def _run(tmp_path, flush: str) -> dict:
    script = tmp_path / "flush_script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, DSLC_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=ROOT, DSLC_NUM_THREADS="2",
               DSLC_FLUSH_DENORMALS=flush)
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_flushing_zeroes_subnormals_in_kernels_only_and_the_default_keeps_them(tmp_path):
    # one cache directory for both: the setting must be part of the cache key
    flushed = _run(tmp_path, "1")
    assert flushed["map"] == [0] * 6 and flushed["final_map"] == [0] * 6
    assert flushed["sum"] == [0.0] * 6 and flushed["final_sum"] == [0.0] * 6
    assert flushed["inputs"] == 0.0                      # a subnormal input reads as zero (DAZ)
    assert flushed["grad"] == 0.0                        # derived kernels flush too
    assert flushed["python"] == pytest.approx(1e-310, rel=1e-3, abs=0)  # the caller's mode is restored
    assert flushed["later_map"] == [N] * 6               # workers do not keep a flushing mode

    ieee = _run(tmp_path, "0")
    assert ieee["map"] == [N] * 6 and ieee["final_map"] == [N] * 6
    for s in ieee["sum"] + ieee["final_sum"]:
        assert s == pytest.approx(IEEE_SUM, rel=1e-3, abs=0)
    assert ieee["inputs"] == pytest.approx(1e-30, rel=1e-3, abs=0)
    assert ieee["grad"] == pytest.approx(2e-39, rel=1e-3, abs=0)
    assert ieee["later_map"] == [N] * 6
