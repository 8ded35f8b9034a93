"""The primitive registry: each primitive is defined once, with its type rule, its LLVM lowering
and (where it is differentiable) its JVP and transpose rules, in the module of its family."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


class TypeRuleError(Exception):
    """Raised by a type rule; the builder attaches the op's source location."""


@dataclass
class Primitive:
    name: str
    infer: Callable                       # (operands: list[Value], attrs) -> list[Type]
    kind: str = "other"                   # elementwise | reduce | index | control | other
    scalar: Optional[Callable] = None     # elementwise: (cg, args, in_types, out_type, op) -> llvm value
    codegen: Optional[Callable] = None    # other kinds: (cg, op) -> None, binds op.results
    jvp: Optional[Callable] = None        # (b, op, primals, tangents) -> tangents of the results
    transpose: Optional[Callable] = None  # (b, op, cotangents_out, linear_mask) -> cotangents in
    verify: Optional[Callable] = None
    linear: tuple = ()                    # operand positions in which the primitive is linear


PRIMS: dict[str, Primitive] = {}

# Structural rewrites, keyed by the primitive of the op they rewrite (registered beside the
# primitive they are about, applied by compiler/passes/simplify.py): `fn(b, op)` either returns
# None (no match) or emits replacement ops at the builder `b` and returns one value per result of
# `op` (same dtype and rank; the simplifier gives them op's result types).
REWRITES: dict[str, list] = {}


def defprim(name: str, infer: Callable, **kw) -> Primitive:
    assert name not in PRIMS, name
    p = Primitive(name, infer, **kw)
    PRIMS[name] = p
    return p


def rule(name: str, what: str):
    """Decorator registering `fn` as rule `what` ('jvp', 'transpose', 'scalar', 'codegen') of `name`."""
    def deco(fn):
        setattr(PRIMS[name], what, fn)
        return fn
    return deco


def rewrite(*names: str):
    """Decorator registering `fn(b, op)` as a structural rewrite of ops of the given primitives."""
    def deco(fn):
        for n in names:
            REWRITES.setdefault(n, []).append(fn)
        return fn
    return deco


from . import elementwise, arrays, control, basis  # noqa: E402,F401  (fill the registry)
