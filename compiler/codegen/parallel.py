"""CPU threads for dslc's loop nests: a tiny fork-join runtime emitted into each LLVM module.

A parallel loop nest has its outermost loop cut into C contiguous *chunks*; the loop body is
outlined (`FunctionCodegen.parallel_loop`) into a function

    i32 chunk_fn(i8* ctx, i64 lo, i64 hi, i64 chunk, i64* err)

that runs rows [lo, hi) and returns 0 or an error-site id. `dslc.par.run` starts T - 1 POSIX
threads, each running a contiguous run of chunks, runs the first run itself, joins, and returns
the first failing chunk (or -1). The chunk count depends only on the loop's size (never on the
thread count), and each reduction keeps one partial per chunk combined in chunk order, so results
are the same bit for bit whatever `DSLC_NUM_THREADS` is; and the first failing chunk is the one
a sequential run would fail in, so errors are the same too.

The runtime is plain libc (pthread_create/join, getenv, sched_getaffinity, sysconf), emitted as
internal functions, so JIT modules and AOT shared libraries carry their own copy. Thread count:
`DSLC_NUM_THREADS` read at each parallel loop (so it can be changed while a process runs), else
the CPUs this process may run on (sched_getaffinity, like `os.sched_getaffinity`), at most
MAX_CHUNKS. A loop with fewer than 2 * GRAIN elements is one chunk and runs inline, with no
thread and no getenv.
"""
from __future__ import annotations

from llvmlite import ir as ll

I8, I32, I64 = ll.IntType(8), ll.IntType(32), ll.IntType(64)
PTR = ll.PointerType(I8)

#: most chunks (and threads) per loop
MAX_CHUNKS = 64
#: elements per chunk at least (a thread start costs ~10-20 us; a chunk of 2**16 elements of a
#: fused loop is 30-200 us of work)
GRAIN = 1 << 16

CHUNK_FN = ll.FunctionType(I32, [PTR, I64, I64, I64, ll.PointerType(I64)])
# {chunk_fn, ctx, n0, chunks, first chunk, end chunk, errs, status}
TASK = ll.LiteralStructType([PTR, PTR, I64, I64, I64, I64, ll.PointerType(I64), ll.PointerType(I32)])
_SC_NPROCESSORS_ONLN = 84           # glibc and musl on Linux


def _declare(module, name, ret, args, var_arg=False):
    f = module.globals.get(name)
    return f if f is not None else ll.Function(module, ll.FunctionType(ret, args, var_arg=var_arg), name)


def _internal(module, name, fnty):
    f = ll.Function(module, fnty, name)
    f.linkage = "internal"
    return f


def _counted(b: ll.IRBuilder, fn, lo, hi, body):
    """for i in [lo, hi): body(i); body may leave the loop by returning a block to branch to."""
    pre = b.block
    head, inner, done = fn.append_basic_block("l.head"), fn.append_basic_block("l.body"), fn.append_basic_block("l.done")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64)
    i.add_incoming(lo, pre)
    b.cbranch(b.icmp_signed("<", i, hi), inner, done)
    b.position_at_end(inner)
    body(i)
    i.add_incoming(b.add(i, ll.Constant(I64, 1)), b.block)
    b.branch(head)
    b.position_at_end(done)


def _chunk_bounds(b, n0, chunks, c):
    """Rows of chunk c: c*q + min(c, r) with q, r = divmod(n0, chunks) (no overflow)."""
    q, r = b.sdiv(n0, chunks), b.srem(n0, chunks)
    lo = b.add(b.mul(c, q), _smin(b, c, r))
    c1 = b.add(c, ll.Constant(I64, 1))
    hi = b.add(b.mul(c1, q), _smin(b, c1, r))
    return lo, hi


