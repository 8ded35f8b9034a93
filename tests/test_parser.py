"""Tests of the front end's parser: dsl/grammar.lark + dsl/parser.py -> dsl.ast."""
from __future__ import annotations

import os
import threading
import time

import pytest

from compiler.diagnostics import DslSyntaxError
from dsl import ast as A
from dsl import parser as P
from dsl.parser import parse


# ---------------------------------------------------------------- helpers
def fn(src: str, **kw) -> A.FunctionDef:
    m = parse(src, **kw)
    assert len(m.functions) == 1
    return m.functions[0]


def body(src: str) -> list:
    """Parse statements as the body of `def f():`."""
    text = "def f():\n" + "".join("    " + line + "\n" for line in src.splitlines())
    return fn(text).body


def stmt(src: str):
    b = body(src)
    assert len(b) == 1
    return b[0]


def expr(src: str):
    s = stmt("return " + src)
    assert isinstance(s, A.Return)
    return s.value


def sexpr(node) -> str:
    """A compact prefix form of an expression, to check shapes and precedence."""
    if isinstance(node, A.Name):
        return node.id
    if isinstance(node, A.Num):
        return repr(node.value)
    if isinstance(node, A.Bool):
        return repr(node.value)
    if isinstance(node, A.Str):
        return repr(node.value)
    if isinstance(node, A.BinOp):
        return f"({node.op} {sexpr(node.left)} {sexpr(node.right)})"
    if isinstance(node, A.UnaryOp):
        return f"({node.op} {sexpr(node.operand)})"
    if isinstance(node, A.Compare):
        parts = [sexpr(node.operands[0])]
        for op, o in zip(node.ops, node.operands[1:]):
            parts += [op, sexpr(o)]
        return "(cmp " + " ".join(parts) + ")"
    if isinstance(node, A.BoolOp):
        return f"({node.op} " + " ".join(sexpr(v) for v in node.values) + ")"
    if isinstance(node, A.IfExp):
        return f"(ifexp {sexpr(node.test)} {sexpr(node.body)} {sexpr(node.orelse)})"
    if isinstance(node, A.Call):
        args = [sexpr(a) for a in node.args] + [f"{k.name}={sexpr(k.value)}" for k in node.keywords]
        return f"(call {sexpr(node.func)}" + "".join(" " + a for a in args) + ")"
    if isinstance(node, A.Attribute):
        return f"(. {sexpr(node.value)} {node.attr})"
    if isinstance(node, A.Subscript):
        return f"([] {sexpr(node.value)}" + "".join(" " + sexpr(i) for i in node.indices) + ")"
    if isinstance(node, A.Slice):
        return "(slice " + " ".join("_" if p is None else sexpr(p) for p in (node.lower, node.upper, node.step)) + ")"
    if isinstance(node, A.Tuple):
        return "(tuple" + "".join(" " + sexpr(e) for e in node.elts) + ")"
    raise AssertionError(f"unexpected node {node!r}")


def syntax_error(src: str, filename: str = "k.py", line_offset: int = 0) -> DslSyntaxError:
    with pytest.raises(DslSyntaxError) as info:
        parse(src, filename, line_offset)
    return info.value


# ---------------------------------------------------------------- file level
SPEC_EXAMPLE = '''from __future__ import annotations
from dsl import kernel

@kernel
def predict(W: f32[k], b: f32, inputs: f32[n, k]) -> f32[n]:
    return sigmoid(inputs @ W + b)

@kernel
def chain_energy(x: f64[n]) -> f64:
    s = 0.0
    for i in range(n - 1):
        d = x[i + 1] - x[i]
        s += d * d
    return s
'''


def test_spec_example_parses():
    m = parse(SPEC_EXAMPLE, "ex.py")
    assert [f.name for f in m.functions] == ["predict", "chain_energy"]
    predict, energy = m.functions
    assert [p.name for p in predict.params] == ["W", "b", "inputs"]
    assert sexpr(predict.params[2].annotation) == "([] f32 n k)"
    assert sexpr(predict.returns) == "([] f32 n)"
    assert sexpr(predict.body[0].value) == "(call sigmoid (+ (@ inputs W) b))"
    assert [type(d) for d in predict.decorators] == [A.Name]
    loop = energy.body[1]
    assert isinstance(loop, A.For) and sexpr(loop.iter) == "(call range (- n 1))"
    assert isinstance(loop.body[1], A.AugAssign) and loop.body[1].op == "+"
    assert m.source == A.Source(SPEC_EXAMPLE, "ex.py", 0)


