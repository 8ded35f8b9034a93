"""Calling a compiled entry point from Python: argument checks, output allocation, status -> exception.

`make_caller(signature, c_func_address, py_func_address=None)` returns a plain Python function
specialised to one `Signature`: its source is generated once and `exec`'d (as Numba's dispatchers do),
so a call runs straight-line checks (`type(x) is ndarray`, `x.dtype is <dtype>`, shape unpacking,
`np.ascontiguousarray`) and one ctypes call; anything unusual (a NumPy scalar, a non-native byte order,
a wrong dtype, rank or extent) falls back to the generic code below, which either converts the
argument or raises the precise error.

Argument rules (SPEC section 3):
- array parameter: a NumPy array (or an object exposing `__array__`, `__array_interface__` or the
  buffer protocol) of exactly the declared dtype (a non-native byte order is byte-swapped) and rank;
  extents must match literals and agree with the dim names bound so far. A non-C-contiguous array is
  copied. A Python scalar, a list or a tuple is a TypeError.
- f32/f64 parameter: Python int, float (or bool); i32/i64: Python int (or bool), in range;
  bool: Python bool. NumPy scalars and 0-d arrays only of exactly the declared dtype. Anything else is
  a TypeError (no silent casts); an int out of the dtype's range is a ValueError.
Results: a NumPy scalar of the declared dtype for a scalar output, a new array for an array output,
a tuple when the signature's `tuple_result`.

Status translation: status s >= 1 is `signature.sites[s - 1]`; `index` -> IndexError
("index I is out of bounds for axis of size N" from err[1], err[2]), `shape` -> ValueError
("MESSAGE (extents A and B)"), `value` -> ValueError, `zerodiv` -> ZeroDivisionError; the message is
prefixed by `file:line:col: ` and followed by the source line and a caret. The exception carries
`.site`, `.status` and `.details`. Any other status is a RuntimeError.

Fast path: when `py_func_address` (the JIT's `NAME__py`) is given and `npstruct.FAST_PATH_OK`, arrays
are passed as `ctypes.py_object` and the kernel reads `data`/`dimensions` from the PyArrayObject.
Otherwise the C entry point gets data pointers read from the same struct (or, if its layout is not
the expected one, from `__array_interface__`). Both go through `CFUNCTYPE`, which releases the GIL.
The error-details buffer (and the slots for scalar outputs) come from a per-caller pool, so concurrent
calls from several threads never share one.
"""
from __future__ import annotations

import ctypes
import keyword
import re
from typing import Any, Callable, Sequence

import numpy as np

from . import buffers, npstruct
from .abi import (CTYPES, FLOAT_DTYPES, INT_DTYPES, INT_RANGES, NUMPY_DTYPES, NUMPY_SCALAR_TYPES,
                  Signature, Site, dim_args, dim_names, eval_dim, format_dim, is_compound_dim)

__all__ = ["make_caller", "status_error", "check_arguments", "describe_value"]

_ND = np.ndarray
_SITE_EXCEPTIONS = {"index": IndexError, "shape": ValueError, "value": ValueError,
                    "zerodiv": ZeroDivisionError, "memory": MemoryError}


# --- messages -----------------------------------------------------------------------------------------


def describe_value(v: Any) -> str:
    """How an argument is shown in an error message: `float64 array of shape (3,)`, `float`, ..."""
    if isinstance(v, np.ndarray):
        return f"{v.dtype} array of shape {v.shape}"
    if isinstance(v, np.generic):
        return f"numpy.{type(v).__name__} scalar"
    if v is None:
        return "None"
    return type(v).__name__


def status_error(signature: Signature, status: int, details: tuple | None = None,
                 display: str | None = None) -> Exception:
    """The exception for a non-zero status returned by `signature`'s entry point."""
    display = display or signature.name
    sites = signature.sites
    if not isinstance(status, int) or not 1 <= status <= len(sites):
        return RuntimeError(f"kernel {display!r} returned unknown status {status} (its signature has "
                            f"{len(sites)} error sites; the library may be corrupt or out of date)")
    site: Site = sites[status - 1]
    if site.kind == "index":
        msg = (f"index {details[0]} is out of bounds for axis of size {details[1]}" if details
               else site.message or "index out of bounds")
    elif site.kind == "shape":
        msg = site.message or "shape mismatch"
        if details:
            msg = f"{msg} (extents {details[0]} and {details[1]})"
    elif site.kind == "zerodiv":
        msg = site.message or "integer division by zero"
    else:
        msg = site.message or "invalid value"
    loc = site.location()
    text = f"{loc}: {msg}" if loc else msg
    caret = site.caret()
    if caret:
        text += "\n" + caret
    exc = _SITE_EXCEPTIONS[site.kind](text)
    exc.site = site
    exc.status = status
    exc.details = details
    return exc


