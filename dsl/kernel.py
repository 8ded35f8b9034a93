"""`@kernel` and the `Kernel` object: parse once, compile per signature (dtypes and ranks), call."""
from __future__ import annotations

import inspect
import threading
from typing import Optional

import numpy as np

from compiler import ir
from compiler.diagnostics import DslTypeError
from compiler.pipeline import compile_function, prepare
from runtime import Signature, make_caller

from . import ast as A
from .lower import Lowering, ParamType, parse_type
from .parser import parse

_NP_TO_DSL = {np.dtype("float32"): "f32", np.dtype("float64"): "f64", np.dtype("int32"): "i32",
              np.dtype("int64"): "i64", np.dtype("bool"): "bool"}


class _Anchor:
    """Stand-in for a Lowering when annotations are read outside one (for error locations)."""

    def __init__(self, source):
        self.source = source

    def error(self, cls, msg, node):
        from compiler.diagnostics import Loc
        return cls(msg, Loc(self.source.filename, node.span.line, node.span.col, self.source.line(node.span.line)))


def _symbol(name: str) -> str:
    """A linker-safe symbol for a kernel name (derived kernels are named like 'grad(f)' or
    'f.jvp'; LLVM aborts the process on some characters, so they never reach it)."""
    import re
    s = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "kernel"
    return s if not s[0].isdigit() else "k_" + s


class Lowered:
    """Every stage of one kernel specialisation as text."""

    def __init__(self, kernel: "Kernel", ptypes):
        self.kernel, self.ptypes = kernel, ptypes
        self._before = kernel._lower_ir(ptypes)
        self._before_text = ir.print_function(self._before)
        self._fn = prepare(kernel._lower_ir(ptypes))

    def ast(self) -> str:
        k = self.kernel
        while not hasattr(k, "fdef"):
            k = k.base
        return A.dump(k.fdef)

    def ir(self, stage: str = "all") -> str:
        """The SSA IR. `stage`: 'source' (a derivative kernel's base kernel, before the derivative
        passes), 'lowered' (as checked and lowered, after any derivative pass), 'optimized' (after
        simplification), or 'all' (every stage that applies, labelled)."""
        after = ir.print_function(self._fn)
        base = self._base_text()
        if stage == "source":
            return base if base is not None else self._before_text
        if stage == "lowered":
            return self._before_text
        if stage == "optimized":
            return after
        parts = [] if base is None else [f"// before differentiation ({self.kernel.base.name})\n{base}"]
        label = "after differentiation" if base is not None else "lowered"
        parts += [f"// {label}\n{self._before_text}", f"// after simplification\n{after}"]
        return "\n\n".join(parts)

    def _base_text(self):
        base = getattr(self.kernel, "base", None)
        if base is None:
            return None
        nb = base._arity(self.ptypes)
        return ir.print_function(base._lower_ir(tuple(self.ptypes[:nb])))

    def mlir(self) -> str:
        """The kernel (after any derivative pass and simplification) in MLIR's upstream dialects
        (func, arith, math, scf, memref), with dslc's entry-point ABI; `mlir-opt-22` accepts it."""
        from compiler.mlir import to_mlir
        return to_mlir(self._fn, _symbol(self.kernel.name), self.kernel.boundscheck).text

    def _module(self):
        from compiler.codegen import llvm as backend
        return backend.build_module(self._fn, _symbol(self.kernel.name), self.kernel.boundscheck, vector_math="host", blas=True)[0]

    def llvm(self, optimized: bool = True) -> str:
        from compiler.codegen import llvm as backend
        mod = self._module()
        if not optimized:
            return str(mod)
        return str(backend.parse_and_optimise(mod, backend.host_target_machine()))

    def asm(self) -> str:
        from compiler.codegen import llvm as backend
        tm = backend.host_target_machine()
        return tm.emit_assembly(backend.parse_and_optimise(self._module(), tm))

    def ptx(self, arch: str = "sm_90") -> str:
        """PTX for NVIDIA GPUs (needs no GPU; assembles with `ptxas -arch=sm_90`)."""
        from compiler.codegen import nvptx
        return nvptx.emit_ptx(self._fn, _symbol(self.kernel.name), self.kernel.boundscheck, arch=arch)[0]


