"""CPU threads for dslc's loop nests: a tiny fork-join runtime emitted into each LLVM module.

A parallel loop nest has its outermost loop cut into C contiguous *chunks*; the loop body is
outlined (`FunctionCodegen.parallel_loop`) into a function

    i32 chunk_fn(i8* ctx, i64 lo, i64 hi, i64 chunk, i64* err)

that runs rows [lo, hi) and returns 0 or an error-site id. `dslc.par.run` publishes the loop as a
job to the runtime's worker threads; the caller and up to T - 1 workers claim chunks one at a time
until none is left; the caller waits for the claimed ones and returns the first failing chunk
(or -1). Every chunk runs, whoever runs it.

Workers (`_pool_worker_fn`) are created on first use and live as long as the process. After a
job a worker spins (`pause`) on the job counter for SPIN_NS before it sleeps on a condition
variable. On the 2-vCPU VMs this project is measured on, creating a thread or waking an idle vCPU
costs 50-200 us, so kernels of a few hundred microseconds gained nothing from a second thread when
each call created its own (B2's 8 MB matrix-vector product: 310 us on one thread, 348 on two;
NumPy's spinning OpenBLAS threads: 154; with the pool: 160-180). Claiming chunks one at a time,
with the caller claiming too, means a worker slow to wake (asleep, or its core taken by another
library's spinning threads) never holds a call up. sched_yield in the spin loop made calls take
1-12 ms on these VMs, so the spin only pauses. The pool serves one call at a time: a call that
finds it busy (another Python thread's kernel) creates and joins its own
threads. A forked child starts with no workers (the pool notes its pid).

The chunk count depends only on the loop's size (never on the thread count), and each reduction
keeps one partial per chunk combined in chunk order, so results are the same bit for bit whatever
`DSLC_NUM_THREADS` is; and the first failing chunk is the one a sequential run would fail in, so
errors are the same too.

The runtime is plain libc (pthreads, getenv, sched_getaffinity, sysconf, clock_gettime), emitted as
internal functions: AOT shared libraries carry their own copy; the JIT compiles one for the whole
process (runtime_module.py), which its kernels call, so one pool of workers serves them all. Thread count:
`DSLC_NUM_THREADS` read at each parallel loop (so it can be changed while a process runs), else
the CPUs this process may run on (sched_getaffinity, like `os.sched_getaffinity`), at most
MAX_CHUNKS. A loop with fewer than 2 * GRAIN elements is one chunk and runs inline, with no
thread and no getenv.
"""
from __future__ import annotations

from llvmlite import ir as ll

from . import denormals
from .gemm_loops import counted

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
#: nanoseconds a worker spins for the next job before it sleeps
SPIN_NS = 300_000
_CLOCK_MONOTONIC = 1                # Linux
#: bytes reserved for a pthread_mutex_t / pthread_cond_t (40 / 48 on x86-64 glibc; zeros are
#: PTHREAD_MUTEX_INITIALIZER and PTHREAD_COND_INITIALIZER in glibc and musl)
_SYNC_BYTES = 64


def _declare(module, name, ret, args, var_arg=False):
    f = module.globals.get(name)
    return f if f is not None else ll.Function(module, ll.FunctionType(ret, args, var_arg=var_arg), name)


def _internal(module, name, fnty):
    """A runtime function: internal, and never optimised. Its speed does not matter (it starts
    jobs; the chunks are separate functions), but at O3 LLVM vectorised its small loops into
    scatters and gathers, which cost ~100 ms of compile time in every module with a parallel loop."""
    f = ll.Function(module, fnty, name)
    f.linkage = "internal"
    f.attributes.add("noinline")
    f.attributes.add("optnone")
    return f


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
    """i64 dslc.par.threads(): DSLC_NUM_THREADS, else the CPUs this process may use (cached in
    the global dslc.par.ncpu, which the pool also reads: it never runs more workers than CPUs)."""
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
    env = b.call(getenv, [b.bitcast(gname, PTR)])
    with b.if_then(b.icmp_unsigned("!=", env, ll.Constant(PTR, None))):
        k = b.call(strtol, [env, ll.Constant(ll.PointerType(PTR), None), ll.Constant(I32, 10)])
        with b.if_then(b.icmp_signed(">=", k, one)):
            b.ret(_smin(b, k, cap))
    b.ret(_smin(b, b.load(cached), cap))
    return fn


