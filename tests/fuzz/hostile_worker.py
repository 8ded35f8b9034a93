"""Run by tests/test_hostile.py in a subprocess: feed mutated and random source text to dslc.

    python tests/fuzz/hostile_worker.py SEED COUNT

For each case it prints `{"case": k, "text": ...}` before compiling (so a crash or a hang names the
input) and `{"fail": k, ...}` when something other than dslc's own errors escapes: compiling
(parse, lowering, simplification, code generation) may raise only `DslcError`s, which must carry a
location; calling the compiled kernel may also raise the runtime's IndexError / ValueError /
ZeroDivisionError / TypeError, with a message.
"""
from __future__ import annotations

import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import numpy as np  # noqa: E402

from compiler.diagnostics import DslcError  # noqa: E402
from dsl import compile_source  # noqa: E402

BASES = [
    '''def f(x: f64[n], A: f64[m, n], s: f64) -> f64[m]:
    y = zeros(m)
    for i in range(m):
        y[i] = dot(A[i, :], x) * s
    return sigmoid(y) + max(x)
''',
    '''def g(x: f32[n], k: i64) -> (f32[n], i64):
    w = x * 1.0
    if k > 2:
        w[0:2] = 3.0
    elif k < -1:
        w = -w
    else:
        w = where(w > 0.0, w, 0.5 * w)
    return w // 0.5 % 2.0, k // 3

def h(x: f32[n]) -> f32:
    return sum(g(x, 4)[0] ** 2)
''',
    '''@kernel
def e(a: f64[n, 3], b: i32, c: bool):
    t = a.T @ a
    u = mean(t, axis=0) + f64(b) - i64(c)
    return u[-1], len(a), a.shape[1], exp(u) if c and b != 0 else log1p(abs(u))
''',
]
TOKENS = ["def", "f", "(", ")", ":", "->", "return", "x", "y", "f64", "f32[n]", "i64", "[", "]", ",", "+",
          "-", "*", "/", "//", "%", "**", "@", "=", "+=", "if", "else", "elif", "for", "in", "range", "while",
          "and", "or", "not", "1", "2.5", "1e-3", "True", "sum", "max", "zeros", "\n", "    ", "\t", ".T",
          "lambda", "import", "class", "yield", "'s'", '"', "#", "\\", "...", "None", "x.shape", "axis=0",
          "@kernel", "pass", "break", "continue", "9" * 30, "1e999", "-", "(", ")"]
CHARS = "()[]{}:,.+-*/%<>=!@&|^~ \n\t#'\"\\abcdefghijklmnopqrstuvwxyz_0123456789\x00\x7f" \
        "\u00e9\u03bb\u2028\ud800\U0001f600"


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        op = rng.randint(0, 6)
        i = rng.randint(0, len(text))
        if op == 0:
            text = text[:i] + rng.choice(CHARS) + text[i:]
        elif op == 1 and text:
            j = min(len(text), i + rng.randint(1, 8))
            text = text[:i] + text[j:]
        elif op == 2 and text:
            text = text[:i] + rng.choice(CHARS) + text[i + 1:]
        elif op == 3:
            lines = text.split("\n")
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
        elif op == 4:
            lines = text.split("\n")
            a = rng.randrange(len(lines))
            lines.insert(a, lines[rng.randrange(len(lines))])
            text = "\n".join(lines)
        elif op == 5:
            text = text[:i] + " " + rng.choice(TOKENS) + " " + text[i:]
        else:
            words = text.split(" ")
            a = rng.randrange(len(words))
            words[a] = rng.choice(TOKENS)
            text = " ".join(words)
    return text


def soup(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))).decode("latin-1")
    head = "def f(x: f64[n]):\n    " if rng.random() < 0.7 else ""
    return head + " ".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 40)))


def args_for(k):
    out = []
    for d in k._declared:
        if d is None:
            out.append(1.5)
            continue
        dt = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}[d.dtype]
        if not d.dims:
            out.append(True if d.dtype == "bool" else (2 if d.dtype in ("i32", "i64") else 0.5))
        else:
            shape = tuple(d_ if isinstance(d_, int) else 3 for d_ in d.dims)
            out.append((np.arange(int(np.prod(shape))).reshape(shape) % 5 - 1.5).astype(dt))
    return out


def run_case(text):
    """None if dslc behaved, else a description of what escaped."""
    try:
        kernels = compile_source(text, filename="hostile.dsl")
    except DslcError as e:
        return None if (e.loc is None or e.loc.line >= 0) and str(e) else "DslcError without a message"
    except Exception as e:  # noqa: BLE001
        return f"compile_source raised {type(e).__name__}: {e}"
    for k in kernels.values():
        try:
            args = args_for(k)
            ptypes = k._param_types(args)
        except (TypeError, ValueError):
            continue
        except Exception as e:  # noqa: BLE001
            return f"typing the arguments raised {type(e).__name__}: {e}"
        try:
            k._caller(ptypes)
        except DslcError as e:
            if e.loc is None or not str(e):
                return f"DslcError without a location: {e!r}"
            continue
        except Exception as e:  # noqa: BLE001
            return f"compiling raised {type(e).__name__}: {e}"
        if "while" in text:
            continue          # a mutated loop condition may legitimately never end
        try:
            k(*args)
        except DslcError:
            pass
        except (IndexError, ValueError, ZeroDivisionError, TypeError) as e:
            if not str(e):
                return f"calling raised {type(e).__name__} without a message"
        except Exception as e:  # noqa: BLE001
            return f"calling raised {type(e).__name__}: {e}"
    return None


def main():
    seed, count = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    for case in range(count):
        text = mutate(rng, rng.choice(BASES)) if rng.random() < 0.8 else soup(rng)
        print(json.dumps({"case": case, "text": text}), flush=True)
        problem = run_case(text)
        if problem:
            print(json.dumps({"fail": case, "problem": problem[:500], "text": text}), flush=True)


if __name__ == "__main__":
    main()
