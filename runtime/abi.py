"""The entry-point ABI (version 1) and the signature description shared by the JIT and a library's manifest.

A `Signature` describes one compiled entry point (see docs/design.md, "The entry-point ABI"):

    int32_t NAME(scalar params by value, array params as (data, extent per axis)...,
                 scalar outputs as T*, array outputs as (T* buffer, extent per axis)...,
                 int64_t* err);

`Signature.to_json()` gives the plain dict stored in a manifest, `Signature.from_json()` reads one back
and rejects malformed data with a `ValueError` saying where it is wrong (a manifest may be corrupt).

Dim expressions (what a parameter's or an output's `dims` list holds):
    int              a literal extent (>= 0)
    "n"              a dim name, bound from the parameters' shapes (the first parameter axis carrying it)
    None / ":"       an anonymous axis (parameters only): any extent
    {"arg": "k"}     the value of an integer scalar parameter (`ArgRef("k")` in Python)
    [op, a, b]       op in add sub mul floordiv max min (a tuple in Python); floordiv floors, like Python
A parameter dim is normally a name, a literal or anonymous; it may also be an expression over names bound
by other axes and integer scalar parameters (e.g. the cotangent of an output `f32[n + k]`): the argument's
extent must then equal its value.

This module imports only the standard library and NumPy.
"""
from __future__ import annotations

import ctypes
import keyword
import re
from typing import Any, Mapping

import numpy as np

ABI_VERSION = 1


# --- frozen records ------------------------------------------------------------------------------------

class FrozenInstanceError(AttributeError):
    """Assigning to a field of a frozen record (as `dataclasses.FrozenInstanceError`)."""


class _Hidden:
    """A field left out of __init__, __repr__ and comparisons (`field(init=False, repr=False,
    compare=False)`); it starts as `default`."""

    def __init__(self, default=None):
        self.default = default


def _frozen(cls):
    """`@dataclass(frozen=True)` for this module's small records, without its import-time cost:
    dataclasses compiles every generated method with exec (~0.7 ms a class, ~4 ms for this module,
    a fifth of a warm-started process's start-up). Same __init__ (positional or keyword, defaults
    from class attributes, then __post_init__), __eq__, __hash__, __repr__ and immutability."""
    names = list(cls.__dict__.get("__annotations__", {}))
    hidden = {n: cls.__dict__[n].default for n in names if isinstance(cls.__dict__.get(n), _Hidden)}
    fields = tuple(n for n in names if n not in hidden)
    defaults = {n: cls.__dict__[n] for n in fields if n in cls.__dict__}
    for n in hidden:
        delattr(cls, n)
    post = cls.__dict__.get("__post_init__")
    setter = object.__setattr__

    def __init__(self, *args, **kwargs):
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments, {len(args)} were given")
        for n, v in zip(fields, args):
            setter(self, n, v)
        for n in fields[len(args):]:
            if n in kwargs:
                setter(self, n, kwargs.pop(n))
            elif n in defaults:
                setter(self, n, defaults[n])
            else:
                raise TypeError(f"{cls.__name__}() missing required argument: {n!r}")
        if kwargs:
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")
        for n, v in hidden.items():
            setter(self, n, v)
        if post is not None:
            post(self)

    def _key(self):
        return tuple(getattr(self, n) for n in fields)

    def __eq__(self, other):
        return _key(self) == _key(other) if other.__class__ is self.__class__ else NotImplemented

    def __hash__(self):
        return hash(_key(self))

    def __repr__(self):
        return f"{cls.__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in fields)})"

    def __setattr__(self, name, value):
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name):
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    for f in (__init__, __eq__, __hash__, __repr__, __setattr__, __delattr__):
        f.__qualname__ = f"{cls.__qualname__}.{f.__name__}"
        setattr(cls, f.__name__, f)
    cls.__match_args__ = fields
    return cls

# --- dtypes -----------------------------------------------------------------------------------------

DTYPES = ("f32", "f64", "i32", "i64", "bool")
FLOAT_DTYPES = frozenset({"f32", "f64"})
INT_DTYPES = frozenset({"i32", "i64"})

