"""SPEC section 8: every user mistake is a documented Python exception naming the place in the
kernel's source (`file:line:col: error: message`, the source line and a caret); nothing crashes."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dsl import compile_source, kernel
from dsl import DslcError, DslNameError, DslSyntaxError, DslTypeError, UnsupportedError

DOCUMENTED = (TypeError, ValueError, NameError, SyntaxError, NotImplementedError, IndexError,
              ZeroDivisionError)
DIAG = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>[^\n]+)\n"
                  r"    (?P<src>[^\n]*)\n    (?P<pad> *)\^$")


def first_call(src: str, *args, filename="bad.dsl"):
    """Compile `src`, call its (last) kernel with args; return the exception raised."""
    with pytest.raises(DOCUMENTED) as ei:
        ks = compile_source(textwrap.dedent(src), filename=filename)
        list(ks.values())[-1](*args)
    return ei.value


def check_diag(err, line, col=None, filename="bad.dsl", contains=()):
    text = str(err)
    m = DIAG.match(text)
    assert m, f"not a file:line:col diagnostic with a caret:\n{text}"
    assert m["file"] == filename and int(m["line"]) == line, text
    if col is not None:
        assert int(m["col"]) == col, text
    assert len(m["pad"]) == int(m["col"]) - 1
    for c in contains:
        assert c in m["msg"], text
    return m


# ---- compile-time errors --------------------------------------------------------------------------------
def test_syntax_error_has_line_and_col():
    src = "def f(x: f64) -> f64:\n    y = x +\n    return y\n"
    with pytest.raises(SyntaxError) as ei:
        compile_source(src, filename="syn.dsl")
    assert isinstance(ei.value, DslSyntaxError)
    check_diag(ei.value, 2, filename="syn.dsl")


def test_syntax_error_bad_indent():
    with pytest.raises(SyntaxError) as ei:
        compile_source("def f(x: f64) -> f64:\n    y = x\n      return y\n", filename="ind.dsl")
    check_diag(ei.value, 3, filename="ind.dsl")


def test_unknown_name():
    e = first_call("""
        def f(x: f64[n]) -> f64:
            return x[0] + undefined_thing
        """, np.ones(2))
    assert isinstance(e, NameError) and isinstance(e, DslNameError)
    check_diag(e, 3, col=19, contains=("undefined_thing",))


def test_unknown_function():
    e = first_call("""
        def f(x: f64[n]) -> f64:
            return frobnicate(x)
        """, np.ones(2))
    assert isinstance(e, NameError)
    check_diag(e, 3, col=12, contains=("frobnicate",))


def test_name_assigned_in_one_branch():
    e = first_call("""
        def f(x: f64) -> f64:
            if x > 0:
                y = 1.0
            return y
        """, 1.0)
    assert isinstance(e, NameError)
    check_diag(e, 5, contains=("y",))


@pytest.mark.parametrize("src,line", [
    ("""
     def f(x: f64[n]) -> f64:
         s = 0.0
         for i in range(n):
             if x[i] < 0:
                 break
             s += x[i]
         return s
     """, 6),
    ("""
     def f(x: f64[n]) -> f64:
         s = 0.0
         for i in range(n):
             continue
         return s
     """, 5),
    ("""
     def f(x: f64[n]) -> f64[:]:
         return x[0:4:2]
     """, 3),
    ("""
     def f(x: f64[n]) -> f64:
         for i in range(n):
             return x[i]
         return 0.0
     """, 4),
    ("""
     def f(x: f64[n]) -> f64:
         s = 0.0
         for v in x:
             s += v
         return s
     """, 4),
])
def test_unsupported_constructs(src, line):
    e = first_call(src, np.ones(5))
    assert isinstance(e, NotImplementedError) and isinstance(e, UnsupportedError), repr(e)
    check_diag(e, line)


def test_with_statement_is_rejected_with_location():
    e = first_call("""
        def f(x: f64) -> f64:
            with x:
                y = x
            return y
        """, 1.0)
    assert isinstance(e, (NotImplementedError, SyntaxError)), repr(e)
    check_diag(e, 3)


def test_write_to_parameter_is_compile_error():
    e = first_call("""
        def f(x: f64[n]) -> f64[n]:
            x[0] = 1.0
            return x
        """, np.ones(3))
    assert isinstance(e, TypeError) and isinstance(e, DslcError)
    check_diag(e, 3, contains=("'x'",))
    e = first_call("""
        def f(A: f64[m, n]) -> f64[m, n]:
            A[0, :] += 1.0
            return A
        """, np.ones((2, 2)))
    check_diag(e, 3, contains=("'A'",))


@pytest.mark.parametrize("src,args,cls,line", [
    ("""
     def f(x: f64[n]) -> f64:
         if x > 0.0:
             return 1.0
         return 0.0
     """, (np.ones(2),), TypeError, 3),
    ("""
     def f(x: f64[n], y: f64[n, n]) -> f64:
         return sum(x + (y, y))
     """, (np.ones(2), np.ones((2, 2))), TypeError, 3),
    ("""
     def f(x: f64[n]) -> f64:
         y = x
     """, (np.ones(2),), TypeError, 2),
    ("""
     def f(x: f64[n]) -> f64[n]:
         return sum(x, axis=1)
     """, (np.ones(2),), ValueError, 3),
    ("""
     def f(x: f64[3]) -> f64:
         y = zeros(4)
         return sum(x + y)
     """, (np.ones(3),), (TypeError, ValueError), 4),
    ("""
     def f(x: f64[n]) -> f64:
         a, b = x
         return a
     """, (np.ones(2),), (TypeError, ValueError), 3),
    ("""
     def f(x: f64[n]) -> f64:
         return x[1.5]
     """, (np.ones(2),), TypeError, 3),
    ("""
     def f(x: f64[n]) -> f64:
         return x[0, 0]
     """, (np.ones(2),), TypeError, 3),
    ("""
     def f(x: f64[n]) -> i64:
         return sin(x[0])
     """, (np.ones(2),), TypeError, 2),
])
def test_type_errors(src, args, cls, line):
    e = first_call(src, *args)
    assert isinstance(e, cls) and isinstance(e, DslcError), repr(e)
    check_diag(e, line)


def test_kernel_call_errors():
    e = first_call("""
        def g(v: f64[k]) -> f64:
            return sum(v)

        def f(x: f64[n, n]) -> f64:
            return g(x)
        """, np.ones((2, 2)))
    assert isinstance(e, TypeError)
    check_diag(e, 6, contains=("'v'",))
    e = first_call("""
        def f(x: f64) -> f64:
            return f(x)
        """, 1.0)
    assert isinstance(e, (NameError, ValueError, TypeError))


# ---- call-time argument errors ----------------------------------------------------------------------------
@kernel
def typed(x: f32[n], A: f64[n, 3], k: i64) -> f32:
    return sum(x) + f32(A[0, 0]) + f32(k)


def test_wrong_dtype_rank_extent_names_parameter():
    x, A = np.ones(4, np.float32), np.ones((4, 3))
    assert typed(x, A, 2) == 7.0
    with pytest.raises(TypeError) as ei:
        typed(np.ones(4), A, 2)                   # float64 for f32: no silent cast
    assert "'x'" in str(ei.value) and "f32" in str(ei.value) and "float64" in str(ei.value)
    with pytest.raises((TypeError, ValueError)) as ei:
        typed(np.ones((4, 1), np.float32), A, 2)  # rank
    assert "'x'" in str(ei.value)
    with pytest.raises(ValueError) as ei:
        typed(x, np.ones((5, 3)), 2)              # n differs
    assert "'A'" in str(ei.value)
    with pytest.raises(ValueError) as ei:
        typed(x, np.ones((4, 2)), 2)              # literal extent 3
    assert "'A'" in str(ei.value)
    with pytest.raises(TypeError) as ei:
        typed(x, A, 2.5)
    assert "'k'" in str(ei.value)
    with pytest.raises(TypeError) as ei:
        typed([1.0, 2.0], A, 2)
    assert "'x'" in str(ei.value)
    with pytest.raises(TypeError):
        typed(x, A)
    with pytest.raises(TypeError):
        typed(x, A, 2, 3)
    with pytest.raises(ValueError):
        typed(x, A, 2**70)


@kernel
def untyped(x):
    return x + 1


def test_unsupported_argument_dtype():
    with pytest.raises(TypeError) as ei:
        untyped(np.ones(3, dtype=np.complex128))
    assert "'x'" in str(ei.value)
    with pytest.raises(TypeError):
        untyped("hello")


# ---- run-time errors -------------------------------------------------------------------------------------
@kernel
def oob(x: f64[n], i: i64) -> f64:
    y = x * 2.0
    return y[i]


@kernel
def oob_store(n: i64, i: i64) -> f64[n]:
    y = zeros(n)
    y[i] = 1.0
    return y


@kernel(boundscheck=False)
def no_bounds(x: f64[n], i: i64) -> f64:
    return x[i]


def test_out_of_bounds_index_names_source_line():
    x = np.ones(3)
    with pytest.raises(IndexError) as ei:
        oob(x, 3)
    text = str(ei.value)
    assert re.search(r"test_lang_errors\.py:\d+:\d+: ", text), text
    assert "return y[i]" in text and "^" in text
    line = int(re.search(r"test_lang_errors\.py:(\d+):", text).group(1))
    with open(__file__) as f:
        assert f.read().splitlines()[line - 1].strip() == "return y[i]"
    with pytest.raises(IndexError) as ei:
        oob_store(3, -4)
    assert "y[i] = 1.0" in str(ei.value)
    assert no_bounds(x, 1) == 1.0


def test_errors_are_repeatable_and_do_not_leak_state():
    for _ in range(3):
        with pytest.raises(IndexError):
            oob(np.ones(2), 7)
    assert oob(np.ones(2), 1) == 2.0


RISKY = textwrap.dedent('''
    from __future__ import annotations
    import sys
    import numpy as np
    from dsl import kernel

    @kernel
    def alloc_store(n: i64) -> f64:
        y = zeros(n)
        y[0] = 1.0
        return sum(y)

    @kernel
    def alloc2(n: i64, m: i64) -> f64:
        y = ones((n, m))
        y[0, 0] = 2.0
        return sum(y)

    @kernel
    def deep(x: f64[n]) -> f64:
        return x[n * n * n * n]

    @kernel
    def idiv(a: i64[n], b: i64[n]) -> i64[n]:
        return a // b

    cases = {
        "huge": lambda: alloc_store(2**62),
        "negative": lambda: alloc_store(-5),
        "overflow2": lambda: alloc2(2**32, 2**32),
        "neg2": lambda: alloc2(3, -1),
        "deep": lambda: deep(np.ones(70000)),
        "div": lambda: idiv(np.array([np.iinfo(np.int64).min, 5]), np.array([-1, 0])),
    }
    for name, fn in cases.items():
        try:
            fn()
            print(name, "no-error")
        except (MemoryError, ValueError, IndexError, ZeroDivisionError) as e:
            print(name, type(e).__name__)
''')


def test_risky_inputs_do_not_crash_the_interpreter(tmp_path):
    p = tmp_path / "risky.py"
    p.write_text(RISKY)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, str(p)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    got = dict(line.split() for line in r.stdout.splitlines())
    assert got == {"huge": "MemoryError", "negative": "ValueError", "overflow2": "MemoryError",
                   "neg2": "ValueError", "deep": "IndexError", "div": "ZeroDivisionError"}, r.stdout