# --- generic argument checking (the reference; the generated code only detects that it is needed) ----


class _Checker:
    """Argument conversion and checking for one signature, written for clarity, not speed."""

    def __init__(self, sig: Signature):
        self.sig = sig
        self.params = sig.params
        self.dtypes = [NUMPY_DTYPES[p.dtype] for p in sig.params]

    # one argument ----------------------------------------------------------------------------------
    def _fail_type(self, i: int, v: Any, hint: str = "") -> TypeError:
        p = self.params[i]
        return TypeError(f"parameter {p.name!r}: expected {p.type_str()}, got {describe_value(v)}{hint}")

    def coerce_scalar(self, i: int, v: Any):
        """A scalar argument as the Python int/float/bool handed to ctypes, or a TypeError/ValueError."""
        p = self.params[i]
        dt = self.dtypes[i]
        orig = v
        if isinstance(v, np.ndarray):
            if v.ndim != 0 or v.dtype != dt:
                raise self._fail_type(i, v)
            v = v[()]
        elif isinstance(v, np.generic):
            if v.dtype != dt:
                raise self._fail_type(i, v, f" (convert it with numpy.{dt.type.__name__}(...))")
        if isinstance(v, np.generic):       # exactly the declared dtype
            return v.item()
        if p.dtype in FLOAT_DTYPES:
            if isinstance(v, (int, float)):
                try:
                    return float(v)
                except OverflowError:
                    raise ValueError(f"parameter {p.name!r}: the integer {v} is too large for "
                                     f"{p.dtype}") from None
        elif p.dtype in INT_DTYPES:
            if isinstance(v, int):
                lo, hi = INT_RANGES[p.dtype]
                if not lo <= v <= hi:
                    raise ValueError(f"parameter {p.name!r}: {v} is out of range for {p.dtype} "
                                     f"[{lo}, {hi}]")
                return int(v)
        else:  # bool
            if isinstance(v, bool):
                return v
        raise self._fail_type(i, orig)

    def coerce_array(self, i: int, v: Any) -> np.ndarray:
        """An array argument of the declared dtype and rank, C-contiguous (extents unchecked)."""
        p = self.params[i]
        dt = self.dtypes[i]
        if isinstance(v, np.ndarray):
            arr = v
        elif isinstance(v, (int, float, complex, np.generic)) or v is None:
            raise self._fail_type(i, v)
        elif isinstance(v, (list, tuple)):
            raise self._fail_type(i, v, f" (pass a NumPy array, e.g. numpy.asarray(..., "
                                        f"dtype=numpy.{dt.type.__name__}))")
        elif hasattr(v, "__cuda_array_interface__"):
            raise self._fail_type(i, v, " (a device array: call the kernel with target='cuda' or copy "
                                        "it to the host)")
        elif hasattr(v, "__array__") or hasattr(v, "__array_interface__") or _has_buffer(v):
            try:
                arr = np.asarray(v)
            except Exception:
                raise self._fail_type(i, v) from None
        else:
            raise self._fail_type(i, v)
        if arr.dtype != dt:
            if arr.dtype.kind == dt.kind and arr.dtype.itemsize == dt.itemsize and \
                    arr.dtype.newbyteorder("=") == dt:
                arr = arr.astype(dt)        # a byte-swapped array of the right type: same values
            else:
                raise self._fail_type(i, arr if arr is v else v,
                                      "" if arr is v else f" ({describe_value(arr)})")
        if arr.ndim != p.rank:
            raise self._fail_type(i, arr if arr is v else v,
                                  "" if arr is v else f" ({describe_value(arr)})")
        return np.ascontiguousarray(arr)

    # all arguments ---------------------------------------------------------------------------------
    def bind(self, args: Sequence) -> tuple[list, dict]:
        """(converted arguments, {dim name: extent}); raises the error the call must raise."""
        params = self.params
        if len(args) != len(params):
            raise TypeError(f"{self.sig.name}() takes {len(params)} argument"
                            f"{'s' if len(params) != 1 else ''} but {len(args)} were given")
        values: list = []
        dims: dict[str, int] = {}
        for i, (p, v) in enumerate(zip(params, args)):
            if not p.is_array:
                values.append(self.coerce_scalar(i, v))
                continue
            arr = self.coerce_array(i, v)
            values.append(arr)
            for j, (d, e) in enumerate(zip(p.dims, arr.shape)):
                if isinstance(d, int) and e != d:
                    raise ValueError(f"parameter {p.name!r}: expected {p.type_str()}, got shape {arr.shape}")
                if isinstance(d, str):
                    if d not in dims:
                        dims[d] = e
                    elif dims[d] != e:
                        raise ValueError(f"parameter {p.name!r}: expected {p.type_str()} with {d} = "
                                         f"{dims[d]} ({self._binder_text(d, i)}), got shape {arr.shape}")
        scalars = self._scalar_args(values)
        for i, p in enumerate(params):
            for j, d in enumerate(p.dims):
                if not is_compound_dim(d):
                    continue
                arr = values[i]
                try:
                    want = eval_dim(d, dims, scalars)
                except ValueError:
                    raise ValueError(f"parameter {p.name!r}: the extent {format_dim(d)} of axis {j} cannot "
                                     f"be computed: division by zero ({self._context(d, dims, scalars, i)})") from None
                if arr.shape[j] != want:
                    raise ValueError(f"parameter {p.name!r}: expected {p.type_str()} with {format_dim(d)} = "
                                     f"{want} ({self._context(d, dims, scalars, i)}), got shape {arr.shape}")
        return values, dims

    def output_shapes(self, values: list, dims: dict) -> list[tuple]:
        """The shape of each output (() for a scalar); ValueError for a negative or undefined extent."""
        scalars = self._scalar_args(values)
        shapes = []
        for o in self.sig.outputs:
            shape = []
            for j, d in enumerate(o.dims):
                try:
                    e = eval_dim(d, dims, scalars)
                except ValueError:
                    raise ValueError(f"output {o.name!r}: the extent {format_dim(d)} of axis {j} cannot be "
                                     f"computed: division by zero ({self._context(d, dims, scalars)})") from None
                if e < 0:
                    raise ValueError(f"output {o.name!r}: the extent {format_dim(d)} of axis {j} would be "
                                     f"{e} ({self._context(d, dims, scalars)}); extents must be >= 0")
                shape.append(e)
            shapes.append(tuple(shape))
        return shapes

    def _scalar_args(self, values: list) -> dict:
        return {p.name: v for p, v in zip(self.params, values) if not p.is_array}

    def _binder_text(self, name: str, current: int | None = None) -> str:
        i, j = self.sig.binders[name]
        if i == current:
            return f"from its axis {j}"
        return f"from parameter {self.params[i].name!r}"

    def _context(self, expr: Any, dims: dict, scalars: dict, current: int | None = None) -> str:
        parts = []
        for n in sorted(dim_names(expr)):
            parts.append(f"{n} = {dims.get(n)} {self._binder_text(n, current)}")
        for a in sorted(dim_args(expr)):
            parts.append(f"{a} = {scalars.get(a)!r}")
        return ", ".join(parts)

    def diagnose(self, args: Sequence) -> None:
        """Called by the generated code when its quick checks failed: raise the precise error."""
        values, dims = self.bind(args)
        self.output_shapes(values, dims)
        raise RuntimeError(f"internal error in dslc's runtime: the quick argument checks of "
                           f"{self.sig.name!r} failed but the full checks passed")


