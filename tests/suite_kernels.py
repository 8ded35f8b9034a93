"""Shared by the all-kernels tests (MLIR, PTX, GPU): every fully annotated kernel defined in the
test suite's modules, its derivative forms, and reproducible inputs for it. Not a test module."""
from __future__ import annotations

import importlib
import pathlib
import re
import zlib

import numpy as np

from compiler.ad.jvp import jvp_function
from compiler.ad.transpose import vjp_function
from compiler.ir import is_float
from compiler.pipeline import prepare
from dsl.kernel import Kernel

HERE = pathlib.Path(__file__).parent


def suite_kernels():
    """[(label 'module.name', Kernel)] for every fully annotated kernel bound at module level in
    tests/test_*.py (the *_all_kernels modules, which only consume this list, excluded)."""
    found = []
    for path in sorted(HERE.glob("test_*.py")):
        if path.stem.endswith("_all_kernels"):
            continue
        try:
            mod = importlib.import_module(path.stem)
        except Exception:              # a module that needs something absent here is skipped by pytest too
            continue
        for name, obj in vars(mod).items():
            if isinstance(obj, Kernel) and obj._fully_declared():
                found.append((f"{path.stem}.{name}", obj))
    return found


def has_float_param(k: Kernel) -> bool:
    return any(p.dtype in ("f32", "f64") for p in k._declared)


def forms(k: Kernel):
    """(label, prepared IR) for the kernel, its JVP and, with float outputs only, its VJP.
    Lowering errors (DslcError) propagate: the error tests' kernels raise them."""
    base = k._lower_ir(tuple(k._declared))
    yield "primal", prepare(k._lower_ir(tuple(k._declared)))
    if any(is_float(p.type.dtype) for p in base.params):
        yield "jvp", prepare(jvp_function(k._lower_ir(tuple(k._declared))))
        if all(is_float(t.dtype) for t in base.result_types):
            yield "vjp", prepare(vjp_function(k._lower_ir(tuple(k._declared))))


def symbol(label: str, form: str) -> str:
    """A valid PTX/C identifier for (kernel label, form)."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", f"{label}_{form}")
    return s if re.match(r"[A-Za-z_]", s) else "_" + s


#: "label (form)" -> why the GPU code generator refuses it (UnsupportedError); shared by
#: test_ptx_all_kernels and test_gpu_all_kernels, which fail when the set of refused kernels changes.
GPU_UNSUPPORTED: dict[str, str] = {}

# kernels whose termination depends on their arguments get arguments that terminate
FIXED_ARGS = {"test_jvp.grow_until": (1.0, 1.3),
              # compiled without bounds checks: random x[i] reads (and its VJP writes) past the end
              "test_lang_errors.no_bounds": (np.ones(3), 1)}

_NP_DTYPE = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}


def random_args(k: Kernel, rng):
    """Inputs matching k's annotations: named dims bound to small extents, small integers."""
    sizes, args = {}, []
    for p in k._declared:
        dt = _NP_DTYPE[p.dtype]
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


def kernel_rng(label: str):
    """One generator per kernel: adding a kernel to the suite does not change the others' inputs."""
    return np.random.default_rng(zlib.crc32(label.encode()))


def args_for(label: str, k: Kernel):
    return list(FIXED_ARGS[label]) if label in FIXED_ARGS else random_args(k, kernel_rng(label))


def like(values, rng):
    """Random tangents or cotangents shaped and typed like `values` (floats in [-1, 1])."""
    return [np.asarray(rng.uniform(-1, 1, np.shape(v))).astype(np.asarray(v).dtype) if np.ndim(v)
            else float(rng.uniform(-1, 1)) for v in values]
