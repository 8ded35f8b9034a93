"""The DSL's parser: source text -> `dsl.ast.Module`.

One lark LALR parser (grammar in `dsl/grammar.lark`) is built on first use and
cached for the life of the process. It runs with

* `DslIndenter`, a postlexer (a `lark.indenter.Indenter`) that injects
  `_INDENT`/`_DEDENT`, drops newlines inside brackets, rejects tabs in
  indentation, and bounds bracket nesting and statement length, and
* `_Builder`, a transformer lark calls at every reduction, so the AST is built
  while parsing (no intermediate parse tree, no recursion: a deeply nested input
  cannot overflow the Python stack). It bounds the height of the tree it builds
  (`MAX_DEPTH`), so later recursive passes are safe too.

Source that is uniformly indented (a `@kernel` nested inside a function, as
`inspect.getsource` returns it) is handled without rewriting the text: the
indentation of the first line of code is taken as the base level, so every
column in every span and diagnostic is the column in the original file.
Lines are 1-based and include `line_offset`; `Span.end_col` is the column just
past the node's last character (lark's convention).

Every error is a `compiler.diagnostics.DslSyntaxError`; no lark exception or
RecursionError escapes.
"""
from __future__ import annotations

import os
import re
import threading

from lark import Lark, Token
from lark.lexer import Lexer, PatternStr
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedToken
from lark.indenter import Indenter

from compiler.diagnostics import DslSyntaxError, Loc
from dsl import ast as A

__all__ = ["parse", "MAX_SOURCE_CHARS", "MAX_BRACKET_DEPTH", "MAX_DEPTH", "MAX_STATEMENT_TOKENS"]

#: longest source accepted, in characters
MAX_SOURCE_CHARS = 1_000_000
#: deepest nesting of ( and [
MAX_BRACKET_DEPTH = 200
#: highest AST accepted (Module -> FunctionDef -> ... -> leaf); bounds every recursive pass
MAX_DEPTH = 256
#: most tokens in one logical line (statement)
MAX_STATEMENT_TOKENS = 10_000

_GRAMMAR_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grammar.lark")

# Python keywords the DSL does not have: a clear message instead of "unexpected name".
_UNSUPPORTED_KEYWORDS = {
    "class": "classes are not supported in kernels",
    "lambda": "'lambda' is not supported in kernels",
    "with": "'with' is not supported in kernels",
    "try": "'try' is not supported in kernels",
    "except": "'except' is not supported in kernels",
    "finally": "'finally' is not supported in kernels",
    "raise": "'raise' is not supported in kernels",
    "assert": "'assert' is not supported in kernels",
    "del": "'del' is not supported in kernels",
    "global": "'global' is not supported in kernels",
    "nonlocal": "'nonlocal' is not supported in kernels",
    "yield": "'yield' is not supported in kernels",
    "async": "'async' is not supported in kernels",
    "await": "'await' is not supported in kernels",
    "is": "'is' is not supported in kernels (use == or !=)",
}

_UNSUPPORTED_CHARS = {
    "|": "operator '|' is not supported",
    "&": "operator '&' is not supported",
    "^": "operator '^' is not supported",
    "~": "operator '~' is not supported",
    "{": "'{' is not supported (no dict or set literals in kernels)",
    "}": "'}' is not supported (no dict or set literals in kernels)",
}


class _Fail(Exception):
    """Internal: a syntax error at an absolute (offset-included) line and column."""

    def __init__(self, message: str, line: int, col: int):
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col