#: dsl dtype name -> NumPy dtype (bool is NumPy's 1-byte bool, 0/1, i.e. the C ABI's uint8_t)
NUMPY_DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}
#: dsl dtype name -> NumPy scalar type (what a scalar result is)
NUMPY_SCALAR_TYPES: dict[str, type] = {k: v.type for k, v in NUMPY_DTYPES.items()}
#: dsl dtype name -> ctypes type of the value in the C ABI
CTYPES: dict[str, type] = {
    "f32": ctypes.c_float,
    "f64": ctypes.c_double,
    "i32": ctypes.c_int32,
    "i64": ctypes.c_int64,
    "bool": ctypes.c_uint8,
}
#: dsl dtype name -> C type spelling (for headers)
C_TYPE_NAMES: dict[str, str] = {
    "f32": "float",
    "f64": "double",
    "i32": "int32_t",
    "i64": "int64_t",
    "bool": "uint8_t",
}
#: inclusive value range of the integer dtypes (a Python int outside it is refused, never truncated)
INT_RANGES: dict[str, tuple[int, int]] = {
    "i32": (-(2**31), 2**31 - 1),
    "i64": (-(2**63), 2**63 - 1),
}
_DTYPE_NAME_OF_NUMPY = {v: k for k, v in NUMPY_DTYPES.items()}