def test_imports_comments_blank_lines_dropped_and_no_trailing_newline():
    src = ("# leading comment\n\nimport numpy as np, os.path\nfrom a.b import (c, d as e,)\n"
           "from . import z\nfrom x import *\n\n\n# between\n"
           "def f(x):  # trailing comment\n    # inside\n\n    return x  # done")
    m = parse(src)
    assert [f.name for f in m.functions] == ["f"]
    assert isinstance(m.functions[0].body[0], A.Return)


@pytest.mark.parametrize("src", ["", "\n\n", "# only a comment", "from __future__ import annotations\n"])
def test_empty_module(src):
    assert parse(src).functions == []


def test_decorators():
    src = "@kernel\n@kernel(boundscheck=False)\n@dsl.kernel\ndef f(x):\n    return x\n"
    f = fn(src)
    assert [sexpr(d) for d in f.decorators] == ["kernel", "(call kernel boundscheck=False)", "(. dsl kernel)"]
    assert f.span.line == 4          # the def line, as in Python's ast
    assert (f.decorators[0].span.line, f.decorators[0].span.col) == (1, 2)


def test_params_and_annotations():
    f = fn('def f(a: f32[n], b: f64["m", "n"], c: f32[:, 3], d: i64, e, g: bool,) -> (f32[n], f32):\n    pass\n')
    assert [p.name for p in f.params] == ["a", "b", "c", "d", "e", "g"]
    anns = [None if p.annotation is None else sexpr(p.annotation) for p in f.params]
    assert anns == ["([] f32 n)", "([] f64 'm' 'n')", "([] f32 (slice _ _ _) 3)", "i64", None, "bool"]
    assert sexpr(f.returns) == "(tuple ([] f32 n) f32)"
    assert fn("def g():\n    pass\n").params == [] and fn("def g():\n    pass\n").returns is None


def test_one_line_suite_and_semicolons():
    f = fn("def f(x): y = x; return y\n")
    assert [type(s) for s in f.body] == [A.Assign, A.Return]
    b = body("if x: pass\nelse: return 1")
    assert isinstance(b[0], A.If) and isinstance(b[0].body[0], A.Pass) and isinstance(b[0].orelse[0], A.Return)


# ---------------------------------------------------------------- statements
def test_assignments():
    a = stmt("y = x + 1")
    assert isinstance(a, A.Assign) and sexpr(a.target) == "y" and sexpr(a.value) == "(+ x 1)"
    for src in ("a, b = b, a", "(a, b) = (b, a)", "a, b, = b, a"):
        a = stmt(src)
        assert isinstance(a, A.Assign)
        assert sexpr(a.target) == "(tuple a b)" and sexpr(a.value) == "(tuple b a)"
    a = stmt("a, (b, c) = f(x)")
    assert sexpr(a.target) == "(tuple a (tuple b c))"
    a = stmt("y[i] = e")
    assert sexpr(a.target) == "([] y i)"
    a = stmt("A[i, :] = e")
    assert sexpr(a.target) == "([] A i (slice _ _ _))"
    a = stmt("t = 1,")
    assert sexpr(a.value) == "(tuple 1)"


def test_annotated_assignment():
    a = stmt("y: f32 = 2.0 * x")
    assert isinstance(a, A.AnnAssign)
    assert sexpr(a.target) == "y" and sexpr(a.annotation) == "f32" and sexpr(a.value) == "(* 2.0 x)"
    a = stmt("z: f64[n]")
    assert isinstance(a, A.AnnAssign) and a.value is None and sexpr(a.annotation) == "([] f64 n)"


@pytest.mark.parametrize("op", ["+", "-", "*", "/", "//", "%", "**", "@"])
def test_augmented_assignment(op):
    a = stmt(f"y {op}= x")
    assert isinstance(a, A.AugAssign) and a.op == op and sexpr(a.target) == "y" and sexpr(a.value) == "x"
    a = stmt(f"y[i, j] {op}= 2")
    assert isinstance(a, A.AugAssign) and sexpr(a.target) == "([] y i j)"