# ---------------------------------------------------------------------------
# lexer
# ---------------------------------------------------------------------------
class DslLexer(Lexer):
    """A one-regex tokenizer for the terminals of grammar.lark (about 3x faster than
    lark's general lexer, which matters for the parse-time budget).

    The token table is built from the grammar's own terminal definitions: every
    string terminal ("def", "(", "**", ...) is a keyword or a piece of punctuation
    and the regexp terminals are tried in a fixed order (newline/comments, the
    %ignore patterns, FLOAT, INT, STRING, NAME, AUGOP). Errors are reported
    directly as `_Fail` with a readable message."""

    _REGEX_ORDER = ("FLOAT", "INT", "STRING", "NAME", "AUGOP")

    def __init__(self, conf):
        terms = {t.name: t for t in conf.terminals}
        self.keywords: dict = {}
        punct: dict = {}
        for t in conf.terminals:
            if isinstance(t.pattern, PatternStr):
                v = t.pattern.value
                if v.isidentifier():
                    self.keywords[v] = t.name
                else:
                    punct[v] = t.name
        known = set(self._REGEX_ORDER) | {"_NEWLINE", "COMMENT"} | set(conf.ignore)
        extra = [n for n, t in terms.items() if not isinstance(t.pattern, PatternStr) and n not in known]
        assert not extra, f"DslLexer does not know terminals {extra}"
        groups = [f"(?P<_NEWLINE>{terms['_NEWLINE'].pattern.to_regexp()})"]
        for i, n in enumerate(x for x in conf.ignore if x != "COMMENT"):
            groups.append(f"(?P<_IGNORE{i}>{terms[n].pattern.to_regexp()})")
        for n in self._REGEX_ORDER:
            groups.append(f"(?P<{n}>{terms[n].pattern.to_regexp()})")
        groups.append("(?P<_PUNCT>" + "|".join(re.escape(v) for v in sorted(punct, key=len, reverse=True)) + ")")
        self.punct = punct
        self.regex = re.compile("|".join(groups))

    offset = 0          # line_offset of the current parse (set by `parse`, under its lock)

    def lex(self, text):
        match = self.regex.match
        keywords = self.keywords
        punct = self.punct
        off = self.offset
        pos, n = 0, len(text)
        line, line_start = 1, 0
        while pos < n:
            m = match(text, pos)
            if m is None:
                raise _Fail(_bad_char_message(text[pos]), line + off, pos - line_start + 1)
            end = m.end()
            kind = m.lastgroup
            value = m.group()
            col = pos - line_start + 1
            if kind == "NAME":
                yield Token(keywords.get(value, "NAME"), value, pos, line, col, line, col + end - pos, end)
            elif kind == "_PUNCT":
                yield Token(punct[value], value, pos, line, col, line, col + end - pos, end)
            elif kind == "_NEWLINE" or kind == "STRING":
                start_line = line
                nl = value.count("\n")
                if nl:
                    line += nl
                    line_start = pos + value.rindex("\n") + 1
                yield Token(kind, value, pos, start_line, col, line, end - line_start + 1, end)
            elif kind[0] == "_":                  # %ignore'd: spaces, line continuations
                if "\n" in value:
                    line += value.count("\n")
                    line_start = pos + value.rindex("\n") + 1
            else:
                yield Token(kind, value, pos, line, col, line, col + end - pos, end)
            pos = end


def _bad_char_message(ch: str) -> str:
    if ch in "\"'":
        return "unterminated string literal"
    if ch in _UNSUPPORTED_CHARS:
        return _UNSUPPORTED_CHARS[ch]
    if ch == "\\":
        return "unexpected character after line continuation character"
    if ch.isprintable():
        return f"invalid character {ch!r}"
    return f"invalid character {ch!r} (U+{ord(ch):04X})"


