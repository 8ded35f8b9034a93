"""Loading a library built by `dslc`: `load_library("build/libkernels.so")`.

The library's manifest (`kernels.json`, next to `libkernels.so`) is read and checked against the `.so`
(format and ABI versions, the SHA-256 of the `.so`), the `.so` is loaded with ctypes, and every entry
point becomes a Python callable with the conventions of SPEC section 6 (argument checks, outputs
allocated, statuses turned into exceptions), made by `make_caller` -- through the `NAME__py` symbol
(NumPy arrays passed as PyObject*) when the library has one.

This module imports only the standard library, NumPy and the rest of `runtime`: a program that loads
a library needs neither the compiler (llvmlite, lark) nor the `dsl` front end.
"""
from __future__ import annotations

import ctypes
import os
import sys

from .abi import ABI_VERSION, Signature
from .call import make_caller

__all__ = ["load_library", "Library", "LibraryError", "FORMAT", "FORMAT_VERSION"]

FORMAT = "dslc-library"
FORMAT_VERSION = 1

_REBUILD = "rebuild it with `dslc FILE.dsl -o DIR` (the same version of dslc as this runtime)"

# LLVM x86 feature names -> /proc/cpuinfo flags, for the features whose absence would crash a kernel
_X86_FEATURES = {"avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi": "bmi1", "bmi2": "bmi2",
                 "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512dq": "avx512dq",
                 "avx512vl": "avx512vl", "avx512cd": "avx512cd", "sse4.1": "sse4_1", "sse4.2": "sse4_2",
                 "ssse3": "ssse3", "popcnt": "popcnt", "lzcnt": "abm", "movbe": "movbe"}


class LibraryError(ValueError):
    """A precompiled library that cannot be used: corrupt, mismatched, or built for another ABI."""


class Library:
    """A loaded dslc library: each entry point (`f`, `f_jvp`, `f_vjp`, `f_grad`, ...) is an attribute.

    `lib.kernels` maps every entry-point name to its callable, `lib.manifest` is the manifest (a dict),
    `lib.path` the `.so` and `lib.manifest_path` the manifest file."""

    def __init__(self, path: str, manifest_path: str, manifest: dict, cdll, functions: dict):
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "manifest_path", manifest_path)
        object.__setattr__(self, "manifest", manifest)
        object.__setattr__(self, "name", manifest.get("name", ""))
        object.__setattr__(self, "_cdll", cdll)
        object.__setattr__(self, "kernels", dict(functions))

    def __getattr__(self, name: str):
        fns = self.__dict__.get("kernels", {})
        if name in fns:
            return fns[name]
        raise AttributeError(f"library {self.__dict__.get('path')!r} has no entry point {name!r} "
                             f"(it has: {', '.join(fns) or 'none'})")

    def __getitem__(self, name: str):
        try:
            return self.kernels[name]
        except KeyError:
            raise KeyError(f"library {self.path!r} has no entry point {name!r} "
                           f"(it has: {', '.join(self.kernels) or 'none'})") from None

    def __contains__(self, name: str) -> bool:
        return name in self.kernels

    def __iter__(self):
        return iter(self.kernels)

    def __setattr__(self, name, value):
        raise AttributeError("a loaded library is read-only")

    def __dir__(self):
        return sorted(set(object.__dir__(self)) | set(self.kernels))

    def __repr__(self):
        lines = [f"<dslc library {self.name!r} from {self.path}:"]
        for f in self.kernels.values():
            lines.append(f"  {f.__doc__}")
        return "\n".join(lines) + ">"


