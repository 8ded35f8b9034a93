"""Two tiers of machine code for one optimised module: the first quickly, the final one later.

A cold compile spends about as long in LLVM's backend at -O3 (instruction selection, register
allocation, scheduling) as in the O3 IR pipeline. The backend at -O0 takes a fifth of that and
its code runs 10-30% slower on the benchmarks. So a kernel's first calls run the -O0 backend's code
(the first tier) and a background thread has the -O3 backend's code generated from the same
optimised module, loads it and points the callers at it (`Upgrade.then`); only that final code
goes into the disk cache. The -O3 backend runs in a child process (codegen/emit_server.py):
llvmlite lets one thread at a time into LLVM, so on a thread of this process it would hold up
the next compile for as long as it takes.

Both tiers compute the same bits: they are generated from one module, after the IR pipeline
and without fast-math flags (codegen/llvm.py `without_fast_math`), and without `contract` flags
no backend pass changes a floating-point result (tests/test_tiering.py compares them).

DSLC_TIERED=0 compiles the final code at once (the first call waits for it); DSLC_TIERED=thread
generates it on the background thread, without the child process.
"""
from __future__ import annotations

import os
import threading

from . import background

#: seconds the interpreter's exit may wait for final code still being generated (for the disk cache)
EXIT_BUDGET = 5.0


def enabled() -> bool:
    return os.environ.get("DSLC_TIERED", "1") not in ("0", "off", "no", "false")