def numpy_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype of a dsl dtype name."""
    try:
        return NUMPY_DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r} (expected one of {', '.join(DTYPES)})") from None


def ctype(dtype: str) -> type:
    """The ctypes type of a dsl dtype name."""
    try:
        return CTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r} (expected one of {', '.join(DTYPES)})") from None


def dtype_name(dt: Any) -> str | None:
    """The dsl dtype name of a NumPy dtype (or anything np.dtype accepts), or None if it has none."""
    try:
        return _DTYPE_NAME_OF_NUMPY.get(np.dtype(dt))
    except TypeError:
        return None


# --- dim expressions ----------------------------------------------------------------------------------

DIM_OPS = ("add", "sub", "mul", "floordiv", "max", "min")
_OP_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "floordiv": "//"}
_MAX_DEPTH = 64


@_frozen
class ArgRef:
    """`{"arg": NAME}`: the value of the integer scalar parameter NAME."""
    name: str

    def __str__(self) -> str:
        return self.name


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _arg_name(expr: Any) -> str | None:
    if isinstance(expr, ArgRef):
        return expr.name
    if isinstance(expr, Mapping) and set(expr) == {"arg"}:
        return expr["arg"]
    return None


def eval_dim(expr: Any, dims: Mapping[str, int], args: Mapping[str, Any]) -> int:
    """Evaluate a dim expression: names are looked up in `dims`, `{"arg": k}` in `args`.

    Raises ValueError for an unbound name, a malformed expression or a division by zero.
    """
    if _is_int(expr):
        return expr
    if isinstance(expr, str):
        try:
            return int(dims[expr])
        except KeyError:
            raise ValueError(f"dimension {expr!r} is not bound") from None
    name = _arg_name(expr)
    if name is not None:
        try:
            value = args[name]
        except KeyError:
            raise ValueError(f"dimension expression refers to unknown argument {name!r}") from None
        if isinstance(value, (np.integer, np.bool_)):
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"argument {name!r} used in a dimension is not an integer: {value!r}")
        return int(value)
    if isinstance(expr, (list, tuple)) and len(expr) == 3 and expr[0] in DIM_OPS:
        op = expr[0]
        a = eval_dim(expr[1], dims, args)
        b = eval_dim(expr[2], dims, args)
        if op == "add":
            return a + b
        if op == "sub":
            return a - b
        if op == "mul":
            return a * b
        if op == "max":
            return max(a, b)
        if op == "min":
            return min(a, b)
        if b == 0:
            raise ValueError(f"division by zero in dimension {format_dim(expr)}")
        return a // b
    raise ValueError(f"malformed dimension expression {expr!r}")


def format_dim(expr: Any) -> str:
    """Source-like text of a dim expression: `n`, `3`, `:`, `n + k`, `max(n, 1)`."""
    if expr is None:
        return ":"
    if _is_int(expr) or isinstance(expr, str):
        return str(expr)
    name = _arg_name(expr)
    if name is not None:
        return str(name)
    if isinstance(expr, (list, tuple)) and len(expr) == 3:
        op, a, b = expr
        if op in ("max", "min"):
            return f"{op}({format_dim(a)}, {format_dim(b)})"
        sa, sb = format_dim(a), format_dim(b)
        if isinstance(a, (list, tuple)) and a[0] in _OP_SYMBOLS:
            sa = f"({sa})"
        if isinstance(b, (list, tuple)) and b[0] in _OP_SYMBOLS:
            sb = f"({sb})"
        return f"{sa} {_OP_SYMBOLS.get(op, op)} {sb}"
    return repr(expr)


def format_type(dtype: str, dims: tuple) -> str:
    """`f32`, `f32[n]`, `f64[m, :]`, `f32[n + k]`."""
    if not dims:
        return dtype
    return f"{dtype}[{', '.join(format_dim(d) for d in dims)}]"


def dim_names(expr: Any) -> set[str]:
    """The dim names an expression refers to."""
    if isinstance(expr, str):
        return {expr}
    if isinstance(expr, (list, tuple)) and len(expr) == 3:
        return dim_names(expr[1]) | dim_names(expr[2])
    return set()


def dim_args(expr: Any) -> set[str]:
    """The scalar parameters an expression refers to."""
    name = _arg_name(expr)
    if name is not None:
        return {name}
    if isinstance(expr, (list, tuple)) and len(expr) == 3:
        return dim_args(expr[1]) | dim_args(expr[2])
    return set()


def is_compound_dim(expr: Any) -> bool:
    """True for `{"arg": k}` and `[op, a, b]` (what a parameter axis checks rather than binds)."""
    return not (expr is None or _is_int(expr) or isinstance(expr, str))


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _is_ident(s: Any) -> bool:
    return isinstance(s, str) and bool(_IDENT.match(s)) and not keyword.iskeyword(s)


def _parse_dim(expr: Any, where: str, depth: int = 0, param: bool = False) -> Any:
    """Validate one dim expression (JSON or Python form) and return its normal Python form."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"{where}: dimension expression nested too deeply")
    if param and depth == 0 and (expr is None or expr == ":"):
        return None
    if _is_int(expr):
        if expr < 0:
            raise ValueError(f"{where}: negative literal extent {expr}")
        return expr
    if isinstance(expr, str):
        if not _is_ident(expr):
            raise ValueError(f"{where}: {expr!r} is not a valid dim name")
        return expr
    if isinstance(expr, ArgRef) or isinstance(expr, Mapping):
        name = _arg_name(expr)
        if name is None:
            raise ValueError(f"{where}: malformed dimension {expr!r} (expected {{\"arg\": NAME}})")
        if not _is_ident(name):
            raise ValueError(f"{where}: {name!r} is not a valid parameter name")
        return ArgRef(name)
    if isinstance(expr, (list, tuple)):
        if len(expr) != 3 or not isinstance(expr[0], str) or expr[0] not in DIM_OPS:
            raise ValueError(f"{where}: malformed dimension expression {expr!r} "
                             f"(expected [op, a, b] with op in {', '.join(DIM_OPS)})")
        return (expr[0], _parse_dim(expr[1], where, depth + 1), _parse_dim(expr[2], where, depth + 1))
    raise ValueError(f"{where}: malformed dimension {expr!r} (expected a dim name, an integer, "
                     f"{{\"arg\": NAME}} or [op, a, b])")


def _dim_to_json(expr: Any) -> Any:
    if isinstance(expr, ArgRef):
        return {"arg": expr.name}
    if isinstance(expr, tuple):
        return [expr[0], _dim_to_json(expr[1]), _dim_to_json(expr[2])]
    return expr


# --- the description -----------------------------------------------------------------------------------


