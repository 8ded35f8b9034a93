"""SPEC section 6: `k.lower(*args)` stages as text, and the disk cache across processes."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import numpy as np

from dsl import kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@kernel
def predict(W: f32[k], b: f32, inputs: f32[n, k]) -> f32[n]:
    """Logistic regression."""
    return sigmoid(inputs @ W + b)


@kernel
def loopy(x: f64[n]) -> f64:
    s = 0.0
    for i in range(n):
        s += x[i] * x[i]
    return s


def test_lower_stages():
    W, inputs = np.ones(3, np.float32), np.ones((4, 3), np.float32)
    low = predict.lower(W, 0.5, inputs)
    a = low.ast()
    assert a and "predict" in a and "sigmoid" in a
    ir = low.ir()
    assert "func @predict" in ir and "matmul" in ir and "sigmoid" in ir and "f32[n, k]" in ir
    assert "lowered" in ir and "simplification" in ir
    assert "func @predict" in low.ir("optimized") and "func @predict" in low.ir("lowered")
    ll = low.llvm()
    assert "define" in ll and "float" in ll
    assert "define" in low.llvm(optimized=False)
    asm = low.asm()
    assert asm.strip() and ("ret" in asm or "retq" in asm)
    assert predict.__doc__ == "Logistic regression."
    np.testing.assert_allclose(predict(W, 0.5, inputs), 1 / (1 + np.exp(-3.5)), rtol=1e-6)


def test_lower_loop_ir_has_for():
    low = loopy.lower(np.ones(3))
    assert "for(" in low.ir("optimized")
    assert "double" in low.llvm()


CACHE_SCRIPT = textwrap.dedent('''
    from __future__ import annotations
    import time
    import numpy as np
    from dsl import kernel

    @kernel
    def cached_kernel(x: f64[n], y: f64[n]) -> f64:
        return sum(x * y) + 1.0

    x = np.arange(4.0)
    print(float(cached_kernel(x, x)))
''')


def _run(script, cache):
    env = dict(os.environ, DSLC_CACHE_DIR=str(cache), PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def test_disk_cache_across_processes_and_corruption(tmp_path):
    script = tmp_path / "uses_cache.py"
    script.write_text(CACHE_SCRIPT)
    cache = tmp_path / "cache"
    r1 = _run(script, cache)
    assert float(r1.stdout) == 15.0
    entries = glob.glob(str(cache / "[0-9a-f]*.dslc"))        # the kernel's (not the runtime's pieces)
    assert len(entries) == 1
    mtime = os.path.getmtime(entries[0])
    r2 = _run(script, cache)                    # warm: loaded from the cache, not rebuilt
    assert float(r2.stdout) == 15.0
    assert glob.glob(str(cache / "[0-9a-f]*.dslc")) == entries and os.path.getmtime(entries[0]) == mtime
    # corrupt the entry: it is detected, rebuilt and rewritten
    data = bytearray(open(entries[0], "rb").read())
    data[len(data) // 2] ^= 0xFF
    data = data[: len(data) - 7]
    open(entries[0], "wb").write(bytes(data))
    r3 = _run(script, cache)
    assert float(r3.stdout) == 15.0
    again = open(entries[0], "rb").read()
    assert again != bytes(data)
    r4 = _run(script, cache)
    assert float(r4.stdout) == 15.0
    # garbage of any kind is rebuilt as well
    open(entries[0], "wb").write(b"not a cache entry")
    assert float(_run(script, cache).stdout) == 15.0
    open(entries[0], "wb").write(b"")
    assert float(_run(script, cache).stdout) == 15.0
