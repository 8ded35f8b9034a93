"""Locating and running LLVM 22's `mlir-opt` and `mlir-translate` (Debian: `apt-get install mlir-22-tools`)."""
from __future__ import annotations

import os
import shutil
import subprocess

INSTALL_HINT = ("the MLIR tools of LLVM 22 (mlir-opt-22, mlir-translate-22) are not installed: on Debian/Ubuntu "
                "run `apt-get install mlir-22-tools` (from apt.llvm.org on older releases), or set "
                "DSLC_MLIR_OPT and DSLC_MLIR_TRANSLATE to their paths")

# scf -> cf, math -> libm calls (tan, tanh, log1p, expm1 exactly as libm computes them) then llvm,
# memref/arith/cf/func -> llvm (ARCHITECTURE.md, "MLIR route")
LOWERING = ("--convert-scf-to-cf", "--convert-math-to-libm", "--convert-math-to-llvm",
            "--expand-strided-metadata", "--finalize-memref-to-llvm", "--convert-arith-to-llvm",
            "--convert-cf-to-llvm", "--convert-func-to-llvm", "--reconcile-unrealized-casts")


class MlirToolsMissing(RuntimeError):
    pass


class MlirToolError(RuntimeError):
    """mlir-opt or mlir-translate rejected the input (a bug in dslc's MLIR printer)."""


def _find(env: str, name: str):
    p = os.environ.get(env)
    if p:
        return p if os.path.exists(p) else None
    for cand in (f"{name}-22", name):
        w = shutil.which(cand)
        if w and (cand.endswith("-22") or _major(w) == 22):
            return w
    p = f"/usr/lib/llvm-22/bin/{name}"
    return p if os.path.exists(p) else None


def _major(path):
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for tok in out.replace("-", " ").split():
        if tok[:1].isdigit() and "." in tok:
            return int(tok.split(".")[0])
    return None


_tools = None


def find_tools():
    """(mlir_opt, mlir_translate) paths, or None when either is missing."""
    global _tools
    if _tools is None:
        opt, tr = _find("DSLC_MLIR_OPT", "mlir-opt"), _find("DSLC_MLIR_TRANSLATE", "mlir-translate")
        _tools = (opt, tr) if opt and tr else False
    return _tools or None


def require_tools():
    t = find_tools()
    if t is None:
        raise MlirToolsMissing(INSTALL_HINT)
    return t


def _run(cmd, text: str, what: str) -> str:
    r = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise MlirToolError(f"{what} failed (exit {r.returncode}):\n{r.stderr.strip()}")
    return r.stdout


def verify(text: str) -> str:
    """Parse and verify MLIR text with mlir-opt; returns mlir-opt's (generic-free) reprint."""
    opt, _ = require_tools()
    return _run([opt, "--verify-each", "-"], text, "mlir-opt")


SPLIT = "// -----"


def lower_to_llvm_ir(text: str) -> str:
    """MLIR (func/arith/math/scf/memref) -> LLVM IR text."""
    return lower_many([text])[0]


def lower_many(texts) -> list:
    """Several MLIR modules -> their LLVM IR texts, with one mlir-opt and one mlir-translate process
    (`--split-input-file`: the tools' start-up dominates for small kernels)."""
    opt, tr = require_tools()
    texts = list(texts)
    if not texts:
        return []
    split = [f"--split-input-file={SPLIT}", f"--output-split-marker={SPLIT}"] if len(texts) > 1 else []
    joined = f"\n{SPLIT}\n".join(texts)
    llvm_dialect = _run([opt, *split, *LOWERING, "-"], joined, "mlir-opt lowering")
    out = _run([tr, *split, "--mlir-to-llvmir", "-"], llvm_dialect, "mlir-translate")
    parts = out.split(SPLIT) if split else [out]
    if len(parts) != len(texts):
        raise MlirToolError(f"mlir-translate returned {len(parts)} modules for {len(texts)} inputs")
    return parts