def _check_keys(d: Any, where: str, required: tuple, optional: tuple = (), strict: bool = True) -> None:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"{where}: missing key {missing[0]!r}")
    if strict:
        extra = [k for k in d if k not in required and k not in optional]
        if extra:
            raise ValueError(f"{where}: unexpected key {extra[0]!r}")


def _check_str(v: Any, where: str, ident: bool = False, allow_empty: bool = True) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{where}: expected a string, got {type(v).__name__}")
    if ident and not _is_ident(v):
        raise ValueError(f"{where}: {v!r} is not a valid identifier")
    if not allow_empty and not v:
        raise ValueError(f"{where}: empty string")
    return v


def _check_int(v: Any, where: str, minimum: int = 0) -> int:
    if not _is_int(v):
        raise ValueError(f"{where}: expected an integer, got {v!r}")
    if v < minimum:
        raise ValueError(f"{where}: expected an integer >= {minimum}, got {v}")
    return v


@_frozen
class ParamSpec:
    """One parameter: `dims == ()` is a scalar passed by value, otherwise an array (data + extents)."""
    name: str
    dtype: str
    dims: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "dims", tuple(self.dims) if isinstance(self.dims, (list, tuple))
                           else self.dims)

    @property
    def is_array(self) -> bool:
        return len(self.dims) > 0

    @property
    def rank(self) -> int:
        return len(self.dims)

    def type_str(self) -> str:
        return format_type(self.dtype, self.dims)

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "dims": [_dim_to_json(d) for d in self.dims]}


@_frozen
class OutputSpec:
    """One output: `dims == ()` is a scalar written through a pointer, otherwise a caller-allocated array."""
    name: str
    dtype: str
    dims: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "dims", tuple(self.dims) if isinstance(self.dims, (list, tuple))
                           else self.dims)

    @property
    def is_array(self) -> bool:
        return len(self.dims) > 0

    @property
    def rank(self) -> int:
        return len(self.dims)

    def type_str(self) -> str:
        return format_type(self.dtype, self.dims)

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "dims": [_dim_to_json(d) for d in self.dims]}


SITE_KINDS = ("index", "shape", "zerodiv", "value", "memory")


@_frozen
class Site:
    """A place in the kernel's source where the entry point can fail; status `i` is `sites[i - 1]`.

    kind: `index` (details: index, extent) -> IndexError; `shape` (details: the two extents) and
    `value` -> ValueError; `zerodiv` -> ZeroDivisionError.
    """
    kind: str
    message: str
    file: str = ""
    line: int = 0
    col: int = 0
    text: str = ""

    def location(self) -> str:
        """`file:line:col`, or as much of it as is known."""
        if not self.file and not self.line:
            return ""
        if not self.line:
            return self.file
        return f"{self.file or '<unknown>'}:{self.line}:{self.col}" if self.col else \
            f"{self.file or '<unknown>'}:{self.line}"

    def caret(self) -> str:
        """The source line and a caret under the column (the compiler's diagnostic format)."""
        if not self.text:
            return ""
        text = self.text.rstrip("\r\n")
        return f"    {text}\n    {' ' * max(self.col - 1, 0)}^"

    def to_json(self) -> dict:
        return {"kind": self.kind, "message": self.message, "file": self.file, "line": self.line,
                "col": self.col, "text": self.text}


def _parse_site(d: Any, where: str) -> Site:
    _check_keys(d, where, ("kind", "message"), ("file", "line", "col", "text"))
    kind = _check_str(d["kind"], f"{where}.kind")
    if kind not in SITE_KINDS:
        raise ValueError(f"{where}.kind: unknown site kind {kind!r} (expected one of {', '.join(SITE_KINDS)})")
    return Site(kind=kind,
                message=_check_str(d["message"], f"{where}.message"),
                file=_check_str(d.get("file", ""), f"{where}.file"),
                line=_check_int(d.get("line", 0), f"{where}.line"),
                col=_check_int(d.get("col", 0), f"{where}.col"),
                text=_check_str(d.get("text", ""), f"{where}.text"))


