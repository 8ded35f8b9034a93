"""Every suite kernel's JVP and VJP run natively and through the MLIR backend (compare results).

A long differential check (~7 minutes on 2 cores, too long for the test suite): it compiles ~500
derivative kernels through mlir-opt-22/mlir-translate-22. tests/test_mlir_all_kernels.py runs
the primal of every suite kernel the same way and verifies every derivative's MLIR.

History: written in session 2, when an abort inside malloc looked like MLIR-compiled derivatives
corrupting the heap. The cause was the harness: `test_lang_errors.no_bounds` is compiled with
`boundscheck=False` and its random inputs made its native VJP write past its buffer (a
documented unchecked access); `suite_kernels.FIXED_ARGS` now gives it in-bounds inputs. With
them, the comparison finds no mismatches, also under PYTHONMALLOC=malloc:

    PYTHONMALLOC=malloc PYTHONPATH=. python3 bench/mlir_derivatives_check.py
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from compiler.ad.jvp import jvp_function  # noqa: E402
from compiler.ad.transpose import vjp_function  # noqa: E402
from compiler.diagnostics import DslcError  # noqa: E402
from compiler.ir import is_float  # noqa: E402
from compiler.pipeline import prepare  # noqa: E402
from suite_kernels import FIXED_ARGS, random_args as _random_args, suite_kernels as _suite_kernels  # noqa: E402
from test_mlir_all_kernels import _outcome  # noqa: E402


def test_every_suite_kernels_jvp_and_vjp_run_the_same_through_mlir():
    import numpy as np
    from compiler.mlir.backend import compile_many
    from runtime import Signature, make_caller
    import zlib
    cases = []
    for label, k in _suite_kernels():
        try:
            base = k._lower_ir(tuple(k._declared))
        except DslcError:
            continue
        rng = np.random.default_rng(zlib.crc32(label.encode()) + 1)
        args = list(FIXED_ARGS[label]) if label in FIXED_ARGS else _random_args(k, rng)
        fpos = [i for i, p in enumerate(base.params) if is_float(p.type.dtype)]
        if not fpos:
            continue
        kind, out = _outcome(k, args)
        if kind != "ok":
            continue                       # inputs this kernel rejects: covered by the primal test
        tangents = [np.asarray(rng.uniform(-1, 1, np.shape(args[i]))).astype(np.asarray(args[i]).dtype)
                    if np.ndim(args[i]) else float(rng.uniform(-1, 1)) for i in fpos]
        cases.append((label + " jvp", k.jvp, prepare(jvp_function(k._lower_ir(tuple(k._declared)))),
                      args + tangents))
        if all(is_float(t.dtype) for t in base.result_types):
            cts = [np.asarray(rng.uniform(-1, 1, np.shape(o))).astype(np.asarray(o).dtype)
                   if np.ndim(o) else float(rng.uniform(-1, 1)) for o in out]
            cases.append((label + " vjp", k.vjp, prepare(vjp_function(k._lower_ir(tuple(k._declared)))),
                          args + cts))
    compiled = compile_many([fn for _, _, fn, _ in cases], opt=0)
    mismatches = []
    for (label, kd, fn, a), c in zip(cases, compiled):
        via_mlir = make_caller(Signature.from_json(c.signature), c.c_address, None)
        native, mlir = _outcome(kd, a), _outcome(via_mlir, a)
        if native[0] != mlir[0] or (native[0] == "raised" and native[1] != mlir[1]):
            mismatches.append((label, native[1] if native[0] == "raised" else "ok",
                               mlir[1] if mlir[0] == "raised" else "ok"))
            continue
        if native[0] == "ok":
            for x, y in zip(native[1], mlir[1]):
                x, y = np.asarray(x), np.asarray(y)
                tol = 1e-3 if x.dtype == np.float32 else 1e-8
                if not np.allclose(x, y, rtol=tol, atol=tol, equal_nan=True):
                    mismatches.append((label, "values differ", float(np.nanmax(np.abs(x - y)))))
                    break
    assert len(cases) > 300
    assert not mismatches, mismatches[:10]


if __name__ == "__main__":
    test_every_suite_kernels_jvp_and_vjp_run_the_same_through_mlir()
    print("no mismatches")