def test_expression_statements_and_docstrings():
    f = fn('def f(x):\n    """The doc.\n\n    More."""\n    g(x)\n    return x\n')
    doc = f.body[0]
    assert isinstance(doc, A.ExprStmt) and isinstance(doc.value, A.Str)
    assert doc.value.value == "The doc.\n\n    More."
    assert isinstance(f.body[1], A.ExprStmt) and sexpr(f.body[1].value) == "(call g x)"


def test_return_forms():
    assert stmt("return").value is None
    assert sexpr(stmt("return x").value) == "x"
    assert sexpr(stmt("return a, b").value) == "(tuple a b)"
    assert sexpr(stmt("return (a, b)").value) == "(tuple a b)"
    assert sexpr(stmt("return a,").value) == "(tuple a)"


def test_if_elif_else_chain():
    s = stmt("if a:\n    x = 1\nelif b:\n    x = 2\nelif c:\n    x = 3\nelse:\n    x = 4")
    assert isinstance(s, A.If) and sexpr(s.test) == "a"
    e1 = s.orelse
    assert len(e1) == 1 and isinstance(e1[0], A.If) and sexpr(e1[0].test) == "b"
    e2 = e1[0].orelse
    assert len(e2) == 1 and isinstance(e2[0], A.If) and sexpr(e2[0].test) == "c"
    last = e2[0].orelse
    assert len(last) == 1 and isinstance(last[0], A.Assign) and sexpr(last[0].value) == "4"
    # the elif If starts at its `elif` keyword
    assert (e1[0].span.line, e1[0].span.col) == (4, 5)
    s = stmt("if a:\n    pass\nelif b:\n    pass")
    assert isinstance(s.orelse[0], A.If) and s.orelse[0].orelse == []
    s = stmt("if a:\n    pass")
    assert s.orelse == []


def test_loops_and_jumps():
    s = stmt("for i in range(0, n, 2):\n    if i > 3:\n        break\n    continue")
    assert isinstance(s, A.For) and sexpr(s.target) == "i" and sexpr(s.iter) == "(call range 0 n 2)"
    assert isinstance(s.body[0].body[0], A.Break) and isinstance(s.body[1], A.Continue)
    s = stmt("for i, j in pairs:\n    pass")
    assert sexpr(s.target) == "(tuple i j)"          # parsed; rejected later
    s = stmt("while j < n:\n    j += 1")
    assert isinstance(s, A.While) and sexpr(s.test) == "(cmp j < n)" and isinstance(s.body[0], A.AugAssign)


# ---------------------------------------------------------------- expressions
@pytest.mark.parametrize("src, expected", [
    ("-x**2", "(- (** x 2))"),
    ("a - b - c", "(- (- a b) c)"),
    ("a / b / c", "(/ (/ a b) c)"),
    ("2**-1", "(** 2 (- 1))"),
    ("a ** b ** c", "(** a (** b c))"),
    ("-a ** -b", "(- (** a (- b)))"),
    ("- -x", "(- (- x))"),
    ("+x", "(+ x)"),
    ("a + b * c", "(+ a (* b c))"),
    ("(a + b) * c", "(* (+ a b) c)"),
    ("a * b // c % d @ e", "(@ (% (// (* a b) c) d) e)"),
    ("A @ x + b", "(+ (@ A x) b)"),
    ("-a * b", "(* (- a) b)"),
    ("a < b <= c", "(cmp a < b <= c)"),
    ("a == b != c > d >= e", "(cmp a == b != c > d >= e)"),
    ("a + 1 < b * 2", "(cmp (+ a 1) < (* b 2))"),
    ("not a < b", "(not (cmp a < b))"),
    ("not not a", "(not (not a))"),
    ("a and b or c and d", "(or (and a b) (and c d))"),
    ("a or b or c", "(or a b c)"),
    ("a and not b", "(and a (not b))"),
    ("a if c else b", "(ifexp c a b)"),
    ("a if c else b if d else e", "(ifexp c a (ifexp d b e))"),
    ("x + 1 if a < b and c else -x", "(ifexp (and (cmp a < b) c) (+ x 1) (- x))"),
    ("f(x, y, axis=0, keepdims=True)", "(call f x y axis=0 keepdims=True)"),
    ("g()", "(call g)"),
    ("x.T", "(. x T)"),
    ("x.shape[0]", "([] (. x shape) 0)"),
    ("(A @ B).T[0, 1]", "([] (. (@ A B) T) 0 1)"),
    ("f(a)(b)[c].d", "(. ([] (call (call f a) b) c) d)"),
    ("x[a:b]", "([] x (slice a b _))"),
    ("x[:]", "([] x (slice _ _ _))"),
    ("x[a:]", "([] x (slice a _ _))"),
    ("x[:b]", "([] x (slice _ b _))"),
    ("x[::2]", "([] x (slice _ _ 2))"),
    ("x[a:b:c]", "([] x (slice a b c))"),
    ("x[1::]", "([] x (slice 1 _ _))"),
    ("A[i, :]", "([] A i (slice _ _ _))"),
    ("A[:, j + 1]", "([] A (slice _ _ _) (+ j 1))"),
    ("x[i - 1:i + 1]", "([] x (slice (- i 1) (+ i 1) _))"),
    ("()", "(tuple)"),
    ("(a,)", "(tuple a)"),
    ("(a, b,)", "(tuple a b)"),
    ("((a))", "a"),
    ("zeros((n, 3))", "(call zeros (tuple n 3))"),
    ("f(a,\n  b,\n)", "(call f a b)"),
    ("True and False", "(and True False)"),
])
def test_expression_shapes(src, expected):
    assert sexpr(expr(src)) == expected


