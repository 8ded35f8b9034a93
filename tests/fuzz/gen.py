"""Random well-typed dslc kernels, as DSL source text.

`Gen(draw).program(smooth)` writes one kernel `f` from a stream of integer choices: `draw(lo, hi)`
returns an int in [lo, hi]. The same generator serves hypothesis (`programs()`, whose draws shrink)
and the long fuzz run (`random_program(seed)`, a plain `random.Random`).

The kernels cover: every elementwise primitive and math function, NumPy broadcasting between
scalars, vectors (n), (m) and matrices (m, n), reductions with and without `axis=`, `dot`, `@` and
`.T`, element and slice indexing with safe (wrapped or clamped) bounds, constructors and casts,
`for` loops with element/row stores and accumulators, `if`/`elif`/`else`, conditional expressions,
`while` loops with a bounded trip count, and (in primal mode) integer and bool arithmetic.

`smooth=True` restricts the program to operations that are differentiable everywhere on the inputs
it is given (no comparisons of floats, no floor/abs/max, divisions by quantities bounded away from
zero, logarithms and roots of positive quantities), so its JVP can be checked against finite
differences. Branch and loop conditions then depend only on integers.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

SHAPES = ("S", "V", "W", "M")          # scalar, f[n], f[m], f[m, n]
DIMS = {"S": "", "V": "n", "W": "m", "M": "m, n"}
FULL = {"V": "n", "W": "m", "M": "(m, n)"}

# binary broadcasting: result shape -> operand shape pairs
BCAST = {
    "S": [("S", "S")],
    "V": [("V", "V"), ("V", "S"), ("S", "V")],
    "W": [("W", "W"), ("W", "S"), ("S", "W")],
    "M": [("M", "M"), ("M", "S"), ("S", "M"), ("M", "V"), ("V", "M")],
}

SMOOTH_UNARY = ["sin({})", "cos({})", "tanh({})", "sigmoid({})", "(-{})", "exp(sin({}))",
                "log1p({0} * {0})", "log(1.0 + {0} * {0})", "sqrt(1.0 + {0} * {0})", "expm1(tanh({}))",
                "tan(0.5 * tanh({}))", "np.sin({})"]
ROUGH_UNARY = ["tan({})", "exp({})", "log({})", "sqrt({})", "abs({})", "sign({})", "floor({})",
               "ceil({})", "log1p({})", "expm1({})", "math.cos({})"]
SMOOTH_BIN = ["({} + {})", "({} - {})", "({} * {})", "({} / (2.0 + sin({})))", "({} * (1.0 / (1.0 + {} ** 2)))"]
ROUGH_BIN = ["({} / {})", "({} // {})", "({} % {})", "({} ** {})", "maximum({}, {})", "minimum({}, {})",
             "max({}, {})"]
SMOOTH_POW = ["({} ** 2)", "({} ** 3)", "((1.0 + {0} * {0}) ** 0.75)", "((2.0 + sin({0})) ** -1.5)",
              "({} ** 1)"]


@dataclass
class Var:
    kind: str      # f (float), i (i64), b (bool)
    shape: str
    # axes ('n' / 'm') this integer scalar is a valid index for (loop variables)
    index_for: tuple = ()


@dataclass
class Program:
    source: str
    params: list            # [(name, kind, shape)]
    ftype: str              # f32 or f64
    smooth: bool
    straight: bool          # no loops / branches (reverse mode applies)
    returns: list = field(default_factory=list)   # [(kind, shape)]


class Gen:
    def __init__(self, draw, max_depth=3):
        self.draw = draw
        self.max_depth = max_depth
        self.counter = 0
        self.straight = True

    # ---- choice helpers ------------------------------------------------------------------------
    def int(self, lo, hi):
        return self.draw(lo, hi)

    def pick(self, seq):
        return seq[self.draw(0, len(seq) - 1)]

    def chance(self, pct):
        return self.draw(0, 99) < pct

    def fresh(self, prefix="t"):
        self.counter += 1
        return f"{prefix}{self.counter}"

    def vars(self, env, kind, shape):
        return [n for n, v in env.items() if v.kind == kind and v.shape == shape]

    # ---- indices -------------------------------------------------------------------------------
    def index(self, env, axis, depth):
        """An integer expression that is a valid index into an axis of extent `axis` (n or m >= 1)."""
        loopvars = [n for n, v in env.items() if axis in v.index_for]
        choices = ["0", "-1", f"{axis} - 1", f"-{axis}", "mod"]
        if loopvars:
            choices += ["loop"] * 3
        c = self.pick(choices)
        if c == "loop":
            return self.pick(loopvars)
        if c == "mod":
            return f"({self.iexpr(env, 'S', depth - 1)}) % {axis}"
        return c

    def bound(self, env):
        """A slice bound: a literal, possibly negative or past the end, or an integer expression."""
        c = self.int(0, 5)
        if c == 0:
            return ""
        if c == 1:
            return self.pick(["n", "k", "-k", "n - 1", "k - 2"])
        return str(self.int(-5, 6))

    # ---- float expressions ---------------------------------------------------------------------
    def fleaf(self, env, shape, depth):
        vs = self.vars(env, "f", shape)
        opts = []
        if vs:
            opts += ["var"] * 4
        if shape == "S":
            opts += ["lit", "lit", "elem"]
        if shape == "V":
            opts += ["row"]
        if shape == "W":
            opts += ["col"]
        if shape != "S":
            opts += ["full"]
        c = self.pick(opts)
        if c == "var":
            return self.pick(vs)
        if c == "lit":
            return self.pick(["0.5", "1.5", "-0.75", "2.0", "3", "pi", "1e-1", "-2", "0.0"])
        if c == "elem":
            src = self.pick(self.vars(env, "f", "V") + self.vars(env, "f", "W") + self.vars(env, "f", "M"))
            sh = env[src].shape
            if sh == "V":
                return f"{src}[{self.index(env, 'n', depth)}]"
            if sh == "W":
                return f"{src}[{self.index(env, 'm', depth)}]"
            return f"{src}[{self.index(env, 'm', depth)}, {self.index(env, 'n', depth)}]"
        if c == "row":
            return f"{self.pick(self.vars(env, 'f', 'M'))}[{self.index(env, 'm', depth)}, :]"
        if c == "col":
            return f"{self.pick(self.vars(env, 'f', 'M'))}[:, {self.index(env, 'n', depth)}]"
        # full / ones / zeros_like
        k = self.int(0, 3)
        if k == 0:
            return f"full({FULL[shape]}, {self.fexpr(env, 'S', depth - 1)})"
        if k == 1:
            return f"(ones({FULL[shape]}) * {self.fexpr(env, 'S', depth - 1)})"
        if k == 2:
            like = self.vars(env, "f", shape)
            if like:
                return f"(zeros_like({self.pick(like)}) + {self.fexpr(env, 'S', depth - 1)})"
        return f"zeros({FULL[shape]})"

    def fexpr(self, env, shape, depth=None):
        if depth is None:
            depth = self.max_depth
        if depth <= 0 or self.chance(25):
            return self.fleaf(env, shape, depth)
        d = depth - 1
        opts = ["un", "un", "bin", "bin", "bin", "pow", "red", "cast", "cond"]
        if shape in ("S", "V", "W"):
            opts += ["mm"]
        if shape == "S":
            opts += ["slicered"]
        if not self.smooth or shape != "M":
            opts += ["where"]
        c = self.pick(opts)
        if c == "un":
            tmpl = self.pick(SMOOTH_UNARY + ([] if self.smooth else ROUGH_UNARY * 2))
            return tmpl.format(self.fexpr(env, shape, d))
        if c == "bin":
            a, b = self.pick(BCAST[shape])
            tmpl = self.pick(SMOOTH_BIN + ([] if self.smooth else ROUGH_BIN))
            return tmpl.format(self.fexpr(env, a, d), self.fexpr(env, b, d))
        if c == "pow":
            if self.smooth or self.chance(50):
                return self.pick(SMOOTH_POW).format(self.fexpr(env, shape, d))
            a, b = self.pick(BCAST[shape])
            return f"({self.fexpr(env, a, d)} ** {self.fexpr(env, b, d)})"
        if c == "red":
            return self.reduction(env, shape, d)
        if c == "mm":
            return self.matmul(env, shape, d)
        if c == "slicered":
            src = self.pick(self.vars(env, "f", "V") + self.vars(env, "f", "W"))
            red = self.pick(["sum", "mean", "prod"] + ([] if self.smooth else ["sum"]))
            lo, hi = self.bound(env), self.bound(env)
            return f"{red}({src}[{lo}:{hi}])"
        if c == "cast":
            if self.smooth:
                return f"{self.ftype}({self.iexpr(env, shape if shape in ('S', 'V') else 'S', d)})" \
                    if shape in ("S", "V") else self.fleaf(env, shape, d)
            ish = shape if shape in ("S", "V") else "S"
            e = f"{self.pick([self.ftype, 'f32', 'f64', 'float'] if ish == 'S' else [self.ftype])}" \
                f"({self.iexpr(env, ish, d)})"
            if ish != shape:
                return f"({self.fexpr(env, shape, d)} + {e})"
            return e
        if c == "cond":
            return f"({self.fexpr(env, shape, d)} if {self.bexpr(env, 'S', d)} else {self.fexpr(env, shape, d)})"
        # where
        csh = self.pick([s for s in ("S", shape) if s in ("S", "V")] or ["S"]) if shape != "M" else "S"
        return f"where({self.bexpr(env, csh, d)}, {self.fexpr(env, shape, d)}, {self.fexpr(env, shape, d)})"

    def reduction(self, env, shape, d):
        reds = ["sum", "mean", "prod"] + ([] if self.smooth else ["max", "min"])
        red = self.pick(reds)
        if shape == "S":
            src = self.pick(["V", "W", "M"])
            return f"{red}({self.fexpr(env, src, d)})"
        if shape == "V":
            return f"{red}({self.fexpr(env, 'M', d)}, axis={self.pick(['0', '-2'])})"
        if shape == "W":
            return f"{red}({self.fexpr(env, 'M', d)}, axis={self.pick(['1', '-1'])})"
        # M: a reduction broadcast back
        return f"({self.fexpr(env, 'M', d)} - {red}({self.fexpr(env, 'M', d)}, axis=0))"

    def matmul(self, env, shape, d):
        if shape == "S":
            c = self.int(0, 2)
            if c == 0:
                return f"dot({self.fexpr(env, 'V', d)}, {self.fexpr(env, 'V', d)})"
            if c == 1:
                return f"({self.fexpr(env, 'W', d)} @ {self.fexpr(env, 'W', d)})"
            return f"({self.fexpr(env, 'W', d)} @ ({self.fexpr(env, 'M', d)} @ {self.fexpr(env, 'V', d)}))"
        if shape == "V":
            if self.chance(50):
                return f"({self.fexpr(env, 'W', d)} @ {self.fexpr(env, 'M', d)})"
            return f"({self.fexpr(env, 'M', d)}.T @ {self.fexpr(env, 'W', d)})"
        return f"({self.fexpr(env, 'M', d)} @ {self.fexpr(env, 'V', d)})"

    # ---- integer and bool expressions ----------------------------------------------------------
    def iexpr(self, env, shape, depth=None):
        if depth is None:
            depth = 2
        vs = self.vars(env, "i", shape)
        if depth <= 0 or self.chance(35):
            if shape == "S":
                return self.pick(vs + ["n", "m", "k", "len(x)", "x.shape[0]", "A.shape[1]"]
                                 + [str(self.int(-3, 7))])
            return self.pick(vs) if vs else "iv"
        d = depth - 1
        opts = ["bin", "bin", "div", "un"]
        if shape == "S":
            opts += ["sumi", "elem"] + ([] if self.smooth else ["castf", "castf"])
        c = self.pick(opts)
        if c == "bin":
            a, b = self.pick(BCAST[shape])
            op = self.pick(["+", "-", "*", "+"])
            return f"({self.iexpr(env, a, d)} {op} {self.iexpr(env, b, d)})"
        if c == "div":
            a, b = self.pick(BCAST[shape])
            op = self.pick(["//", "%"])
            den = self.pick([f"({self.iexpr(env, b, d)} % 5 + 1)", str(self.pick([-3, -2, 2, 3])),
                             f"(-1 - abs({self.iexpr(env, b, d)} % 4))"])
            if den.lstrip("-").isdigit():
                a = shape
            return f"({self.iexpr(env, a, d)} {op} {den})"
        if c == "un":
            return self.pick(["abs({})", "(-{})", "maximum({}, 1)", "minimum({}, 2)", "({} ** 2)"]).format(
                self.iexpr(env, shape, d))
        if c == "sumi":
            return self.pick(["sum(iv)", "max(iv)", "min(iv)", "sum(iv[1:])", "prod(iv[0:3])"])
        if c == "elem":
            return f"iv[{self.index(env, 'n', d)}]"
        # float -> int (saturating, truncating)
        return f"{self.pick(['i64', 'int', 'i32'])}({self.fexpr(env, 'S', d)})"

    def bexpr(self, env, shape, depth=None):
        if depth is None:
            depth = 2
        d = depth - 1
        c = self.int(0, 5)
        if c <= 2 or depth <= 0:
            op = self.pick(["<", "<=", ">", ">=", "==", "!="])
            if self.smooth or self.chance(40):
                return f"({self.iexpr(env, shape, d)} {op} {self.iexpr(env, shape, d)})"
            return f"({self.fexpr(env, shape, d)} {op} {self.fexpr(env, shape, d)})"
        if c == 3:
            return f"(not {self.bexpr(env, shape, d)})"
        if c == 4 and shape == "S" and not self.smooth:
            return f"(0.0 < {self.fexpr(env, 'S', d)} < 1.0)"
        return f"({self.bexpr(env, shape, d)} {self.pick(['and', 'or'])} {self.bexpr(env, shape, d)})"

    def expr(self, env, kind, shape, depth=None):
        if kind == "f":
            return self.fexpr(env, shape, depth)
        if kind == "i":
            return self.iexpr(env, shape, depth)
        return self.bexpr(env, shape, depth)

    # ---- statements ----------------------------------------------------------------------------
    def stmts(self, env, indent, count, nest):
        lines = []
        for _ in range(count):
            lines += self.stmt(env, indent, nest)
        return lines

    def new_kind_shape(self):
        if self.smooth:
            return "f", self.pick(SHAPES)
        kind = self.pick(["f", "f", "f", "f", "i", "b"])
        return kind, self.pick(SHAPES if kind == "f" else ("S", "V"))

    def stmt(self, env, indent, nest):
        pad = "    " * indent
        opts = ["assign", "assign", "update"]
        if nest < 2 and not self.force_straight:
            opts += ["for_store", "for_acc", "if", "while", "for_rows"]
        c = self.pick(opts)
        if c != "assign" and c != "update":
            self.straight = False
        if c == "assign":
            kind, shape = self.new_kind_shape()
            name = self.fresh()
            line = f"{pad}{name} = {self.expr(env, kind, shape)}"
            env[name] = Var(kind, shape)
            return [line]
        if c == "update":
            cands = [(n, v) for n, v in env.items() if not v.index_for and n not in ("n", "m")]
            if self.smooth:
                cands = [(n, v) for n, v in cands if v.kind == "f"]
            n, v = self.pick(cands)
            if v.kind == "f" and self.chance(40):
                return [f"{pad}{n} {self.pick(['+=', '-=', '*='])} {self.fexpr(env, v.shape, 2)}"]
            if v.kind == "i" and self.chance(30):
                return [f"{pad}{n} += {self.iexpr(env, v.shape, 1)}"]
            return [f"{pad}{n} = {self.expr(env, v.kind, v.shape, 2)}"]
        if c == "for_store":
            shape = self.pick(["V", "W"])
            axis = DIMS[shape]
            y = self.fresh("y")
            init = self.pick([f"zeros({axis})", f"{self.fexpr(env, shape, 1)} * 1.0",
                              f"full({axis}, {self.fexpr(env, 'S', 1)})"])
            i = self.fresh("i")
            rng = self.pick([f"range({axis})", f"range(0, {axis})", f"range({axis} - 1, -1, -1)",
                             f"range(1, {axis}, 2)", f"range(k % 3, {axis})", f"range(-{axis}, 0)"])
            inner = dict(env)
            inner[i] = Var("i", "S", index_for=(axis,))
            op = self.pick(["=", "=", "+=", "*="])
            lines = [f"{pad}{y} = {init}", f"{pad}for {i} in {rng}:"]
            lines += self.stmts(inner, indent + 1, self.int(0, 1), nest + 1)
            self._merge_updates(env, inner)
            lines.append(f"{pad}    {y}[{i}] {op} {self.fexpr(inner, 'S', 2)}")
            if not self.smooth and self.chance(30):
                lines.append(f"{pad}{y}[{self.bound(env)}:{self.bound(env)}] = {self.fexpr(env, 'S', 1)}")
            env[y] = Var("f", shape)
            return lines
        if c == "for_rows":
            B = self.fresh("B")
            i = self.fresh("i")
            lines = [f"{pad}{B} = {self.pick(['zeros((m, n))', 'A * 1.0'])}",
                     f"{pad}for {i} in {self.pick(['range(m)', 'range(m - 1, -1, -1)'])}:"]
            inner = dict(env)
            inner[i] = Var("i", "S", index_for=("m",))
            if self.chance(50):
                lines.append(f"{pad}    {B}[{i}, :] = {self.fexpr(inner, 'V', 2)}")
            else:
                j = self.fresh("j")
                lines.append(f"{pad}    for {j} in range(n):")
                inner[j] = Var("i", "S", index_for=("n",))
                lines.append(f"{pad}        {B}[{i}, {j}] {self.pick(['=', '+='])} {self.fexpr(inner, 'S', 2)}")
            env[B] = Var("f", "M")
            return lines
        if c == "for_acc":
            acc = self.fresh("acc")
            shape = self.pick(["S", "S", "V"])
            i = self.fresh("i")
            init = "0.0" if shape == "S" else self.fexpr(env, shape, 1)
            rng = self.pick(["range(n)", "range(2, n + 3)", "range(k)", "range(k, -2, -1)", "range(m)"])
            idx_for = ("n",) if rng in ("range(n)",) else (("m",) if rng == "range(m)" else ())
            inner = dict(env)
            inner[i] = Var("i", "S", index_for=idx_for)
            lines = [f"{pad}{acc} = {init}", f"{pad}for {i} in {rng}:"]
            inner[acc] = Var("f", shape)
            lines += self.stmts(inner, indent + 1, self.int(0, 2), nest + 1)
            self._merge_updates(env, inner)
            lines.append(f"{pad}    {acc} = {acc} {self.pick(['+', '-', '*'])} {self.fexpr(inner, shape, 2)}")
            env[acc] = Var("f", shape)
            return lines
        if c == "if":
            cond = self.bexpr(env, "S", 2)
            kind, shape = self.new_kind_shape()
            v = self.fresh("r")
            lines = [f"{pad}if {cond}:"]
            t_env = dict(env)
            lines += self.stmts(t_env, indent + 1, self.int(0, 1), nest + 1)
            lines.append(f"{pad}    {v} = {self.expr(t_env, kind, shape, 2)}")
            if self.chance(30):
                lines.append(f"{pad}elif {self.bexpr(env, 'S', 1)}:")
                lines.append(f"{pad}    {v} = {self.expr(env, kind, shape, 2)}")
            lines.append(f"{pad}else:")
            e_env = dict(env)
            lines += self.stmts(e_env, indent + 1, self.int(0, 1), nest + 1)
            lines.append(f"{pad}    {v} = {self.expr(e_env, kind, shape, 2)}")
            self._merge_updates(env, t_env)
            env[v] = Var(kind, shape)
            return lines
        # while with a bounded trip count
        j = self.fresh("j")
        bound = self.pick(["3", "n", "k % 4", "5", "0"])
        cond = f"{j} < {bound}"
        if self.chance(40):
            cond += f" and {self.bexpr(env, 'S', 1)}"
        lines = [f"{pad}{j} = 0", f"{pad}while {cond}:"]
        inner = dict(env)
        lines += self.stmts(inner, indent + 1, self.int(1, 2), nest + 1)
        self._merge_updates(env, inner)
        lines.append(f"{pad}    {j} += 1")
        env[j] = Var("i", "S")
        return lines

    def _merge_updates(self, env, inner):
        """Names first bound inside a block are not visible after it (nothing to merge: updates of
        existing names keep their kind and shape)."""
        return None

    # ---- the kernel ----------------------------------------------------------------------------
    def program(self, smooth=False, ftype=None, straight=False) -> Program:
        self.smooth = smooth
        self.force_straight = straight
        self.ftype = ftype or self.pick(["f64", "f64", "f32"])
        ft = self.ftype
        params = [("x", "f", "V"), ("A", "f", "M"), ("w", "f", "W"), ("s", "f", "S"), ("k", "i", "S"),
                  ("iv", "i", "V")]
        if self.chance(50):
            params.append(("y", "f", "V"))
        if self.chance(30):
            params.append(("c", "f", "S"))
        # a random order of the parameters
        order = []
        rest = list(params)
        while rest:
            order.append(rest.pop(self.int(0, len(rest) - 1)))
        params = order
        env = {name: Var(kind, shape) for name, kind, shape in params}
        env["n"] = Var("i", "S")
        env["m"] = Var("i", "S")
        decl = []
        for name, kind, shape in params:
            dt = ft if kind == "f" else "i64"
            decl.append(f"{name}: {dt}[{DIMS[shape]}]" if shape != "S" else f"{name}: {dt}")
        body = self.stmts(env, 1, self.int(1, 4), 0)
        # returns: one or two values, floats in smooth mode
        nret = self.int(1, 2)
        rets, rtypes = [], []
        recent = [n for n in env if n not in dict((p[0], 0) for p in params) and n not in ("n", "m")
                  and not env[n].index_for]
        for _ in range(nret):
            if recent and self.chance(60):
                v = self.pick(recent)
                kind, shape = env[v].kind, env[v].shape
                if smooth and kind != "f":
                    kind, shape = "f", "S"
                    e = self.fexpr(env, "S", 2)
                else:
                    e = v if self.chance(50) else self.expr(env, kind, shape, 2).replace(v, v)
                    if kind == "f" and self.chance(50):
                        e = f"({e} + {self.fexpr(env, shape, 1)})"
            else:
                kind, shape = self.new_kind_shape()
                e = self.expr(env, kind, shape)
            rets.append(e)
            rtypes.append((kind, shape))
        body.append(f"    return {', '.join(rets)}")
        src = f"def f({', '.join(decl)}):\n" + "\n".join(body) + "\n"
        return Program(src, params, ft, smooth, self.straight, rtypes)


def random_program(seed: int, smooth: bool = False, straight: bool = False) -> Program:
    r = random.Random(seed)
    return Gen(lambda lo, hi: r.randint(lo, hi)).program(smooth, straight=straight)


def programs(smooth: bool = False, straight: bool = False):
    """A hypothesis strategy of `Program`s."""
    from hypothesis import strategies as st

    @st.composite
    def strat(draw):
        return Gen(lambda lo, hi: draw(st.integers(lo, hi))).program(smooth, straight=straight)
    return strat()
