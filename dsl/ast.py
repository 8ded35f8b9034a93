"""The DSL's abstract syntax tree: plain data classes, each node carrying its source span."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Optional, Union


@dataclass(frozen=True)
class Source:
    """A source text and the file name diagnostics report; `line_offset` maps line 1 of
    `text` to a line of the original file (for a `@kernel` taken out of a module)."""
    text: str
    filename: str = "<kernel>"
    line_offset: int = 0

    @cached_property
    def _lines(self) -> list:
        return self.text.splitlines()     # once: every diagnostic location asks for a line

    def line(self, lineno: int) -> str:
        lines = self._lines
        i = lineno - self.line_offset - 1
        return lines[i] if 0 <= i < len(lines) else ""


@dataclass(frozen=True)
class Span:
    """1-based line and column of a node's first character (and its end)."""
    line: int
    col: int
    end_line: int = 0
    end_col: int = 0

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"


NOSPAN = Span(0, 0)


@dataclass(eq=False)
class Node:
    span: Span = field(default=NOSPAN, kw_only=True)

    def children(self):
        for f in fields(self):
            if f.name == "span":
                continue
            v = getattr(self, f.name)
            if isinstance(v, Node):
                yield v
            elif isinstance(v, (list, tuple)):
                for x in v:
                    if isinstance(x, Node):
                        yield x
                    elif isinstance(x, tuple):
                        yield from (y for y in x if isinstance(y, Node))

    def walk(self):
        yield self
        for c in self.children():
            yield from c.walk()


# ---- expressions -------------------------------------------------------------
@dataclass(eq=False)
class Name(Node):
    id: str


@dataclass(eq=False)
class Num(Node):
    value: Union[int, float]          # a Python int for `3`, a float for `3.0`, `1e-3`


@dataclass(eq=False)
class Bool(Node):
    value: bool


@dataclass(eq=False)
class Str(Node):                      # only meaningful in annotations: f32["n"]
    value: str


@dataclass(eq=False)
class BinOp(Node):
    op: str                           # + - * / // % ** @
    left: Node
    right: Node


@dataclass(eq=False)
class UnaryOp(Node):
    op: str                           # - + not
    operand: Node


@dataclass(eq=False)
class Compare(Node):
    """`a < b <= c`: ops[i] compares operands[i] with operands[i+1]."""
    ops: list[str]                    # < <= > >= == !=
    operands: list[Node]


@dataclass(eq=False)
class BoolOp(Node):
    op: str                           # and / or
    values: list[Node]


@dataclass(eq=False)
class IfExp(Node):
    test: Node
    body: Node
    orelse: Node


@dataclass(eq=False)
class Keyword(Node):
    name: str
    value: Node


@dataclass(eq=False)
class Call(Node):
    func: Node                        # Name or Attribute
    args: list[Node]
    keywords: list[Keyword] = field(default_factory=list)


@dataclass(eq=False)
class Attribute(Node):
    value: Node
    attr: str


@dataclass(eq=False)
class Slice(Node):
    """`a:b` / `a:` / `:b` / `:` / `a:b:c` inside a subscript; absent parts are None."""
    lower: Optional[Node]
    upper: Optional[Node]
    step: Optional[Node]


@dataclass(eq=False)
class Subscript(Node):
    value: Node
    indices: list[Node]               # each an expression or a Slice; `A[i, j]` has two


@dataclass(eq=False)
class Tuple(Node):
    elts: list[Node]


# ---- statements --------------------------------------------------------------
@dataclass(eq=False)
class Assign(Node):
    target: Node                      # Name, Tuple of Names, or Subscript
    value: Node


@dataclass(eq=False)
class AugAssign(Node):
    target: Node                      # Name or Subscript
    op: str                           # + - * / (and // % ** @ are parsed too)
    value: Node


@dataclass(eq=False)
class AnnAssign(Node):                # `y: f32 = ...`
    target: Node
    annotation: Node
    value: Optional[Node]


@dataclass(eq=False)
class ExprStmt(Node):
    value: Node


@dataclass(eq=False)
class Return(Node):
    value: Optional[Node]


@dataclass(eq=False)
class If(Node):
    test: Node
    body: list[Node]
    orelse: list[Node]                # `elif` is an If nested alone in orelse


@dataclass(eq=False)
class For(Node):
    target: Node                      # Name (a Tuple target is parsed and rejected later)
    iter: Node                        # normally Call(Name('range'), ...)
    body: list[Node]


@dataclass(eq=False)
class While(Node):
    test: Node
    body: list[Node]


@dataclass(eq=False)
class Pass(Node):
    pass


@dataclass(eq=False)
class Break(Node):
    pass


@dataclass(eq=False)
class Continue(Node):
    pass


# ---- definitions -------------------------------------------------------------
@dataclass(eq=False)
class Param(Node):
    name: str
    annotation: Optional[Node]        # an expression such as f32[n], f64["m", "n"], i64


@dataclass(eq=False)
class FunctionDef(Node):
    name: str
    params: list[Param]
    returns: Optional[Node]           # annotation expression or None
    body: list[Node]
    decorators: list[Node] = field(default_factory=list)


@dataclass(eq=False)
class Module(Node):
    functions: list[FunctionDef]
    source: Optional[Source] = None


def dump(node, indent: int = 0) -> str:
    """A readable, indented text form of a tree (what `lower(...).ast()` shows)."""
    pad = "  " * indent
    if isinstance(node, list):
        return "\n".join(dump(x, indent) for x in node)
    if not isinstance(node, Node):
        return pad + repr(node)
    head = f"{pad}{type(node).__name__} @{node.span}"
    scalars, kids = [], []
    for f in fields(node):
        if f.name in ("span", "source"):
            continue
        v = getattr(node, f.name)
        if isinstance(v, Node) or (isinstance(v, list) and any(isinstance(x, Node) for x in v)):
            kids.append((f.name, v))
        elif v is not None and v != []:
            scalars.append(f"{f.name}={v!r}")
    out = [head + (" " + " ".join(scalars) if scalars else "")]
    for name, v in kids:
        out.append(f"{pad}  .{name}:")
        out.append(dump(v, indent + 2))
    return "\n".join(out)