class KernelBase:
    """What every kernel (source or derived) shares: per-signature compilation and calling.
    Subclasses say how to type their parameters and how to produce their IR."""

    @property
    def backend(self) -> str:
        """'native' (dslc's code generator) or 'mlir' (see with_backend); a derived kernel
        (f.jvp, grad(f), ...) follows its base unless set itself."""
        b = self.__dict__.get("_backend")
        if b is not None:
            return b
        base = self.__dict__.get("base")
        return base.backend if base is not None else "native"

    def _init_base(self, name: str, boundscheck: bool):
        self.name = name
        self.__name__ = name
        self.boundscheck = boundscheck
        self._lock = threading.Lock()
        self._callers = {}
        self._fixed = None
        self._jvp = None

    def _caller(self, ptypes):
        key = tuple((p.dtype, tuple(p.dims)) for p in ptypes)
        c = self._callers.get(key)
        if c is not None:
            return c
        with self._lock:
            c = self._callers.get(key)
            if c is None:
                fn = prepare(self._lower_ir(ptypes))
                if self.backend == "mlir":
                    from compiler.mlir.backend import compile_mlir
                    compiled = compile_mlir(fn, self.boundscheck)
                else:
                    compiled = compile_function(fn, self.boundscheck)
                c = make_caller(Signature.from_json(compiled.signature), compiled.c_address,
                                compiled.py_address or None, target_name=self.name)
                self._callers[key] = c
        return c

    def __call__(self, *args, target: Optional[str] = None):
        f = self._fixed
        if f is not None and target is None:
            try:
                return f(*args)
            except TypeError:
                if not any(hasattr(a, "__cuda_array_interface__") for a in args):
                    raise
                from . import gpu                # device inputs run on the GPU
                return gpu.call(self, args)
        if target == "interpret":               # the NumPy reference evaluator (dsl/interpret.py)
            from .interpret import call as _interpret
            return _interpret(self, args)
        if target == "cuda" or (target is None and any(hasattr(a, "__cuda_array_interface__") for a in args)):
            from . import gpu
            return gpu.call(self, args, forced=target == "cuda")
        if target not in (None, "cpu"):
            raise ValueError(f"unknown target {target!r} (expected 'cpu', 'cuda' or 'interpret')")
        ptypes = self._param_types(args)
        c = self._caller(ptypes)
        if self._fully_declared():
            self._fixed = c
        return c(*args)

    def with_backend(self, via: str) -> "KernelBase":
        """This kernel compiled by another backend: `via="mlir"` lowers it through MLIR (mlir-opt-22,
        mlir-translate-22, then llvmlite's JIT); `"native"` is dslc's own code generator. Returns a new
        kernel object (same source, own compiled-code cache); derivatives of it (`.jvp`, `.vjp`,
        `grad(...)`) use the same backend."""
        if via not in ("native", "mlir"):
            raise ValueError(f"unknown backend via={via!r} (expected 'native' or 'mlir')")
        if via == self.backend:
            return self
        import copy
        k = copy.copy(self)
        k._backend = via
        k._lock = threading.Lock()
        k._callers = {}
        k._fixed = None
        k._jvp = None
        k._vjp = None
        return k

    def lower(self, *args) -> "Lowered":
        """Every compilation stage for these example arguments: .ast() .ir() .llvm() .asm()."""
        return Lowered(self, self._param_types(args))

    @property
    def jvp(self) -> "KernelBase":
        """The forward-mode derivative kernel: `f.jvp(*primals, *tangents) -> (*outs, *tangent_outs)`."""
        if self._jvp is None:
            from .transforms import jvp_kernel
            self._jvp = jvp_kernel(self)
        return self._jvp

    @property
    def vjp(self) -> "KernelBase":
        """The reverse-mode derivative kernel: `f.vjp(*primals, *cotangents) -> (*outs, *cotangents)`,
        one cotangent per floating-point parameter."""
        if getattr(self, "_vjp", None) is None:
            from .transforms import vjp_kernel
            self._vjp = vjp_kernel(self)
        return self._vjp

    def __repr__(self):
        return f"<dsl.Kernel {self.name}>"


