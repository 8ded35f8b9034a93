"""`@kernel` and the `Kernel` object: parse once, compile per signature (dtypes and ranks), call.

Warm start (compiler/warmstart.py): a kernel whose source, callees, argument signature and
environment match what an earlier process compiled is called through that process's linked code,
without importing the parser (lark), the compiler or LLVM. So the heavy modules are imported where
they are needed, not at the top of this file: `import dsl` and `@kernel` stay cheap.

Decoration parses the source (syntax and annotation errors are raised there, with file:line:col),
except when a front-end record says this exact text already parsed and checked cleanly with this
dslc; then parsing waits until something needs the syntax tree (compiling, `.lower()`).
"""
from __future__ import annotations

import inspect
import threading
from typing import TYPE_CHECKING, Optional

import numpy as np

from compiler import background, warmstart
from compiler.diagnostics import DslTypeError

from .dtypes import ParamType

if TYPE_CHECKING:                           # annotations only: not imported by a warm process
    from compiler import ir

    from . import ast as A

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
        from compiler import ir
        from compiler.pipeline import prepare
        self.kernel, self.ptypes = kernel, ptypes
        self._before = kernel._lower_ir(ptypes)
        self._before_text = ir.print_function(self._before)
        self._fn = prepare(kernel._lower_ir(ptypes))

    def ast(self) -> str:
        from . import ast as A
        k = self.kernel
        while not hasattr(k, "fdef"):
            k = k.base
        return A.dump(k.fdef)

    def ir(self, stage: str = "all") -> str:
        """The SSA IR. `stage`: 'source' (a derivative kernel's base kernel, before the derivative
        passes), 'lowered' (as checked and lowered, after any derivative pass), 'optimized' (after
        simplification), or 'all' (every stage that applies, labelled)."""
        from compiler import ir
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
        from compiler import ir
        return ir.print_function(base._lower_ir(tuple(self.ptypes[:nb])))

    def mlir(self) -> str:
        """The kernel (after any derivative pass and simplification) in MLIR's upstream dialects
        (func, arith, math, scf, memref), with dslc's entry-point ABI; `mlir-opt-22` accepts it."""
        from compiler.mlir import to_mlir
        return to_mlir(self._fn, _symbol(self.kernel.name), self.kernel.boundscheck).text

    def _module(self):
        from compiler.codegen import llvm as backend
        return backend.build_module(self._fn, _symbol(self.kernel.name), self.kernel.boundscheck, vector_math="host", blas=True, threads=True)[0]

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
        self._device_hint = None          # (index, type) of a device array in the last GPU call
        self._jvp = None

    def _caller(self, ptypes):
        key = tuple((p.dtype, tuple(p.dims)) for p in ptypes)
        c = self._callers.get(key)
        if c is not None:
            return c
        with self._lock:
            c = self._callers.get(key)
            if c is None:
                c = self._warm_caller(key) or self._compile_caller(ptypes, key)
                self._callers[key] = c
        return c

    def _compile_caller(self, ptypes, key):
        """Lower and compile one specialisation (or find it in the disk cache), then queue its
        warm-start record for later processes."""
        from compiler.pipeline import prepare
        from runtime import Signature, make_caller
        log = _start_recording()
        try:
            fn = prepare(self._lower_ir(ptypes))
        finally:
            _stop_recording()
        if self.backend == "mlir":
            from compiler.mlir.backend import compile_mlir
            compiled = compile_mlir(fn, self.boundscheck)
        else:
            compiled = compile_function(fn, self.boundscheck)
        c = make_caller(Signature.from_json(compiled.signature), compiled.c_address,
                        compiled.py_address or None, target_name=self.name,
                        wrap_entry=background.pausing if getattr(compiled, "calls_blas", False) else None)
        upgrade = getattr(compiled, "upgrade", None)
        if upgrade is not None:             # first-tier code: switch to the final code when it is loaded
            upgrade.then(lambda c_address, py_address: c.retarget(c_address, py_address or None))
        if getattr(compiled, "key", ""):
            def queue(*_):
                self._queue_warm(key, log, compiled.key)
            # the warm-start library is linked from the disk cache, which gets the final code
            upgrade.then(queue) if upgrade is not None else queue()
        return c

    # ---- warm start (compiler/warmstart.py) ---------------------------------------------------------
    def _warm_identity(self) -> Optional[str]:
        """Everything besides the argument types and the environment that this kernel's compiled
        code depends on, as a string; None: never warm-started."""
        return None

    def _warm_key(self, key) -> Optional[str]:
        ident = self._warm_identity()
        if ident is None:
            return None
        stamp = warmstart.stamp()
        if stamp is None:
            return None
        return warmstart.key_for("variant", stamp, ident, str(bool(self.boundscheck)), repr(key))

    def _warm_caller(self, key):
        """The caller for this specialisation from an earlier process's linked code, or None
        (then the caller compiles: a missing or stale record is never an error)."""
        try:
            wkey = self._warm_key(key)
            if wkey is None:
                return None
            rec = warmstart.load_record(wkey)
            if rec is None or not self._same_resolutions(rec.get("resolutions")):
                return None
            addresses = warmstart.load_library(rec)
            if addresses is None:
                return None
            from runtime import Signature, make_caller
            sig = Signature.from_json(rec["signature"])
        except Exception:                      # anything odd in the cache: compile instead
            return None
        return make_caller(sig, addresses[0], addresses[1] or None, target_name=self.name,
                           wrap_entry=background.pausing if rec.get("blas") else None)

    def _source_kernels(self) -> dict:
        """{source id: kernel} along this kernel's `base` chain (who resolved names when lowering)."""
        out, k = {}, self
        while k is not None:
            sid = k.__dict__.get("_src_id")
            if sid:
                out.setdefault(sid, k)
            k = k.__dict__.get("base")
        return out

    def _same_resolutions(self, entries) -> bool:
        """Whether every name the recorded compilation resolved (callee kernels, and names that
        were no kernel) resolves to the same thing now."""
        if not isinstance(entries, (list, tuple)):
            return False
        owners = self._source_kernels()
        for owner, name, ident in entries:
            k = owners.get(owner)
            if k is None or ident is None or _identity_of(k._resolve(name)) != ident:
                return False
        return True

    def _queue_warm(self, key, log, object_key):
        wkey = self._warm_key(key)
        if wkey is None or any(ident is None for _, _, ident in log):
            return                              # a callee without a source identity: no record
        record = {"kernel": self.name, "resolutions": tuple(dict.fromkeys(log))}
        warmstart.schedule(wkey, object_key, record)

    def __call__(self, *args, target: Optional[str] = None):
        f = self._fixed
        if f is not None and target is None:
            hint = self._device_hint
            if hint is not None and len(args) > hint[0] and type(args[hint[0]]) is hint[1]:
                from . import gpu                # as last time: a device array there, so the GPU
                return gpu.call(self, args)
            try:
                return f(*args)
            except TypeError:
                if not any(hasattr(a, "__cuda_array_interface__") for a in args):
                    raise
                # device inputs run on the GPU; remember where one was (if its class says it is a
                # device array) so that the next such call skips the CPU entry's failing checks
                for k, a in enumerate(args):
                    if hasattr(type(a), "__cuda_array_interface__"):
                        self._device_hint = (k, type(a))
                        break
                from . import gpu
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

    def __init__(self, fdef: A.FunctionDef, source: A.Source, resolve=None, boundscheck: bool = True,
                 src_id: Optional[str] = None):
        from .lower import parse_type
        self.fdef, self.source = fdef, source
        self._init_base(fdef.name, boundscheck)
        self.__doc__ = _docstring(fdef)
        self._resolve = resolve or (lambda name: None)
        self._dsl_definition = (fdef, source)
        self._param_names = [p.name for p in fdef.params]
        # the identity of the definition (warm-start keys); only given by the paths that parse
        # `source.text` into `fdef` (@kernel, compile_source): a Kernel built around another syntax
        # tree is never warm-started, nor is a kernel calling it
        self._src_id = src_id
        self._front_where = None        # set by @kernel: where its front-end record goes (_front_entry)
        anchor = _Anchor(source)
        self._declared = []
        for p in fdef.params:
            if p.annotation is None:
                self._declared.append(None)
            else:
                dt, dims = parse_type(p.annotation, anchor, anon_prefix=p.name)
                self._declared.append(ParamType(dt, dims))

    # ---- a kernel made from a front-end record: parsed when first needed -----------------------------
    @classmethod
    def _from_front(cls, where: tuple, lines: list, selector: str, resolve,
                    boundscheck: bool) -> Optional["Kernel"]:
        """The kernel `@kernel` would build, without inspect's block search or parsing, when an
        earlier process recorded that this def (file, line, file contents: `where`) parsed and
        checked cleanly with this dslc (compiler/warmstart.py); None otherwise."""
        try:
            stamp = warmstart.stamp()
            if stamp is None:
                return None
            rec = warmstart.load_record(warmstart.key_for("front", stamp, selector, *map(str, where)))
            if rec is None:
                return None
            start, count = int(rec["start"]), int(rec["count"])
            if not (1 <= start <= where[1] and count >= 1 and start - 1 + count <= len(lines)):
                return None
            names = [str(n) for n in rec["params"]]
            declared = [None if d is None else ParamType(str(d[0]), tuple(d[1])) for d in rec["declared"]]
            name, doc = str(rec["name"]), rec["doc"]
            if len(declared) != len(names) or not (doc is None or isinstance(doc, str)):
                return None
        except Exception:                      # anything odd in the cache: parse instead
            return None
        text, filename, offset = "".join(lines[start - 1:start - 1 + count]), where[0], start - 1
        k = cls.__new__(cls)
        k._init_base(name, boundscheck)
        k.__doc__ = doc
        k._resolve = resolve
        k._param_names = names
        k._declared = declared
        k._src_id = source_id(filename, offset, selector, text)
        k._front_where = (where, start, count, selector)
        k._pending_parse = (text, filename, offset, selector)
        return k

    def __getattr__(self, name):
        # only reached for attributes not set: the syntax tree of a kernel made by _from_front
        if name in ("fdef", "source", "_dsl_definition"):
            pending = self.__dict__.get("_pending_parse")
            if pending is not None:
                self._parse_pending(pending)
                return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _parse_pending(self, pending):
        from .parser import parse
        text, filename, offset, selector = pending
        module = parse(text, filename=filename, line_offset=offset)
        fdef = _select(module.functions, selector)
        self.__dict__.update(fdef=fdef, source=module.source, _dsl_definition=(fdef, module.source))
        self.__dict__.pop("_pending_parse", None)

    def _front_entry(self):
        """(key, record) of this kernel's front-end record: what `_from_front` needs."""
        stamp = warmstart.stamp()
        if self._front_where is None or stamp is None:
            return None
        where, start, count, selector = self._front_where
        rec = {"name": self.name, "params": tuple(self._param_names), "doc": self.__doc__,
               "start": start, "count": count,
               "declared": tuple(None if d is None else (d.dtype, tuple(d.dims)) for d in self._declared)}
        return warmstart.key_for("front", stamp, selector, *map(str, where)), rec

    def _warm_identity(self) -> Optional[str]:
        return self._src_id if self.backend == "native" else None

    def _fully_declared(self) -> bool:
        return all(d is not None for d in self._declared)

    def _arity(self, seq=()) -> int:
        return len(self._param_names)

    def param_names(self, seq=()) -> list:
        return list(self._param_names)

    # ---- compilation -------------------------------------------------------------------
    def _param_types(self, args) -> tuple:
        names = self._param_names
        if len(args) != len(names):
            raise TypeError(f"{self.name}() takes {len(names)} argument(s) "
                            f"({', '.join(names)}), got {len(args)}")
        out, weak = [], []
        for k, (pname, decl, a) in enumerate(zip(names, self._declared, args)):
            if decl is not None:
                out.append(decl)
                continue
            out.append(_infer_param_type(pname, a))
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
        from .lower import Lowering
        return Lowering(self.fdef, self.source, list(ptypes), _recorded(self)).lower_function()


