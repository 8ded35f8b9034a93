"""Every fully annotated kernel defined in the test suite's modules, with its JVP and VJP, exported
to MLIR and verified by LLVM 22's mlir-opt (one batched run). Skipped without mlir-opt-22."""
from __future__ import annotations

import importlib
import pathlib
import subprocess

import pytest

from compiler.ad.jvp import jvp_function
from compiler.ad.transpose import vjp_function
from compiler.diagnostics import DslcError
from compiler.ir import is_float
from compiler.mlir import tools
from compiler.mlir.printer import to_mlir
from compiler.pipeline import prepare
from dsl.kernel import Kernel

pytestmark = pytest.mark.skipif(tools.find_tools() is None, reason=tools.INSTALL_HINT)

HERE = pathlib.Path(__file__).parent


def _suite_kernels():
    found = []
    for path in sorted(HERE.glob("test_*.py")):
        if path.stem == pathlib.Path(__file__).stem:
            continue
        try:
            mod = importlib.import_module(path.stem)
        except Exception:              # a module that needs something absent here is skipped by pytest too
            continue
        for name, obj in vars(mod).items():
            if isinstance(obj, Kernel) and obj._fully_declared():
                found.append((f"{path.stem}.{name}", obj))
    return found


def _forms(k: Kernel):
    """(label, prepared IR) for the kernel, its JVP and, with a float output, its VJP."""
    base = k._lower_ir(tuple(k._declared))
    yield "primal", prepare(k._lower_ir(tuple(k._declared)))
    if any(is_float(p.type.dtype) for p in base.params):
        yield "jvp", prepare(jvp_function(k._lower_ir(tuple(k._declared))))
        if all(is_float(t.dtype) for t in base.result_types):
            yield "vjp", prepare(vjp_function(k._lower_ir(tuple(k._declared))))


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


# kernels whose termination depends on their arguments get arguments that terminate
FIXED_ARGS = {"test_jvp.grow_until": (1.0, 1.3),
              # compiled without bounds checks: random x[i] reads (and its VJP writes) past the end
              "test_lang_errors.no_bounds": (__import__("numpy").ones(3), 1)}


def _random_args(k: Kernel, rng):
    """Inputs matching k's annotations: named dims bound to small extents, small integers."""
    import numpy as np
    sizes, args = {}, []
    np_dtype = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}
    for p in k._declared:
        dt = np_dtype[p.dtype]
        if not p.dims:
            args.append(bool(rng.integers(0, 2)) if p.dtype == "bool" else
                        int(rng.integers(1, 4)) if p.dtype in ("i32", "i64") else float(rng.uniform(0.2, 1.5)))
            continue
        shape = tuple(d if isinstance(d, int) else sizes.setdefault(d, int(rng.integers(2, 5))) for d in p.dims)
        if p.dtype == "bool":
            args.append(rng.integers(0, 2, shape).astype(bool))
        elif p.dtype in ("i32", "i64"):
            args.append(rng.integers(-3, 4, shape).astype(dt))
        else:
            args.append(rng.uniform(-1.5, 1.5, shape).astype(dt))
    return args


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
    import zlib
    cases = []
    for label, k in _suite_kernels():
        try:
            fn = prepare(k._lower_ir(tuple(k._declared)))
        except DslcError:
            continue
        # one generator per kernel: adding a kernel to the suite does not change the others' inputs
        rng = np.random.default_rng(zlib.crc32(label.encode()))
        args = list(FIXED_ARGS[label]) if label in FIXED_ARGS else _random_args(k, rng)
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