# ---------------------------------------------------------------------------
# postlexer
# ---------------------------------------------------------------------------
class DslIndenter(Indenter):
    """Python-style INDENT/DEDENT injection, with the checks the DSL wants.

    Per-parse settings (`base`, `text_len`, `offset`) are set by `parse` under
    its lock; `brackets` holds the still-open bracket tokens (for messages)."""

    NL_type = "_NEWLINE"
    OPEN_PAREN_types = ["LPAR", "LSQB"]
    CLOSE_PAREN_types = ["RPAR", "RSQB"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8

    def __init__(self):
        super().__init__()
        self.base = 0
        self.text_len = 0
        self.offset = 0
        self.brackets: list = []

    def process(self, stream):
        self.brackets = []
        return self._run(stream)

    def _run(self, stream):
        off = self.offset
        levels = [self.base]
        brackets = self.brackets
        ntok = 0
        last = None
        for tok in stream:
            typ = tok.type
            if typ == "_NEWLINE":
                if brackets:
                    continue
                ntok = 0
                last = tok
                yield tok
                if tok.end_pos >= self.text_len:      # trailing blank lines: no indentation
                    continue
                head, nl, indent_str = tok.value.rpartition("\n")
                if not nl:
                    continue
                line = tok.end_line
                if "\t" in indent_str:
                    raise _Fail("tab characters are not allowed in indentation; indent with spaces",
                                line + off, indent_str.index("\t") + 1)
                indent = len(indent_str)
                col = indent + 1
                if indent > levels[-1]:
                    levels.append(indent)
                    yield Token("_INDENT", indent_str, tok.end_pos, line, col, line, col, tok.end_pos)
                elif indent < levels[-1]:
                    while indent < levels[-1]:
                        levels.pop()
                        if not levels:
                            break
                        yield Token("_DEDENT", indent_str, tok.end_pos, line, col, line, col, tok.end_pos)
                    if not levels or indent != levels[-1]:
                        raise _Fail("unindent does not match any outer indentation level", line + off, col)
                continue
            ntok += 1
            if ntok > MAX_STATEMENT_TOKENS:
                raise _Fail(f"statement too long (more than {MAX_STATEMENT_TOKENS} tokens)",
                            tok.line + off, tok.column)
            if typ == "LPAR" or typ == "LSQB":
                brackets.append(tok)
                if len(brackets) > MAX_BRACKET_DEPTH:
                    raise _Fail(f"expression too deeply nested (more than {MAX_BRACKET_DEPTH} "
                                "nested brackets)", tok.line + off, tok.column)
            elif typ == "RPAR" or typ == "RSQB":
                if brackets:
                    brackets.pop()
            elif typ == "NAME":
                msg = _UNSUPPORTED_KEYWORDS.get(tok.value)
                if msg is not None:
                    raise _Fail(msg, tok.line + off, tok.column)
            last = tok
            yield tok
        if brackets:
            b = brackets[-1]
            raise _Fail(f"unexpected end of input: '{b.value}' was never closed", b.line + off, b.column)
        if len(levels) > 1:
            if last is not None:
                line, col, pos = last.end_line, last.end_column, last.end_pos
            else:
                line, col, pos = 1, 1, 0
            while len(levels) > 1:
                levels.pop()
                yield Token("_DEDENT", "", pos, line, col, line, col, pos)


# ---------------------------------------------------------------------------
# tree building (called by lark at each reduction)
# ---------------------------------------------------------------------------
class _Elif:
    __slots__ = ("tok", "test", "body")

    def __init__(self, tok, test, body):
        self.tok, self.test, self.body = tok, test, body


class _Else:
    __slots__ = ("body",)

    def __init__(self, body):
        self.body = body


_ESCAPE = re.compile(r"\\(?:(\n)|([\\'\"abfnrtv])|([0-7]{1,3})|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})"
                     r"|U([0-9a-fA-F]{8})|N\{([^}]*)\}|(.))", re.S)
_SIMPLE_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b", "f": "\f", "n": "\n",
                   "r": "\r", "t": "\t", "v": "\v"}


def _unescape(body: str) -> str:
    """Python's string-literal escapes (unknown ones are kept, as Python does)."""
    if "\\" not in body:
        return body

    def sub(m):
        nl, simple, octal, x, u, big_u, name, other = m.groups()
        if nl is not None:
            return ""
        if simple is not None:
            return _SIMPLE_ESCAPES[simple]
        if octal is not None:
            return chr(int(octal, 8))
        if name is not None:
            import unicodedata
            return unicodedata.lookup(name)
        code = x or u or big_u
        if code is not None:
            return chr(int(code, 16))
        if other in "xuUN":
            raise ValueError(f"truncated \\{other} escape")
        return "\\" + other

    return _ESCAPE.sub(sub, body)