@pytest.mark.parametrize("src, value", [
    ("0", 0), ("42", 42), ("1_000", 1000), ("0x1f", 31), ("0b101", 5), ("0o17", 15),
    ("2.5", 2.5), ("1e-3", 1e-3), ("1.", 1.0), (".5", 0.5), ("1.5E+2", 150.0), ("3e2", 300.0),
])
def test_numeric_literals(src, value):
    e = expr(src)
    assert isinstance(e, A.Num) and e.value == value and type(e.value) is type(value)


def test_negative_literal_is_unary_minus():
    e = expr("-1")
    assert isinstance(e, A.UnaryOp) and e.op == "-" and isinstance(e.operand, A.Num)


def test_bool_and_string_literals():
    assert isinstance(expr("True"), A.Bool) and expr("True").value is True
    assert expr("False").value is False
    assert expr("'n'").value == "n" and expr('"m"').value == "m"
    assert expr(r"'a\tb\\c\'d'").value == "a\tb\\c'd"
    assert expr(r"r'a\tb'").value == "a\\tb"
    assert expr("'a' \"b\"").value == "ab"
    assert expr("'''x\"y'''").value == 'x"y'
    assert expr("''").value == "" and expr('""').value == ""
    assert expr("'é'").value == "é"
    assert isinstance(expr("None"), A.Name)       # not a literal of the DSL
    assert expr(r"'\x41\101\u00e9\N{BULLET}\q'").value == "AAé\u2022\\q"   # unknown escapes kept


def test_bad_string_escape():
    e = syntax_error("def f():\n    return '\\x4'\n")
    assert "invalid escape" in e.message and (e.loc.line, e.loc.col) == (2, 12)


def test_backslash_continuation_and_tabs_inside_lines():
    s = stmt("y = a + \\\n    b\t* c")
    assert sexpr(s.value) == "(+ a (* b c))"
    assert (s.value.right.span.line, s.value.right.span.col) == (3, 9)   # body() indents by 4


def test_crlf_line_endings():
    f = fn("def f(x):\r\n    y = x\r\n    return y\r\n")
    assert [type(s) for s in f.body] == [A.Assign, A.Return]
    assert (f.body[1].span.line, f.body[1].span.col) == (3, 5)


# ---------------------------------------------------------------- spans
def test_spans():
    src = ("def f(x: f32[n]) -> f32:\n"
           "    y = x[i + 1] * 2.0\n"
           "    if y > 0:\n"
           "        return -y\n"
           "    return f(y, axis=0)\n")
    f = fn(src)
    assert f.span == A.Span(1, 1, 5, 24)
    p = f.params[0]
    assert p.span == A.Span(1, 7, 1, 16)
    assert p.annotation.span == A.Span(1, 10, 1, 16)
    assign = f.body[0]
    assert assign.span == A.Span(2, 5, 2, 23)
    assert assign.target.span == A.Span(2, 5, 2, 6)
    mul = assign.value
    assert mul.span == A.Span(2, 9, 2, 23)
    sub = mul.left
    assert sub.span == A.Span(2, 9, 2, 17)
    assert sub.indices[0].span == A.Span(2, 11, 2, 16)
    assert mul.right.span == A.Span(2, 20, 2, 23)
    if_ = f.body[1]
    assert if_.span == A.Span(3, 5, 4, 18)
    ret = if_.body[0]
    assert ret.span == A.Span(4, 9, 4, 18)
    assert ret.value.span == A.Span(4, 16, 4, 18)
    call = f.body[2].value
    assert call.span == A.Span(5, 12, 5, 24)
    assert call.keywords[0].span == A.Span(5, 17, 5, 23)


