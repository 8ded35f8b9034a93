"""dslc's front end: write array kernels in a Python-like DSL, compile them, differentiate them."""
from compiler.diagnostics import (DslcError, DslNameError, DslSyntaxError, DslTypeError,
                                  DslValueError, UnsupportedError)

from .kernel import Kernel, compile_file, compile_source, kernel

__all__ = ["kernel", "Kernel", "compile_file", "compile_source", "DslcError", "DslSyntaxError",
           "DslNameError", "DslTypeError", "DslValueError", "UnsupportedError"]
