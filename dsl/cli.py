"""`dslc`, the ahead-of-time compiler: a `.dsl` file -> a shared library, a C header and a manifest.

    dslc kernels.dsl -o build/ [--target cpu,cuda] [--derive jvp,vjp,grad]
                     [--emit so,h,ptx,ll,ir,mlir] [-O0|-O1|-O2|-O3] [--check]

Exit status: 0 on success, 1 on any error (in the source, or building the library), 2 on bad usage.
Diagnostics go to stderr as `file:line:col: error: message`, the source line and a caret.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys

DERIVE_KINDS = ("jvp", "vjp", "grad", "value_and_grad")
EMIT_KINDS = ("so", "h", "ptx", "ll", "ir", "mlir")
TARGETS = ("cpu", "cuda")

EXAMPLES = """\
examples:
  dslc kernels.dsl -o build/
        build/libkernels.so (one C entry point per kernel), build/kernels.h, build/kernels.json
  dslc kernels.dsl -o build/ --derive jvp,vjp,grad
        also loss_jvp, loss_vjp and loss_grad for every kernel `loss` (grad: scalar outputs only)
  dslc kernels.dsl --check --derive grad
        parse, type-check and differentiate only; write nothing
  dslc kernels.dsl -o build/ --emit so,h,ll,ir -O2
        also the optimised LLVM IR (kernels.ll) and dslc's SSA IR (kernels.ir)

then, from Python (needs only numpy, not the compiler):
  from runtime import load_library
  lib = load_library("build/libkernels.so"); lib.loss_grad(w, X, y)

or from C:
  cc main.c -Ibuild -Lbuild -lkernels -Wl,-rpath,'$ORIGIN/build' -o main

Every kernel's parameters must be fully annotated (f64[n, k], i64, ...). Exit status: 0 on
success, 1 on errors, 2 on bad usage.
"""


def _version() -> str:
    from compiler.pipeline import VERSION
    try:
        from compiler.codegen.llvm import toolchain_version
        return f"dslc {VERSION} ({toolchain_version()})"
    except Exception:
        return f"dslc {VERSION}"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dslc", description="Compile the kernels of a .dsl file ahead of time into a shared "
                "library (every kernel and the requested derivatives as C-ABI entry points), a C "
                "header and a manifest that runtime.load_library reads.",
                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE.dsl", help="the source file")
    p.add_argument("-o", "--output", metavar="DIR", help="output directory (created if needed)")
    p.add_argument("--target", default="cpu", metavar="LIST",
                   help="comma-separated targets: cpu, cuda (default: cpu)")
    p.add_argument("--derive", default="", metavar="LIST",
                   help="comma-separated derivatives to emit for every kernel: jvp, vjp, grad, "
                        "value_and_grad (default: none)")
    p.add_argument("--emit", default=None, metavar="LIST",
                   help="comma-separated outputs: so (library + manifest), h (C header), ptx, "
                        "ll (LLVM IR), ir (dslc SSA IR), mlir (default: so,h, plus ptx for cuda)")
    p.add_argument("-O", dest="opt", type=int, choices=(0, 1, 2, 3), default=3, metavar="LEVEL",
                   help="optimisation level -O0 .. -O3 (default: -O3)")
    p.add_argument("--check", action="store_true",
                   help="parse, type-check, lower (and differentiate) only; write nothing")
    p.add_argument("--name", metavar="NAME",
                   help="library name (default: the file's stem): libNAME.so, NAME.h, NAME.json")
    p.add_argument("--cpu", default="host", metavar="CPU",
                   help="CPU to generate code for: host (default; fastest, not portable), or an "
                        "LLVM CPU name such as generic or x86-64-v3")
    p.add_argument("--no-boundscheck", dest="boundscheck", action="store_false",
                   help="compile without bounds checks")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--version", action="version", version=_version())
    return p


def _split(parser, value: str, allowed, what: str) -> list:
    items = [v.strip() for v in value.split(",") if v.strip()] if value else []
    for v in items:
        if v not in allowed:
            parser.error(f"{what}: unknown value {v!r} (choose from {', '.join(allowed)})")
    out = []
    for v in items:
        if v not in out:
            out.append(v)
    return out


class _Reporter:
    def __init__(self):
        self.errors = 0
        self.seen = set()

    def _print(self, text):
        if text in self.seen:
            return
        self.seen.add(text)
        print(text, file=sys.stderr)

    def error(self, text):
        self.errors += 1
        self._print(text)

    def warning(self, text):
        self._print(text)


def _loc_of(kernel):
    from compiler.diagnostics import Loc
    fdef, source = kernel.fdef, kernel.source
    return Loc(source.filename, fdef.span.line, fdef.span.col, source.line(fdef.span.line))


def _diag(message, loc, kind="error"):
    from compiler.diagnostics import format_diagnostic
    return format_diagnostic(message, loc, kind)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _syntax_errors(text: str, filename: str, first) -> list:
    """Recover after a syntax error: parse each top-level definition on its own, so every
    kernel's syntax error is reported, not only the first."""
    from compiler.diagnostics import DslSyntaxError
    from .parser import parse
    lines = text.splitlines(keepends=True)
    starts = []
    prev_decorator = False
    for i, line in enumerate(lines):
        if line.startswith("@"):
            if not prev_decorator:
                starts.append(i)
            prev_decorator = True
        elif line.startswith("def ") or line.startswith("def\t"):
            if not prev_decorator:
                starts.append(i)
            prev_decorator = False
        elif line.strip() and not line.lstrip().startswith("#"):
            prev_decorator = False
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    errors = []
    for a, b in zip(starts, starts[1:] + [len(lines)]):
        chunk = "".join(lines[a:b])
        if not chunk.strip():
            continue
        try:
            parse(chunk, filename=filename, line_offset=a)
        except DslSyntaxError as e:
            errors.append(e)
        except Exception:
            pass
    key = lambda e: (e.loc.line, e.loc.col) if e.loc else (0, 0)  # noqa: E731
    if not any(str(e) == str(first) for e in errors):
        errors.append(first)
    return sorted(errors, key=key)


