"""Surface syntax as Python reads it: precedence, associativity, literal forms, comments,
continuations, one-line blocks (evaluated and compared with Python itself)."""
from __future__ import annotations

import numpy as np
import pytest

from dsl import compile_source

SRC = '''
def prec(x: f64, y: f64) -> (f64, f64, i64, f64, bool, f64, f64, bool):
    # a comment
    a = -x ** 2          # -(x**2)
    b = 2.0 ** -1
    c = 2 ** 3 ** 2      # right associative
    d = (x +
         y) * \\
        2
    e = not x == y
    f = x - y - 1.0      # left associative
    g = 12.0 / 3.0 / 2.0
    h = x > y and not y > x or x == y
    return a, b, c, d, e, f, g, h

def lits() -> (f64, i64, i64, f64, f64):
    return 1E3, 1_000, 0x10, .5, 2.5e-3

def quotes(x: f64['n']) -> f64['n']:
    return +x

def idx2(A: f64[m, n]) -> f64:
    return A[1][2]

def trailing(x: f64) -> (f64,):
    return (x,)

def notnot(x: f64) -> bool:
    return not not x

def semi(x: f64) -> f64:
    y = x; z = y + 1.0
    return z

def onelineif(x: f64) -> f64:
    if x > 0: return x
    return -x
'''

KS = compile_source(SRC, filename="syntax.dsl")


@pytest.mark.parametrize("x,y", [(3.0, 1.0), (-2.0, 5.0), (1.5, 1.5)])
def test_precedence_and_associativity(x, y):
    want = (-x ** 2, 2.0 ** -1, 2 ** 3 ** 2, (x + y) * 2, not x == y, x - y - 1.0, 12.0 / 3.0 / 2.0,
            x > y and not y > x or x == y)
    assert tuple(KS["prec"](x, y)) == want


def test_literal_forms_and_small_syntax():
    assert tuple(KS["lits"]()) == (1e3, 1000, 16, 0.5, 2.5e-3)
    np.testing.assert_array_equal(KS["quotes"](np.arange(3.0)), np.arange(3.0))
    assert KS["idx2"](np.arange(6.0).reshape(2, 3)) == 5.0
    r = KS["trailing"](2.0)
    assert isinstance(r, tuple) and r == (2.0,)
    assert not KS["notnot"](0.0) and KS["notnot"](0.1)
    assert KS["semi"](1.0) == 2.0
    assert KS["onelineif"](-2.0) == 2.0 and KS["onelineif"](3.0) == 3.0