def _task_fields(b, task):
    """The fields of a TASK (pointer): chunk_fn (typed), ctx, n0, chunks, first, end, errs, status."""
    field = [b.load(b.gep(task, [ll.Constant(I32, 0), ll.Constant(I32, k)])) for k in range(8)]
    return [b.bitcast(field[0], ll.PointerType(CHUNK_FN))] + field[1:]


def _run_chunk(b, task, c):
    """Run chunk c of a task (its fields), record and return its status."""
    chunk_fn, ctx, n0, chunks, _, _, errs, status = task
    lo, hi = _chunk_bounds(b, n0, chunks, c)
    st = b.call(chunk_fn, [ctx, lo, hi, c, b.gep(errs, [b.mul(c, ll.Constant(I64, 3))])])
    b.store(st, b.gep(status, [c]))
    return st


def _worker_fn(module):
    """i8* dslc.par.worker(TASK*): run chunks [first, end) in order; stop at the first failure."""
    fn = module.globals.get("dslc.par.worker")
    if fn is not None:
        return fn
    fn = _internal(module, "dslc.par.worker", ll.FunctionType(PTR, [PTR]))
    b = ll.IRBuilder(fn.append_basic_block("entry"))
    task = _task_fields(b, b.bitcast(fn.args[0], ll.PointerType(TASK)))
    first, end = task[4], task[5]
    out = fn.append_basic_block("out")

    def body(c):
        st = _run_chunk(b, task, c)
        go_on = fn.append_basic_block("next")
        b.cbranch(b.icmp_signed("!=", st, ll.Constant(I32, 0)), out, go_on)
        b.position_at_end(go_on)
    counted(b, first, end, body)
    b.branch(out)
    b.position_at_end(out)
    b.ret(ll.Constant(PTR, None))
    return fn


def _pool(module):
    """The module's worker pool: a dict of its globals (created once)."""
    pool = getattr(module, "_dslc_pool", None)
    if pool is not None:
        return pool

    def gv(name, ty, align=8):
        g = ll.GlobalVariable(module, ty, "dslc.pool." + name)
        g.linkage, g.initializer, g.align = "internal", ll.Constant(ty, None), align
        return g
    pool = module._dslc_pool = {
        "busy": gv("busy", I32, 4),            # 1 while a call owns the pool
        "pid": gv("pid", I32, 4),              # the process the workers belong to
        "nworkers": gv("nworkers", I64),       # live workers (indices 1..nworkers)
        "gen": gv("gen", I64),                 # job counter: a new value is a new job
        "nt": gv("nt", I64),                   # threads the job may use (worker k joins if k < nt)
        "next": gv("next", I64),               # gen << 16 | the next unclaimed chunk
        "done": gv("done", I64),               # chunks of the job finished
        "sleepers": gv("sleepers", I64),       # workers waiting on the condition variable
        "job": gv("job", TASK),                # chunk_fn, ctx, n0, chunks, -, -, errs, status
        "mutex": gv("mutex", ll.ArrayType(I8, _SYNC_BYTES), 16),
        "cond": gv("cond", ll.ArrayType(I8, _SYNC_BYTES), 16),
    }
    return pool


_TIMESPEC = ll.LiteralStructType([I64, I64])    # struct timespec on 64-bit Linux


