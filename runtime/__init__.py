"""dslc's runtime: calling compiled kernels from Python with only NumPy and ctypes.

`Signature` describes an entry point (the ABI of docs/design.md), `make_caller` turns one into a
Python callable, `load_library` loads a library built by `dslc`. This package imports only the
standard library and NumPy.
"""
from .abi import ABI_VERSION, OutputSpec, ParamSpec, Signature, Site
from .call import make_caller
from .library import Library, LibraryError, load_library

__all__ = ["ABI_VERSION", "Signature", "ParamSpec", "OutputSpec", "Site", "make_caller", "load_library",
           "Library", "LibraryError"]
