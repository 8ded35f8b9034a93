"""Priority of dslc's own background work (final code: tiering.py; warm-start links: warmstart.py).

Such work must never take a CPU from the program. nice 19 is not enough on the 2-vCPU VMs this
project is measured on: beside a nice-19 process, a kernel whose matrix products run on
OpenBLAS's threads sometimes took 60 ms instead of 6 (OpenBLAS's threads wait for each other by
yielding, and a nice-19 task still gets its turn); beside a SCHED_IDLE one, never. Child
processes started from a thread inherit its policy, so the compiler and linker it runs are idle
too.
"""
from __future__ import annotations

import os
import threading


def lower_this_thread() -> None:
    """Run the calling thread (and the processes it starts) only when a CPU is otherwise idle:
    SCHED_IDLE where Linux has it, and nice 19 in any case."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, 19)       # Linux: a thread id sets one thread
    except (AttributeError, OSError):
        pass
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass
