"""MLIR export of dslc kernels and the `via="mlir"` backend (mlir-opt + mlir-translate + llvmlite).

    to_mlir(fn)            -> MlirModule (text in func/arith/math/scf/memref, dslc's ABI semantics)
    tools.find_tools()     -> paths of mlir-opt / mlir-translate (LLVM 22) or None
    backend.compile_mlir() -> a Compiled entry point callable through runtime.make_caller
"""
from .printer import MlirModule, to_mlir  # noqa: F401
from .tools import MlirToolsMissing, find_tools, verify  # noqa: F401