def _derived(kernel, kind):
    from .transforms import grad, value_and_grad
    if kind == "jvp":
        return kernel.jvp
    if kind == "vjp":
        return kernel.vjp
    if kind == "grad":
        return grad(kernel)
    return value_and_grad(kernel)


def _roles(kind, kname, base_fn, fn, sig):
    """Texts for the header: the role of each parameter and output of an entry point."""
    from compiler.ir import is_float
    pnames = list(base_fn.param_names)
    nb = len(pnames)
    float_params = [n for n, p in zip(pnames, base_fn.params) if is_float(p.type.dtype)]
    outs = [o["name"] for o in sig["outputs"]]
    nout = len(base_fn.result_types)
    base_outs = [f"out{k}" for k in range(nout)]
    if kind == "primal":
        return ["primal"] * nb, ["output"] * len(outs)
    if kind == "jvp":
        params = ["primal"] * nb + [f"tangent of {n}" for n in float_params]
        outputs = ["output"] * nout + [f"tangent of output {k}" for k in range(nout)]
        return params, outputs
    if kind == "vjp":
        params = ["primal"] * nb + [f"cotangent of output {k} ({base_outs[k]})" for k in range(nout)]
        outputs = ["output"] * nout + [f"cotangent of {n} (d/d{n} of <cotangents, outputs>)"
                                       for n in float_params]
        return params, outputs
    if kind == "grad":
        return ["primal"] * nb, [f"gradient of {kname} with respect to {pnames[0]}"]
    return ["primal"] * nb, [f"value of {kname}", f"gradient of {kname} with respect to {pnames[0]}"]


def _grad_skip_reason(kernel, base_fn):
    from compiler.ir import is_float
    rt = base_fn.result_types
    if len(rt) != 1 or not rt[0].is_scalar or not is_float(rt[0].dtype):
        shown = ", ".join(str(t) for t in rt)
        return f"'{kernel.name}' returns {shown}, not one floating-point scalar"
    if not base_fn.params or not is_float(base_fn.params[0].type.dtype):
        return f"the first parameter of '{kernel.name}' is not floating-point"
    return None


