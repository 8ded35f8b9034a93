"""dslc's front end: write array kernels in a Python-like DSL, compile them, differentiate them."""
from compiler.diagnostics import (DslcError, DslNameError, DslSyntaxError, DslTypeError,
                                  DslValueError, UnsupportedError)

from .dtypes import bool_, f32, f64, i32, i64
from .kernel import Kernel, compile_file, compile_source, kernel

__all__ = ["kernel", "Kernel", "compile_file", "compile_source", "DslcError", "DslSyntaxError",
           "DslNameError", "DslTypeError", "DslValueError", "UnsupportedError", "f32", "f64", "i32", "i64"]

from .transforms import grad, hessian, hvp, jacfwd, jacrev, jvp, value_and_grad, vjp  # noqa: E402

__all__ += ["jvp", "jacfwd", "jacrev", "hessian", "hvp", "vjp", "grad", "value_and_grad"]

from . import testing  # noqa: E402,F401  (dsl.testing.check_jvp)
from . import cuda  # noqa: E402,F401  (dsl.cuda: GPU helpers, SPEC section 1)