def compile_function(fn, boundscheck: bool = True):
    """compiler.pipeline.compile_function, imported on first use (it imports llvmlite)."""
    from compiler.pipeline import compile_function as compile_
    return compile_(fn, boundscheck)


# ---- what a compilation resolved (for the warm start) ------------------------------------------------
_recording = threading.local()


def _start_recording() -> list:
    """Start logging, on this thread, every name a kernel body resolves while being lowered:
    (resolving kernel's source id, name, identity of the result)."""
    log: list = []
    stack = _recording.__dict__.setdefault("stack", [])
    stack.append(log)
    return log


def _stop_recording():
    _recording.stack.pop()


def _recorded(k: "Kernel"):
    """`k`'s resolver, logging into the innermost recording if one is active on this thread."""
    stack = _recording.__dict__.get("stack")
    if not stack:
        return k._resolve
    log, inner, owner = stack[-1], k._resolve, k._src_id

    def resolve(name):
        v = inner(name)
        log.append((owner, name, _identity_of(v)))
        return v
    return resolve


def _identity_of(v) -> Optional[str]:
    """What a resolver returned, as recorded: '' for no kernel (lower.py inlines only `Kernel`s),
    a kernel's source id, or None when it cannot be identified."""
    if v is None:
        return ""
    return v.__dict__.get("_src_id") if isinstance(v, Kernel) else None