def _now_ns(module, b, ts):
    """CLOCK_MONOTONIC in nanoseconds; ts: a struct timespec alloca of the function's entry block
    (an alloca in the worker's endless loop would grow its stack at every clock reading)."""
    clock = _declare(module, "clock_gettime", I32, [I32, ll.PointerType(_TIMESPEC)])
    b.call(clock, [ll.Constant(I32, _CLOCK_MONOTONIC), ts])
    sec = b.load(b.gep(ts, [ll.Constant(I32, 0), ll.Constant(I32, 0)]))
    nsec = b.load(b.gep(ts, [ll.Constant(I32, 0), ll.Constant(I32, 1)]))
    return b.add(b.mul(sec, ll.Constant(I64, 1_000_000_000)), nsec)


def _pause(module, b):
    if module.triple.startswith(("x86_64", "i686", "i386")):
        b.call(_declare(module, "llvm.x86.sse2.pause", ll.VoidType(), []), [])


def _claim_chunks(module, b, fn, gen):
    """Run chunks of job `gen` while any is unclaimed: claim one (a compare-and-swap on `next`,
    which also carries the job's gen, so a thread that read a finished job's fields never runs
    them), run it, count it done."""
    pool = _pool(module)
    job = _task_fields(b, pool["job"])
    chunks = job[3]
    head, claim, run, out = (fn.append_basic_block(n) for n in ("claim.head", "claim.try", "claim.run",
                                                                "claim.out"))
    b.branch(head)
    b.position_at_end(head)
    c = b.load_atomic(pool["next"], "acquire", 8)
    mine = b.icmp_unsigned("==", b.lshr(c, ll.Constant(I64, 16)), gen)
    idx = b.and_(c, ll.Constant(I64, 0xFFFF))
    b.cbranch(b.and_(mine, b.icmp_signed("<", idx, chunks)), claim, out)
    b.position_at_end(claim)
    won = b.extract_value(b.cmpxchg(pool["next"], c, b.add(c, ll.Constant(I64, 1)), "acq_rel", "acquire"), 1)
    b.cbranch(won, run, head)
    b.position_at_end(run)
    _run_chunk(b, job, idx)
    b.atomic_rmw("add", pool["done"], ll.Constant(I64, 1), "release")
    b.branch(head)
    b.position_at_end(out)


