"""While a kernel that calls OpenBLAS runs, or a kernel compiles, dslc's background child processes
(the final-code server, warm-start links) are stopped, as long as each has run at least as long as
it was stopped; they continue when the program stops waiting, and when this process dies while they
are stopped (compiler/background.py)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from compiler import background, tiering
from compiler.codegen import blas
from dsl import compile_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="background processes are stopped on Linux only")

KERNELS = """
def product(a: f32[m, k], b: f32[k, n]) -> f32[m, n]:
    return a @ b

def scaled(x: f32[n]) -> f32[n]:
    return x * 2.0
"""


class _Signals(list):
    """Stands for a child process doing background work: records the signals sent to it."""

    def send_signal(self, sig):
        self.append(sig)


@pytest.fixture
def fake_work(monkeypatch, tmp_path):
    """Background work of a fake child process that has run for `ran_for` seconds."""
    from compiler import warmstart
    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DSLC_WARM_START", "0")
    made = []

    def begin(ran_for=1.0):
        tiering.wait()                 # none of this process's own background work is running
        warmstart.wait()
        sent = _Signals()
        work = background.begin(sent.send_signal)
        work.started_at -= ran_for
        made.append(work)
        return sent, work
    yield begin
    for w in made:
        background.end(w)


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
def test_a_kernel_calling_blas_stops_background_work_while_it_runs(fake_work):
    import uuid
    k = compile_source(KERNELS, filename=f"<pause {uuid.uuid4().hex}>")
    r = np.random.default_rng(0)
    a, b = r.standard_normal((64, 48)).astype(np.float32), r.standard_normal((48, 40)).astype(np.float32)
    x = r.standard_normal(1000).astype(np.float32)
    k["product"](a, b), k["scaled"](x)          # compiled, then their final code awaited
    sent, work = fake_work()
    got = k["product"](a, b)
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    assert sent == [signal.SIGSTOP, signal.SIGCONT]
    sent.clear()
    np.testing.assert_array_equal(k["scaled"](x), x * 2)
    assert sent == [], "a kernel without BLAS calls leaves background work running"
    background.end(work)
    k["product"](a, b)
    assert sent == [], "finished work is not stopped"


def test_a_compile_stops_background_work(fake_work):
    import uuid
    sent, _ = fake_work()
    k = compile_source(KERNELS, filename=f"<pause {uuid.uuid4().hex}>")
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(k["scaled"](x), x * 2)
    assert sent == [signal.SIGSTOP, signal.SIGCONT]
    sent.clear()
    k["scaled"](x)
    assert sent == [], "calls of a kernel without BLAS calls leave background work running"


def test_background_work_is_stopped_no_longer_than_it_ran(fake_work):
    """Within GRACE seconds stopped it is stopped whenever the program waits; past that only
    once it has run as long as it was stopped (times set directly: no sleeps to race)."""
    sent, work = fake_work(ran_for=0.0)
    background.hold()
    time.sleep(0.01)
    background.release()
    assert sent == [signal.SIGSTOP, signal.SIGCONT]
    assert 0.01 <= work.stopped_s < background.GRACE
    work.stopped_s = 2 * background.GRACE           # stopped past its grace, and has run ~0 s
    work.started_at = time.monotonic() - work.stopped_s
    background.hold()                  # so it keeps running this time
    background.release()
    assert sent == [signal.SIGSTOP, signal.SIGCONT]
    work.started_at -= 3 * background.GRACE         # now it has run longer than it was stopped
    background.hold()
    background.hold()                  # a second waiter at the same time: one stop, one continue
    background.release()
    assert sent[2:] == [signal.SIGSTOP]
    background.release()
    assert sent[2:] == [signal.SIGSTOP, signal.SIGCONT]
    background.hold()
    later, _ = fake_work()             # work that begins while the program waits stops at once
    assert later == [signal.SIGSTOP]
    background.release()
    assert later == [signal.SIGSTOP, signal.SIGCONT]


def test_a_module_sent_during_a_call_stops_the_real_server(monkeypatch):
    monkeypatch.delenv("DSLC_TIERED", raising=False)
    server = tiering._Server()
    try:
        background.hold()              # a call begins while the server is idle
        try:
            time.sleep(0.05)
            assert _state(server.proc.pid) != "T"
            server.send("")            # an empty module, sent during the call
            assert _settles(server.proc.pid, lambda st: st == "T")
        finally:
            background.release()
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


def _pause_script(tmp_path):
    """A script that calls a BLAS kernel, then again with fake background work registered, and
    prints how the kernel was loaded, how many compiles it queued and the signals sent."""
    script = tmp_path / "pause_script.py"
    script.write_text(textwrap.dedent(f"""
        from __future__ import annotations
        import sys
        sys.path.insert(0, {ROOT!r})
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import numpy as np
        import dsl
        from compiler import tiering
        compiles = []
        submit = tiering._submit
        tiering._submit = lambda job: (compiles.append(job), submit(job))

        @dsl.kernel
        def product(a: f32[m, k], b: f32[k, n]) -> f32[m, n]:
            return a @ b

        a = np.ones((64, 64), np.float32)
        product(a, a)
        print("warm" if "llvmlite" not in sys.modules else "jit")
        dsl.finish_compiling()
        from compiler import background
        from test_background_stop import _Signals
        sent = _Signals()
        background.begin(sent.send_signal).started_at -= 1.0
        assert float(product(a, a)[0, 0]) == 64.0
        print(len(compiles), [int(s) for s in sent])
    """))
    return script


@pytest.mark.skipif(not blas.available(), reason="needs NumPy's OpenBLAS")
def test_a_kernel_loaded_from_the_disk_cache_stops_the_server_too(tmp_path):
    script = _pause_script(tmp_path)
    env = dict(os.environ, DSLC_CACHE_DIR=str(tmp_path / "cache"), DSLC_WARM_START="0")
    runs = [subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]                  # the second finds the object code in the disk cache
    for r, compiled in zip(runs, (1, 0)):
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["jit", str(compiled), f"[{int(signal.SIGSTOP)},",
                                    f"{int(signal.SIGCONT)}]"], r.stdout


@pytest.mark.skipif(not blas.available(), reason="needs NumPy's OpenBLAS")
@pytest.mark.skipif(not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")),
                    reason="no C compiler to link warm-start libraries")
def test_a_warm_started_kernel_stops_background_work_too(tmp_path):
    script = _pause_script(tmp_path)
    env = dict(os.environ, DSLC_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("DSLC_WARM_START", None)
    runs = [subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]                  # the first links the warm-start library at its exit
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert runs[1].stdout.split() == ["warm", "0", f"[{int(signal.SIGSTOP)},", f"{int(signal.SIGCONT)}]"], \
        runs[1].stdout


def _group(leader: int) -> list:
    """The processes in `leader`'s process group."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[2]) == leader:
                        found.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return found


