"""Every fully annotated kernel defined in the test suite's modules, with its JVP and VJP, exported
to MLIR and verified by LLVM 22's mlir-opt (one batched run). Skipped without mlir-opt-22."""
from __future__ import annotations

import subprocess

import pytest

from compiler.diagnostics import DslcError
from compiler.mlir import tools
from compiler.mlir.printer import to_mlir
from compiler.pipeline import prepare
from suite_kernels import args_for, forms as _forms, suite_kernels as _suite_kernels

pytestmark = pytest.mark.skipif(tools.find_tools() is None, reason=tools.INSTALL_HINT)


def test_every_suite_kernel_and_its_derivatives_verify_with_mlir_opt():
    texts, labels, skipped = [], [], []
    kernels = _suite_kernels()
    assert len(kernels) > 50, "the test suite's kernels were not found"
    for label, k in kernels:
        try:
            for form, fn in _forms(k):
                texts.append(to_mlir(fn, f"{k.name}_{form}", k.boundscheck).text)
                labels.append(f"{label} ({form})")
        except DslcError as e:         # kernels written to fail compilation (error tests)
            skipped.append((label, e.message))
    assert len(texts) > 100
    opt, _ = tools.require_tools()
    joined = f"\n{tools.SPLIT}\n".join(texts)
    r = subprocess.run([opt, f"--split-input-file={tools.SPLIT}", "--verify-each", "-o", "/dev/null", "-"],
                       input=joined, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[:4000]


def _outcome(f, args):
    try:
        r = f(*args)
    except Exception as e:                 # both backends must raise the same exception type
        return ("raised", type(e).__name__)
    return ("ok", r if isinstance(r, tuple) else (r,))


def test_every_suite_kernel_runs_the_same_through_mlir():
    import numpy as np
    from compiler.mlir.backend import compile_many
    from runtime import Signature, make_caller
    cases = []
    for label, k in _suite_kernels():
        try:
            fn = prepare(k._lower_ir(tuple(k._declared)))
        except DslcError:
            continue
        args = args_for(label, k)
        cases.append((label, k, fn, args))
    compiled = compile_many([fn for _, _, fn, _ in cases], opt=0)
    mismatches = []
    for (label, k, fn, args), c in zip(cases, compiled):
        via_mlir = make_caller(Signature.from_json(c.signature), c.c_address, None)
        native, mlir = _outcome(k, args), _outcome(via_mlir, args)
        if native[0] != mlir[0] or (native[0] == "raised" and native[1] != mlir[1]):
            mismatches.append((label, native if native[0] == "raised" else "ok", mlir if mlir[0] == "raised" else "ok"))
            continue
        if native[0] == "ok":
            for a, b in zip(native[1], mlir[1]):
                a, b = np.asarray(a), np.asarray(b)
                if a.dtype.kind in "biu":
                    same = np.array_equal(a, b)
                else:
                    tol = 1e-4 if a.dtype == np.float32 else 1e-9
                    same = np.allclose(a, b, rtol=tol, atol=tol, equal_nan=True)
                if not same:
                    mismatches.append((label, "values differ", float(np.nanmax(np.abs(a - b))) if a.size else 0))
                    break
    assert len(cases) > 200
    assert not mismatches, mismatches[:10]