def _pool_worker_fn(module):
    """i8* dslc.par.pool_worker(i8* arg), arg = k | gen << 8: worker k, created while the job
    counter was gen. Forever: wait for the next job (spin, then sleep), claim and run its chunks
    if k < the job's thread count."""
    fn = module.globals.get("dslc.par.pool_worker")
    if fn is not None:
        return fn
    fn = _internal(module, "dslc.par.pool_worker", ll.FunctionType(PTR, [PTR]))
    pool = _pool(module)
    lock = _declare(module, "pthread_mutex_lock", I32, [PTR])
    unlock = _declare(module, "pthread_mutex_unlock", I32, [PTR])
    wait = _declare(module, "pthread_cond_wait", I32, [PTR, PTR])
    mutex, cond = pool["mutex"].bitcast(PTR), pool["cond"].bitcast(PTR)
    entry, head, spin, more, check, sleep, sleep_loop, sleep_wait, woke, got = (
        fn.append_basic_block(n) for n in ("entry", "head", "spin", "spin.more", "spin.clock", "sleep",
                                           "sleep.loop", "sleep.wait", "woke", "got"))
    b = ll.IRBuilder(entry)
    arg = b.ptrtoint(fn.args[0], I64)
    k = b.and_(arg, ll.Constant(I64, 255))
    # every alloca here, in the entry block: the loop below never returns
    seen, count, deadline = b.alloca(I64), b.alloca(I64), b.alloca(I64)
    ts = b.alloca(_TIMESPEC)
    # the pool serves every kernel, and its creator may have been a kernel flushing subnormals
    # (denormals.py): workers start in the IEEE mode; a flushing kernel's chunks set their own
    denormals.set_default_mode(b)
    b.store(b.lshr(arg, ll.Constant(I64, 8)), seen)
    b.branch(head)

    b.position_at_end(head)
    b.store(ll.Constant(I64, 0), count)
    b.store(b.add(_now_ns(module, b, ts), ll.Constant(I64, SPIN_NS)), deadline)
    b.branch(spin)
    b.position_at_end(spin)
    new = b.icmp_unsigned("!=", b.load_atomic(pool["gen"], "acquire", 8), b.load(seen))
    b.cbranch(new, got, more)
    b.position_at_end(more)
    # pause, not sched_yield: on the 2-vCPU VMs a yielding spinner made calls take 1-12 ms
    _pause(module, b)
    n = b.add(b.load(count), ll.Constant(I64, 1))
    b.store(n, count)
    b.cbranch(b.icmp_unsigned("==", b.and_(n, ll.Constant(I64, 255)), ll.Constant(I64, 0)), check, spin)
    b.position_at_end(check)                   # the clock every 256 pauses (~4 us)
    b.cbranch(b.icmp_signed("<", _now_ns(module, b, ts), b.load(deadline)), spin, sleep)

    # sleep: counted in `sleepers` before the counter is read again under the mutex, so a job
    # published in between is either seen here or followed by a broadcast
    b.position_at_end(sleep)
    b.call(lock, [mutex])
    b.atomic_rmw("add", pool["sleepers"], ll.Constant(I64, 1), "seq_cst")
    b.branch(sleep_loop)
    b.position_at_end(sleep_loop)
    same = b.icmp_unsigned("==", b.load_atomic(pool["gen"], "seq_cst", 8), b.load(seen))
    b.cbranch(same, sleep_wait, woke)
    b.position_at_end(sleep_wait)
    b.call(wait, [cond, mutex])
    b.branch(sleep_loop)
    b.position_at_end(woke)
    b.atomic_rmw("sub", pool["sleepers"], ll.Constant(I64, 1), "seq_cst")
    b.call(unlock, [mutex])
    b.branch(got)

    b.position_at_end(got)
    gen = b.load_atomic(pool["gen"], "acquire", 8)
    b.store(gen, seen)
    with b.if_then(b.icmp_signed("<", k, b.load(pool["nt"]))):
        _claim_chunks(module, b, fn, gen)
    b.branch(head)
    return fn