def test_a_link_is_stopped_with_its_whole_process_group():
    """A warm-start link runs the C compiler, which runs its own children (cc1, as, ld): all of
    them stop while the program waits."""
    import threading
    from compiler import warmstart
    warmstart.wait()
    tiering.wait()
    cmd = ["sh", "-c", "sleep 30 & sleep 30 & wait"]         # a leader and its children
    result = []
    runner = threading.Thread(target=lambda: result.append(warmstart._run_in_background(cmd, timeout=60)))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while not (_leader() and len(_group(_leader())) == 3) and time.monotonic() < deadline:
            time.sleep(0.01)
        members = _group(_leader())
        assert len(members) == 3
        background.hold()
        try:
            assert all(_settles(p, lambda st: st == "T") for p in members)
        finally:
            background.release()
        assert all(_settles(p, lambda st: st != "T") for p in members)
    finally:
        if _leader():
            os.killpg(_leader(), signal.SIGKILL)
        runner.join(30)
    assert result == [-signal.SIGKILL]


def _leader() -> int:
    """The link's process: this process's child that leads a process group of its own (0: none)."""
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid, pgrp = (int(v) for v in f.read().rsplit(")", 1)[1].split()[1:3])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == os.getpid() and pgrp == int(d):
                return int(d)
    return 0