def test_parenthesised_tuple_span_includes_parens():
    e = expr("(a, b)")
    assert (e.span.col, e.span.end_col) == (12, 18)
    e = expr("(a)")
    assert (e.span.col, e.span.end_col) == (13, 14)


def test_line_offset():
    m = parse("def f(x):\n    return x + 1\n", "mod.py", line_offset=10)
    f = m.functions[0]
    assert f.span.line == 11
    ret = f.body[0]
    assert (ret.span.line, ret.span.col) == (12, 5)
    assert (ret.value.right.span.line, ret.value.right.span.col) == (12, 16)
    assert m.source.line_offset == 10 and m.source.filename == "mod.py"
    assert m.source.line(12) == "    return x + 1"


def test_nested_def_dedent_keeps_original_columns():
    # what inspect.getsource returns for a kernel defined inside a function
    text = ("    @kernel\n"
            "    def inner(x: f32[n]) -> f32:\n"
            "        s = x[0]\n"
            "        for i in range(n):\n"
            "            s += x[i]\n"
            "        return s\n")
    m = parse(text, "test_mod.py", line_offset=20)
    f = m.functions[0]
    assert (f.span.line, f.span.col) == (22, 5)
    assert (f.decorators[0].span.line, f.decorators[0].span.col) == (21, 6)
    assert (f.params[0].span.line, f.params[0].span.col) == (22, 15)
    loop = f.body[1]
    assert (loop.span.line, loop.span.col) == (24, 9)
    aug = loop.body[0]
    assert (aug.span.line, aug.span.col) == (25, 13)
    assert (aug.value.span.line, aug.value.span.col) == (25, 18)
    assert m.source.text == text
    assert m.source.line(aug.span.line)[aug.span.col - 1:].startswith("s += x[i]")


def test_nested_def_with_less_indented_string_and_comment_lines():
    text = ('        def g(x):\n'
            '            """doc\n'
            'at column one"""\n'
            '# a comment at column one\n'
            '            return x\n')
    f = fn(text)
    assert (f.span.line, f.span.col) == (1, 9)
    assert (f.body[1].span.line, f.body[1].span.col) == (5, 13)


def test_every_node_has_a_span():
    m = parse(SPEC_EXAMPLE + "\n" + "def h(a, b):\n    x[1:2, ::3], y = (a if b else -a), [0][0] if False else 2\n"
              .replace("[0][0]", "c[0]"))
    for node in m.walk():
        assert node.span.line >= 1 and node.span.col >= 1, node
        assert (node.span.end_line, node.span.end_col) >= (node.span.line, node.span.col), node


