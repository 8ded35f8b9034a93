"""Hostile input: mutated and random source text, enormous or deeply nested programs, random
`dslc` command lines. dslc must answer with its own errors (DslcError subclasses, with a location;
for dslc a diagnostic and exit status 1 or 2), never another exception type, a crash or a hang.
Everything runs in subprocesses bounded in time."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "fuzz", "hostile_worker.py")


def _run_worker(seed, count, timeout=90):
    try:
        p = subprocess.run([sys.executable, WORKER, str(seed), str(count)], capture_output=True, text=True,
                           timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        last = [json.loads(x) for x in out.splitlines() if x.startswith('{"case"')][-1:]
        pytest.fail(f"dslc hung (over {timeout} s) on input: {last[0]['text']!r}" if last else "hung")
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    fails = [x for x in lines if "fail" in x]
    if p.returncode != 0:
        cases = [x for x in lines if "case" in x]
        pytest.fail(f"the process died (status {p.returncode}) on input {cases[-1]['text']!r}:\n{p.stderr[-2000:]}"
                    if cases else f"worker failed: {p.stderr[-2000:]}")
    assert not fails, "\n\n".join(f"{f['problem']}\n--- input ---\n{f['text']}" for f in fails[:5])
    assert sum("case" in x for x in lines) == count


@pytest.mark.parametrize("seed", [1, 2])
def test_mutated_and_random_source_gives_only_dslc_errors(seed):
    _run_worker(seed, 80)


ENORMOUS = {
    "brackets": "def f(x: f64):\n    return " + "(" * 5000 + "x" + ")" * 5000 + "\n",
    "calls": "def f(x: f64):\n    return " + "sin(" * 3000 + "x" + ")" * 3000 + "\n",
    "unary": "def f(x: f64):\n    return " + "-" * 50000 + "x\n",
    "not": "def f(x: bool):\n    return " + "not " * 50000 + "x\n",
    "chain": "def f(x: f64):\n    return " + " + ".join(["x"] * 50000) + "\n",
    "nested_if": "def f(x: f64):\n" + "".join("    " * (i + 1) + "if x > 0.0:\n" for i in range(400))
                 + "    " * 401 + "x = x + 1.0\n    return x\n",
    "nested_for": "def f(x: f64):\n" + "".join("    " * (i + 1) + f"for i{i} in range(2):\n" for i in range(400))
                  + "    " * 401 + "x = x + 1.0\n    return x\n",
    "huge_source": "def f(x: f64):\n    return x\n#" + "a" * 5_000_000 + "\n",
    "subscripts": "def f(x: f64[n]):\n    return x" + "[0]" * 20000 + "\n",
    "annotation": "def f(x: f64[" + "[" * 5000 + "n" + "]" * 5000 + "]):\n    return x\n",
    "long_line": "def f(x: f64):\n    return x" + " " * 2_000_000 + "\n",
}

_ENORMOUS_CHECK = textwrap.dedent("""
    import sys, json
    sys.path.insert(0, {root!r})
    from compiler.diagnostics import DslcError
    from dsl import compile_source
    cases = json.loads(sys.stdin.read())
    for name in sorted(cases):
        print(json.dumps({{"start": name}}), flush=True)
        try:
            ks = compile_source(cases[name], filename="big.dsl")
            for k in ks.values():
                k._caller(k._param_types([1.0 if d is None or d.dtype != "bool" else True for d in k._declared]))
            r = {{"ok": True}}
        except DslcError as e:
            r = {{"dslc": type(e).__name__, "msg": str(e)[:300], "line": e.loc.line if e.loc else None}}
        except BaseException as e:
            r = {{"other": type(e).__name__, "msg": str(e)[:300]}}
        r["name"] = name
        print(json.dumps(r), flush=True)
""")


def test_enormous_or_deeply_nested_input_is_rejected_clearly():
    code = _ENORMOUS_CHECK.format(root=ROOT)
    try:
        p = subprocess.run([sys.executable, "-c", code], input=json.dumps(ENORMOUS), capture_output=True, text=True,
                           timeout=120)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"no answer within 120 s; last input started: {out.splitlines()[-1:]}")
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    assert p.returncode == 0, f"the process died ({p.returncode}) on {lines[-1:]}: {p.stderr[-1500:]}"
    results = {r["name"]: r for r in lines if "name" in r}
    assert sorted(results) == sorted(ENORMOUS)
    for name, r in results.items():
        assert "other" not in r, f"{name}: {r}"
        if "dslc" in r:
            assert r["line"], r
            if name != "annotation":       # that one is plainly a syntax error
                assert "too" in r["msg"] or "nested" in r["msg"] or "long" in r["msg"], r


# ---- dslc command lines ---------------------------------------------------------------------------------
HAS_CLI = os.path.exists(os.path.join(ROOT, "dsl", "cli.py"))


@pytest.mark.skipif(not HAS_CLI, reason="dsl/cli.py (dslc) does not exist yet")
def test_random_dslc_command_lines(tmp_path):
    import random
    rng = random.Random(7)
    good = tmp_path / "k.dsl"
    good.write_text("def f(x: f64[n]) -> f64:\n    return sum(x * x)\n")
    bad = tmp_path / "bad.dsl"
    bad.write_text("def f(x: f64[n]) -> f64:\n    return sum(x * )\n")
    binary = tmp_path / "bin.dsl"
    binary.write_bytes(bytes(range(256)))
    files = [str(good), str(bad), str(binary), str(tmp_path / "missing.dsl"), str(tmp_path), "-", ""]
    opts = ["-o", "--target", "--derive", "--emit", "-O0", "-O3", "-O9", "--check", "--help", "--bogus", "-"]
    values = ["cpu", "cuda", "cpu,cuda", "jvp,vjp,grad", "so,h,ptx,ll,ir,mlir", "nonsense", "", ",",
              str(tmp_path / "out"), "/proc/forbidden"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    for _ in range(5):
        argv = [rng.choice(files)]
        for _ in range(rng.randint(0, 5)):
            argv.append(rng.choice(opts))
            if rng.random() < 0.6:
                argv.append(rng.choice(values))
        rng.shuffle(argv)
        try:
            p = subprocess.run([sys.executable, "-m", "dsl.cli"] + argv, capture_output=True, text=True,
                               timeout=120, cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dslc {argv} hung")
        assert p.returncode in (0, 1, 2), f"dslc {argv}: exit status {p.returncode}\n{p.stderr[-1500:]}"
        assert "Traceback" not in p.stderr, f"dslc {argv}:\n{p.stderr[-1500:]}"
        if p.returncode == 1:
            assert "error" in p.stderr, f"dslc {argv}: status 1 without a diagnostic: {p.stderr!r}"