def _has_buffer(v: Any) -> bool:
    try:
        memoryview(v)
    except TypeError:
        return False
    return True


def check_arguments(signature: Signature, args: Sequence) -> tuple[list, list[tuple]]:
    """Generic (slow) conversion of `args`: (converted arguments, output shapes), or the error."""
    c = _Checker(signature)
    values, dims = c.bind(args)
    return values, c.output_shapes(values, dims)


# --- the generated caller ----------------------------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _safe_names(sig: Signature) -> list[str]:
    names = [p.name for p in sig.params]
    ok = all(_IDENT.match(n) and not keyword.iskeyword(n) and not n.startswith("_dslc") for n in names)
    return names if ok else [f"_dslc_a{i}" for i in range(len(names))]


def _dim_code(expr: Any, binder_var: dict, names: dict) -> str:
    """Python source computing a dim expression from the locals of the generated function."""
    if isinstance(expr, int):
        return repr(expr)
    if isinstance(expr, str):
        return binder_var[expr]
    a = dim_args(expr)
    if not isinstance(expr, tuple):     # ArgRef
        return names[next(iter(a))]
    op, x, y = expr
    sx, sy = _dim_code(x, binder_var, names), _dim_code(y, binder_var, names)
    if op in ("max", "min"):
        return f"_dslc_{op}({sx}, {sy})"
    return f"({sx} {dict(add='+', sub='-', mul='*', floordiv='//')[op]} {sy})"