def _run_pooled(module, b, fn, nt, job_fields, tid, pinned):
    """Run a job on the pool with up to nt > 1 threads; job_fields: the TASK fields; tid: an i64
    alloca of the caller's entry block; pinned (i64, 0 or 1): the caller runs chunk 0 itself
    first, and the workers claim from chunk 1 (FORK_PINNED). The calling
    thread claims chunks too, so a worker slow to wake never holds the call up: it only waits for
    chunks already claimed. Returns an i1: False when the pool is busy (another thread's call)."""
    pool = _pool(module)
    create = _declare(module, "pthread_create", I32,
                      [ll.PointerType(I64), PTR, ll.PointerType(ll.FunctionType(PTR, [PTR])), PTR])
    detach = _declare(module, "pthread_detach", I32, [I64])
    getpid = _declare(module, "getpid", I32, [])
    broadcast = _declare(module, "pthread_cond_broadcast", I32, [PTR])
    lock = _declare(module, "pthread_mutex_lock", I32, [PTR])
    unlock = _declare(module, "pthread_mutex_unlock", I32, [PTR])
    pool_worker = _pool_worker_fn(module)
    zero, one = ll.Constant(I64, 0), ll.Constant(I64, 1)
    got = b.extract_value(b.cmpxchg(pool["busy"], ll.Constant(I32, 0), ll.Constant(I32, 1), "acquire",
                                    "monotonic"), 1)
    with b.if_then(got):
        pid = b.call(getpid, [])
        with b.if_then(b.icmp_signed("!=", b.load(pool["pid"]), pid), likely=False):
            # first use, or a forked child: the parent's workers do not exist here
            b.store(zero, pool["nworkers"])
            b.store(zero, pool["sleepers"])
            for name in ("mutex", "cond"):
                b.store(ll.Constant(pool[name].value_type, None), pool[name])
            b.store(pid, pool["pid"])
        old = b.load(pool["gen"])

        def spawn(_):
            have = b.load(pool["nworkers"])
            with b.if_then(b.icmp_signed("<", have, b.sub(nt, one))):
                k = b.add(have, one)
                arg = b.inttoptr(b.or_(k, b.shl(old, ll.Constant(I64, 8))), PTR)
                rc = b.call(create, [tid, ll.Constant(PTR, None), pool_worker, arg])
                with b.if_then(b.icmp_signed("==", rc, ll.Constant(I32, 0))):
                    b.call(detach, [b.load(tid)])
                    b.store(k, pool["nworkers"])
        counted(b, one, nt, spawn)
        gen = b.and_(b.add(old, one), ll.Constant(I64, (1 << 47) - 1))   # fits `next` and the worker arg
        for f, v in enumerate(job_fields):
            b.store(v, b.gep(pool["job"], [ll.Constant(I32, 0), ll.Constant(I32, f)]))
        b.store(nt, pool["nt"])
        b.store(zero, pool["done"])
        b.store_atomic(b.or_(b.shl(gen, ll.Constant(I64, 16)), pinned), pool["next"], "release", 8)
        b.store_atomic(gen, pool["gen"], "seq_cst", 8)
        with b.if_then(b.icmp_signed(">", b.load_atomic(pool["sleepers"], "seq_cst", 8), zero)):
            mutex, cond = pool["mutex"].bitcast(PTR), pool["cond"].bitcast(PTR)
            b.call(lock, [mutex])
            b.call(broadcast, [cond])
            b.call(unlock, [mutex])
        with b.if_then(b.icmp_unsigned("!=", pinned, zero)):
            _run_chunk(b, [b.bitcast(job_fields[0], ll.PointerType(CHUNK_FN))] + job_fields[1:], zero)
        _claim_chunks(module, b, fn, gen)
        head, wait, done = (fn.append_basic_block(n) for n in ("pool.wait", "pool.pause", "pool.done"))
        b.branch(head)
        b.position_at_end(head)
        b.cbranch(b.icmp_signed("<", b.load_atomic(pool["done"], "acquire", 8), b.sub(job_fields[3], pinned)),
                  wait, done)
        b.position_at_end(wait)
        _pause(module, b)
        b.branch(head)
        b.position_at_end(done)
        b.store_atomic(ll.Constant(I32, 0), pool["busy"], "release", 4)
    return got


RUN = "dslc.par.run"
RUN_FNTY = ll.FunctionType(I64, [PTR, PTR, I64, I64, ll.PointerType(I64), ll.PointerType(I32)])
#: or-ed into `chunks`: on the pool, the caller runs chunk 0 itself and the workers start at
#: chunk 1 (a fork's two regions each stay on the thread whose cache holds their data)
FORK_PINNED = 1 << 32


