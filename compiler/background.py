"""Priority of dslc's own background work (final code: tiering.py; warm-start links: warmstart.py):
nice 19, so that it takes a CPU from the program's own threads as little as the scheduler allows.
Child processes started from a thread inherit its nice value, so the server, compiler and linker
it runs are nice 19 too.

Not SCHED_IDLE, although it would serve the program better: beside a nice-19 compile, a kernel
whose matrix products run on OpenBLAS's threads took 60-75 ms instead of 6-10 in half of the cold
runs on the 2-vCPU VMs (each wake-up of a thread waits for the nice-19 task's slice), beside a
SCHED_IDLE one never (7-30 ms, as with nothing beside it). But an unprivileged process cannot
leave SCHED_IDLE, and on a machine kept busy by other processes a SCHED_IDLE task gets no CPU at
all: `dsl.finish_compiling()` would wait without end and a short script's final code would never
reach the disk cache (seen in the test suite, beside its own nice-10 PTX check).
"""
from __future__ import annotations

import os
import threading


def lower_this_thread() -> None:
    """Run the calling thread, and the processes it starts, at nice 19."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)   # Linux: one thread
    except (AttributeError, OSError):
        pass
