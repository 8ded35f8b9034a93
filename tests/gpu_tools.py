"""Where the tests find NVIDIA's PTX assembler and libdevice. Not a test module.

ptxas: $PATH, a CUDA toolkit under /usr/local/cuda*, else the pip wheels that ship it:
nvidia-cuda-nvcc-cu12 (`nvidia/cuda_nvcc/bin/ptxas`, the `gpu-tools` extra of pyproject.toml,
installed by .ci/run where the system has no ptxas) or nvidia-cuda-nvcc 13 (`nvidia/cu13/bin/ptxas`).
libdevice: compiler.codegen.nvptx.libdevice_path(), which searches the same wheels."""
from __future__ import annotations

import glob
import importlib.util
import os
import shutil

INSTALL_HINT = ("needs ptxas and libdevice: a CUDA toolkit, or "
                "python3 -m pip install '.[gpu-tools]' (the nvidia-cuda-nvcc-cu12 wheel)")


def _wheel_roots():
    """The directories of the `nvidia` namespace package (where the nvidia-* wheels install)."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    return list(spec.submodule_search_locations or []) if spec else []


def find_ptxas() -> str | None:
    cands = [shutil.which("ptxas")] + sorted(glob.glob("/usr/local/cuda*/bin/ptxas"), reverse=True)
    for root in _wheel_roots():
        cands += sorted(glob.glob(os.path.join(root, "*", "bin", "ptxas")))
    return next((c for c in cands if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def find_libdevice() -> str | None:
    from compiler.codegen import nvptx
    try:
        return nvptx.libdevice_path()
    except nvptx.LibdeviceNotFound:
        return None


PTXAS = find_ptxas()