def _entries_for(kernel, derive, rep, ir_texts):
    """The prepared entry points of one kernel (primal + derivatives); diagnostics to `rep`."""
    from compiler import ir
    from compiler.aot import EntryPoint
    from compiler.diagnostics import DslcError
    from compiler.pipeline import prepare, signature_of

    loc = _loc_of(kernel)
    missing = [p for p, d in zip(kernel.fdef.params, kernel._declared) if d is None]
    if missing:
        for p in missing:
            from compiler.diagnostics import Loc
            ploc = Loc(loc.filename, p.span.line, p.span.col, kernel.source.line(p.span.line))
            rep.error(_diag(f"parameter '{p.name}' of kernel '{kernel.name}' has no type annotation; "
                            "every parameter of a kernel compiled ahead of time needs one "
                            "(e.g. 'x: f64[n]' or 'k: i64')", ploc))
        return []
    pt = tuple(kernel._declared)
    entries = []
    try:
        base_fn = prepare(kernel._lower_ir(pt))
        sig = signature_of(base_fn, kernel.name, [])
    except DslcError as e:
        rep.error(str(e))
        return []
    except Exception as e:          # a compiler bug: say so, keep going
        rep.error(_diag(f"internal compiler error while compiling kernel '{kernel.name}': "
                        f"{type(e).__name__}: {e} (please report this)", loc))
        return []
    p_roles, o_roles = _roles("primal", kernel.name, base_fn, base_fn, sig)
    ir_texts[kernel.name] = ir.print_function(base_fn)
    entries.append(EntryPoint(kernel.name, "primal", kernel.name, base_fn, p_roles, o_roles, loc=loc))
    for kind in derive:
        symbol = f"{kernel.name}_{kind}"
        if kind in ("grad", "value_and_grad"):
            why = _grad_skip_reason(kernel, base_fn)
            if why:
                rep.warning(_diag(f"{kind} of '{kernel.name}' skipped: {why} ({kind} needs a scalar "
                                  "floating-point output and a floating-point first parameter; use "
                                  "vjp for the others)", loc, "warning"))
                continue
        try:
            d = _derived(kernel, kind)
            dpt = tuple(pt) + tuple(d._extra(pt))
            fn = prepare(d._lower_ir(dpt))
            dsig = signature_of(fn, symbol, [])
        except DslcError as e:
            rep.error(_diag(f"cannot build the {kind} of kernel '{kernel.name}': {e.message}",
                            e.loc if e.loc is not None else loc))
            continue
        except Exception as e:
            rep.error(_diag(f"internal compiler error while building {kind} of kernel '{kernel.name}': "
                            f"{type(e).__name__}: {e} (please report this)", loc))
            continue
        p_roles, o_roles = _roles(kind, kernel.name, base_fn, fn, dsig)
        ir_texts[symbol] = ir.print_function(fn)
        entries.append(EntryPoint(kernel.name, kind, symbol, fn, p_roles, o_roles, loc=loc))
    return entries