class _Builder:
    """lark transformer: one method per rule / alias of grammar.lark."""

    def __init__(self):
        self.off = 0
        self.heights: dict = {}

    # ---- helpers -----------------------------------------------------------
    def _start(self, x):
        if x.__class__ is Token:
            return x.line + self.off, x.column
        if isinstance(x, list):
            return self._start(x[0])
        sp = x.span
        return sp.line, sp.col

    def _end(self, x):
        if x.__class__ is Token:
            return x.end_line + self.off, x.end_column
        if isinstance(x, list):
            return self._end(x[-1])
        sp = x.span
        return sp.end_line, sp.end_col

    def _span(self, first, last=None):
        if first.__class__ is Token:
            l, c = first.line + self.off, first.column
        else:
            l, c = self._start(first)
        if last is None:
            last = first
        if last.__class__ is Token:
            return A.Span(l, c, last.end_line + self.off, last.end_column)
        el, ec = self._end(last)
        return A.Span(l, c, el, ec)

    def _tok(self, t):
        off = self.off
        return A.Span(t.line + off, t.column, t.end_line + off, t.end_column)

    def _fin(self, node, *kids):
        """Record `node`'s height (1 + its highest child's) and enforce MAX_DEPTH."""
        hs = self.heights
        h = 0
        for k in kids:
            if k is None:
                continue
            if isinstance(k, list):
                for x in k:
                    hx = hs.get(id(x), 0)
                    if hx > h:
                        h = hx
            else:
                hx = hs.get(id(k), 0)
                if hx > h:
                    h = hx
        h += 1
        if h > MAX_DEPTH:
            what = "expression" if not isinstance(node, (A.FunctionDef, A.If, A.For, A.While)) else "code"
            raise _Fail(f"{what} too deeply nested (more than {MAX_DEPTH} levels)", node.span.line, node.span.col)
        hs[id(node)] = h
        return node

    def _fail(self, message, at):
        l, c = self._start(at)
        raise _Fail(message, l, c)

    def _check_target(self, t, kind="assign"):
        if isinstance(t, (A.Name, A.Subscript)):
            return
        if isinstance(t, A.Tuple) and kind in ("assign", "for"):
            if not t.elts:
                self._fail("cannot assign to ()", t)
            for e in t.elts:
                self._check_target(e, kind)
            return
        if isinstance(t, A.Tuple):
            self._fail("a tuple cannot be the target of an augmented or annotated assignment", t)
        what = {A.Call: "a function call", A.Num: "a literal", A.Bool: "a literal", A.Str: "a literal",
                A.Attribute: "an attribute", A.BinOp: "an expression", A.UnaryOp: "an expression",
                A.Compare: "a comparison", A.BoolOp: "an expression", A.IfExp: "a conditional expression"}
        self._fail(f"cannot assign to {what.get(type(t), 'this expression')}", t)

    # ---- file level --------------------------------------------------------
    def start(self, c):
        fns = [x for x in c if isinstance(x, A.FunctionDef)]
        span = self._span(fns[0], fns[-1]) if fns else A.Span(1 + self.off, 1, 1 + self.off, 1)
        return self._fin(A.Module(fns, span=span), fns)

    def decorated(self, c):
        fn = c[-1]
        fn.decorators = list(c[:-1])
        self._fin(fn, fn.params, fn.returns, fn.body, fn.decorators)
        return fn

    def import_stmt(self, c):
        return None

    def funcdef(self, c):
        deftok, name, params, returns, body = c
        fn = A.FunctionDef(str(name), params, returns, body, span=self._span(deftok, body))
        return self._fin(fn, params, returns, body)

    def params(self, c):
        seen = set()
        for p in c:
            if p.name in seen:
                self._fail(f"duplicate parameter '{p.name}'", p)
            seen.add(p.name)
        return list(c)

    def param(self, c):
        ann = c[1] if len(c) > 1 else None
        return self._fin(A.Param(str(c[0]), ann, span=self._span(c[0], c[-1])), ann)

    def returns(self, c):
        return c[0] if c else None

    def suite(self, c):
        return list(c)

    # ---- statements --------------------------------------------------------
    def expr_stmt(self, c):
        v = c[0]
        return self._fin(A.ExprStmt(v, span=v.span), v)

    def assign_stmt(self, c):
        if len(c) > 2:
            self._fail("chained assignment (a = b = ...) is not supported; assign each name separately", c[1])
        t, v = c
        self._check_target(t)
        return self._fin(A.Assign(t, v, span=self._span(t, v)), t, v)

    def augassign_stmt(self, c):
        t, op, v = c
        self._check_target(t, "aug")
        return self._fin(A.AugAssign(t, op.value[:-1], v, span=self._span(t, v)), t, v)

    def annassign_stmt(self, c):
        t, ann = c[0], c[1]
        v = c[2] if len(c) > 2 else None
        self._check_target(t, "ann")
        return self._fin(A.AnnAssign(t, ann, v, span=self._span(t, c[-1])), t, ann, v)

    def return_stmt(self, c):
        v = c[1] if len(c) > 1 else None
        return self._fin(A.Return(v, span=self._span(c[0], c[-1])), v)

    def pass_stmt(self, c):
        return self._fin(A.Pass(span=self._span(c[0])))

    def break_stmt(self, c):
        return self._fin(A.Break(span=self._span(c[0])))

    def continue_stmt(self, c):
        return self._fin(A.Continue(span=self._span(c[0])))

    def elif_clause(self, c):
        return _Elif(c[0], c[1], c[2])

    def else_clause(self, c):
        return _Else(c[0])

    def if_stmt(self, c):
        iftok, test, body = c[0], c[1], c[2]
        rest = c[3:]
        orelse: list = []
        if rest and isinstance(rest[-1], _Else):
            orelse = rest[-1].body
            rest = rest[:-1]
        end = orelse if orelse else None
        for el in reversed(rest):
            last = end if end is not None else el.body
            node = A.If(el.test, el.body, orelse, span=self._span(el.tok, last))
            orelse = [self._fin(node, el.test, el.body, orelse)]
            end = last
        last = end if end is not None else body
        return self._fin(A.If(test, body, orelse, span=self._span(iftok, last)), test, body, orelse)

    def for_stmt(self, c):
        fortok, target, it, body = c
        self._check_target(target, "for")
        return self._fin(A.For(target, it, body, span=self._span(fortok, body)), target, it, body)

    def while_stmt(self, c):
        wtok, test, body = c
        return self._fin(A.While(test, body, span=self._span(wtok, body)), test, body)

    # ---- expressions -------------------------------------------------------
    def tuple(self, c):
        return self._fin(A.Tuple(list(c), span=self._span(c[0], c[-1])), list(c))

    def paren_tuple(self, c):
        t = c[1]
        t.span = self._span(c[0], c[2])
        return t

    def empty_tuple(self, c):
        return self._fin(A.Tuple([], span=self._span(c[0], c[1])))

    def ifexp(self, c):
        body, test, orelse = c
        return self._fin(A.IfExp(test, body, orelse, span=self._span(body, orelse)), test, body, orelse)

    def opseq(self, c):
        """Apply Python's precedence to a flat run of prefix operators, operands and
        binary operators. Recursion depth is bounded by the number of precedence
        levels; runs of prefix operators and `**` chains are folded iteratively."""
        # Tag each token: a token right after an operand is a binary operator, else a prefix.
        items = []
        after_operand = False
        for x in c:
            if isinstance(x, Token):
                items.append((1 if after_operand else 0, x))
                after_operand = False
            else:
                items.append((2, x))
                after_operand = True
        self._items = items
        self._pos = 0
        return self._p_or()

    def _peek_binop(self, ops):
        i = self._pos
        items = self._items
        if i < len(items) and items[i][0] == 1 and items[i][1].value in ops:
            self._pos = i + 1
            return items[i][1]
        return None

    def _p_or(self):
        first = self._p_and()
        if not self._peek_binop(("or",)):
            return first
        vals = [first, self._p_and()]
        while self._peek_binop(("or",)):
            vals.append(self._p_and())
        return self._fin(A.BoolOp("or", vals, span=self._span(vals[0], vals[-1])), vals)

    def _p_and(self):
        first = self._p_not()
        if not self._peek_binop(("and",)):
            return first
        vals = [first, self._p_not()]
        while self._peek_binop(("and",)):
            vals.append(self._p_not())
        return self._fin(A.BoolOp("and", vals, span=self._span(vals[0], vals[-1])), vals)

    def _p_not(self):
        items = self._items
        nots = []
        while self._pos < len(items) and items[self._pos][0] == 0 and items[self._pos][1].value == "not":
            nots.append(items[self._pos][1])
            self._pos += 1
        v = self._p_cmp()
        for t in reversed(nots):
            v = self._fin(A.UnaryOp("not", v, span=self._span(t, v)), v)
        return v

    _CMP = ("<", ">", "==", ">=", "<=", "!=")

    def _p_cmp(self):
        first = self._p_arith()
        op = self._peek_binop(self._CMP)
        if op is None:
            return first
        ops, operands = [op.value], [first, self._p_arith()]
        while True:
            op = self._peek_binop(self._CMP)
            if op is None:
                break
            ops.append(op.value)
            operands.append(self._p_arith())
        return self._fin(A.Compare(ops, operands, span=self._span(operands[0], operands[-1])), operands)

    def _p_arith(self):
        left = self._p_term()
        while True:
            op = self._peek_binop(("+", "-"))
            if op is None:
                return left
            right = self._p_term()
            left = self._fin(A.BinOp(op.value, left, right, span=self._span(left, right)), left, right)

    def _p_term(self):
        left = self._p_factor()
        while True:
            op = self._peek_binop(("*", "/", "//", "%", "@"))
            if op is None:
                return left
            right = self._p_factor()
            left = self._fin(A.BinOp(op.value, left, right, span=self._span(left, right)), left, right)

    def _p_factor(self):
        # factor := ('-'|'+')* power ;  power := operand ('**' factor)?
        items = self._items
        segs = []
        while True:
            prefixes = []
            while True:
                kind, x = items[self._pos]
                if kind != 0:
                    break
                if x.value == "not":
                    self._fail("unexpected 'not' (put the 'not' expression in parentheses)", x)
                prefixes.append(x)
                self._pos += 1
            kind, x = items[self._pos]
            if kind != 2:       # cannot happen: the grammar puts an operand here
                self._fail(f"unexpected '{x}'", x)
            self._pos += 1
            segs.append((prefixes, x))
            if not self._peek_binop(("**",)):
                break
        v = None
        for prefixes, operand in reversed(segs):
            if v is not None:
                v = self._fin(A.BinOp("**", operand, v, span=self._span(operand, v)), operand, v)
            else:
                v = operand
            for t in reversed(prefixes):
                v = self._fin(A.UnaryOp(t.value, v, span=self._span(t, v)), v)
        return v

    def call(self, c):
        func, rpar = c[0], c[-1]
        raw = c[1] if len(c) == 3 else []
        args, kws, names = [], [], set()
        for a in raw:
            if isinstance(a, A.Keyword):
                if a.name in names:
                    self._fail(f"keyword argument repeated: '{a.name}'", a)
                names.add(a.name)
                kws.append(a)
            elif kws:
                self._fail("positional argument follows keyword argument", a)
            else:
                args.append(a)
        return self._fin(A.Call(func, args, kws, span=self._span(func, rpar)), func, args, kws)

    def arguments(self, c):
        return list(c)

    def kwarg(self, c):
        name, v = c
        if not isinstance(name, A.Name):
            self._fail('expression cannot be a keyword; did you mean "=="?', name)
        return self._fin(A.Keyword(name.id, v, span=self._span(name, v)), v)

    def getitem(self, c):
        value, idx, rsqb = c
        return self._fin(A.Subscript(value, idx, span=self._span(value, rsqb)), value, idx)

    def subscripts(self, c):
        return list(c)

    def slice(self, c):
        parts: list = [None, None, None]
        k = 0
        for x in c:
            if isinstance(x, Token):
                k += 1
            else:
                parts[k] = x
        return self._fin(A.Slice(*parts, span=self._span(c[0], c[-1])), *parts)

    def getattr(self, c):
        value, name = c
        return self._fin(A.Attribute(value, str(name), span=self._span(value, name)), value)

    def name(self, c):
        t = c[0]
        node = A.Name(str(t), span=self._tok(t))
        self.heights[id(node)] = 1
        return node

    def int(self, c):
        t = c[0]
        try:
            v = int(t.value, 0)
        except ValueError:
            self._fail(f"invalid integer literal '{t.value}'", t)
        return self._fin(A.Num(v, span=self._span(t)))

    def float(self, c):
        t = c[0]
        try:
            v = float(t.value)
        except ValueError:
            self._fail(f"invalid number literal '{t.value}'", t)
        return self._fin(A.Num(v, span=self._span(t)))

    def string(self, c):
        parts = []
        for t in c:
            s = t.value
            raw = False
            while s[0] in "rRuU":
                raw = raw or s[0] in "rR"
                s = s[1:]
            q = 3 if s[:3] in ('"""', "'''") else 1
            body = s[q:-q]
            if not raw:
                try:
                    body = _unescape(body)
                except (KeyError, ValueError, OverflowError):
                    self._fail("invalid escape sequence in string literal", t)
            parts.append(body)
        return self._fin(A.Str("".join(parts), span=self._span(c[0], c[-1])))

    def true(self, c):
        return self._fin(A.Bool(True, span=self._span(c[0])))

    def false(self, c):
        return self._fin(A.Bool(False, span=self._span(c[0])))


