"""dslc's SSA IR: typed values, ops with regions for structured control flow, a printer and a verifier.

Arrays are values (as in JAX): an element store yields a new array, and code generation updates
buffers in place where the old value is dead. Shapes are symbolic: each dim of a type is a
`Dim` expression (int literal, a parameter's dim name, an integer parameter `$k`, an opaque
run-time extent `?N`, or `(op, a, b)`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional, Union

from .diagnostics import Loc, UNKNOWN

# ---- dtypes ------------------------------------------------------------------
DTYPES = ("bool", "i32", "i64", "f32", "f64")
FLOATS = ("f32", "f64")
INTS = ("i32", "i64")


def is_float(dtype: str) -> bool:
    return dtype in FLOATS


def is_int(dtype: str) -> bool:
    return dtype in INTS


# ---- symbolic dims -------------------------------------------------------------
Dim = Union[int, str, tuple]
_opaque_ids = itertools.count(1)


def fresh_dim() -> str:
    """A run-time extent that cannot be written in terms of the parameters."""
    return f"?{next(_opaque_ids)}"


def dim_is_opaque(d: Dim) -> bool:
    if isinstance(d, str):
        return d.startswith("?")
    if isinstance(d, tuple):
        return any(dim_is_opaque(x) for x in d[1:])
    return False


_DIM_OPS = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "floordiv": lambda a, b: a // b if b else None, "max": max, "min": min,
}


def dim_op(op: str, a: Dim, b: Dim) -> Dim:
    """Build `op(a, b)` with constant folding and the identities that keep shapes readable."""
    if isinstance(a, int) and isinstance(b, int):
        r = _DIM_OPS[op](a, b)
        if r is not None:
            return r
    if op == "add":
        if a == 0:
            return b
        if b == 0:
            return a
        if isinstance(b, int) and b < 0:      # n + -3 -> n - 3: literals in shapes stay >= 0
            return dim_op("sub", a, -b)
        if isinstance(a, int) and a < 0:
            return dim_op("sub", b, -a)
    if op == "sub":
        if b == 0:
            return a
        if isinstance(b, int) and b < 0:
            return dim_op("add", a, -b)
        if a == b:
            return 0
        if isinstance(a, tuple) and a[0] == "add" and a[2] == b:
            return a[1]
        if isinstance(a, tuple) and a[0] == "add" and a[1] == b:
            return a[2]
    if op == "mul":
        if a == 1:
            return b
        if b == 1:
            return a
        if a == 0 or b == 0:
            return 0
    if op == "floordiv" and b == 1:
        return a
    if op in ("max", "min") and a == b:
        return a
    return (op, a, b)


def dim_str(d: Dim) -> str:
    if isinstance(d, tuple):
        sym = {"add": "+", "sub": "-", "mul": "*", "floordiv": "//"}.get(d[0])
        if sym:
            return f"({dim_str(d[1])}{sym}{dim_str(d[2])})"
        return f"{d[0]}({dim_str(d[1])},{dim_str(d[2])})"
    return str(d)


def dim_to_json(d: Dim):
    """The manifest form of a dim (see docs/design.md)."""
    if isinstance(d, tuple):
        return [d[0], dim_to_json(d[1]), dim_to_json(d[2])]
    if isinstance(d, str) and d.startswith("$"):
        return {"arg": d[1:]}
    return d


# ---- types ---------------------------------------------------------------------
@dataclass(frozen=True)
class Type:
    dtype: str
    shape: tuple = ()
    weak: bool = False          # a Python literal's type: adopts the other operand's dtype

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_scalar(self) -> bool:
        return not self.shape

    def strong(self) -> "Type":
        return Type(self.dtype, self.shape) if self.weak else self

    def with_shape(self, shape) -> "Type":
        return Type(self.dtype, tuple(shape), self.weak and not shape)

    def with_dtype(self, dtype) -> "Type":
        return Type(dtype, self.shape)

    def __str__(self) -> str:
        s = self.dtype + ("~" if self.weak else "")
        if self.shape:
            s += "[" + ", ".join(dim_str(d) for d in self.shape) + "]"
        return s


def scalar(dtype: str, weak: bool = False) -> Type:
    return Type(dtype, (), weak)


I64 = scalar("i64")
BOOL = scalar("bool")


# ---- values, ops, blocks ---------------------------------------------------------
_value_ids = itertools.count(1)


class Value:
    """An SSA value. `sym` is the symbolic dim expression an integer scalar is known to equal."""
    __slots__ = ("type", "hint", "id", "sym", "owner")

    def __init__(self, type: Type, hint: str = "", sym: Optional[Dim] = None):
        self.type = type
        self.hint = hint
        self.id = next(_value_ids)
        self.sym = sym
        self.owner = None        # the Op or Block defining it

    def __repr__(self):
        return f"%{self.hint or 'v'}{self.id}: {self.type}"


@dataclass(eq=False)
class Block:
    args: list = field(default_factory=list)
    ops: list = field(default_factory=list)

    def __post_init__(self):
        for a in self.args:
            a.owner = self

    @property
    def terminator(self) -> "Op":
        return self.ops[-1]


@dataclass(eq=False)
class Op:
    prim: str
    operands: list
    results: list
    attrs: dict = field(default_factory=dict)
    regions: list = field(default_factory=list)
    loc: Loc = UNKNOWN
    checked: bool = False        # user code that may raise (bounds, zero division): kept by DCE

    def __post_init__(self):
        for r in self.results:
            r.owner = self

    @property
    def result(self) -> Value:
        assert len(self.results) == 1, self.prim
        return self.results[0]


@dataclass(eq=False)
class Function:
    """A kernel in IR form: parameters, a body whose terminator is `return`, and metadata."""
    name: str
    params: list
    body: Block
    param_names: list
    result_names: list = field(default_factory=list)
    tuple_result: bool = False
    loc: Loc = UNKNOWN
    boundscheck: bool = True

    @property
    def result_types(self) -> list:
        return [v.type for v in self.body.terminator.operands]


def walk_ops(block: Block):
    """Every op in `block` and its nested regions, in program order."""
    for op in block.ops:
        yield op
        for r in op.regions:
            yield from walk_ops(r)


# ---- printer -------------------------------------------------------------------------
class _Namer:
    def __init__(self):
        self.names = {}

    def __call__(self, v: Value) -> str:
        if v not in self.names:
            base = v.hint if v.hint and v.hint.isidentifier() else "v"
            self.names[v] = f"%{base}{len(self.names)}" if base == "v" else f"%{base}.{len(self.names)}"
        return self.names[v]


def _fmt_attr(v) -> str:
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt_attr(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


def print_function(fn: Function) -> str:
    """A readable MLIR-like text form of `fn`."""
    name = _Namer()
    params = ", ".join(f"{name(p)}: {p.type}" for p in fn.params)
    rets = ", ".join(str(t) for t in fn.result_types)
    lines = [f"func @{fn.name}({params}) -> ({rets}) {{"]
    _print_block(fn.body, name, lines, 1)
    lines.append("}")
    return "\n".join(lines)


def _print_block(block: Block, name, lines, depth):
    pad = "  " * depth
    for op in block.ops:
        res = ", ".join(name(r) for r in op.results)
        lhs = f"{res} = " if res else ""
        args = ", ".join(name(o) for o in op.operands)
        attrs = ""
        if op.attrs:
            attrs = " {" + ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(op.attrs.items())) + "}"
        types = ""
        if op.results:
            types = " : " + ", ".join(str(r.type) for r in op.results)
        lines.append(f"{pad}{lhs}{op.prim}({args}){attrs}{types}")
        for i, reg in enumerate(op.regions):
            bargs = ", ".join(f"{name(a)}: {a.type}" for a in reg.args)
            lines.append(f"{pad}  ^region{i}({bargs}):")
            _print_block(reg, name, lines, depth + 2)


# ---- verifier ---------------------------------------------------------------------------
class VerifyError(Exception):
    pass


def verify(fn: Function) -> None:
    """Check SSA dominance (in the structured sense), terminators and the registered type rules."""
    from .prims import PRIMS

    def check_block(block: Block, visible: set, term: str):
        visible = set(visible) | set(block.args)
        if not block.ops or block.ops[-1].prim != term:
            raise VerifyError(f"block does not end in '{term}'")
        for op in block.ops:
            for o in op.operands:
                if o not in visible:
                    raise VerifyError(f"{op.prim}: operand {o!r} is not defined before its use")
            if op.prim not in PRIMS and op.prim not in ("yield", "return"):
                raise VerifyError(f"unknown primitive '{op.prim}'")
            if op is not block.ops[-1] and op.prim in ("yield", "return"):
                raise VerifyError(f"'{op.prim}' in the middle of a block")
            prim = PRIMS.get(op.prim)
            if prim is not None and prim.verify is not None:
                prim.verify(op)
            for r in op.regions:
                check_block(r, visible, "yield")
            visible.update(op.results)

    check_block(fn.body, set(fn.params), "return")
