"""GPU code generation: the IR lowered for `nvptx64-nvidia-cuda` (default sm_90), math through
libdevice, as PTX text.

Every math call goes to libdevice (`__nv_sinf`, ...): some LLVM intrinsics (`llvm.sin.f32`
without `afn`, `llvm.exp.f32`) make the NVPTX backend abort the process, so codegen never emits
them for this target. libdevice is linked in, every function but the kernel is internalised, and
the module is optimised at O3.

Execution model (first version): the kernel entry `NAME(args..., int32* status, int64* err)`
runs the whole kernel in one GPU thread, the same code as the CPU entry point, with device
`malloc`/`free` for temporaries; its status and error details go to device memory. It is
correct, not yet parallel: mapping parallel loops to threads is the next step.
"""
from __future__ import annotations

import glob
import os
import threading

import llvmlite.binding as llvm
from llvmlite import ir as ll

from .. import ir
from ..diagnostics import UnsupportedError
from .function import I32, I64, LLTYPE, FunctionCodegen

TRIPLE = "nvptx64-nvidia-cuda"
DATA_LAYOUT = "e-i64:64-i128:128-v16:16-v32:32-n16:32:64"
DEFAULT_ARCH = "sm_90"
_LIBDEVICE_MATH = {"sin", "cos", "tan", "exp", "log", "log1p", "expm1", "sqrt", "tanh", "fabs",
                   "floor", "ceil", "pow", "copysign"}
_lock = threading.Lock()
_initialised = False
_libdevice_bytes = None


class LibdeviceNotFound(UnsupportedError):
    pass


def _initialise():
    global _initialised
    with _lock:
        if not _initialised:
            llvm.initialize_all_targets()
            llvm.initialize_all_asmprinters()
            _initialised = True


def libdevice_path() -> str:
    """libdevice.10.bc: $DSLC_LIBDEVICE, the CUDA toolkit, or the nvidia-nvvm / nvidia-cuda-nvcc
    wheels."""
    env = os.environ.get("DSLC_LIBDEVICE")
    if env and os.path.exists(env):
        return env
    candidates = glob.glob("/usr/local/cuda*/nvvm/libdevice/libdevice*.bc")
    try:
        import importlib.util
        for pkg in ("nvidia.cuda_nvcc", "nvidia.nvvm", "nvidia.cu13", "nvidia"):
            spec = importlib.util.find_spec(pkg)
            for root in (spec.submodule_search_locations or []) if spec else []:
                candidates += glob.glob(os.path.join(root, "**", "libdevice*.bc"), recursive=True)
    except (ImportError, ValueError):
        pass
    if not candidates:
        raise LibdeviceNotFound(
            "libdevice (libdevice.10.bc) was not found: install the CUDA toolkit or the "
            "'nvidia-cuda-nvcc' pip package, or set DSLC_LIBDEVICE to the file")
    return sorted(candidates)[-1]


def _libdevice():
    global _libdevice_bytes
    with _lock:
        if _libdevice_bytes is None:
            with open(libdevice_path(), "rb") as f:
                _libdevice_bytes = f.read()
        return _libdevice_bytes


class NVPTXCodegen(FunctionCodegen):
    """The CPU code generator with math routed to libdevice (no vector math, no BLAS)."""

    def call_math(self, name: str, dtype: str, args):
        if name not in _LIBDEVICE_MATH:
            raise UnsupportedError(f"no GPU lowering for math function '{name}'")
        fname = f"__nv_{name}{'f' if dtype == 'f32' else ''}"
        ty = LLTYPE[dtype]
        f = self.module.globals.get(fname)
        if f is None:
            f = ll.Function(self.module, ll.FunctionType(ty, [ty] * len(args)), fname)
        return self.b.call(f, args)


def build_module(fn: ir.Function, symbol: str, boundscheck: bool = True) -> tuple[ll.Module, list]:
    """An NVPTX module with the kernel `symbol` (see the module docstring) and its error sites."""
    _initialise()
    module = ll.Module(name=symbol)
    module.triple = TRIPLE
    module.data_layout = DATA_LAYOUT
    cg = NVPTXCodegen(module, fn, symbol + "__impl", boundscheck)
    cg.build()
    inner = cg.llfn
    argtys = [a.type for a in inner.args[:-1]]
    kern = ll.Function(module, ll.FunctionType(ll.VoidType(), argtys + [ll.PointerType(I32), ll.PointerType(I64)]),
                       symbol)
    kern.calling_convention = "ptx_kernel"
    b = ll.IRBuilder(kern.append_basic_block())
    args = list(kern.args)
    status = b.call(inner, args[:-2] + [args[-1]])
    b.store(status, args[-2])
    b.ret_void()
    return module, cg.sites


def emit_ptx(fn: ir.Function, symbol: str, boundscheck: bool = True, arch: str = DEFAULT_ARCH,
             opt: int = 3) -> tuple[str, list]:
    """PTX text for `fn` (an entry named `symbol`) and its error sites."""
    import re
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", symbol):
        raise ValueError(f"invalid PTX entry name {symbol!r}")   # LLVM would abort the process
    module, sites = build_module(fn, symbol, boundscheck)
    ref = llvm.parse_assembly(str(module))
    lib = llvm.parse_bitcode(_libdevice())
    lib.triple = TRIPLE
    lib.data_layout = DATA_LAYOUT
    ref.link_in(lib)
    for f in ref.functions:
        if f.name != symbol and not f.is_declaration:
            f.linkage = "internal"
    ref.verify()
    tm = llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=arch, features="+ptx80", opt=opt)
    if opt > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=opt)
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(ref, pb)
    return tm.emit_assembly(ref), sites


def aot_ptx(entries, boundscheck: bool = True, arch: str = DEFAULT_ARCH, opt: int = 3) -> str:
    """One PTX module with a kernel per entry point (`entries`: objects with `.fn` (prepared IR)
    and `.symbol`), for `dslc --target cuda`: each kernel takes the C entry point's arguments
    followed by `int32* status, int64* err` in device memory."""
    import re
    _initialise()
    symbols = [e.symbol for e in entries]
    for sym in symbols:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", sym):
            raise ValueError(f"invalid PTX entry name {sym!r}")
    ref = None
    for e in entries:
        module, _ = build_module(e.fn, e.symbol, boundscheck)
        m = llvm.parse_assembly(str(module))
        if ref is None:
            ref = m
        else:
            ref.link_in(m)
    lib = llvm.parse_bitcode(_libdevice())
    lib.triple = TRIPLE
    lib.data_layout = DATA_LAYOUT
    ref.link_in(lib)
    for f in ref.functions:
        if f.name not in symbols and not f.is_declaration:
            f.linkage = "internal"
    ref.verify()
    tm = llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=arch, features="+ptx80", opt=opt)
    if opt > 0:
        pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=opt))
        pb.getModulePassManager().run(ref, pb)
    return tm.emit_assembly(ref)