# ---------------------------------------------------------------------------
# the cached parser
# ---------------------------------------------------------------------------
_LOCK = threading.RLock()
_PARSER = None          # (Lark, DslIndenter, _Builder)


_OPTIONS = dict(parser="lalr", lexer=DslLexer, maybe_placeholders=False)
#: options given again when loading saved tables (lark does not save them)
_RUN_OPTIONS = ("postlex", "transformer", "propagate_positions")
_TABLES_MAGIC = b"DSLCLARK1\n"


def _get_parser():
    global _PARSER
    if _PARSER is None:
        with open(_GRAMMAR_PATH, encoding="utf-8") as f:
            grammar = f.read()
        indenter = DslIndenter()
        builder = _Builder()
        _PARSER = (_build_lark(grammar, indenter, builder), indenter, builder)
    return _PARSER


def _build_lark(grammar: str, indenter, builder) -> Lark:
    """The LALR parser. Building its tables takes ~150 ms, so they are saved in the kernel cache
    directory (keyed by the grammar, the options, lark's and Python's versions; checksummed and
    written atomically like the kernel cache) and loaded from there (~10 ms) by later processes."""
    import sys
    import lark as lark_pkg
    from compiler import cache
    from compiler.warmstart import key_for
    key = key_for("lark-tables", grammar, repr(sorted((k, repr(v)) for k, v in _OPTIONS.items())),
                  lark_pkg.__version__, sys.version)
    path = os.path.join(cache.cache_dir(), f"lark-{key}.tables")
    run = dict(postlex=indenter, transformer=builder, propagate_positions=False)
    loaded = _load_tables(path, run)
    if loaded is not None:
        return loaded
    lark = Lark(grammar, **_OPTIONS, **run)
    _save_tables(lark, path)
    return lark