def _library_name(path: str, given: str | None) -> str:
    return given or os.path.splitext(os.path.basename(path))[0]


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:     # --help, --version, bad usage: argparse exits 0 or 2
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if not args.check and not args.output:
        parser.print_usage(sys.stderr)
        print("dslc: error: the output directory is required: -o DIR (or --check to write nothing)",
              file=sys.stderr)
        return 2
    try:
        targets = _split(parser, args.target, TARGETS, "--target")
        derive = _split(parser, args.derive, DERIVE_KINDS, "--derive")
        emit = _split(parser, args.emit, EMIT_KINDS, "--emit") if args.emit is not None else None
    except SystemExit as e:
        return int(e.code or 0)
    if not targets:
        targets = ["cpu"]
    if emit is None:
        emit = ["so", "h"] + (["ptx"] if "cuda" in targets else [])
    if not emit and not args.check:
        print("dslc: error: --emit: nothing to emit", file=sys.stderr)
        return 2
    name = _library_name(args.file, args.name)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.+-]*", name):
        print(f"dslc: error: {name!r} is not a usable library name (use --name NAME with letters, "
              "digits and _)", file=sys.stderr)
        return 2

    # backends this build does not have are an error, never silently skipped output
    if "cuda" in targets or "ptx" in emit:
        if not _has_module("compiler.codegen.nvptx"):
            print("dslc: error: --target cuda / --emit ptx: this build of dslc has no CUDA backend "
                  "(compiler.codegen.nvptx is missing); build for --target cpu", file=sys.stderr)
            return 1
        import compiler.codegen.nvptx as nvptx
        if not hasattr(nvptx, "aot_ptx"):
            print("dslc: error: --target cuda / --emit ptx: the CUDA backend of this build cannot "
                  "compile ahead of time yet (compiler.codegen.nvptx.aot_ptx is missing); build for "
                  "--target cpu", file=sys.stderr)
            return 1
    if "mlir" in emit:
        ok = _has_module("compiler.mlir")
        if ok:
            import compiler.mlir as mlir_mod
            ok = hasattr(mlir_mod, "to_mlir")
        if not ok:
            print("dslc: error: --emit mlir: this build of dslc has no MLIR emitter (compiler.mlir."
                  "to_mlir is missing)", file=sys.stderr)
            return 1

    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        print(f"dslc: error: cannot read {args.file!r}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 1

    from compiler.diagnostics import DslcError, DslSyntaxError
    from .kernel import compile_source

    rep = _Reporter()
    try:
        kernels = compile_source(text, filename=args.file, boundscheck=args.boundscheck)
    except DslSyntaxError as e:
        for err in _syntax_errors(text, args.file, e):
            rep.error(str(err))
        return 1
    except DslcError as e:
        rep.error(str(e))
        return 1
    if not kernels:
        print(f"{args.file}: error: no kernels defined (write 'def NAME(params) -> type:' kernels)",
              file=sys.stderr)
        return 1

    entries, ir_texts = [], {}
    for k in kernels.values():
        entries += _entries_for(k, derive, rep, ir_texts)

    # C names: unique, not a C keyword or a C library function
    from compiler.aot import RESERVED_C_NAMES
    seen = {}
    for e in entries:
        for sym in (e.symbol, e.symbol + "__py"):
            if sym in RESERVED_C_NAMES:
                rep.error(_diag(f"kernel '{e.kernel}' cannot be compiled to a C library under the name "
                                f"'{sym}' (a C keyword or C library function); rename it", e.loc))
            elif sym in seen and seen[sym] is not e:
                rep.error(_diag(f"the C entry point '{sym}' ({e.kind} of '{e.kernel}') clashes with "
                                f"'{seen[sym].symbol}' ({seen[sym].kind} of '{seen[sym].kernel}'); "
                                "rename one of the kernels", e.loc))
            seen.setdefault(sym, e)
    if rep.errors:
        print(f"dslc: {rep.errors} error{'s' if rep.errors != 1 else ''} in {args.file}; nothing written",
              file=sys.stderr)
        return 1
    if args.check:
        if not args.quiet:
            print(f"{args.file}: ok ({len(kernels)} kernel{'s' if len(kernels) != 1 else ''}, "
                  f"{len(entries)} entry point{'s' if len(entries) != 1 else ''})")
        return 0

    from compiler.aot import AotError, build_library
    try:
        written = build_library(entries, args.output, name, emit=emit, opt=args.opt, cpu=args.cpu,
                                boundscheck=args.boundscheck, source=args.file, ir_texts=ir_texts)
    except AotError as e:
        print(f"dslc: error: {e}", file=sys.stderr)
        return 1
    except DslcError as e:
        print(str(e), file=sys.stderr)
        return 1
    except OSError as e:
        print(f"dslc: error: cannot write to {args.output!r}: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"dslc: {len(kernels)} kernel{'s' if len(kernels) != 1 else ''}, {len(entries)} entry "
              f"point{'s' if len(entries) != 1 else ''}: " + ", ".join(e.symbol for e in entries))
        for p in written:
            print(f"  wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
