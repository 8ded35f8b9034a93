"""Two tiers of machine code (compiler/tiering.py): the first calls run the -O0 backend's code, the
-O3 backend's code replaces it; both compute the same bits, and only the final code is cached."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from compiler import cache, pipeline, tiering
from dsl import compile_source, grad, kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


KERNELS = """
def t_b1(x: f32[n]) -> f32:
    return sum(sin(x) * exp(-x * x) + tanh(x) ** 2)

def t_means(a: f64[m, n]) -> (f64[n], f64[m], f64):
    return mean(a, axis=0), sum(exp(a) * a, axis=1), prod(a[0, :] * 0.5 + 1.0)

def t_layer(X: f32[n, d], W1: f32[d, h], W2: f32[h, o], Y: f32[n, o]) -> f32:
    return mean((tanh(X @ W1) @ W2 - Y) ** 2)

def t_euler(x0: f64[d], A: f64[d, d], h: f64, tol: f64) -> (f64[d], i64):
    x = x0
    k = 0
    while sum(abs(x)) > tol and k < 400:
        x = x + h * (-x + tanh(A @ x))
        k += 1
    return x, k

def t_euler_loss(x0: f64[d], A: f64[d, d], h: f64, tol: f64) -> f64:
    x = x0
    k = 0
    while sum(abs(x)) > tol and k < 400:
        x = x + h * (-x + tanh(A @ x))
        k += 1
    return sum(x * x)