def _parse_value_spec(cls, d: Any, where: str, param: bool):
    _check_keys(d, where, ("name", "dtype", "dims"))
    name = _check_str(d["name"], f"{where}.name", ident=True)
    dtype = _check_str(d["dtype"], f"{where}.dtype")
    if dtype not in NUMPY_DTYPES:
        raise ValueError(f"{where}.dtype: unknown dtype {dtype!r} (expected one of {', '.join(DTYPES)})")
    dims = d["dims"]
    if not isinstance(dims, (list, tuple)):
        raise ValueError(f"{where}.dims: expected a list, got {type(dims).__name__}")
    return cls(name, dtype, tuple(_parse_dim(e, f"{where}.dims[{i}]", param=param) for i, e in enumerate(dims)))


@_frozen
class Signature:
    """The calling convention of one entry point; see the module docstring and docs/design.md."""
    name: str
    symbol: str
    params: tuple
    outputs: tuple
    tuple_result: bool = False
    sites: tuple = ()
    abi: int = ABI_VERSION
    # filled by validation: dim name -> (parameter index, axis) of its first binder
    binders: dict = _Hidden(None)

    def __post_init__(self):
        where = f"signature {self.name!r}" if isinstance(self.name, str) else "signature"
        try:
            params = tuple(p if isinstance(p, ParamSpec) else _parse_value_spec(ParamSpec, p, f"params[{i}]", True)
                           for i, p in enumerate(_seq(self.params, "params")))
            outputs = tuple(o if isinstance(o, OutputSpec) else _parse_value_spec(OutputSpec, o, f"outputs[{i}]", False)
                            for i, o in enumerate(_seq(self.outputs, "outputs")))
            sites = tuple(s if isinstance(s, Site) else _parse_site(s, f"sites[{i}]")
                          for i, s in enumerate(_seq(self.sites, "sites")))
            object.__setattr__(self, "params", params)
            object.__setattr__(self, "outputs", outputs)
            object.__setattr__(self, "sites", sites)
            object.__setattr__(self, "binders", self._validate())
        except ValueError as e:
            raise ValueError(f"malformed {where}: {e}") from None

    # -- validation ---------------------------------------------------------------------------------
    def _validate(self) -> dict:
        if _is_int(self.abi) and self.abi != ABI_VERSION:
            raise ValueError(f"built for entry-point ABI version {self.abi}, this runtime supports version "
                             f"{ABI_VERSION} (rebuild the library with this version of dslc)")
        _check_int(self.abi, "abi")
        _check_str(self.name, "name", allow_empty=False)
        _check_str(self.symbol, "symbol", ident=True)
        if not isinstance(self.tuple_result, bool):
            raise ValueError(f"tuple_result: expected true or false, got {self.tuple_result!r}")
        if not self.tuple_result and len(self.outputs) != 1:
            raise ValueError(f"a non-tuple result needs exactly one output, got {len(self.outputs)}")
        seen: set = set()
        for i, p in enumerate(self.params):
            _check_spec(p, f"params[{i}]", param=True)
            if p.name in seen:
                raise ValueError(f"params[{i}]: duplicate parameter name {p.name!r}")
            seen.add(p.name)
        seen = set()
        for i, o in enumerate(self.outputs):
            _check_spec(o, f"outputs[{i}]", param=False)
            if o.name in seen:
                raise ValueError(f"outputs[{i}]: duplicate output name {o.name!r}")
            seen.add(o.name)
        for i, s in enumerate(self.sites):
            if not isinstance(s, Site):
                raise ValueError(f"sites[{i}]: expected a Site")
            if s.kind not in SITE_KINDS:
                raise ValueError(f"sites[{i}].kind: unknown site kind {s.kind!r}")
        # dim names bind at their first plain occurrence; every expression must use bound names and
        # integer scalar parameters only
        binders: dict[str, tuple[int, int]] = {}
        for i, p in enumerate(self.params):
            for j, d in enumerate(p.dims):
                if isinstance(d, str) and d not in binders:
                    binders[d] = (i, j)
        int_scalars = {p.name for p in self.params if not p.dims and p.dtype in INT_DTYPES}
        for kind, specs in (("params", self.params), ("outputs", self.outputs)):
            for i, s in enumerate(specs):
                for j, d in enumerate(s.dims):
                    for n in dim_names(d):
                        if n not in binders:
                            raise ValueError(f"{kind}[{i}].dims[{j}]: dim {n!r} is not bound by any "
                                             f"parameter's shape")
                    for a in dim_args(d):
                        if a not in int_scalars:
                            raise ValueError(f"{kind}[{i}].dims[{j}]: {{\"arg\": {a!r}}} does not name an "
                                             f"integer scalar parameter")
        return binders

    # -- conversions --------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"name": self.name, "symbol": self.symbol, "abi": self.abi,
                "params": [p.to_json() for p in self.params],
                "outputs": [o.to_json() for o in self.outputs],
                "tuple_result": self.tuple_result,
                "sites": [s.to_json() for s in self.sites]}

    @classmethod
    def from_json(cls, data: Any) -> "Signature":
        """Read the dict written by `to_json` (or its JSON text); ValueError if it is malformed."""
        if isinstance(data, (str, bytes, bytearray)):
            import json                 # here, not at the top: importing runtime stays cheap
            try:
                data = json.loads(data)
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"malformed signature: not valid JSON ({e})") from None
        where = "signature"
        if isinstance(data, Mapping) and isinstance(data.get("name"), str):
            where = f"signature {data['name']!r}"
        try:
            _check_keys(data, "signature", ("name", "symbol", "params", "outputs", "tuple_result"),
                        strict=False)
            abi = data.get("abi", None)
            if abi is None:
                raise ValueError("missing key 'abi'")
            _check_int(abi, "abi")
            name = _check_str(data["name"], "name", allow_empty=False)
            symbol = _check_str(data["symbol"], "symbol", ident=True)
            params = _seq_json(data["params"], "params")
            outputs = _seq_json(data["outputs"], "outputs")
            sites = _seq_json(data.get("sites", []), "sites")
            params = tuple(_parse_value_spec(ParamSpec, p, f"params[{i}]", True) for i, p in enumerate(params))
            outputs = tuple(_parse_value_spec(OutputSpec, o, f"outputs[{i}]", False) for i, o in enumerate(outputs))
            sites = tuple(_parse_site(s, f"sites[{i}]") for i, s in enumerate(sites))
            tuple_result = data["tuple_result"]
        except ValueError as e:
            raise ValueError(f"malformed {where}: {e}") from None
        return cls(name=name, symbol=symbol, params=params, outputs=outputs, tuple_result=tuple_result,
                   sites=sites, abi=abi)

    def describe(self) -> str:
        """`axpy(a: f32, x: f32[n], y: f32[n]) -> f32[n]`"""
        args = ", ".join(f"{p.name}: {p.type_str()}" for p in self.params)
        outs = [o.type_str() for o in self.outputs]
        res = f"({', '.join(outs)})" if self.tuple_result else outs[0]
        return f"{self.name}({args}) -> {res}"


def _seq(v: Any, where: str) -> tuple:
    if isinstance(v, (list, tuple)):
        return tuple(v)
    raise ValueError(f"{where}: expected a list, got {type(v).__name__}")


def _seq_json(v: Any, where: str) -> list:
    if not isinstance(v, list):
        raise ValueError(f"{where}: expected a list, got {type(v).__name__}")
    return v


def _check_spec(s: Any, where: str, param: bool) -> None:
    cls = ParamSpec if param else OutputSpec
    if not isinstance(s, cls):
        raise ValueError(f"{where}: expected a {cls.__name__}")
    _check_str(s.name, f"{where}.name", ident=True)
    if s.dtype not in NUMPY_DTYPES:
        raise ValueError(f"{where}.dtype: unknown dtype {s.dtype!r} (expected one of {', '.join(DTYPES)})")
    if not isinstance(s.dims, tuple):
        raise ValueError(f"{where}.dims: expected a list, got {type(s.dims).__name__}")
    # normalise Python-side spellings ([op, a, b] lists, {"arg": k} dicts, ":") in place
    dims = tuple(_parse_dim(d, f"{where}.dims[{j}]", param=param) for j, d in enumerate(s.dims))
    object.__setattr__(s, "dims", dims)