def _ident_for(name: str) -> str:
    s = re.sub(r"\W", "_", name)
    if not s or s[0].isdigit() or keyword.iskeyword(s):
        s = "_" + s
    return s


def make_caller(signature: Signature | dict, c_func_address: int, py_func_address: int | None = None,
                target_name: str | None = None, *, keepalive: Any = None,
                wrap_entry: Callable | None = None) -> Callable:
    """A Python function calling the entry point at `c_func_address` with the conventions of SPEC section 6.

    signature: a `Signature` (or its JSON dict). c_func_address: the address of the C-ABI entry point.
    py_func_address: the address of its `NAME__py` twin (arrays as PyObject*), used when given and the
    NumPy struct layout check passed. target_name: the name the function (and its messages) go by,
    default `signature.name`. keepalive: anything that must outlive the function (a CDLL, a JIT engine).
    wrap_entry: applied to each ctypes function of an entry point; what it returns is called instead.

    The function has attributes `signature`, `fast_path` (whether `NAME__py` is used), `source`
    (the generated Python text), `entry_address` (the entry point it calls) and
    `retarget(c_address, py_address)`.
    """
    sig = signature if isinstance(signature, Signature) else Signature.from_json(signature)
    for what, addr in (("c_func_address", c_func_address), ("py_func_address", py_func_address)):
        if addr is None and what == "py_func_address":
            continue
        if not isinstance(addr, int) or isinstance(addr, bool) or addr <= 0:
            raise ValueError(f"make_caller: {what} must be a non-zero address, got {addr!r}")
    display = target_name or sig.name
    fast = py_func_address is not None and npstruct.FAST_PATH_OK
    checker = _Checker(sig)
    names = _safe_names(sig)
    name_of = {p.name: n for p, n in zip(sig.params, names)}

    # -- ctypes prototype -----------------------------------------------------------------------------
    argtypes: list = []
    for p in sig.params:
        if not p.is_array:
            argtypes.append(CTYPES[p.dtype])
        elif fast:
            argtypes.append(ctypes.py_object)
        else:
            argtypes += [ctypes.c_void_p] + [ctypes.c_int64] * p.rank
    for o in sig.outputs:
        if not o.is_array:
            argtypes.append(ctypes.c_void_p)
        elif fast:
            argtypes.append(ctypes.py_object)
        else:
            argtypes += [ctypes.c_void_p] + [ctypes.c_int64] * o.rank
    argtypes.append(ctypes.c_void_p)        # int64_t* err
    proto = ctypes.CFUNCTYPE(ctypes.c_int32, *argtypes)
    cfunc = proto(py_func_address if fast else c_func_address)
    wrap = wrap_entry or (lambda entry: entry)

    # -- the scratch buffer: err[4] and one slot per scalar output, pooled ---------------------------------
    scalar_outs = [k for k, o in enumerate(sig.outputs) if not o.is_array]
    fields = [("err", ctypes.c_int64 * 4)] + [(f"o{k}", CTYPES[sig.outputs[k].dtype]) for k in scalar_outs]
    Scratch = type(f"_Scratch_{_ident_for(display)}", (ctypes.Structure,), {"_fields_": fields})
    offsets = [getattr(Scratch, f"o{k}").offset for k in scalar_outs]
    slot_index = {k: 2 + n for n, k in enumerate(scalar_outs)}

    def new_scratch():
        b = Scratch()
        a = ctypes.addressof(b)
        return (a, b) + tuple(a + off for off in offsets)

    pool = [new_scratch()]

    def fail(status, entry):
        err = entry[1].err
        details = (int(err[1]), int(err[2])) if err[0] == status else None
        raise status_error(sig, status, details, display)

    def diag(*args):
        try:
            checker.diagnose(args)
        except Exception as e:     # raised inside the generated code's `except`: hide that context
            e.__suppress_context__ = True
            raise

    env: dict[str, Any] = {
        "__name__": __name__,
        "_dslc_type": type, "_dslc_id": id, "_dslc_nd": _ND, "_dslc_int": int, "_dslc_float": float,
        "_dslc_bool": bool, "_dslc_max": max, "_dslc_min": min,
        "_dslc_asc": np.ascontiguousarray, "_dslc_empty": buffers.empty,
        "_dslc_fn": wrap(cfunc), "_dslc_pop": pool.pop, "_dslc_push": pool.append, "_dslc_newbuf": new_scratch,
        "_dslc_fail": fail, "_dslc_diag": diag, "_dslc_W": npstruct.WORDS,
        "_dslc_addr": npstruct.data_address,
    }
    for dt in set(p.dtype for p in sig.params) | set(o.dtype for o in sig.outputs):
        env[f"_dslc_t_{dt}"] = NUMPY_DTYPES[dt]
        env[f"_dslc_s_{dt}"] = NUMPY_SCALAR_TYPES[dt]

    # -- source text ----------------------------------------------------------------------------------
    fname = _ident_for(display)
    all_args = ", ".join(names)
    diag_call = f"_dslc_diag({all_args})"
    L = [f"def {fname}({all_args}):"]
    binder_var: dict[str, str] = {}
    extent_vars: dict[int, list[str]] = {}
    for i, p in enumerate(sig.params):
        v = names[i]
        if not p.is_array:
            env[f"_dslc_cs{i}"] = (lambda i: lambda x: checker.coerce_scalar(i, x))(i)
            if p.dtype in FLOAT_DTYPES:
                cond = f"_dslc_type({v}) is not _dslc_float"
            elif p.dtype in INT_DTYPES:
                lo, hi = INT_RANGES[p.dtype]
                cond = f"_dslc_type({v}) is not _dslc_int or not {lo} <= {v} <= {hi}"
            else:
                cond = f"_dslc_type({v}) is not _dslc_bool"
            L.append(f"    if {cond}:")
            L.append(f"        {v} = _dslc_cs{i}({v})")
            continue
        env[f"_dslc_ca{i}"] = (lambda i: lambda x: checker.coerce_array(i, x))(i)
        L.append(f"    if _dslc_type({v}) is not _dslc_nd or {v}.dtype is not _dslc_t_{p.dtype}:")
        L.append(f"        {v} = _dslc_ca{i}({v})")
        ev = [f"_dslc_e{i}_{j}" for j in range(p.rank)]
        extent_vars[i] = ev
        L.append("    try:")
        L.append(f"        {', '.join(ev)}, = {v}.shape")
        L.append("    except ValueError:")
        L.append(f"        {diag_call}")
        conds = []
        for j, d in enumerate(p.dims):
            if isinstance(d, int):
                conds.append(f"{ev[j]} != {d}")
            elif isinstance(d, str):
                if d in binder_var:
                    conds.append(f"{ev[j]} != {binder_var[d]}")
                else:
                    binder_var[d] = ev[j]
        if conds:
            L.append(f"    if {' or '.join(conds)}:")
            L.append(f"        {diag_call}")
        L.append(f"    {v} = _dslc_asc({v})")
    # parameter axes given by expressions, once every name and scalar is known
    conds = []
    for i, p in enumerate(sig.params):
        for j, d in enumerate(p.dims):
            if is_compound_dim(d):
                conds.append(f"{extent_vars[i][j]} != {_dim_code(d, binder_var, name_of)}")
    if conds:
        L.append("    try:")
        L.append(f"        _dslc_bad = {' or '.join(conds)}")
        L.append("    except ZeroDivisionError:")
        L.append("        _dslc_bad = True")
        L.append("    if _dslc_bad:")
        L.append(f"        {diag_call}")
    # outputs
    out_dims: dict[int, list[str]] = {}
    checks = []
    pre = []
    for k, o in enumerate(sig.outputs):
        if not o.is_array:
            continue
        ds = []
        for j, d in enumerate(o.dims):
            if isinstance(d, str):
                ds.append(binder_var[d])
            elif isinstance(d, int):
                ds.append(repr(d))
            else:
                var = f"_dslc_f{k}_{j}"
                pre.append(f"{var} = {_dim_code(d, binder_var, name_of)}")
                checks.append(f"{var} < 0")
                ds.append(var)
        out_dims[k] = ds
    if pre:
        L.append("    try:")
        L += [f"        {s}" for s in pre]
        L.append("    except ZeroDivisionError:")
        L.append(f"        {diag_call}")
        L.append(f"    if {' or '.join(checks)}:")
        L.append(f"        {diag_call}")
    for k, o in enumerate(sig.outputs):
        if o.is_array:
            shape = f"({out_dims[k][0]},)" if o.rank == 1 else f"({', '.join(out_dims[k])})"
            L.append(f"    _dslc_o{k} = _dslc_empty({shape}, _dslc_t_{o.dtype})")
    L.append("    try:")
    L.append("        _dslc_p = _dslc_pop()")
    L.append("    except IndexError:")
    L.append("        _dslc_p = _dslc_newbuf()")

    def ptr(expr: str) -> str:
        if npstruct.FAST_PATH_OK:
            return f"_dslc_W[(_dslc_id({expr}) >> 3) + 2]"
        return f"_dslc_addr({expr})"

    cargs = []
    for i, p in enumerate(sig.params):
        if not p.is_array:
            cargs.append(names[i])
        elif fast:
            cargs.append(names[i])
        else:
            cargs += [ptr(names[i])] + extent_vars[i]
    for k, o in enumerate(sig.outputs):
        if not o.is_array:
            cargs.append(f"_dslc_p[{slot_index[k]}]")
        elif fast:
            cargs.append(f"_dslc_o{k}")
        else:
            cargs += [ptr(f"_dslc_o{k}")] + out_dims[k]
    cargs.append("_dslc_p[0]")
    L.append(f"    _dslc_st = _dslc_fn({', '.join(cargs)})")
    L.append("    if _dslc_st:")
    L.append("        _dslc_fail(_dslc_st, _dslc_p)")
    results = []
    if scalar_outs:
        L.append("    _dslc_b = _dslc_p[1]")
    for k, o in enumerate(sig.outputs):
        results.append(f"_dslc_o{k}" if o.is_array else f"_dslc_s_{o.dtype}(_dslc_b.o{k})")
    if sig.tuple_result:
        res = f"({', '.join(results)}{',' if len(results) == 1 else ''})"
    else:
        res = results[0]
    if scalar_outs:
        L.append(f"    _dslc_r = {res}")
        L.append("    _dslc_push(_dslc_p)")
        L.append("    return _dslc_r")
    else:
        L.append("    _dslc_push(_dslc_p)")
        L.append(f"    return {res}")
    src = "\n".join(L) + "\n"

    code = compile(src, f"<dslc caller {display}>", "exec")
    exec(code, env)
    f = env[fname]
    f.__name__ = display
    f.__qualname__ = display
    f.__doc__ = sig.describe()
    f.signature = sig
    f.fast_path = fast
    f.source = src
    f._keepalive = (keepalive, cfunc, pool)
    f.entry_address = py_func_address if fast else c_func_address

    def retarget(c_address: int, py_address: int | None = None) -> None:
        """Call the entry points at these addresses from now on: the same function compiled
        again (the final tier, compiler/tiering.py); calls already running finish in the old code."""
        addr = py_address if fast else c_address
        if not isinstance(addr, int) or isinstance(addr, bool) or addr <= 0:
            raise ValueError(f"retarget: a non-zero address is needed, got {addr!r}")
        new = proto(addr)
        f._keepalive += (new,)
        env["_dslc_fn"] = wrap(new)     # the generated code reads it on every call
        f.entry_address = addr

    f.retarget = retarget
    return f
