"""Priority of dslc's own background work (final code: tiering.py; warm-start links: warmstart.py):
nice 19, so that it takes a CPU from the program's own threads as little as the scheduler allows.
Child processes started from a thread inherit its nice value, so the server, compiler and linker
it runs are nice 19 too. And the child processes are stopped while the program waits (below).

Not SCHED_IDLE, although it would serve the program better: beside a nice-19 compile, a kernel
whose matrix products run on OpenBLAS's threads took 60-75 ms instead of 6-10 in half of the cold
runs on the 2-vCPU VMs (each wake-up of a thread waits for the nice-19 task's slice), beside a
SCHED_IDLE one never (7-30 ms, as with nothing beside it). But an unprivileged process cannot
leave SCHED_IDLE, and on a machine kept busy by other processes a SCHED_IDLE task gets no CPU at
all: `dsl.finish_compiling()` would wait without end and a short script's final code would never
reach the disk cache (seen in the test suite, beside its own nice-10 PTX check).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from time import monotonic as _now


def lower_this_thread() -> None:
    """Run the calling thread, and the processes it starts, at nice 19."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)   # Linux: one thread
    except (AttributeError, OSError):
        pass


# ---- child processes stopped while the program waits ---------------------------------------------------
# Nice 19 is not enough. OpenBLAS's threads wait for each other with sched_yield, and beside a
# nice-19 process each wake-up can wait out that process's time slice: B4's gradient, 6-10 ms,
# took 46-75 ms in about half of its first calls beside the final-code server, and in about one in
# ten beside a warm-start link. And on the 2-CPU machines a cold compile's O3 pipeline took 49-72
# ms beside a working server against 49-50 ms without (docs/performance.md). So while a kernel
# that calls OpenBLAS runs (`pausing`), or a kernel compiles (`foreground`), the child processes
# doing background work are stopped (SIGSTOP); they continue when the last of those ends. Past
# GRACE seconds stopped, a process is stopped again only once it has run as long as it was
# stopped since its work began, so a program calling such kernels back to back still gets its
# final code. Should this process die while they are stopped, they continue: the server on its
# parent's death (emit_server.py), a link's process group when the group is orphaned (POSIX sends
# it SIGHUP and SIGCONT).
_STOP, _CONT = (signal.SIGSTOP, signal.SIGCONT) if sys.platform.startswith("linux") else (None, None)
#: seconds a process may be stopped for one piece of work before it must also have run as long
GRACE = 0.25
_lock = threading.Lock()
_holders = 0
_working: list = []                    # Work in progress, in child processes
_stopped: list = []                    # those of them stopped by `hold`


class Work:
    """Work a child process is doing now: `signal(sig)` sends it a signal (to its whole process
    group where it has one)."""

    def __init__(self, signal_fn):
        self.signal = signal_fn
        self.started_at, self.stopped_at, self.stopped_s = _now(), 0.0, 0.0


def begin(signal_fn) -> Work:
    """Background work has begun in a child process; stopped at once if the program is waiting."""
    w = Work(signal_fn)
    with _lock:
        _working.append(w)
        if _holders:
            _stop(w)
    return w


def end(work: Work) -> None:
    """The child process finished `work` (it is running: only a running process finishes)."""
    with _lock:
        if work in _working:
            _working.remove(work)
        if work in _stopped:            # finished, so no longer stopped (continued by someone else)
            _stopped.remove(work)


def _stop(w: Work) -> None:
    """(Under _lock.)"""
    now = _now()
    if w.stopped_s > GRACE and w.stopped_s > now - w.started_at - w.stopped_s:
        return                          # it was stopped longer than it ran: let it run this time
    try:
        w.signal(_STOP)
    except OSError:
        return
    w.stopped_at = now
    _stopped.append(w)


def hold() -> None:
    """The program waits from now on (pair with `release`)."""
    global _holders
    if _STOP is None:
        return
    with _lock:
        _holders += 1
        if _holders == 1:
            for w in _working:
                _stop(w)


def release() -> None:
    global _holders
    if _STOP is None:
        return
    with _lock:
        _holders -= 1
        if _holders:
            return
        now = _now()
        for w in _stopped:
            w.stopped_s += now - w.stopped_at
            try:
                w.signal(_CONT)
            except OSError:
                pass
        _stopped.clear()


@contextlib.contextmanager
def foreground():
    """Work the program waits for (a kernel's compile): background processes stop meanwhile."""
    hold()
    try:
        yield
    finally:
        release()


def pausing(entry):
    """`entry` (a ctypes function: the native entry point of a kernel that calls OpenBLAS),
    wrapped to stop background processes while it runs."""
    if _STOP is None:
        return entry

    def call(*args):
        hold()
        try:
            return entry(*args)
        finally:
            release()
    return call


def _after_fork_in_child() -> None:
    global _lock, _holders, _working, _stopped
    _lock = threading.Lock()
    _holders = 0
    _working = []                       # the parent's children, not this process's
    _stopped = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