def _load_tables(path: str, run: dict):
    import io
    from compiler import cache
    from compiler.warmstart import digest
    # corrupt, or saved by another lark (its _load raises): removed, and built again
    return cache.load_sealed(path, _TABLES_MAGIC, digest,
                             lambda body: Lark.__new__(Lark)._load(io.BytesIO(body), **run))


def _save_tables(lark: Lark, path: str):
    import io
    from compiler import cache
    from compiler.warmstart import digest
    try:
        buf = io.BytesIO()
        lark.save(buf, exclude_options=_RUN_OPTIONS)
        cache.write_atomic(path, cache.seal(_TABLES_MAGIC, digest, buf.getvalue()))
    except Exception:                   # read-only cache directory, ...: only slower next time
        pass


# ---------------------------------------------------------------------------
# error translation
# ---------------------------------------------------------------------------
def _display_terminal(lark: Lark, name: str) -> str:
    special = {"$END": "end of input", "_NEWLINE": "end of line", "_INDENT": "an indented block",
               "_DEDENT": "a dedent", "NAME": "a name", "INT": "a number", "FLOAT": "a number",
               "STRING": "a string"}
    if name in special:
        return special[name]
    try:
        pat = lark.get_terminal(name).pattern
        if type(pat).__name__ == "PatternStr":
            return f"'{pat.value}'"
    except Exception:
        pass
    return name