def run_fn(module, shared: bool = False):
    """i64 dslc.par.run(chunk_fn, ctx, n0, chunks, i64* errs, i32* status): the first failing
    chunk, or -1. errs has 3 slots per chunk, status one; both have `chunks` entries (`chunks`
    may carry FORK_PINNED). `shared`: only declared (the JIT defines it once per process:
    runtime_module.py)."""
    fn = module.globals.get(RUN)
    if fn is not None:
        return fn
    if shared:
        return ll.Function(module, RUN_FNTY, RUN)
    fn = _internal(module, RUN, RUN_FNTY)
    threads, worker = _threads_fn(module), _worker_fn(module)
    create = _declare(module, "pthread_create", I32,
                      [ll.PointerType(I64), PTR, ll.PointerType(ll.FunctionType(PTR, [PTR])), PTR])
    join = _declare(module, "pthread_join", I32, [I64, ll.PointerType(PTR)])
    chunk_fn, ctx, n0, chunks_arg, errs, status = fn.args
    zero, one = ll.Constant(I64, 0), ll.Constant(I64, 1)
    entry = fn.append_basic_block("entry")
    b = ll.IRBuilder(entry)
    pinned = b.and_(b.lshr(chunks_arg, ll.Constant(I64, 32)), one)
    chunks = b.and_(chunks_arg, ll.Constant(I64, 0xFFFFFFFF))
    tasks = b.alloca(ll.ArrayType(TASK, MAX_CHUNKS))
    tids = b.alloca(ll.ArrayType(I64, MAX_CHUNKS))
    started = b.alloca(ll.ArrayType(I8, MAX_CHUNKS))
    t, tid = b.alloca(I64), b.alloca(I64)
    counted(b, zero, chunks, lambda c: b.store(ll.Constant(I32, 0), b.gep(status, [c])))
    b.store(one, t)
    with b.if_then(b.icmp_signed(">", chunks, one)):
        b.store(_smax(b, _smin(b, b.call(threads, []), chunks), one), t)
    nt0 = b.load(t)

    def task_at(k):
        return b.gep(tasks, [ll.Constant(I32, 0), k])

    def fill(k):
        first, end = _chunk_bounds(b, chunks, nt, k)
        vals = [chunk_fn, ctx, n0, chunks, first, end, errs, status]
        for f, v in enumerate(vals):
            b.store(v, b.gep(task_at(k), [ll.Constant(I32, 0), ll.Constant(I32, f)]))

    scan_block = fn.append_basic_block("scan")
    # more threads than CPUs would only take turns spinning: the pool stops at the CPU count
    pool_nt = _smin(b, nt0, b.load(module.globals["dslc.par.ncpu"]))
    with b.if_then(b.icmp_signed(">", pool_nt, one)):
        pooled = _run_pooled(module, b, fn, pool_nt, [chunk_fn, ctx, n0, chunks, zero, zero, errs, status], tid,
                             pinned)
        own = fn.append_basic_block("own.threads")
        b.cbranch(pooled, scan_block, own)
        b.position_at_end(own)
        # a fork that finds the pool busy (another thread's call) runs both regions here: a
        # thread made for every fork, one per segment of a reverse loop, would cost more
        with b.if_then(b.icmp_unsigned("!=", pinned, zero)):
            b.store(one, t)
    nt = b.load(t)
    counted(b, zero, nt, fill)

    def start(k):
        rc = b.call(create, [b.gep(tids, [ll.Constant(I32, 0), k]), ll.Constant(PTR, None), worker,
                             b.bitcast(task_at(k), PTR)])
        ok = b.icmp_signed("==", rc, ll.Constant(I32, 0))
        b.store(b.zext(ok, I8), b.gep(started, [ll.Constant(I32, 0), k]))
        with b.if_then(b.not_(ok)):              # no thread to be had: run its chunks here
            b.call(worker, [b.bitcast(task_at(k), PTR)])
    counted(b, one, nt, start)
    b.call(worker, [b.bitcast(task_at(zero), PTR)])

    def finish(k):
        with b.if_then(b.icmp_unsigned("!=", b.load(b.gep(started, [ll.Constant(I32, 0), k])), ll.Constant(I8, 0))):
            b.call(join, [b.load(b.gep(tids, [ll.Constant(I32, 0), k])), ll.Constant(ll.PointerType(PTR), None)])
    counted(b, one, nt, finish)
    b.branch(scan_block)
    b.position_at_end(scan_block)

    def scan(c):
        with b.if_then(b.icmp_signed("!=", b.load(b.gep(status, [c])), ll.Constant(I32, 0))):
            b.ret(c)
    counted(b, zero, chunks, scan)
    b.ret(ll.Constant(I64, -1))
    return fn


def chunk_count(b: ll.IRBuilder, n0, total):
    """Chunks for a loop nest of `total` elements whose outer loop has n0 rows: about
    total / GRAIN, at most MAX_CHUNKS and n0, at least 1."""
    c = b.sdiv(total, ll.Constant(I64, GRAIN))
    c = _smin(b, _smin(b, c, ll.Constant(I64, MAX_CHUNKS)), n0)
    return _smax(b, c, ll.Constant(I64, 1))
