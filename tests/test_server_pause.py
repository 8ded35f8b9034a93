"""While a kernel that calls OpenBLAS runs, the final-code server (compiler/tiering.py) is stopped,
as long as it has run at least as long as it was stopped; it continues when the call returns, and
when its parent dies while it is stopped (codegen/emit_server.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from compiler import tiering
from compiler.codegen import blas
from dsl import compile_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the server is stopped on Linux only")

KERNELS = """
def product(a: f32[m, k], b: f32[k, n]) -> f32[m, n]:
    return a @ b

def scaled(x: f32[n]) -> f32[n]:
    return x * 2.0
"""


class _Signals:
    """Stands for the server's Popen: records the signals sent to it."""

    def __init__(self):
        self.sent = []

    def send_signal(self, sig):
        self.sent.append(sig)

    def poll(self):
        return None


class _FakeServer:
    def __init__(self, ran_for: float):
        self.proc = _Signals()
        self.in_flight = True
        self.sent_at, self.stopped_at, self.stopped_s = tiering._now() - ran_for, 0.0, 0.0


@pytest.fixture
def fake_server(monkeypatch, tmp_path):
    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DSLC_WARM_START", "0")

    def install(ran_for=1.0):
        tiering.wait()                 # no final code of this process is being generated
        server = _FakeServer(ran_for)
        monkeypatch.setattr(tiering, "_the_server", server)
        return server
    return install


def _state(pid: int) -> str:
    """The process's state letter from /proc ('T': stopped; '' once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _settles(pid: int, ok, seconds: float = 10) -> bool:
    """Whether the process's state satisfies `ok` within `seconds` (a signal acts asynchronously)."""
    deadline = time.monotonic() + seconds
    while not ok(_state(pid)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.mark.skipif(not blas.available(), reason="needs NumPy's OpenBLAS")
def test_a_kernel_calling_blas_stops_the_server_while_it_runs(fake_server):
    import uuid
    k = compile_source(KERNELS, filename=f"<pause {uuid.uuid4().hex}>")
    r = np.random.default_rng(0)
    a, b = r.standard_normal((64, 48)).astype(np.float32), r.standard_normal((48, 40)).astype(np.float32)
    x = r.standard_normal(1000).astype(np.float32)
    k["product"](a, b), k["scaled"](x)          # compiled, then their final code awaited
    server = fake_server()
    got = k["product"](a, b)
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    assert server.proc.sent == [signal.SIGSTOP, signal.SIGCONT]
    server.proc.sent.clear()
    np.testing.assert_array_equal(k["scaled"](x), x * 2)
    assert server.proc.sent == [], "a kernel without BLAS calls leaves the server running"
    server.in_flight = False
    k["product"](a, b)
    assert server.proc.sent == [], "an idle server is not stopped"


def test_the_server_is_stopped_no_longer_than_it_ran(fake_server):
    server = fake_server(ran_for=0.0)
    tiering._hold()
    time.sleep(0.05)
    tiering._release()
    assert server.proc.sent == [signal.SIGSTOP, signal.SIGCONT]
    assert server.stopped_s >= 0.05
    tiering._hold()                    # it ran for ~0 s since: it keeps running this time
    tiering._release()
    assert server.proc.sent == [signal.SIGSTOP, signal.SIGCONT]
    server.sent_at -= 1.0              # now it has run for a second
    tiering._hold()
    tiering._hold()                    # a second caller at the same time: one stop, one continue
    tiering._release()
    assert server.proc.sent[2:] == [signal.SIGSTOP]
    tiering._release()
    assert server.proc.sent[2:] == [signal.SIGSTOP, signal.SIGCONT]


def test_a_module_sent_during_a_call_stops_the_real_server(monkeypatch):
    monkeypatch.delenv("DSLC_TIERED", raising=False)
    server = tiering._Server()
    try:
        tiering._hold()                # a call begins while the server is idle
        try:
            time.sleep(0.05)
            assert _state(server.proc.pid) != "T"
            server.send("")            # an empty module, sent during the call
            assert _settles(server.proc.pid, lambda st: st == "T")
        finally:
            tiering._release()
        assert _settles(server.proc.pid, lambda st: st != "T")
        assert server.receive() is not None, "the server finishes the module once continued"
    finally:
        server.close()


def test_a_stopped_server_continues_and_exits_when_its_parent_dies():
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        sys.path.insert(0, {ROOT!r})
        from compiler import tiering
        s = tiering._Server()
        s.send("")
        assert s.receive() is not None            # running its request loop
        os.kill(s.proc.pid, signal.SIGSTOP)
        print(s.proc.pid, flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid = int(parent.stdout.readline())
        assert _settles(pid, lambda st: st == "T")
        parent.kill()
        parent.wait()
        assert _settles(pid, lambda st: st in ("", "Z"), 20), f"the server is left in state {_state(pid)!r}"
    finally:
        parent.kill()
        if pid is not None and _state(pid) not in ("", "Z"):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not blas.available(), reason="needs NumPy's OpenBLAS")
def test_a_kernel_loaded_from_the_disk_cache_stops_the_server_too(tmp_path):
    script = tmp_path / "pause_script.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import numpy as np
        import dsl
        from compiler import tiering
        from test_server_pause import KERNELS, _FakeServer
        compiles = []
        submit = tiering._submit
        tiering._submit = lambda job: (compiles.append(job), submit(job))
        k = dsl.compile_source(KERNELS, filename="pause_script_kernels.py")
        a = np.ones((64, 64), np.float32)
        k["product"](a, a)
        dsl.finish_compiling()
        tiering._the_server = server = _FakeServer(1.0)
        assert float(k["product"](a, a)[0, 0]) == 64.0
        print(len(compiles), [int(s) for s in server.proc.sent])
    """))
    env = dict(os.environ, DSLC_CACHE_DIR=str(tmp_path / "cache"), DSLC_WARM_START="0")
    runs = [subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]                  # the second finds the object code in the disk cache
    for r, compiled in zip(runs, (1, 0)):
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [str(compiled), f"[{int(signal.SIGSTOP)},", f"{int(signal.SIGCONT)}]"], r.stdout
