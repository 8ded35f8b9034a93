"""LLVM module assembly, optimisation, host JIT and object emission."""
from __future__ import annotations

import re
import threading

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir as ll

from .. import ir
from . import blas as _blas
from . import denormals, function, parallel, vmath
from .function import I8, I32, I64, LLTYPE, MEMTYPE, PTR, generate
from .ir_pipeline import optimise, without_fast_math  # noqa: F401 - part of this module's API

_lock = threading.RLock()


def _codegen_revision() -> str:
    """A digest of the code generator's sources (codegen/ and prims/): part of the JIT cache key,
    so a changed lowering never reuses stale object code from the disk cache."""
    import hashlib
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for sub in ("codegen", "prims"):
        d = os.path.join(root, sub)
        for name in sorted(os.listdir(d)):
            if name.endswith(".py"):
                with open(os.path.join(d, name), "rb") as f:
                    h.update(name.encode() + b"\0" + f.read())
    return "cg-" + h.hexdigest()[:12]


CODEGEN_REVISION = _codegen_revision()
_initialised = False


def initialise():
    global _initialised
    with _lock:
        if not _initialised:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _initialised = True


_host_cpu = None


def host_cpu() -> tuple:
    """(name, features) of this machine's CPU, as LLVM names them (asked once per process)."""
    global _host_cpu
    if _host_cpu is None:
        initialise()
        _host_cpu = (llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten())
    return _host_cpu


def host_target_machine(opt: int = 3, reloc: str = "default", codemodel: str = "jitdefault"):
    initialise()
    target = llvm.Target.from_default_triple()
    name, features = host_cpu()
    return target.create_target_machine(cpu=name, features=features, opt=opt, reloc=reloc,
                                        codemodel=codemodel)


def toolchain_version() -> str:
    initialise()
    return (f"llvmlite-{llvmlite.__version__}/llvm-{'.'.join(map(str, llvm.llvm_version_info))}"
            f"/{CODEGEN_REVISION}/{vmath.tag()}/{_blas.tag()}/{denormals.tag()}/{function.tag()}")


def add_py_trampoline(module: ll.Module, fn: ir.Function, c_entry: ll.Function, symbol: str):
    """`symbol(...)`: the entry point taking NumPy arrays as PyObject*; reads `data` (+16) and
    `dimensions` (+32) from PyArrayObject so Python need not extract pointers (~1.5 us each)."""
    argtys = []
    for p in fn.params:
        argtys.append(PTR if not p.type.is_scalar else MEMTYPE[p.type.dtype])
    for t in fn.result_types:
        argtys.append(PTR if not t.is_scalar else ll.PointerType(MEMTYPE[t.dtype]))
    argtys.append(ll.PointerType(I64))
    tramp = ll.Function(module, ll.FunctionType(I32, argtys), symbol)
    b = ll.IRBuilder(tramp.append_basic_block())
    call_args = []

    def unpack(obj, dtype, rank):
        data = b.load(b.bitcast(b.gep(obj, [ll.Constant(I64, 16)]), ll.PointerType(PTR)))
        call_args.append(b.bitcast(data, ll.PointerType(MEMTYPE[dtype])))
        dims = b.load(b.bitcast(b.gep(obj, [ll.Constant(I64, 32)]), ll.PointerType(ll.PointerType(I64))))
        for k in range(rank):
            call_args.append(b.load(b.gep(dims, [ll.Constant(I64, k)])))

    args = list(tramp.args)
    types = [p.type for p in fn.params] + list(fn.result_types)
    for a, t in zip(args, types):
        if a.type == PTR and not t.is_scalar:
            unpack(a, t.dtype, t.rank)
        else:
            call_args.append(a)
    call_args.append(args[-1])
    b.ret(b.call(c_entry, call_args))
    return tramp