def _sha256(path: str) -> str:
    import hashlib                      # here, not at the top: importing runtime stays cheap
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _locate(path: str) -> tuple[str, str | None]:
    """(manifest path, .so path or None when it must come from the manifest)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith(".json") and
                       os.path.exists(os.path.join(path, "lib" + f[:-5] + ".so")))
        if len(found) != 1:
            raise FileNotFoundError(f"{path!r} is a directory with {len(found) or 'no'} dslc librar"
                                    f"{'y' if len(found) == 1 else 'ies'} (NAME.json next to libNAME.so); "
                                    "pass the path of the .so or of its manifest")
        return os.path.join(path, found[0]), None
    if path.endswith(".json"):
        if not os.path.exists(path):
            raise FileNotFoundError(f"dslc library manifest {path!r} not found ({_REBUILD})")
        return path, None
    if not os.path.exists(path):
        raise FileNotFoundError(f"dslc library {path!r} not found (build it with `dslc FILE.dsl -o DIR`; "
                                "load DIR/libNAME.so)")
    d, base = os.path.split(path)
    stem = base
    for suffix in (".so", ".dylib", ".dll"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if stem.startswith("lib"):
        stem = stem[3:]
    manifest = os.path.join(d, stem + ".json")
    if not os.path.exists(manifest):
        raise FileNotFoundError(f"the manifest {manifest!r} of dslc library {path!r} is missing: dslc writes "
                                f"it next to the .so and load_library needs it to know the kernels' "
                                f"signatures; copy it along with the library, or {_REBUILD}")
    return manifest, path


def _read_manifest(manifest_path: str) -> dict:
    try:
        with open(manifest_path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise LibraryError(f"cannot read the dslc library manifest {manifest_path!r}: {e}") from None
    import json
    try:
        m = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise LibraryError(f"the dslc library manifest {manifest_path!r} is not valid JSON ({e}); it is "
                           f"corrupt: {_REBUILD}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise LibraryError(f"{manifest_path!r} is not a dslc library manifest (no \"format\": \"{FORMAT}\")")
    fv = m.get("format_version")
    if fv != FORMAT_VERSION:
        raise LibraryError(f"the dslc library manifest {manifest_path!r} has format version {fv!r}; this "
                           f"runtime reads version {FORMAT_VERSION}: {_REBUILD}, or use the runtime of the "
                           f"dslc version that built it ({m.get('dslc_version', 'unknown')})")
    abi = m.get("abi")
    if abi != ABI_VERSION:
        raise LibraryError(f"the dslc library {manifest_path!r} was built for entry-point ABI version {abi!r}; "
                           f"this runtime supports version {ABI_VERSION}: {_REBUILD}")
    for key, typ in (("library", str), ("sha256", str), ("kernels", list)):
        if not isinstance(m.get(key), typ):
            raise LibraryError(f"the dslc library manifest {manifest_path!r} is malformed: missing or bad "
                               f"{key!r}; {_REBUILD}")
    return m


def _check_cpu(m: dict, manifest_path: str):
    """Refuse a library built for CPU features this machine lacks (it would die of SIGILL)."""
    feats = (m.get("cpu") or {}).get("features") or ""
    if not isinstance(feats, str) or not sys.platform.startswith("linux"):
        return
    wanted = [f[1:] for f in feats.split(",") if f.startswith("+") and f[1:] in _X86_FEATURES]
    if not wanted:
        return
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = set()
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        return
    if not flags:
        return
    lacking = [w for w in wanted if _X86_FEATURES[w] not in flags]
    if lacking:
        raise LibraryError(f"the dslc library {manifest_path!r} was built for CPU "
                           f"{(m.get('cpu') or {}).get('name')!r} with features this machine lacks "
                           f"({', '.join(lacking)}); rebuild it on this machine, or portably with "
                           f"`dslc ... --cpu generic`")


_opened: dict = {}      # absolute path -> sha256 of what the dynamic loader has mapped from it


def _dlopen(path: str, digest: str):
    """ctypes.CDLL, except that a library rebuilt in place since this process loaded it is loaded from
    a private copy: dlopen of a path it has open returns the old mapping, i.e. the old code."""
    prev = _opened.get(path)
    if prev is None or prev == digest:
        _opened[path] = digest
        return ctypes.CDLL(path)
    import tempfile
    fd, tmp = tempfile.mkstemp(prefix=f"dslc-{digest[:12]}-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            out.write(src.read())
        if _sha256(tmp) != digest:
            raise OSError(f"{path} changed while it was being loaded")
        return ctypes.CDLL(tmp)
    finally:
        try:
            os.unlink(tmp)      # the mapping stays valid
        except OSError:
            pass


def load_library(path) -> Library:
    """Load a library built by `dslc`: `path` is its `libNAME.so`, its `NAME.json` manifest, or the
    directory holding them. Returns a `Library` whose attributes are the entry points.

    Raises FileNotFoundError when the `.so` or the manifest is missing, and `LibraryError` (a
    ValueError) when the manifest is malformed or of another format/ABI version, when the `.so` does not
    match the manifest's SHA-256 (corrupt or replaced), or when it cannot be loaded."""
    manifest_path, so_path = _locate(path)
    m = _read_manifest(manifest_path)
    lib_name = m["library"]
    if os.path.basename(lib_name) != lib_name:
        raise LibraryError(f"the dslc library manifest {manifest_path!r} is malformed: 'library' must be a "
                           f"file name, got {lib_name!r}")
    expected = os.path.join(os.path.dirname(manifest_path), lib_name)
    if so_path is None:
        so_path = expected
        if not os.path.exists(so_path):
            raise FileNotFoundError(f"the shared library {so_path!r} named by the manifest {manifest_path!r} "
                                    f"is missing ({_REBUILD})")
    elif os.path.basename(so_path) != lib_name:
        raise LibraryError(f"the manifest {manifest_path!r} describes {lib_name!r}, not "
                           f"{os.path.basename(so_path)!r}; {_REBUILD}")
    digest = _sha256(so_path)
    if digest != m["sha256"].lower():
        raise LibraryError(f"the shared library {so_path!r} does not match its manifest {manifest_path!r} "
                           f"(SHA-256 {digest[:16]}..., the manifest expects {m['sha256'][:16]}...): it is "
                           f"corrupt or was replaced after dslc built it; {_REBUILD}")
    _check_cpu(m, manifest_path)
    # parse every signature before loading any code
    entries = []
    for i, k in enumerate(m["kernels"]):
        eps = k.get("entry_points") if isinstance(k, dict) else None
        if not isinstance(eps, list):
            raise LibraryError(f"the dslc library manifest {manifest_path!r} is malformed: kernels[{i}] has no "
                               f"entry_points list; {_REBUILD}")
        for ep in eps:
            try:
                if not isinstance(ep, dict):
                    raise ValueError("an entry point must be an object")
                sig = Signature.from_json(ep["signature"])
                py_symbol = ep.get("py_symbol")
                if py_symbol is not None and not isinstance(py_symbol, str):
                    raise ValueError("py_symbol must be a string")
            except (KeyError, ValueError) as e:
                raise LibraryError(f"the dslc library manifest {manifest_path!r} is malformed "
                                   f"(kernels[{i}]): {e}; {_REBUILD}") from None
            entries.append((sig, py_symbol))
    try:
        cdll = _dlopen(os.path.abspath(so_path), digest)
    except OSError as e:
        raise LibraryError(f"cannot load the shared library {so_path!r}: {e} (it may be built for another "
                           f"platform or be corrupt; {_REBUILD})") from None
    functions = {}
    for sig, py_symbol in entries:
        try:
            c_addr = ctypes.cast(getattr(cdll, sig.symbol), ctypes.c_void_p).value
        except AttributeError:
            raise LibraryError(f"the shared library {so_path!r} has no entry point {sig.symbol!r} although "
                               f"its manifest lists it; {_REBUILD}") from None
        py_addr = None
        if py_symbol:
            try:
                py_addr = ctypes.cast(getattr(cdll, py_symbol), ctypes.c_void_p).value
            except AttributeError:
                py_addr = None
        functions[sig.symbol] = make_caller(sig, c_addr, py_addr, target_name=sig.name, keepalive=cdll)
    return Library(os.path.abspath(so_path), os.path.abspath(manifest_path), m, cdll, functions)