def source_id(filename: str, offset: int, name: str, text: str) -> str:
    """The identity of a kernel's definition: the text parsed, where it is, which def."""
    return warmstart.key_for("source", filename, str(offset), name, text)


def _select(functions: list, name: str):
    """The def `@kernel` compiles from a function's source text: the one named like it."""
    return ([d for d in functions if d.name == name] or functions)[0]


_FILE_DIGESTS: dict = {}                # filename -> (linecache's list of lines, digest of them)


def _quick_location(f):
    """((file, first line of the code, digest of the file's text), the file's lines) for a plain
    function. With a front-end record for them, `@kernel` knows the def's extent without asking
    inspect, which tokenizes to find where a def ends (its first use costs 2-10 ms compiling
    tokenize's regexes). None: ask inspect."""
    import linecache
    import types
    if type(f) is not types.FunctionType or hasattr(f, "__wrapped__"):
        return None
    try:
        filename = inspect.getsourcefile(f)
    except TypeError:
        return None
    if not filename:
        return None
    linecache.checkcache(filename)          # as inspect.findsource does: an edited file is re-read
    lines = linecache.getlines(filename, f.__globals__)
    if not lines:
        return None
    hit = _FILE_DIGESTS.get(filename)
    if hit is None or hit[0] is not lines:
        hit = _FILE_DIGESTS[filename] = (lines, warmstart.digest("".join(lines).encode("utf-8", "surrogatepass")))
    return (filename, f.__code__.co_firstlineno, hit[1]), lines


