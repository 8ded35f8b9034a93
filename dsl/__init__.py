"""dslc's front end: write array kernels in a Python-like DSL, compile them, differentiate them.

Importing this package is cheap on purpose (issue 7's warm start): the parser (lark), the
compiler and LLVM are imported when a kernel is first parsed or compiled, and `dsl.testing` /
`dsl.cuda` when first used."""
from compiler.diagnostics import (DslcError, DslNameError, DslSyntaxError, DslTypeError,
                                  DslValueError, UnsupportedError)

from .dtypes import bool_, f32, f64, i32, i64
from .kernel import Kernel, compile_file, compile_source, kernel

__all__ = ["kernel", "Kernel", "compile_file", "compile_source", "DslcError", "DslSyntaxError",
           "DslNameError", "DslTypeError", "DslValueError", "UnsupportedError", "f32", "f64", "i32", "i64"]

from .transforms import grad, hessian, hvp, jacfwd, jacrev, jvp, value_and_grad, vjp  # noqa: E402

__all__ += ["jvp", "jacfwd", "jacrev", "hessian", "hvp", "vjp", "grad", "value_and_grad"]



def finish_compiling(timeout=None) -> bool:
    """Block until every kernel compiled so far runs its final (-O3) machine code: a compile that
    misses the disk cache first returns quicker code and replaces it from a background thread
    (docs/design.md, "Two tiers"). Returns False if `timeout` seconds passed first. Time a
    kernel's steady state after this."""
    import sys
    tiering = sys.modules.get("compiler.tiering")     # not imported: nothing was compiled
    return tiering.wait(timeout) if tiering is not None else True


__all__ += ["finish_compiling"]

_LAZY_SUBMODULES = ("testing", "cuda")   # dsl.testing.check_jvp; dsl.cuda: GPU helpers (SPEC section 1)


def __getattr__(name):
    # `dsl.cuda` / `dsl.testing` without importing them (runtime.cuda alone is ~1000 lines) until used
    if name in _LAZY_SUBMODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