def _smin(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _smax(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def _threads_fn(module):
    """i64 dslc.par.threads(): DSLC_NUM_THREADS, else the CPUs this process may use (cached)."""
    fn = module.globals.get("dslc.par.threads")
    if fn is not None:
        return fn
    fn = _internal(module, "dslc.par.threads", ll.FunctionType(I64, []))
    getenv = _declare(module, "getenv", PTR, [PTR])
    strtol = _declare(module, "strtol", I64, [PTR, ll.PointerType(PTR), I32])
    affinity = _declare(module, "sched_getaffinity", I32, [I32, I64, PTR])
    sysconf = _declare(module, "sysconf", I64, [I32])
    ctpop = module.declare_intrinsic("llvm.ctpop", [I64])
    name = b"DSLC_NUM_THREADS\0"
    gname = ll.GlobalVariable(module, ll.ArrayType(I8, len(name)), "dslc.par.env")
    gname.linkage, gname.global_constant = "internal", True
    gname.initializer = ll.Constant(ll.ArrayType(I8, len(name)), bytearray(name))
    cached = ll.GlobalVariable(module, I64, "dslc.par.ncpu")
    cached.linkage, cached.initializer = "internal", ll.Constant(I64, 0)
    cap = ll.Constant(I64, MAX_CHUNKS)
    one = ll.Constant(I64, 1)

    b = ll.IRBuilder(fn.append_basic_block("entry"))
    mask = b.alloca(ll.ArrayType(I64, 16))            # 1024 CPUs
    env = b.call(getenv, [b.bitcast(gname, PTR)])
    with b.if_then(b.icmp_unsigned("!=", env, ll.Constant(PTR, None))):
        k = b.call(strtol, [env, ll.Constant(ll.PointerType(PTR), None), ll.Constant(I32, 10)])
        with b.if_then(b.icmp_signed(">=", k, one)):
            b.ret(_smin(b, k, cap))
    have = b.load(cached)
    with b.if_then(b.icmp_signed("<", have, one)):
        for w in range(16):
            b.store(ll.Constant(I64, 0), b.gep(mask, [ll.Constant(I32, 0), ll.Constant(I32, w)]))
        rc = b.call(affinity, [ll.Constant(I32, 0), ll.Constant(I64, 128), b.bitcast(mask, PTR)])
        n = ll.Constant(I64, 0)
        for w in range(16):
            n = b.add(n, b.call(ctpop, [b.load(b.gep(mask, [ll.Constant(I32, 0), ll.Constant(I32, w)]))]))
        online = b.call(sysconf, [ll.Constant(I32, _SC_NPROCESSORS_ONLN)])
        n = b.select(b.and_(b.icmp_signed("==", rc, ll.Constant(I32, 0)), b.icmp_signed(">=", n, one)), n, online)
        b.store(_smax(b, n, one), cached)
    b.ret(_smin(b, b.load(cached), cap))
    return fn


def _worker_fn(module):
    """i8* dslc.par.worker(TASK*): run chunks [first, end) in order; stop at the first failure."""
    fn = module.globals.get("dslc.par.worker")
    if fn is not None:
        return fn
    fn = _internal(module, "dslc.par.worker", ll.FunctionType(PTR, [PTR]))
    b = ll.IRBuilder(fn.append_basic_block("entry"))
    task = b.bitcast(fn.args[0], ll.PointerType(TASK))
    field = [b.load(b.gep(task, [ll.Constant(I32, 0), ll.Constant(I32, k)])) for k in range(8)]
    chunk_fn = b.bitcast(field[0], ll.PointerType(CHUNK_FN))
    ctx, n0, chunks, first, end, errs, status = field[1:]
    out = fn.append_basic_block("out")

    def body(c):
        lo, hi = _chunk_bounds(b, n0, chunks, c)
        st = b.call(chunk_fn, [ctx, lo, hi, c, b.gep(errs, [b.mul(c, ll.Constant(I64, 3))])])
        b.store(st, b.gep(status, [c]))
        go_on = fn.append_basic_block("next")
        b.cbranch(b.icmp_signed("!=", st, ll.Constant(I32, 0)), out, go_on)
        b.position_at_end(go_on)
    _counted(b, fn, first, end, body)
    b.branch(out)
    b.position_at_end(out)
    b.ret(ll.Constant(PTR, None))
    return fn


def run_fn(module):
    """i64 dslc.par.run(chunk_fn, ctx, n0, chunks, i64* errs, i32* status): the first failing
    chunk, or -1. errs has 3 slots per chunk, status one; both have `chunks` entries."""
    fn = module.globals.get("dslc.par.run")
    if fn is not None:
        return fn
    fn = _internal(module, "dslc.par.run",
                   ll.FunctionType(I64, [PTR, PTR, I64, I64, ll.PointerType(I64), ll.PointerType(I32)]))
    threads, worker = _threads_fn(module), _worker_fn(module)
    create = _declare(module, "pthread_create", I32,
                      [ll.PointerType(I64), PTR, ll.PointerType(ll.FunctionType(PTR, [PTR])), PTR])
    join = _declare(module, "pthread_join", I32, [I64, ll.PointerType(PTR)])
    chunk_fn, ctx, n0, chunks, errs, status = fn.args
    zero, one = ll.Constant(I64, 0), ll.Constant(I64, 1)
    entry = fn.append_basic_block("entry")
    b = ll.IRBuilder(entry)
    tasks = b.alloca(ll.ArrayType(TASK, MAX_CHUNKS))
    tids = b.alloca(ll.ArrayType(I64, MAX_CHUNKS))
    started = b.alloca(ll.ArrayType(I8, MAX_CHUNKS))
    _counted(b, fn, zero, chunks, lambda c: b.store(ll.Constant(I32, 0), b.gep(status, [c])))
    t = b.alloca(I64)
    b.store(one, t)
    with b.if_then(b.icmp_signed(">", chunks, one)):
        b.store(_smax(b, _smin(b, b.call(threads, []), chunks), one), t)
    nt = b.load(t)

    def task_at(k):
        return b.gep(tasks, [ll.Constant(I32, 0), k])

    def fill(k):
        first, end = _chunk_bounds(b, chunks, nt, k)
        vals = [chunk_fn, ctx, n0, chunks, first, end, errs, status]
        for f, v in enumerate(vals):
            b.store(v, b.gep(task_at(k), [ll.Constant(I32, 0), ll.Constant(I32, f)]))
    _counted(b, fn, zero, nt, fill)

    def start(k):
        rc = b.call(create, [b.gep(tids, [ll.Constant(I32, 0), k]), ll.Constant(PTR, None), worker,
                             b.bitcast(task_at(k), PTR)])
        ok = b.icmp_signed("==", rc, ll.Constant(I32, 0))
        b.store(b.zext(ok, I8), b.gep(started, [ll.Constant(I32, 0), k]))
        with b.if_then(b.not_(ok)):              # no thread to be had: run its chunks here
            b.call(worker, [b.bitcast(task_at(k), PTR)])
    _counted(b, fn, one, nt, start)
    b.call(worker, [b.bitcast(task_at(zero), PTR)])

    def finish(k):
        with b.if_then(b.icmp_unsigned("!=", b.load(b.gep(started, [ll.Constant(I32, 0), k])), ll.Constant(I8, 0))):
            b.call(join, [b.load(b.gep(tids, [ll.Constant(I32, 0), k])), ll.Constant(ll.PointerType(PTR), None)])
    _counted(b, fn, one, nt, finish)

    def scan(c):
        with b.if_then(b.icmp_signed("!=", b.load(b.gep(status, [c])), ll.Constant(I32, 0))):
            b.ret(c)
    _counted(b, fn, zero, chunks, scan)
    b.ret(ll.Constant(I64, -1))
    return fn


def chunk_count(b: ll.IRBuilder, n0, total):
    """Chunks for a loop nest of `total` elements whose outer loop has n0 rows: about
    total / GRAIN, at most MAX_CHUNKS and n0, at least 1."""
    c = b.sdiv(total, ll.Constant(I64, GRAIN))
    c = _smin(b, _smin(b, c, ll.Constant(I64, MAX_CHUNKS)), n0)
    return _smax(b, c, ll.Constant(I64, 1))