def build_module(fn: ir.Function, symbol: str, boundscheck: bool = True, py_trampoline: bool = True,
                 name: str = "dslc", vector_math=None, blas: bool = False,
                 threads: bool = False, shared_runtime: bool = False,
                 flush_denormals: bool = False) -> tuple[ll.Module, list]:
    """An LLVM module with the kernel's entry point (and its `__py` trampoline); also the
    error sites of the entry point, in site-id order.

    vector_math: "host" (libmvec variants for the host's ISAs, when available: the JIT), None (plain
    scalar libm calls: other targets), or a tuple of libmvec ISA letters for a known target. A
    shared library built with vector math must be linked with `vmath.link_libraries(isas)`.
    blas: large matrix products call NumPy's OpenBLAS (JIT only: see blas.py); ignored when the
    library is not found. threads: big loop nests run on several CPU threads (codegen/parallel.py:
    libc's pthreads; CPU targets only). shared_runtime: the thread runtime and the small products'
    loops are only declared (the JIT's runtime module defines them: runtime_module.py).
    flush_denormals: the entry point and worker chunks run with FTZ/DAZ set (denormals.py)."""
    import re
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", symbol):
        raise ValueError(f"invalid entry-point name {symbol!r}")   # LLVM would abort the process
    initialise()
    isas = vmath.host_isas() if vector_math == "host" else tuple(vector_math or ())
    blas = bool(blas) and _blas.register_symbols()

    def attempt(one_chunk):
        module = ll.Module(name=name)
        module.triple = llvm.get_process_triple()
        return module, generate(module, fn, symbol, boundscheck, isas, blas, threads, shared_runtime,
                                flush_denormals, one_chunk)

    module, cg = attempt(False)
    if threads and blas and parallel.RUN in module.globals and _blas.called_by(module):
        # OpenBLAS's worker threads spin for ~0.1 s after each call and take the CPUs from the
        # kernel's own threaded loops (B4's gradient: 3.4 ms with both, 1.7-1.8 ms with its loops
        # on one thread): a kernel that calls BLAS leaves the threads to OpenBLAS
        module, cg = attempt(True)
    vmath.finish(module)
    if py_trampoline:
        add_py_trampoline(module, fn, cg.entry, symbol + "__py")
    return module, cg.sites


def parse_and_optimise(module: ll.Module, tm, level: int = 3):
    ref = llvm.parse_assembly(str(module))
    ref.verify()
    if level > 0:
        ref = optimise(ref, tm, level)
    return ref


class JIT:
    """One long-lived MCJIT engine for the process (an engine owns its target machine)."""

    def __init__(self):
        initialise()
        _blas.register_symbols()          # before any (cached) object that calls it is loaded
        self.tm = host_target_machine()
        self._obj_cache = {}
        self._pending_obj = {}
        empty = llvm.parse_assembly("")
        self.engine = llvm.create_mcjit_compiler(empty, self.tm)
        self.engine.set_object_cache(self._notify, self._getbuffer)
        self.modules = []
        self.signatures = {}
        # never freed, not even at interpreter shutdown: a module's worker threads (parallel.py)
        # may still be spinning in its code when Python clears module globals
        import ctypes
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(self))

    def _notify(self, module, buf):
        self._obj_cache[module.name] = bytes(buf)

    def _getbuffer(self, module):
        return self._pending_obj.pop(module.name, None)

    def add_llvm(self, mod_ref) -> bytes:
        """Compile an optimised module; returns its object code (for the disk cache)."""
        with _lock:
            self.engine.add_module(mod_ref)
            self.engine.finalize_object()
            self.engine.run_static_constructors()
            self.modules.append(mod_ref)
            return self._obj_cache.pop(mod_ref.name, b"")

    def add_object(self, name: str, obj: bytes):
        """Load previously compiled object code for a module named `name`."""
        with _lock:
            stub = llvm.parse_assembly("")
            stub.name = name
            self._pending_obj[name] = obj
            self.engine.add_module(stub)
            self.engine.finalize_object()
            self.modules.append(stub)

    def address(self, symbol: str) -> int:
        with _lock:
            return self.engine.get_function_address(symbol)


_jit = None


def get_jit() -> JIT:
    global _jit
    with _lock:
        if _jit is None:
            _jit = JIT()
        return _jit


__all__ = ["JIT", "get_jit", "build_module", "parse_and_optimise", "host_target_machine",
           "toolchain_version", "LLTYPE", "I8"]