def _display_token(tok) -> str:
    if tok.type == "$END":
        return "end of input"
    if tok.type == "_NEWLINE":
        return "end of line"
    if tok.type == "_INDENT":
        return "indent"
    if tok.type == "_DEDENT":
        return "dedent"
    v = str(tok.value)
    if len(v) > 24:
        v = v[:21] + "..."
    if tok.type == "STRING":
        return f"string {v}"
    return f"'{v}'"


_EXPR_START = {"NAME", "INT", "FLOAT", "STRING", "LPAR", "TRUE", "FALSE", "MINUS", "PLUS"}


def _token_error(e: UnexpectedToken, lark: Lark, indenter: DslIndenter, eof, off: int):
    """(message, line, col) for an UnexpectedToken; line includes the offset."""
    tok = e.token
    try:
        accepts = set(e.accepts or ())
    except Exception:
        accepts = set()
    if not accepts:
        accepts = set(e.expected or ())
    typ = tok.type
    if typ == "$END" or getattr(tok, "line", None) is None:
        line, col = eof
    else:
        line, col = tok.line + off, tok.column
    if typ == "_INDENT":
        return "unexpected indent", line, col
    if accepts == {"_INDENT"}:
        return "expected an indented block", line, col
    if typ == "$END":
        if indenter.brackets:
            b = indenter.brackets[-1]
            return f"unexpected end of input: '{b.value}' was never closed", b.line + off, b.column
        return "unexpected end of input", line, col
    if typ == "DEF":
        return "nested function definitions are not supported", line, col
    if "DEF" in accepts and typ not in accepts:
        return (f"unexpected {_display_token(tok)}: only function definitions ('def', optionally "
                "decorated) and import lines may appear at the top level"), line, col
    if typ == "_NEWLINE":
        if "COLON" in accepts:
            return "expected ':'", line, col
        if len(accepts) == 1:
            return f"expected {_display_terminal(lark, next(iter(accepts)))}", line, col
        if accepts & _EXPR_START:
            return "unexpected end of line (expected an expression)", line, col
        return "unexpected end of line", line, col
    msg = f"unexpected {_display_token(tok)}"
    if len(accepts) == 1:
        msg += f", expected {_display_terminal(lark, next(iter(accepts)))}"
    elif "COLON" in accepts and typ != "COLON" and not indenter.brackets:
        msg += ", expected ':'"
    return msg, line, col