# ---------------------------------------------------------------- errors
ERROR_CASES = [
    # (source, message substring, line, col)
    ("def f(x):\n    return (x + 1))\n", "unexpected ')'", 2, 19),
    ("def f(x)\n    return x\n", "expected ':'", 1, 9),
    ("def f(x):\n    for i in range(n)\n        pass\n", "expected ':'", 2, 22),
    ("def f(x):\n    if x y:\n        pass\n", "unexpected 'y'", 2, 10),
    ("def f(x):\n    return x +\n", "expected an expression", 2, 15),
    ("def f(x):\n    y = (x +\n", "'(' was never closed", 2, 9),
    ("def f(x):\n    y = g(x[1,\n", "'[' was never closed", 2, 12),
    ("@kernel\n", "unexpected end of input", 1, 8),
    ("def f(x):\n    y = 1\n        z = 2\n", "unexpected indent", 3, 9),
    ("def f(x):\n    if x:\n        y = 1\n      z = 2\n",
     "unindent does not match any outer indentation level", 4, 7),
    ("def f(x):\n\treturn x\n", "tab characters are not allowed in indentation", 2, 1),
    ("\tdef f(x):\n\t\treturn x\n", "tab characters are not allowed in indentation", 1, 1),
    ("def f(x):\n    return x $ 2\n", "invalid character '$'", 2, 14),
    ("def f(x):\n    return x ? 2\n", "invalid character '?'", 2, 14),
    ("def f(x):\nreturn x\n", "expected an indented block", 2, 1),
    ("def f(x):\n", "expected an indented block", 1, 10),
    ("def f(x):\n    return 'abc\n", "unterminated string literal", 2, 12),
    ("def f(x):\n    return x | y\n", "operator '|' is not supported", 2, 14),
    ("def f(x):\n    d = {}\n", "'{' is not supported", 2, 9),
    ("def f(x):\n    g = lambda: 1\n", "'lambda' is not supported", 2, 9),
    ("def f(x):\n    return x is y\n", "'is' is not supported", 2, 14),
    ("def f(x):\n    a = b = 1\n", "chained assignment", 2, 9),
    ("def f(x):\n    f(x) = 1\n", "cannot assign to a function call", 2, 5),
    ("def f(x):\n    1 = x\n", "cannot assign to a literal", 2, 5),
    ("def f(x):\n    a, b += 1\n", "augmented or annotated assignment", 2, 5),
    ("def f(x):\n    g(a=1, 2)\n", "positional argument follows keyword argument", 2, 12),
    ("def f(x):\n    g(a=1, a=2)\n", "keyword argument repeated: 'a'", 2, 12),
    ("def f(x):\n    g(x + 1=2)\n", "cannot be a keyword", 2, 7),
    ("def f(x, x):\n    pass\n", "duplicate parameter 'x'", 1, 10),
    ("def f(x):\n    def g():\n        pass\n", "nested function definitions are not supported", 2, 5),
    ("x = 1\n", "only function definitions", 1, 1),
    ("def f(x):\n    return a + not b\n", "unexpected 'not'", 2, 16),
    ("def f(x):\n    return 08\n", "invalid integer literal", 2, 12),
    ("def f(x):\n    else:\n        pass\n", "unexpected 'else'", 2, 5),
    ("def 1(x):\n    pass\n", "unexpected '1', expected a name", 1, 5),
    ("    def f(x):\n        return x\n  y = 1\n", "unindent does not match", 3, 3),
]


@pytest.mark.parametrize("src, message, line, col", ERROR_CASES)
def test_syntax_errors(src, message, line, col):
    e = syntax_error(src)
    assert message in e.message, e.message
    assert (e.loc.line, e.loc.col) == (line, col), str(e)
    assert e.loc.filename == "k.py"
    text = str(e)
    head, _, rest = text.partition("\n")
    assert head.startswith(f"k.py:{line}:{col}: error: ")
    assert message in head
    # the source line, then a caret under the column
    src_line, caret = rest.split("\n")
    assert src_line == "    " + src.split("\n")[line - 1]
    assert caret == "    " + " " * (col - 1) + "^"
    assert isinstance(e, SyntaxError)


def test_syntax_error_location_includes_line_offset():
    e = syntax_error("def f(x):\n    return x $ 1\n", "mod.py", line_offset=99)
    assert (e.loc.line, e.loc.col) == (101, 14)
    assert str(e).startswith("mod.py:101:14: error: invalid character '$'")
    assert e.loc.text == "    return x $ 1"


def test_syntax_error_columns_in_nested_text():
    e = syntax_error("    def f(x):\n        return (x + 1))\n", "m.py", line_offset=5)
    assert (e.loc.line, e.loc.col) == (7, 23)
    assert "unexpected ')'" in e.message


def _fast_error(src, fragment):
    t = time.perf_counter()
    e = syntax_error(src)
    elapsed = time.perf_counter() - t
    assert fragment in e.message, e.message
    assert elapsed < 30.0, elapsed            # a hang guard, not a speed test
    return e


def test_deep_parentheses_rejected_quickly():
    _fast_error("def f(x):\n    return " + "(" * 10000 + "x" + ")" * 10000 + "\n", "too deeply nested")


def test_long_sum_rejected_quickly():
    _fast_error("def f(x):\n    return " + " + ".join(["x"] * 100000) + "\n", "too long")