class Upgrade:
    """The final code of one compiled function, generated in the background: `then(f)` calls
    `f(c_address, py_address)` once it is loaded (at once if it is)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._callbacks: list = []
        self.addresses = None

    def then(self, callback) -> None:
        with self._lock:
            if self.addresses is None:
                self._callbacks.append(callback)
                return
        callback(*self.addresses)

    def _finish(self, c_address: int, py_address: int) -> None:
        with self._lock:
            self.addresses = (c_address, py_address)
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            try:
                cb(c_address, py_address)
            except Exception:          # a caller that went away must not stop the others
                pass


_quick_tm = None


def compile_first_tier(jit, ref, symbol: str, store) -> tuple:
    """Load `ref`'s first-tier code into `jit` and queue its final code. `ref`: an optimised
    module defining `symbol` and `symbol + "__py"`; store(object_code): keeps the final code
    (the disk cache). Returns (c_address, py_address, Upgrade)."""
    global _quick_tm
    from .codegen import llvm as backend
    entries = (symbol, symbol + "__py")
    _only_export(ref, entries)
    first = {name: name.replace(symbol, symbol + ".t1", 1) for name in entries}
    with backend._lock:
        if _quick_tm is None:
            _quick_tm = backend.host_target_machine(opt=0)
    for name, renamed in first.items():
        ref.get_function(name).name = renamed
    jit.add_object(first[symbol], _quick_tm.emit_object(ref))
    for name, renamed in first.items():
        ref.get_function(renamed).name = name
    addresses = jit.address(first[symbol]), jit.address(first[symbol + "__py"])
    upgrade = Upgrade()
    # after the last LLVM call here: without the server, the background thread holds llvmlite's
    # lock while it works
    _submit((jit, ref, symbol, store, upgrade))
    return addresses + (upgrade,)


def _only_export(ref, entries) -> None:
    """Give every other definition internal linkage: both tiers' objects define them, and the JIT
    must not see two definitions of one global symbol."""
    for g in list(ref.functions) + list(ref.global_variables):
        if not g.is_declaration and g.name not in entries and not g.name.startswith("llvm."):
            g.linkage = "internal"


def _final_tier(jit, ref, symbol, store, upgrade) -> None:
    obj = None
    server = _server()
    if server is not None:
        from .codegen import llvm as backend
        with backend._lock:
            text = str(ref)
        try:
            server.send(text)
        except OSError:                # it was gone before it saw the module: generate it here
            server = None
    if server is not None:
        obj = server.receive()         # raises OSError if it died on the module
        if obj is None:
            return                     # it reported an error: the first tier stays
    else:
        obj = jit.tm.emit_object(ref)
    jit.add_object(symbol, obj)
    store(obj)
    upgrade._finish(jit.address(symbol), jit.address(symbol + "__py"))


class _Server:
    """codegen/emit_server.py, running as a child of this process."""

    def __init__(self, idle_exit: float | None = None):
        import subprocess
        import sys
        from .codegen import llvm as backend
        cpu, features = backend.host_cpu()
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "codegen", "emit_server.py")
        args = [sys.executable, script, cpu, features] + ([str(idle_exit)] if idle_exit is not None else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.work = None               # a module sent, its reply not read yet (background.Work)

    def send(self, text: str, optimise: bool = False) -> None:
        """Send a module, to be optimised first if `optimise` (raises OSError if the server is
        gone)."""
        import struct
        data = (b"O" if optimise else b"e") + text.encode()
        self.work = background.begin(self.proc.send_signal)    # stopped while the program waits
        try:
            self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
            self.proc.stdin.flush()
        except OSError:
            background.end(self.work)
            raise

    def receive(self):
        """The object code of the module sent; None if the server reported an error; raises
        OSError if it exited, or once the program has ended and EXIT_BUDGET is spent (a server
        starved of CPU by other processes must not hold the interpreter's exit)."""
        try:
            return self._reply()
        finally:
            background.end(self.work)
            self.work = None

    def _reply(self):
        import select
        import struct
        while not select.select([self.proc.stdout], [], [], 0.1)[0]:
            if _past_exit_budget():
                self.proc.kill()
                raise OSError("the program has ended: final code abandoned")
        head = self.proc.stdout.read(8)
        if len(head) < 8:
            raise OSError("the final-code server exited")
        (n,) = struct.unpack("<Q", head)
        reply = self.proc.stdout.read(n)
        if len(reply) < n:
            raise OSError("the final-code server exited")
        return reply[1:] if reply[:1] == b"o" else None

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()


_the_server = None
_server_failures = 0
#: after this many servers died, final code is generated on the background thread itself
MAX_SERVER_FAILURES = 2


def _server():
    """The running server, started on first use; None where it cannot run (final code is then
    generated in this process)."""
    global _the_server, _server_failures
    s = _the_server
    if s is not None and s.proc.poll() is None:
        return s
    if s is not None:
        _the_server = None
        if s.proc.returncode != 0:      # 0: it exited when idle
            _server_failures += 1
    if _server_failures >= MAX_SERVER_FAILURES or os.environ.get("DSLC_TIERED") == "thread":
        return None
    try:
        _the_server = _Server()
    except OSError:
        _server_failures = MAX_SERVER_FAILURES
        return None
    return _the_server


# ---- the background thread --------------------------------------------------------------------------
_cond = threading.Condition()
_jobs: list = []                       # final code
_later: list = []                      # compile_in_background's, after any final code
_busy = False
_worker = None


_main_ended_at = None


def _past_exit_budget() -> bool:
    """Whether the program's main thread ended more than EXIT_BUDGET seconds ago."""
    global _main_ended_at
    if threading.main_thread().is_alive():
        return False
    import time
    if _main_ended_at is None:
        _main_ended_at = time.monotonic()
    return time.monotonic() - _main_ended_at > EXIT_BUDGET


def _submit(job) -> None:
    """Queue a function's final code: job = _final_tier's arguments."""
    import functools
    _enqueue(functools.partial(_final_tier, *job))


def compile_in_background(make_ir, done) -> None:
    """On the background thread, when no final code is waiting: have the server optimise and
    compile the module make_ir() returns (LLVM IR text) and call done(object_code). Nothing
    happens where no server can run: this is for work only worth doing beside the program."""
    def job():
        server = _server()
        if server is not None:
            server.send(make_ir(), optimise=True)
            obj = server.receive()
            if obj is not None:
                done(obj)
    _enqueue(job, later=True)


def _enqueue(job, later: bool = False) -> None:
    global _worker
    with _cond:
        (_later if later else _jobs).append(job)
        if _worker is None:
            # non-daemon: a short script's final code still reaches the disk cache (EXIT_BUDGET)
            _worker = threading.Thread(target=_work, name="dslc-final-code", daemon=False)
            _worker.start()


def _work() -> None:
    global _worker, _busy
    background.lower_this_thread()     # and the server it starts
    while True:
        past = _past_exit_budget()
        with _cond:
            if not threading.main_thread().is_alive():
                _later.clear()         # the program has ended: only its final code is awaited
            if not (_jobs or _later) or past:
                _jobs.clear()
                _later.clear()
                _worker = None
                _busy = False
                _cond.notify_all()
                if _main_ended_at is not None and _the_server is not None:   # the program has ended
                    if past:
                        _the_server.proc.kill()
                    else:
                        _the_server.close()
                return
            job = (_jobs or _later).pop(0)
            _busy = True
        try:
            job()
        except OSError:                # the server died: the next job starts another
            pass
        except Exception:              # the first tier stays in use: slower, never wrong
            pass
        with _cond:
            _busy = False
            _cond.notify_all()


def _after_fork_in_child() -> None:
    global _cond, _worker, _busy, _the_server, _jobs, _later
    _cond = threading.Condition()
    _jobs = []
    _later = []
    _worker = None
    _busy = False
    _the_server = None                 # the parent's: its pipes are not this process's to use


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def wait(timeout: float | None = None) -> bool:
    """Block until every queued final code is loaded (and its callers switched to it); False if
    `timeout` seconds passed first. For benchmarks that time the steady state, and tests."""
    with _cond:
        return _cond.wait_for(lambda: not _jobs and not _later and not _busy, timeout)


__all__ = ["Upgrade", "compile_first_tier", "compile_in_background", "enabled", "wait", "EXIT_BUDGET"]