def _eof_position(src: str, off: int):
    body = src[:-1] if src.endswith("\n") else src
    lines = body.split("\n")
    return len(lines) + off, len(lines[-1].rstrip("\r")) + 1


_FIRST_CODE_LINE = re.compile(r"(?:[ \t\f]*(?:#[^\n]*)?\r?\n)*([ \t\f]*)")


def _base_indent(src: str, off: int) -> int:
    """Indentation of the first line of code: the level the whole text sits at."""
    m = _FIRST_CODE_LINE.match(src)
    head = m.group(1)
    if "\t" in head:
        line = src.count("\n", 0, m.start(1)) + 1
        raise _Fail("tab characters are not allowed in indentation; indent with spaces",
                    line + off, head.index("\t") + 1)
    return len(head)


def _line_text(text: str, line: int, off: int) -> str:
    lines = text.split("\n")
    i = line - off - 1
    return lines[i].rstrip("\r") if 0 <= i < len(lines) else ""


def _parse_locked(src: str, off: int) -> A.Module:
    """Run the cached parser on `src` (ending in a newline); the caller holds _LOCK."""
    lark, indenter, builder = _get_parser()
    indenter.base = _base_indent(src, off)
    indenter.text_len = len(src)
    indenter.offset = off
    DslLexer.offset = off
    builder.off = off
    builder.heights = {}
    return lark.parse(src)


def parse(text: str, filename: str = "<kernel>", line_offset: int = 0) -> A.Module:
    """Parse DSL source (a `.dsl` file or one `@kernel` function's text) into a Module.

    `line_offset` is added to every line number: line 1 of `text` is line
    `line_offset + 1` of `filename`. Raises `DslSyntaxError` on any syntax error."""
    if not isinstance(text, str):
        raise TypeError(f"parse() expects source text (str), got {type(text).__name__}")
    off = int(line_offset)

    def fail(message, line, col):
        return DslSyntaxError(message, Loc(filename, line, col, _line_text(text, line, off)))

    if len(text) > MAX_SOURCE_CHARS:
        raise fail(f"source too long ({len(text)} characters; at most {MAX_SOURCE_CHARS} are accepted)",
                   1 + off, 1)
    src = text if text.endswith("\n") else text + "\n"
    err = None
    with _LOCK:
        try:
            module = _parse_locked(src, off)
        except _Fail as e:
            err = fail(e.message, e.line, e.col)
        except UnexpectedToken as e:
            lark, indenter, _ = _PARSER
            err = fail(*_token_error(e, lark, indenter, _eof_position(src, off), off))
        except UnexpectedCharacters as e:
            ch = src[e.pos_in_stream] if 0 <= e.pos_in_stream < len(src) else ""
            err = fail(_bad_char_message(ch) if ch else "invalid character", e.line + off, e.column)
        except UnexpectedEOF:
            err = fail("unexpected end of input", *_eof_position(src, off))
        except RecursionError:
            err = fail("expression too deeply nested", 1 + off, 1)
        except LarkError as e:
            err = fail(f"invalid syntax ({type(e).__name__})", 1 + off, 1)
        finally:
            if _PARSER is not None:
                _PARSER[2].heights = {}
                _PARSER[1].brackets = []
    if err is not None:
        raise err
    module.source = A.Source(text=text, filename=filename, line_offset=off)
    return module