class Kernel(KernelBase):
    """A compiled-on-demand DSL kernel. Call it with NumPy arrays and scalars."""

    def __init__(self, fdef: A.FunctionDef, source: A.Source, resolve=None, boundscheck: bool = True):
        self.fdef, self.source = fdef, source
        self._init_base(fdef.name, boundscheck)
        self.__doc__ = _docstring(fdef)
        self._resolve = resolve or (lambda name: None)
        self._dsl_definition = (fdef, source)
        anchor = _Anchor(source)
        self._declared = []
        for p in fdef.params:
            if p.annotation is None:
                self._declared.append(None)
            else:
                dt, dims = parse_type(p.annotation, anchor, anon_prefix=p.name)
                self._declared.append(ParamType(dt, dims))

    def _fully_declared(self) -> bool:
        return all(d is not None for d in self._declared)

    def _arity(self, seq=()) -> int:
        return len(self.fdef.params)

    def param_names(self, seq=()) -> list:
        return [p.name for p in self.fdef.params]

    # ---- compilation -------------------------------------------------------------------
    def _param_types(self, args) -> tuple:
        if len(args) != len(self.fdef.params):
            raise TypeError(f"{self.name}() takes {len(self.fdef.params)} argument(s) "
                            f"({', '.join(p.name for p in self.fdef.params)}), got {len(args)}")
        out, weak = [], []
        for k, (p, decl, a) in enumerate(zip(self.fdef.params, self._declared, args)):
            if decl is not None:
                out.append(decl)
                continue
            out.append(_infer_param_type(p.name, a))
            if type(a) is float:
                weak.append(k)
        if weak:
            # a Python float is weakly typed (as a literal is): it takes the kernel's float type,
            # so `f(x_f32, 0.5)` stays f32
            floats = {t.dtype for k, t in enumerate(out) if k not in weak and t.dtype in ("f32", "f64")}
            if floats == {"f32"}:
                for k in weak:
                    out[k] = ParamType("f32", ())
        return tuple(out)

    def _lower_ir(self, ptypes) -> ir.Function:
        return Lowering(self.fdef, self.source, list(ptypes), self._resolve).lower_function()


def _docstring(fdef):
    if fdef.body and isinstance(fdef.body[0], A.ExprStmt) and isinstance(fdef.body[0].value, A.Str):
        return fdef.body[0].value.value
    return None


def _infer_param_type(name, a) -> ParamType:
    if isinstance(a, (bool, np.bool_)):
        return ParamType("bool", ())
    if isinstance(a, (int, np.integer)):
        return ParamType("i64" if not isinstance(a, np.int32) else "i32", ())
    if isinstance(a, (float, np.floating)):
        return ParamType("f32" if isinstance(a, np.float32) else "f64", ())
    arr = np.asarray(a) if not isinstance(a, np.ndarray) else a
    dt = _NP_TO_DSL.get(arr.dtype)
    if dt is None:
        raise TypeError(f"parameter '{name}': unsupported argument of dtype {arr.dtype} "
                        "(expected float32, float64, int32, int64 or bool)")
    return ParamType(dt, tuple(f"_{name}_{k}" for k in range(arr.ndim)))


def _module_resolver(glb: dict):
    def resolve(name):
        v = glb.get(name)
        return v if isinstance(v, KernelBase) and hasattr(v, "_dsl_definition") else None
    return resolve


def kernel(fn=None, *, boundscheck: bool = True, via: str = "native"):
    """Decorator: compile a Python function written in the DSL into a `Kernel`
    (`via="mlir"`: through MLIR's tools instead of dslc's own code generator)."""
    def wrap(f):
        try:
            text = inspect.getsource(f)
            lines, first = inspect.getsourcelines(f)
        except (OSError, TypeError) as e:
            raise OSError(f"@kernel needs the source of '{getattr(f, '__name__', f)}' "
                          f"(define it in a file, not at an interactive prompt): {e}") from None
        filename = inspect.getsourcefile(f) or "<kernel>"
        module = parse(text, filename=filename, line_offset=first - 1)
        fdefs = [d for d in module.functions if d.name == f.__name__] or module.functions
        glb = getattr(f, "__globals__", {})
        k = Kernel(fdefs[0], module.source, _module_resolver(glb), boundscheck=boundscheck)
        return k if via == "native" else k.with_backend(via)
    if fn is None:
        return wrap
    return wrap(fn)


def compile_file(path: str, boundscheck: bool = True) -> dict:
    """Parse a `.dsl` file; returns {name: Kernel}. A kernel may call kernels defined before it."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return compile_source(text, filename=path, boundscheck=boundscheck)


def compile_source(text: str, filename: str = "<string>", boundscheck: bool = True) -> dict:
    module = parse(text, filename=filename)
    kernels: dict = {}
    for fdef in module.functions:
        if fdef.name in kernels:
            from compiler.diagnostics import Loc
            raise DslTypeError(f"kernel '{fdef.name}' is defined twice",
                               Loc(filename, fdef.span.line, fdef.span.col, module.source.line(fdef.span.line)))
        defined = dict(kernels)
        kernels[fdef.name] = Kernel(fdef, module.source, defined.get, boundscheck=boundscheck)
    return kernels


