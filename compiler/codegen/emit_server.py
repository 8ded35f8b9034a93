"""A child process that turns LLVM modules (IR text) into object code with LLVM's -O3 backend.

llvmlite lets one thread at a time into LLVM, so final code generated on a thread of the
compiling process (compiler/tiering.py) would hold up that process's next compile for as long;
a process of its own runs beside it. Run as a script (it imports llvmlite and its sibling
ir_pipeline.py only):

    python emit_server.py CPU FEATURES [IDLE_SECONDS]

Requests on stdin, replies on stdout, each an 8-byte little-endian length and that many bytes.
A request starts with b"e" (emit the module as it is) or b"O" (run dslc's O3 IR pipeline first,
ir_pipeline.py); a reply starts with b"o" (object code follows) or b"e" (an error message
follows). It exits at the end of its input or after IDLE_SECONDS (default IDLE_EXIT) without a
request, with status 0.
"""
import os
import struct
import sys

#: seconds without a request after which the server exits (it holds LLVM's memory)
IDLE_EXIT = 60.0


def _continue_on_parent_death() -> None:
    """The parent stops this process (SIGSTOP) while it waits for a compile or a kernel calling
    OpenBLAS (compiler/background.py); should the parent die meanwhile, SIGCONT lets this process
    see the end of its input and exit. Linux only (prctl PR_SET_PDEATHSIG), as is the stopping."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGCONT), 0, 0, 0)   # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> int:
    try:
        # beside the program's own threads, never before them (compiler/background.py); inherited
        # from the thread that starts it, set again here
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except (AttributeError, OSError):
        pass
    _continue_on_parent_death()
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    cpu, features = sys.argv[1], sys.argv[2]
    idle = float(sys.argv[3]) if len(sys.argv) > 3 else IDLE_EXIT
    tm = llvm.Target.from_default_triple().create_target_machine(
        cpu=cpu, features=features, opt=3, reloc="default", codemodel="jitdefault")
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            import select
            # the parent sends the next request only after this one's reply, so nothing waits
            # in `inp`'s buffer while the pipe itself is empty
            if not select.select([inp], [], [], idle)[0]:
                return 0                         # idle: the parent starts another when needed
        except (OSError, ValueError):
            pass
        head = inp.read(8)
        if len(head) < 8:
            return 0
        (n,) = struct.unpack("<Q", head)
        text = inp.read(n)
        if len(text) < n:
            return 0
        try:
            ref = llvm.parse_assembly(text[1:].decode())
            if text[:1] == b"O":
                from ir_pipeline import optimise     # this script's sibling
                ref.verify()
                ref = optimise(ref, tm)
            reply = b"o" + tm.emit_object(ref)
        except Exception as e:               # noqa: BLE001 - reported to the parent
            reply = b"e" + f"{type(e).__name__}: {e}".encode()
        out.write(struct.pack("<Q", len(reply)) + reply)
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
