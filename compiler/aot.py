"""Ahead-of-time compilation: prepared IR functions -> one shared library, a C header and a manifest.

`dslc` (dsl/cli.py) parses, type-checks and differentiates; this module only sees `ir.Function`s:

    entries = [EntryPoint(kernel="f", kind="primal", symbol="f", fn=prepared_fn, ...), ...]
    build_library(entries, out_dir, name, emit={"so", "h"})

writes `libNAME.so` (every entry point under its C name, plus its `NAME__py` twin taking NumPy arrays
as PyObject*), `NAME.h` and `NAME.json` (the manifest `runtime.load_library` reads). The object code
comes from llvmlite (position-independent); the system C compiler (`$CC`, default `cc`) links it.

Manifest (format version 1):

    {"format": "dslc-library", "format_version": 1, "abi": 1, "name": NAME,
     "library": "libNAME.so", "sha256": <hex digest of the .so>, "targets": ["cpu"],
     "dslc_version": ..., "toolchain": {...}, "source": ..., "source_sha256": ...,
     "opt_level": 3, "boundscheck": true, "cpu": {"name": ..., "features": ...},
     "kernels": [{"name": "f", "derivatives": ["jvp", ...],
                  "entry_points": [{"kind": "primal", "symbol": "f", "py_symbol": "f__py",
                                    "signature": <runtime.abi signature JSON>,
                                    "roles": {"params": [...], "outputs": [...]}}, ...]}]}
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from . import ir
from .codegen import llvm as backend
from .pipeline import VERSION, signature_of
from .warmstart import find_cc   # defined there: the warm path must not import this module

FORMAT = "dslc-library"
FORMAT_VERSION = 1
ABI_VERSION = 1

#: names an entry point may not take: C keywords, and C library functions the generated code calls
#: or that a program linking the library would expect to be libc's
RESERVED_C_NAMES = frozenset("""
auto break case char const continue default do double else enum extern float for goto if inline int
long register restrict return short signed sizeof static struct switch typedef union unsigned void
volatile while _Bool _Complex _Imaginary bool true false NULL main
malloc calloc realloc aligned_alloc free memcpy memmove memset memcmp abort exit printf
sin cos tan asin acos atan atan2 sinh cosh tanh exp exp2 expm1 log log2 log10 log1p sqrt cbrt pow
fabs floor ceil round trunc fmod copysign fmin fmax hypot erf erfc lgamma tgamma
sinf cosf tanf expf logf sqrtf powf fabsf floorf ceilf tanhf log1pf expm1f copysignf
""".split())


class AotError(Exception):
    """A failure building the library that is not an error in the user's source (toolchain, I/O)."""


@dataclass
class EntryPoint:
    kernel: str                      # the source kernel's name
    kind: str                        # primal, jvp, vjp, grad, value_and_grad
    symbol: str                      # the C name
    fn: ir.Function                  # prepared (simplified, verified) IR
    param_roles: list = field(default_factory=list)    # one text per parameter
    output_roles: list = field(default_factory=list)   # one text per output
    signature: dict | None = None    # filled by build_module
    loc: object = None               # the kernel's definition (for diagnostics)


# --- LLVM -----------------------------------------------------------------------------------------------

def target_machine(opt: int, cpu: str = "host"):
    import llvmlite.binding as llvm
    backend.initialise()
    target = llvm.Target.from_default_triple()
    if cpu == "host":
        name, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    else:
        name, features = cpu, ""
    return target.create_target_machine(cpu=name, features=features, opt=opt, reloc="pic",
                                        codemodel="default"), name, features


def build_module(entries: list, boundscheck: bool = True, py_trampolines: bool = True):
    """One llvmlite binding module holding every entry point (not yet optimised); fills each
    entry's `signature` (with symbol = its C name)."""
    import llvmlite.binding as llvm
    linked = None
    for e in entries:
        mod, sites = backend.build_module(e.fn, e.symbol, boundscheck, py_trampoline=py_trampolines,
                                          name=e.symbol, threads=True)
        sig = signature_of(e.fn, e.symbol, sites)
        sig["name"] = e.symbol
        e.signature = sig
        ref = llvm.parse_assembly(str(mod))
        ref.verify()
        if linked is None:
            linked = ref
            linked.name = "dslc_library"
        else:
            linked.link_in(ref)
    linked.verify()
    return linked


def optimise(ref, tm, level: int):
    if level > 0:
        ref = backend.optimise(ref, tm, level)
    return ref


# --- linking --------------------------------------------------------------------------------------------

def cc_version(cc: str) -> str:
    try:
        out = subprocess.run(cc.split() + ["--version"], capture_output=True, text=True, timeout=20)
        return (out.stdout.splitlines() or ["?"])[0].strip()
    except Exception:
        return "unknown"


def link_shared(obj: bytes, out_path: str, cc: str | None = None):
    cc = cc or find_cc()
    if not cc:
        raise AotError("no C compiler found to link the shared library (install cc/gcc/clang or set $CC; "
                       "--emit h,ll,ir,ptx,mlir build without one)")
    with tempfile.TemporaryDirectory(prefix="dslc-aot-") as tmp:
        o = os.path.join(tmp, "kernels.o")
        with open(o, "wb") as f:
            f.write(obj)
        so = os.path.join(tmp, os.path.basename(out_path))
        cmd = cc.split() + ["-shared", "-o", so, o, "-lm", "-lpthread"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except OSError as e:
            raise AotError(f"could not run the C compiler {cc!r}: {e} (set $CC to a working compiler; "
                           "--emit h,ll,ir,ptx,mlir build without one)")
        if r.returncode != 0:
            raise AotError(f"linking failed: {' '.join(cmd)}\n{r.stderr.strip()}")
        _atomic_copy(so, out_path)


def _atomic_copy(src: str, dst: str):
    d = os.path.dirname(os.path.abspath(dst))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_write(path: str, text: str):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- the header -----------------------------------------------------------------------------------------

_C_TYPES = {"f32": "float", "f64": "double", "i32": "int32_t", "i64": "int64_t", "bool": "uint8_t"}


def _dims_text(dims) -> str:
    from runtime.abi import format_dim
    return ", ".join(format_dim(d) for d in dims)


def _type_text(v: dict) -> str:
    return f"{v['dtype']}[{_dims_text(v['dims'])}]" if v["dims"] else v["dtype"]


def prototype(e: EntryPoint) -> str:
    """The C prototype of one entry point, one argument per line with its comment."""
    sig = e.signature
    used = set()

    def uniq(n):
        m, k = n, 2
        while m in used or m in RESERVED_C_NAMES:
            m, k = f"{n}_{k}", k + 1
        used.add(m)
        return m

    rows = []   # (declaration, comment)
    for i, p in enumerate(sig["params"]):
        role = e.param_roles[i] if i < len(e.param_roles) else "primal"
        ct = _C_TYPES[p["dtype"]]
        name = uniq(p["name"])
        if not p["dims"]:
            rows.append((f"{ct} {name}", f"{p['name']}: {p['dtype']} scalar; {role}"))
        else:
            rows.append((f"const {ct}* {name}", f"{p['name']}: {_type_text(p)}, C-contiguous; {role}"))
            for j, d in enumerate(p["dims"]):
                rows.append((f"int64_t {uniq(f'{name}_d{j}')}", f"extent of {p['name']} axis {j} "
                                                                 f"({_dims_text([d])})"))
    for k, o in enumerate(sig["outputs"]):
        role = e.output_roles[k] if k < len(e.output_roles) else "output"
        ct = _C_TYPES[o["dtype"]]
        name = uniq(o["name"])
        if not o["dims"]:
            rows.append((f"{ct}* {name}", f"{o['name']}: {o['dtype']} scalar written here; {role}"))
        else:
            rows.append((f"{ct}* {name}", f"{o['name']}: {_type_text(o)}, caller-allocated, C-contiguous; "
                                          f"{role}"))
            for j, d in enumerate(o["dims"]):
                rows.append((f"int64_t {uniq(f'{name}_d{j}')}", f"extent of {o['name']} axis {j}: must be "
                                                                 f"{_dims_text([d])}"))
    rows.append((f"int64_t* {uniq('err')}", "NULL, or int64_t[4]: on failure err[0] = status, "
                                           "err[1], err[2] = details"))
    width = max(len(d) for d, _ in rows) + 1
    lines = []
    for n, (decl, comment) in enumerate(rows):
        sep = "," if n + 1 < len(rows) else ""
        lines.append(f"    {(decl + sep).ljust(width)} /* {comment} */")
    return f"int32_t {e.symbol}(\n" + "\n".join(lines) + ");"


def header_text(name: str, entries: list, source: str) -> str:
    guard = "DSLC_" + "".join(c if c.isalnum() else "_" for c in name.upper()) + "_H"
    out = [f"""/* {name}.h: generated by dslc {VERSION} from {os.path.basename(source)}; do not edit.

   Every function below is a kernel (or a derivative of one) compiled ahead of time into
   lib{name}.so, with the dslc entry-point ABI version {ABI_VERSION}:

   - Parameters come first, in order: a scalar by value; an array as a pointer to its first
     element (C-contiguous, row-major) followed by one int64_t extent per axis.
   - Outputs follow: a scalar output is a pointer the result is written to; an array output is a
     buffer the CALLER allocates (the library never allocates memory it returns), followed by its
     extents. Each output's extents are given by the parameters' dims (the comments say which);
     the kernel checks every extent it is passed and never writes outside the buffers.
   - The last argument is NULL or an int64_t[4] receiving error details.
   - The return value is a status: 0 on success; otherwise a positive error-site number (the
     sites of each function are listed above it: an index out of bounds, a shape mismatch, an
     integer division by zero, ...). On failure err[0] is the status and err[1], err[2] are the
     details (e.g. the index and the axis extent). A kernel never aborts the process.
   - Types: f32 float, f64 double, i32 int32_t, i64 int64_t, bool uint8_t (0 or 1).
   - Derivatives: NAME_jvp(primals..., tangents...) returns (outputs..., tangent outputs...), one
     tangent per floating-point parameter; NAME_vjp(primals..., cotangents...) returns
     (outputs..., cotangents...), one cotangent per floating-point parameter; NAME_grad returns
     the gradient of a scalar NAME with respect to its first parameter.
   - Link with -l{name} (and -lm). Each function also has a NAME__py twin for dslc's Python
     runtime (it takes NumPy arrays as PyObject*); C programs should not call those. */
#ifndef {guard}
#define {guard}

#include <stdint.h>

#define {guard[:-2]}_ABI_VERSION {ABI_VERSION}

#ifdef __cplusplus
extern "C" {{
#endif
"""]
    for e in entries:
        sig = e.signature
        desc = _describe(sig)
        out.append(f"/* {desc}" + (f"  [{e.kind} of {e.kernel}]" if e.kind != "primal" else "") + "\n")
        if sig["sites"]:
            out.append("   non-zero statuses:\n")
            groups: dict = {}
            for s_id, s in enumerate(sig["sites"], start=1):
                where = f"{os.path.basename(s['file'])}:{s['line']}:{s['col']}"
                groups.setdefault((s["kind"], s["message"], where), []).append(s_id)
            for n, ((kind, msg, where), ids) in enumerate(groups.items()):
                if n == 24:
                    out.append(f"     ... (all {len(sig['sites'])} sites are listed in {name}.json)\n")
                    break
                out.append(f"     {', '.join(map(str, ids))}: {kind}: {msg} ({where})\n".replace("*/", "* /"))
        out.append("*/\n")
        out.append(prototype(e) + "\n\n")
    out.append(f"""#ifdef __cplusplus
}}
#endif

#endif /* {guard} */
""")
    return "".join(out)


def _describe(sig: dict) -> str:
    args = ", ".join(f"{p['name']}: {_type_text(p)}" for p in sig["params"])
    outs = [_type_text(o) for o in sig["outputs"]]
    res = f"({', '.join(outs)})" if sig["tuple_result"] else outs[0]
    return f"{sig['name']}({args}) -> {res}"


# --- the whole library ----------------------------------------------------------------------------------

def toolchain(cc: str | None) -> dict:
    import llvmlite
    import llvmlite.binding as llvm
    backend.initialise()
    return {"llvmlite": llvmlite.__version__, "llvm": ".".join(map(str, llvm.llvm_version_info)),
            "cc": cc_version(cc) if cc else None, "python": platform.python_version(),
            "triple": llvm.get_process_triple(), "platform": sys.platform, "machine": platform.machine()}


def build_library(entries: list, out_dir: str, name: str, *, emit=("so", "h"), opt: int = 3,
                  cpu: str = "host", boundscheck: bool = True, source: str = "<unknown>",
                  ir_texts: dict | None = None) -> list:
    """Write the requested outputs; returns the paths written. Raises AotError on toolchain failures."""
    emit = set(emit)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    mod = build_module(entries, boundscheck, py_trampolines="so" in emit)
    tm, cpu_name, features = target_machine(opt, cpu)
    mod.triple = tm.triple
    mod = optimise(mod, tm, opt)
    if "mlir" in emit:
        from .mlir import to_mlir
        texts = [f"// dslc {VERSION}: every entry point of lib{name}.so as an MLIR module (upstream dialects)\n"]
        for e in entries:
            texts.append(f"// {e.symbol}  ({e.kind} of {e.kernel})\n" + to_mlir(e.fn, e.symbol, boundscheck).text)
        mlir_text = "\n".join(texts) + "\n"      # before anything is written: it may raise
    if "ptx" in emit:
        from .codegen.nvptx import aot_ptx
        ptx_text = aot_ptx(entries, boundscheck)           # before anything is written: it may raise
        p = os.path.join(out_dir, f"{name}.ptx")
        _atomic_write(p, f"// dslc {VERSION}: every entry point of {name} for NVIDIA GPUs (sm_90)\n"
                         "// each kernel takes its C entry point's arguments, then int32* status and int64* err\n"
                         "// (device memory). Launch a 1-D grid of at most 2048 blocks of at most 1024 threads,\n"
                         "// all co-resident (cuLaunchCooperativeKernel; 256 threads and the occupancy calculator's\n"
                         "// blocks per SM are what dslc uses); 1 x 1 also works. status: 0, an error site of\n"
                         "// the manifest, -1 for a launch shape the kernel cannot run, or -2 when the blocks\n"
                         "// could not all be resident (after 10 s; load the module again).\n" + ptx_text)
        written.append(p)
    if "mlir" in emit:
        p = os.path.join(out_dir, f"{name}.mlir")
        _atomic_write(p, mlir_text)
        written.append(p)
    if "ll" in emit:
        p = os.path.join(out_dir, f"{name}.ll")
        _atomic_write(p, str(mod))
        written.append(p)
    if "ir" in emit:
        p = os.path.join(out_dir, f"{name}.ir")
        texts = ir_texts or {}
        body = "\n\n".join(f"// {e.symbol}  ({e.kind} of {e.kernel})\n" + texts.get(e.symbol, ir.print_function(e.fn))
                           for e in entries)
        _atomic_write(p, f"// dslc {VERSION}: the SSA IR of every entry point of lib{name}.so\n\n" + body + "\n")
        written.append(p)
    if "h" in emit:
        p = os.path.join(out_dir, f"{name}.h")
        _atomic_write(p, header_text(name, entries, source))
        written.append(p)
    if "so" in emit:
        cc = find_cc()
        obj = tm.emit_object(mod)
        so_name = f"lib{name}.so"
        so = os.path.join(out_dir, so_name)
        link_shared(obj, so, cc)
        written.append(so)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "abi": ABI_VERSION, "name": name,
            "library": so_name, "sha256": sha256_file(so),
            "targets": ["cpu"] + (["cuda"] if "ptx" in emit else []),
            **({"ptx": f"{name}.ptx"} if "ptx" in emit else {}),
            "dslc_version": VERSION, "toolchain": toolchain(cc),
            "source": os.path.basename(source), "source_sha256": _source_hash(source),
            "opt_level": opt, "boundscheck": boundscheck,
            "cpu": {"name": cpu_name, "features": features},
            "kernels": _kernels_json(entries),
        }
        p = os.path.join(out_dir, f"{name}.json")
        _atomic_write(p, json.dumps(manifest, indent=1) + "\n")
        written.append(p)
    return written


def _source_hash(path: str):
    try:
        return sha256_file(path)
    except OSError:
        return None


def _kernels_json(entries: list) -> list:
    kernels: dict = {}
    for e in entries:
        k = kernels.setdefault(e.kernel, {"name": e.kernel, "derivatives": [], "entry_points": []})
        if e.kind != "primal":
            k["derivatives"].append(e.kind)
        k["entry_points"].append({"kind": e.kind, "symbol": e.symbol, "py_symbol": e.symbol + "__py",
                                  "signature": e.signature,
                                  "roles": {"params": list(e.param_roles), "outputs": list(e.output_roles)}})
    return list(kernels.values())