@pytest.mark.parametrize("src", [
    "def f(x):\n    return " + " + ".join(["x"] * 1000) + "\n",           # folds into a deep BinOp chain
    "def f(x):\n    return x" + "[0]" * 3000 + "\n",
    "def f(x):\n    return x" + " ** x" * 2000 + "\n",
    "def f(x):\n    return " + "- " * 3000 + "x\n",
    "def f(x):\n    return " + "not " * 3000 + "x\n",
    "def f(x):\n" + "".join(" " * (i + 1) * 4 + "if x:\n" for i in range(300)) + " " * 1204 + "pass\n",
], ids=["sum", "subscripts", "power", "minus", "not", "ifs"])
def test_deep_trees_rejected(src):
    _fast_error(src, "too deeply nested")


def test_nesting_within_limits_is_accepted():
    e = expr("f(" * 100 + "x" + ")" * 100)
    depth = 0
    while isinstance(e, A.Call):
        e, depth = e.args[0], depth + 1
    assert depth == 100
    assert isinstance(expr(" + ".join(["x"] * 200)), A.BinOp)


def test_source_too_long():
    e = syntax_error("#" * (P.MAX_SOURCE_CHARS + 1))
    assert "too long" in e.message and e.loc.line == 1


def test_no_foreign_exceptions_on_garbage():
    """Random token soup and random edits of a valid kernel: parse or DslSyntaxError, nothing else."""
    import random
    rng = random.Random(7)
    toks = ["def", "f", "(", ")", ":", "\n", "    ", "x", "=", "+", "-", "**", "[", "]", ",", "1", ".5",
            "if", "elif", "else", "for", "in", "while", "return", "not", "and", "<", "'s'", '"""d"""',
            "#c", "@", "\\\n", "\t", "pass", " ", "import", ".", "->", "+=", ";", "$", "{", "'", "0x"]
    base = SPEC_EXAMPLE
    for i in range(400):
        if i % 2:
            src = "".join(rng.choice(toks) for _ in range(rng.randint(1, 30)))
            if rng.random() < 0.5:
                src = "def f(x):\n    " + src
        else:
            chars = list(base)
            for _ in range(rng.randint(1, 3)):
                p = rng.randrange(len(chars))
                r = rng.random()
                if r < 0.3:
                    del chars[p]
                elif r < 0.6:
                    chars.insert(p, rng.choice(toks))
                else:
                    chars[p] = rng.choice(toks)
            src = "".join(chars)
        try:
            parse(src)
        except DslSyntaxError as e:
            assert e.loc is not None and e.loc.line >= 1 and e.loc.col >= 1
            assert ": error: " in str(e)


# ---------------------------------------------------------------- grammar and performance
def test_grammar_has_no_lalr_conflicts():
    from lark import Lark
    with open(P._GRAMMAR_PATH, encoding="utf-8") as f:
        grammar = f.read()
    try:
        Lark(grammar, parser="lalr", lexer=P.DslLexer, postlex=P.DslIndenter(), strict=True)
    except TypeError:                       # lark without `strict`
        pytest.skip("this lark has no strict mode")


KERNEL_30 = '''@kernel
def chain_energy(x: f64[n], W: f32[n, k], b: f32) -> f64:
    """energy"""
    s = 0.0
    for i in range(n - 1):
        d = x[i + 1] - x[i]
        s += d * d
        if d > 0.5 and i % 2 == 0:
            s = s + sin(d) * 2.0
        elif d < -0.5:
            s -= cos(d) ** 2
        else:
            pass
    y = zeros((n,))
    j = 0
    while j < n:
        y[j] = sigmoid(W[j, :] @ x[0:k] + b)
        j += 1
    t = sum(y, axis=0) / n
    u = maximum(t, 0.0) if t > 0 else -t
    v = where(u > 1.0, u, 1.0 - u)
    w = exp(-v ** 2) + log1p(abs(v))
    for k2 in range(0, n, 2):
        s += x[k2] * w
    a, b2 = s, t
    z = (a + b2) * (a - b2) / (1.0 + a * a)
    return z + s
'''


def test_parser_is_cached_and_thread_safe():
    assert P._get_parser() is P._get_parser()
    expected = A.dump(parse(KERNEL_30))
    results, errors = [], []

    def work():
        try:
            for _ in range(10):
                results.append(A.dump(parse(KERNEL_30)))
                try:
                    parse("def f(x):\n    return x $\n")
                except DslSyntaxError as e:
                    assert e.loc.line == 2
        except Exception as e:              # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 30 and all(r == expected for r in results)


def test_grammar_file_is_next_to_the_parser():
    assert os.path.exists(os.path.join(os.path.dirname(P.__file__), "grammar.lark"))
