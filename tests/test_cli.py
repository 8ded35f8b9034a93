"""`dslc`, the ahead-of-time compiler: outputs, diagnostics and exit statuses (0 ok, 1 errors, 2 usage)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.diagnostics import Loc, UnsupportedError
from dsl import cli

ROOT = Path(__file__).resolve().parent.parent

GOOD = '''\
def loss(w: f64[k], X: f64[n, k], y: f64[n]) -> f64:
    r = X @ w - y
    return mean(r * r)

def scale(a: f32, x: f32[n]) -> f32[n]:
    return a * x
'''


def _write(tmp_path, text, name="k.dsl"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_and_version(capsys):
    rc, out, _ = _run(capsys, "--help")
    assert rc == 0
    for s in ("usage: dslc", "--derive", "--emit", "--target", "--check", "examples:", "load_library"):
        assert s in out
    rc, out, _ = _run(capsys, "--version")
    assert rc == 0 and re.match(r"dslc \d+\.\d+\.\d+", out)


@pytest.mark.parametrize("argv", [
    [],                                             # no file
    ["{src}"],                                      # no -o and no --check
    ["{src}", "-o", "{out}", "--derive", "hessian2"],
    ["{src}", "-o", "{out}", "--emit", "exe"],
    ["{src}", "-o", "{out}", "--target", "tpu"],
    ["{src}", "-o", "{out}", "-O7"],
    ["{src}", "-o", "{out}", "--frobnicate"],
])
def test_bad_usage_exits_2(tmp_path, capsys, argv):
    src = _write(tmp_path, GOOD)
    argv = [a.format(src=src, out=tmp_path / "out") for a in argv]
    rc, _, err = _run(capsys, *argv)
    assert rc == 2
    assert "usage: dslc" in err and "error:" in err
    assert not (tmp_path / "out").exists()


def test_build_outputs(tmp_path, capsys):
    src = _write(tmp_path, GOOD)
    out = tmp_path / "build"
    rc, stdout, err = _run(capsys, src, "-o", out, "--derive", "jvp,vjp,grad", "--emit", "so,h,ll,ir", "-O2")
    assert rc == 0, err
    assert {p.name for p in out.iterdir()} == {"libk.so", "k.h", "k.json", "k.ll", "k.ir"}
    # grad of the vector-valued kernel is skipped with a warning, not an error
    assert re.search(r"k\.dsl:5:1: warning: grad of 'scale' skipped", err)
    m = json.loads((out / "k.json").read_text())
    assert m["format"] == "dslc-library" and m["format_version"] == 1 and m["abi"] == 1
    assert m["sha256"] == hashlib.sha256((out / "libk.so").read_bytes()).hexdigest()
    assert m["targets"] == ["cpu"] and m["dslc_version"] and m["toolchain"]["llvm"] and m["opt_level"] == 2
    kernels = {k["name"]: k for k in m["kernels"]}
    assert kernels["loss"]["derivatives"] == ["jvp", "vjp", "grad"]
    assert kernels["scale"]["derivatives"] == ["jvp", "vjp"]
    symbols = [e["symbol"] for k in m["kernels"] for e in k["entry_points"]]
    assert symbols == ["loss", "loss_jvp", "loss_vjp", "loss_grad", "scale", "scale_jvp", "scale_vjp"]
    g = kernels["loss"]["entry_points"][3]["signature"]
    assert g["symbol"] == "loss_grad" and g["abi"] == 1
    assert [p["dims"] for p in g["params"]] == [["k"], ["n", "k"], ["n"]]
    assert g["outputs"][0]["dims"] == ["k"]
    # C names, not the JIT's mangled ones, plus the __py twins
    nm = subprocess.run(["nm", "-D", "--defined-only", str(out / "libk.so")], capture_output=True, text=True)
    if nm.returncode == 0:
        defined = set(re.findall(r" T (\w+)", nm.stdout))
        assert set(symbols) | {s + "__py" for s in symbols} <= defined
        assert not any(s.startswith("dslc_") for s in defined)
        undefined = subprocess.run(["nm", "-D", "--undefined-only", str(out / "libk.so")], capture_output=True,
                                   text=True).stdout
        assert "dslc_" not in undefined          # nothing only the JIT process provides (e.g. its BLAS)
    h = (out / "k.h").read_text()
    assert "int32_t loss_grad(" in h and "int32_t scale_jvp(" in h
    assert "const double* w," in h and "/* w: f64[k], C-contiguous; primal */" in h
    assert "tangent of x" in h and "cotangent of output 0" in h and "gradient of loss with respect to w" in h
    assert "caller-allocated" in h and "status" in h and "extent" in h
    assert "define" in (out / "k.ll").read_text() and "@loss_grad(" in (out / "k.ll").read_text()
    assert "func @" in (out / "k.ir").read_text()


def test_check_writes_nothing(tmp_path, capsys):
    src = _write(tmp_path, GOOD)
    rc, out, err = _run(capsys, src, "--check", "--derive", "grad,vjp")
    assert rc == 0 and "ok (2 kernels" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.dsl"]


def test_source_error_exits_1_with_diagnostic(tmp_path, capsys):
    src = _write(tmp_path, GOOD + '''
def bad(x: f64[n]) -> f64:
    y = x @ 2.0
    return sum(y)
''')
    rc, _, err = _run(capsys, src, "-o", tmp_path / "out")
    assert rc == 1
    assert re.search(rf"^{re.escape(str(src))}:9:9: error: .*'@'", err, re.M)
    assert "    y = x @ 2.0\n" in err and re.search(r"^\s+\^$", err, re.M)
    assert not (tmp_path / "out").exists()


def test_every_kernel_error_is_reported(tmp_path, capsys):
    src = _write(tmp_path, '''\
def one(x: f64[n]) -> f64:
    return sum(x @ 2.0)

def fine(x: f64[n]) -> f64:
    return sum(x)

def two(x: f64[n]) -> f64:
    return undefined_name + 1.0

def three(x, k: i64) -> f64:
    return 1.0
''')
    rc, _, err = _run(capsys, src, "--check")
    assert rc == 1
    assert re.search(r"k\.dsl:2:\d+: error: ", err)
    assert re.search(r"k\.dsl:8:12: error: .*undefined_name", err)
    assert re.search(r"k\.dsl:10:11: error: parameter 'x' of kernel 'three' has no type annotation", err)
    assert "3 errors" in err


def test_every_syntax_error_is_reported(tmp_path, capsys):
    src = _write(tmp_path, '''\
def one(x: f64[n]) -> f64:
    return sum(x +)

def fine(x: f64[n]) -> f64:
    return sum(x)

def two(x: f64[n]) -> f64:
    y = = x
    return sum(y)
''')
    rc, _, err = _run(capsys, src, "-o", tmp_path / "out")
    assert rc == 1
    assert re.search(r"k\.dsl:2:\d+: error: ", err) and re.search(r"k\.dsl:8:9: error: unexpected", err)


def test_derivative_failure_names_the_kernel(tmp_path, capsys, monkeypatch):
    src = _write(tmp_path, GOOD)

    class Broken:
        def _extra(self, pt):
            return []

        def _lower_ir(self, pt):
            raise UnsupportedError("reverse mode through this construct is not implemented",
                                   Loc(str(src), 2, 5, "    r = X @ w - y"))

    real = cli._derived
    monkeypatch.setattr(cli, "_derived", lambda k, kind: Broken() if kind == "vjp" else real(k, kind))
    rc, _, err = _run(capsys, src, "-o", tmp_path / "out", "--derive", "jvp,vjp")
    assert rc == 1
    assert re.search(r"k\.dsl:2:5: error: cannot build the vjp of kernel 'loss': reverse mode", err)
    assert re.search(r"error: cannot build the vjp of kernel 'scale'", err)
    assert not (tmp_path / "out").exists()


def test_reserved_and_clashing_names(tmp_path, capsys):
    src = _write(tmp_path, '''\
def exp(x: f64) -> f64:
    return x

def f(x: f64) -> f64:
    return x

def f_jvp(x: f64) -> f64:
    return x
''')
    rc, _, err = _run(capsys, src, "-o", tmp_path / "out", "--derive", "jvp")
    assert rc == 1
    assert "'exp' (a C keyword or C library function)" in err
    assert "clashes with" in err


@pytest.mark.skipif(cli._has_module("compiler.codegen.nvptx"), reason="this build has a CUDA backend")
def test_cuda_target_unavailable(tmp_path, capsys):
    src = _write(tmp_path, GOOD)
    for argv in (["--target", "cpu,cuda"], ["--emit", "so,ptx"]):
        rc, _, err = _run(capsys, src, "-o", tmp_path / "out", *argv)
        assert rc == 1 and "no CUDA backend" in err
    assert not (tmp_path / "out").exists()


def test_emit_mlir(tmp_path, capsys):
    """--emit mlir writes NAME.mlir when this build has the MLIR emitter, and is an error otherwise."""
    src = _write(tmp_path, GOOD)
    rc, _, err = _run(capsys, src, "-o", tmp_path / "out", "--emit", "mlir,h", "--derive", "vjp")
    try:
        from compiler.mlir import to_mlir  # noqa: F401
    except ImportError:
        assert rc == 1 and "no MLIR emitter" in err
        return
    assert rc == 0, err
    text = (tmp_path / "out" / "k.mlir").read_text()
    assert "func.func @loss_vjp(" in text and "func.func @scale(" in text
    from compiler.mlir import find_tools
    tools = find_tools()
    if tools:                                       # (mlir-opt, mlir-translate)
        r = subprocess.run([tools[0], str(tmp_path / "out" / "k.mlir")], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr


def test_missing_input_file(tmp_path, capsys):
    rc, _, err = _run(capsys, tmp_path / "nothere.dsl", "-o", tmp_path / "out")
    assert rc == 1 and "cannot read" in err


def test_console_script_subprocess(tmp_path):
    """`python -m dsl.cli` as a user runs it: statuses 0, 1 and 2 and the diagnostic format."""
    src = _write(tmp_path, GOOD)
    _write(tmp_path, "def f(x: f64[n]) -> f64:\n    return sum(x) + nope\n", "bad.dsl")
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "dsl.cli", *map(str, argv)], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=120)
    r = run("k.dsl", "-o", "build", "--derive", "grad")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "build" / "libk.so").exists() and (tmp_path / "build" / "k.h").exists()
    r = run("bad.dsl", "-o", "build2")
    assert r.returncode == 1
    assert r.stderr.startswith("bad.dsl:2:") and ": error: " in r.stderr and "^" in r.stderr
    r = run("k.dsl", "--emit")
    assert r.returncode == 2 and "usage: dslc" in r.stderr


def test_missing_c_compiler_is_a_clear_error_and_other_outputs_still_build(tmp_path, monkeypatch, capsys):
    from dsl.cli import main
    src = tmp_path / "k.dsl"
    src.write_text("def f(x: f64[n]) -> f64:\n    return sum(x * x)\n")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert main([str(src), "-o", str(tmp_path / "b"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "C compiler" in err and "--emit h,ll,ir" in err
    assert main([str(src), "-o", str(tmp_path / "c"), "--emit", "h,ll,ir", "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["k.h", "k.ir", "k.ll"]