def _docstring(fdef):
    from . import ast as A
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
        # only source kernels are inlined (isinstance, not hasattr(v, "_dsl_definition"), so that
        # looking a name up never parses a kernel made from a front-end record)
        return v if isinstance(v, Kernel) else None
    return resolve


def kernel(fn=None, *, boundscheck: bool = True, via: str = "native"):
    """Decorator: compile a Python function written in the DSL into a `Kernel`
    (`via="mlir"`: through MLIR's tools instead of dslc's own code generator).

    The source is parsed and the annotations checked here (errors are raised at decoration),
    unless this exact source already passed both with this dslc (see the module docstring)."""
    def wrap(f):
        name = f.__name__
        resolve = _module_resolver(getattr(f, "__globals__", {}))
        try:
            quick = _quick_location(f)
        except Exception:                      # e.g. an unreadable file: inspect says why below
            quick = None
        k = None if quick is None else Kernel._from_front(quick[0], quick[1], name, resolve, boundscheck)
        if k is None:
            try:
                lines, first = inspect.getsourcelines(f)
            except (OSError, TypeError) as e:
                raise OSError(f"@kernel needs the source of '{getattr(f, '__name__', f)}' "
                              f"(define it in a file, not at an interactive prompt): {e}") from None
            text = "".join(lines)
            filename = inspect.getsourcefile(f) or "<kernel>"
            from .parser import parse
            module = parse(text, filename=filename, line_offset=first - 1)
            k = Kernel(_select(module.functions, name), module.source, resolve, boundscheck=boundscheck,
                       src_id=source_id(filename, first - 1, name, text))
            if quick is not None and quick[0][0] == filename and first <= quick[0][1]:
                # parsed and checked: record that, so the next process can skip both
                k._front_where = (quick[0], first, len(lines), name)
                try:
                    entry = k._front_entry()
                    if entry is not None:
                        warmstart.store_record(*entry)
                except Exception:              # a cache we cannot write only costs time
                    pass
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
    """Parse DSL source text (a sequence of defs); returns {name: Kernel}."""
    from .parser import parse
    module = parse(text, filename=filename)
    kernels: dict = {}
    for fdef in module.functions:
        if fdef.name in kernels:
            from compiler.diagnostics import Loc
            raise DslTypeError(f"kernel '{fdef.name}' is defined twice",
                               Loc(filename, fdef.span.line, fdef.span.col, module.source.line(fdef.span.line)))
        defined = dict(kernels)
        kernels[fdef.name] = Kernel(fdef, module.source, defined.get, boundscheck=boundscheck,
                                    src_id=source_id(filename, 0, fdef.name, text))
    return kernels