"""


def _fresh(text):
    """Kernels compiled for this call only: the file name is part of the compiled code's key
    (and tests/test_*_all_kernels.py compile every module-level kernel of the test files)."""
    import uuid
    return compile_source(text, filename=f"<tiering {uuid.uuid4().hex}>")


def _cases():
    k = _fresh(KERNELS)
    r = np.random.default_rng(3)
    f32 = np.float32
    x = (3 * r.standard_normal(100_003)).astype(f32)
    a = r.standard_normal((37, 129))
    X, W1 = r.standard_normal((64, 48)).astype(f32), (r.standard_normal((48, 40)) / 7).astype(f32)
    W2, Y = (r.standard_normal((40, 5)) / 7).astype(f32), r.standard_normal((64, 5)).astype(f32)
    x0, A = r.standard_normal(16), r.standard_normal((16, 16)) / 4
    return [
        ("sum of transcendentals (f32 reduction)", k["t_b1"], (x,)),
        ("its gradient", grad(k["t_b1"]), (x,)),
        ("axis reductions (f64)", k["t_means"], (a,)),
        ("a layer's loss gradient (products, tanh, mean)", grad(k["t_layer"], argnums=(1, 2)), (X, W1, W2, Y)),
        ("a while loop", k["t_euler"], (x0, A, 0.05, 1.0)),
        ("the while loop's gradient", grad(k["t_euler_loss"]), (x0, A, 0.05, 1.0)),
    ]


def _flat(out):
    parts = out if isinstance(out, tuple) else (out,)
    return [np.asarray(p) for p in parts]


def _caller(k, args):
    return k._caller(k._param_types(args))


def _hold(monkeypatch, tmp_path, mode):
    """Final code is queued here instead of on the background thread (tiering._final_tier(*job)
    makes it), by the child process (mode "server") or in this one ("thread")."""
    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DSLC_WARM_START", "0")
    if mode == "thread":
        monkeypatch.setenv("DSLC_TIERED", "thread")
    else:
        monkeypatch.delenv("DSLC_TIERED", raising=False)
    tiering.wait()
    jobs = []
    monkeypatch.setattr(tiering, "_submit", jobs.append)
    return jobs


@pytest.fixture
def held(monkeypatch, tmp_path):
    return _hold(monkeypatch, tmp_path, "server")


@pytest.mark.parametrize("mode", ["server", "thread"])
def test_both_tiers_compute_the_same_bits(monkeypatch, tmp_path, mode):
    held = _hold(monkeypatch, tmp_path, mode)
    cases = _cases()
    first = []
    for name, k, args in cases:
        caller = _caller(k, args)
        first.append((caller.entry_address, _flat(k(*args))))
    assert len(held) == len(cases), "each compile queues its final code"
    for job in held:
        tiering._final_tier(*job)
    for (name, k, args), (address, out1) in zip(cases, first):
        caller = _caller(k, args)
        assert caller.entry_address != address, f"{name}: still calling the first tier"
        out2 = _flat(k(*args))
        for a, b in zip(out1, out2):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), f"{name}: the tiers differ"


def test_results_match_numpy_in_both_tiers(held):
    x = np.linspace(-3, 3, 1001).astype(np.float32)
    want = np.sum(np.sin(x.astype(np.float64)) * np.exp(-x.astype(np.float64) ** 2)
                  + np.tanh(x.astype(np.float64)) ** 2)
    k = _fresh(KERNELS)["t_b1"]
    assert abs(float(k(x)) - want) < 1e-4 * abs(want)
    tiering._final_tier(*held.pop())
    assert abs(float(k(x)) - want) < 1e-4 * abs(want)


def test_only_the_final_code_is_cached(held):
    x = np.arange(7, dtype=np.float64)

    @kernel
    def t_cached(x: f64[n]) -> f64:
        return sum(x * x + 3.0)

    fn = t_cached.lower(x)._fn
    compiled = pipeline.compile_function(fn)
    assert compiled.upgrade is not None and compiled.key
    assert pipeline.compile_function(fn) is compiled, "a second request while the final code is made"
    assert cache.load(compiled.key) is None
    tiering._final_tier(*held.pop())
    obj, meta = cache.load(compiled.key)
    assert compiled.symbol.encode() in obj and b".t1" not in obj
    again = pipeline.compile_function(fn)
    assert again.upgrade is None and again.c_address == compiled.upgrade.addresses[0]
    assert float(t_cached(x)) == float(np.sum(x * x + 3.0))


def test_calls_during_the_switch_are_right(held):
    @kernel
    def t_busy(x: f64[n]) -> f64[n]:
        return exp(x) * 2.0 + x

    x = np.linspace(-1, 1, 4096)
    want = t_busy(x)
    np.testing.assert_allclose(want, np.exp(x) * 2.0 + x, rtol=1e-14, atol=1e-15)
    bad, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            if t_busy(x).tobytes() != want.tobytes():
                bad.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    tiering._final_tier(*held.pop())
    stop.set()
    for t in threads:
        t.join()
    assert not bad
    assert t_busy(x).tobytes() == want.tobytes()


def test_switched_off(monkeypatch, tmp_path):
    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DSLC_TIERED", "0")
    queued = []
    monkeypatch.setattr(tiering, "_submit", queued.append)

    @kernel
    def t_off(x: f64[n]) -> f64:
        return sum(sqrt(x))

    x = np.arange(9.0)
    compiled = pipeline.compile_function(t_off.lower(x)._fn)
    assert compiled.upgrade is None and not queued
    assert cache.load(compiled.key) is not None
    assert float(t_off(x)) == pytest.approx(np.sum(np.sqrt(x)), rel=1e-15)


def test_a_short_script_still_caches_its_final_code(tmp_path):
    script = tmp_path / "short.py"
    script.write_text(textwrap.dedent('''
        from __future__ import annotations
        import numpy as np
        from dsl import kernel
        from compiler import pipeline

        @kernel
        def short(x: f32[n]) -> f32:
            return sum(tanh(x) * x)

        x = np.ones(100, np.float32)
        fn = short.lower(x)._fn
        c = pipeline.compile_function(fn)
        print("tiered" if c.upgrade is not None else "final", float(short(x)))
    '''))
    env = dict(os.environ, DSLC_CACHE_DIR=str(tmp_path / "cache"), DSLC_WARM_START="0", PYTHONPATH=ROOT)
    env.pop("DSLC_TIERED", None)
    runs = [subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                           timeout=120) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    value = float(np.sum(np.tanh(np.float32(1)) * np.float32(1)) * 100)
    assert runs[0].stdout.split()[0] == "tiered"
    assert runs[1].stdout.split()[0] == "final", "the first process exited before caching its code"
    for r in runs:
        assert float(r.stdout.split()[1]) == pytest.approx(value, rel=1e-6)


def test_the_final_module_has_no_fast_math_flags():
    x = np.ones(64, np.float32)
    lowered = _fresh(KERNELS)["t_b1"].lower(x)
    assert "reassoc" not in lowered.llvm()


def test_finish_compiling_waits_for_the_final_code(monkeypatch, tmp_path):
    import dsl
    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DSLC_WARM_START", "0")
    monkeypatch.delenv("DSLC_TIERED", raising=False)

    @kernel
    def t_wait(x: f64[n]) -> f64:
        return sum(log1p(x * x))

    x = np.linspace(0, 2, 300)
    compiled = pipeline.compile_function(t_wait.lower(x)._fn)
    first = _caller(t_wait, (x,))
    assert compiled.upgrade is not None
    assert dsl.finish_compiling(timeout=60)
    assert compiled.upgrade.addresses is not None
    assert first.entry_address in compiled.upgrade.addresses
    assert float(t_wait(x)) == pytest.approx(np.sum(np.log1p(x * x)), rel=1e-13)


def test_the_server_reports_errors_and_goes_on():
    server = tiering._Server()
    try:
        server.send("this is not LLVM IR")
        assert server.receive() is None
        server.send('define i32 @f(i32 %x) {\n  %y = mul i32 %x, 3\n  ret i32 %y\n}\n')
        obj = server.receive()
        assert obj[:4] == b"\x7fELF" and b"f" in obj
    finally:
        server.close()
    assert server.proc.returncode == 0


def test_a_dead_server_is_replaced(held):
    x = np.linspace(0.5, 2, 50)

    @kernel
    def t_dead(x: f64[n]) -> f64:
        return sum(log(x) * x)

    want = float(np.sum(np.log(x) * x))
    assert float(t_dead(x)) == pytest.approx(want, rel=1e-14)
    server = tiering._server()
    server.proc.kill()
    server.proc.wait()
    job = held.pop()
    tiering._final_tier(*job)                  # a new server makes it
    assert job[-1].addresses is not None and tiering._server() is not server
    assert float(t_dead(x)) == pytest.approx(want, rel=1e-14)


def test_a_server_dying_on_a_module_leaves_the_first_tier(held, monkeypatch):
    x = np.linspace(0.5, 2, 50)

    @kernel
    def t_dies(x: f64[n]) -> f64:
        return sum(sqrt(x) + x)

    want = float(np.sum(np.sqrt(x) + x))
    assert float(t_dies(x)) == pytest.approx(want, rel=1e-14)

    class Dying:
        def send(self, text):
            pass

        def receive(self):
            raise OSError("the final-code server exited")

    monkeypatch.setattr(tiering, "_server", lambda: Dying())
    job = held.pop()
    with pytest.raises(OSError):
        tiering._final_tier(*job)
    assert job[-1].addresses is None
    assert float(t_dies(x)) == pytest.approx(want, rel=1e-14)


def test_an_idle_server_exits_and_is_not_counted_as_failed(monkeypatch):
    server = tiering._Server(idle_exit=0.2)
    assert server.proc.wait(timeout=60) == 0
    failures = tiering._server_failures
    monkeypatch.setattr(tiering, "_the_server", server)
    fresh = tiering._server()
    assert fresh is not server and fresh.proc.poll() is None
    assert tiering._server_failures == failures


def test_a_stalled_server_does_not_hold_the_exit(tmp_path):
    script = tmp_path / "stalled.py"
    script.write_text(textwrap.dedent('''
        from __future__ import annotations
        import subprocess, sys
        import numpy as np
        from dsl import kernel
        from compiler import tiering

        tiering.EXIT_BUDGET = 0.5
        server = tiering._server()
        server.proc.kill()
        server.proc.wait()
        # starved: it never answers (a stopped server would be continued by the next compile)
        server.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        @kernel
        def stalled(x: f64[n]) -> f64:
            return sum(x * 2.0)

        print(float(stalled(np.ones(10))))
    '''))
    env = dict(os.environ, DSLC_CACHE_DIR=str(tmp_path / "cache"), DSLC_WARM_START="0", PYTHONPATH=ROOT)
    env.pop("DSLC_TIERED", None)
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["20.0"]
    kernels = [p for p in (tmp_path / "cache").glob("*.dslc") if not p.name.startswith("runtime-")]
    assert not kernels, "no final code, so nothing cached"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_background_work_runs_at_nice_19(monkeypatch):
    """Final code and warm-start links take a CPU from the program's own threads as little as
    the scheduler allows (compiler/background.py): their threads and the server are nice 19."""
    from compiler import warmstart

    def nice():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = []
    monkeypatch.setattr(tiering, "_final_tier", lambda *job: seen.append(("final", nice())))
    tiering._submit(("a job",))
    assert tiering.wait(60)
    monkeypatch.setattr(warmstart, "_build", lambda *job: seen.append(("link", nice())))
    monkeypatch.setattr(warmstart, "_jobs", [("a job",)])
    worker = threading.Thread(target=warmstart._work)
    worker.start()
    worker.join(60)
    assert seen == [("final", 19), ("link", 19)]
    assert nice() != 19                                    # the caller's thread is untouched
    server = tiering._Server()
    try:
        server.send('define i32 @f(i32 %x) {\n  ret i32 %x\n}\n')
        assert server.receive()[:4] == b"\x7fELF"
        assert os.getpriority(os.PRIO_PROCESS, server.proc.pid) == 19
    finally:
        server.close()


def test_the_server_can_run_the_ir_pipeline_first():
    # 40 values through stack slots: only the IR pipeline (SROA) keeps them in registers
    body = "".join(f"  %p{i} = alloca i64\n  store i64 %x, i64* %p{i}\n" for i in range(40))
    body += "".join(f"  %v{i} = load i64, i64* %p{i}\n" for i in range(40))
    body += "  %s0 = add i64 %v0, 0\n" + "".join(f"  %s{i} = add i64 %s{i - 1}, %v{i}\n" for i in range(1, 40))
    text = f"define i64 @f(i64 %x) {{\n{body}  ret i64 %s39\n}}\n"
    server = tiering._Server()
    try:
        server.send(text)
        plain = server.receive()
        server.send(text, optimise=True)
        optimised = server.receive()
        server.send("not IR", optimise=True)
        assert server.receive() is None
    finally:
        server.close()
    assert plain[:4] == optimised[:4] == b"\x7fELF"
    assert len(optimised) < len(plain) - 200          # x * 40: a multiply, no stack traffic


def test_runtime_pieces_are_compiled_beside_the_first_kernel(tmp_path):
    """The first compile in a process queues the runtime pieces missing from the disk cache
    (codegen/runtime_module.py `prefetch`); a later kernel that needs one loads it from there."""
    script = tmp_path / "prefetch.py"
    script.write_text(textwrap.dedent('''
        from __future__ import annotations
        import numpy as np
        import dsl
        from dsl import kernel
        from compiler import cache
        from compiler.codegen import runtime_module

        @kernel
        def first(x: f64[n]) -> f64:
            return sum(x * x)

        @kernel
        def product(a: f32[m, k], b: f32[k, n]) -> f32[m, n]:
            return a @ b

        x = np.arange(5.0)
        assert float(first(x)) == 30.0
        assert dsl.finish_compiling(120)
        missing = [s for s in runtime_module.PIECES if cache.load(runtime_module._key(s)) is None]
        built = []
        build = runtime_module.build
        runtime_module.build = lambda *a: built.append(a[0]) or build(*a)
        r = np.random.default_rng(0)
        a, b = r.standard_normal((3, 4)).astype(np.float32), r.standard_normal((4, 2)).astype(np.float32)
        assert np.allclose(product(a, b), a.astype(np.float64) @ b, rtol=1e-5)
        print("missing", missing, "built", built)
    '''))
    env = dict(os.environ, DSLC_CACHE_DIR=str(tmp_path / "cache"), DSLC_WARM_START="0", PYTHONPATH=ROOT)
    env.pop("DSLC_TIERED", None)
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "missing [] built []"
