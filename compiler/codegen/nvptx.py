"""GPU code generation: the IR lowered for `nvptx64-nvidia-cuda` (default sm_90), math through
libdevice, as PTX text.

Every math call goes to libdevice (`__nv_sinf`, ...): some LLVM intrinsics (`llvm.sin.f32`
without `afn`, `llvm.exp.f32`) make the NVPTX backend abort the process, so codegen never emits
them for this target. libdevice is linked in, every function but the kernel is internalised, and
the module is optimised at O3.

Execution model: the kernel `NAME(args..., int32* status, int64* err)` runs on a grid of
co-resident blocks (a cooperative launch, `runtime.cuda.launch_cooperative`). Thread 0 of block 0
runs the kernel's sequential program: scalar code, `for`/`while` loops with carried values, small
loop nests, device `malloc` for temporaries. Every other thread waits in a worker loop. A big
parallel loop nest (the nests the CPU splits across POSIX threads: fused maps, copies, full
reductions, axis reductions keeping the outer axis, matrix-vector products, the rows of matrix
products) is a *job*: thread 0 stores the values the loop body uses into the job's context (a
global), releases the grid through a grid barrier, and every thread, thread 0 included, runs the
outer rows i = t, t + T, t + 2T, ... (T threads in all; adjacent threads touch adjacent elements
of a 1-D loop, so loads coalesce); a nest of independent elements (maps, full reductions) of
rank 2 or more is split by element the same way, its index recovered by division. Each reduction is combined per block by a tree in shared
memory; the last block to finish then combines the block partials (each thread a strided run
of them in order, then a tree), so a result depends on the grid size only, never on timing.
A second grid barrier ends the job. A failing check in a job
records the first error to claim the job's error slot (some failing row, not necessarily the
lowest); thread 0 then takes the error exit as on the CPU.

No two threads ever write one element: rows are disjoint, and accumulations that could collide
(the scatter-adds of reverse mode) are sequential code, so no atomics are needed beyond the grid
barrier's. Any launch shape works (1 x 1 runs everything in one thread); a grid wider than
MAX_BLOCKS, a block wider than 1024 threads or a 2-D/3-D launch returns status -1 (BAD_LAUNCH).
A grid whose blocks cannot all be resident at once (a hand-made launch, not cooperative) would
deadlock in its first barrier: the barrier gives up after GRID_TIMEOUT_NS without progress and
the kernel returns -2 (GRID_STUCK); the module's barrier state is then spent (load it again).
"""
from __future__ import annotations

import glob
import os
import threading

import llvmlite.binding as llvm
from llvmlite import ir as ll

from .. import ir
from ..diagnostics import UnsupportedError
from .function import I32, I64, LLTYPE, PTR, ArrayVal, FunctionCodegen

TRIPLE = "nvptx64-nvidia-cuda"
DATA_LAYOUT = "e-i64:64-i128:128-v16:16-v32:32-n16:32:64"
DEFAULT_ARCH = "sm_90"
_LIBDEVICE_MATH = {"sin", "cos", "tan", "exp", "log", "log1p", "expm1", "sqrt", "tanh", "fabs",
                   "floor", "ceil", "pow", "copysign"}
_lock = threading.Lock()
_initialised = False
_libdevice_bytes = None


class LibdeviceNotFound(UnsupportedError):
    pass


def _initialise():
    global _initialised
    with _lock:
        if not _initialised:
            llvm.initialize_all_targets()
            llvm.initialize_all_asmprinters()
            _initialised = True


def libdevice_path() -> str:
    """libdevice.10.bc: $DSLC_LIBDEVICE, the CUDA toolkit, or the nvidia-nvvm / nvidia-cuda-nvcc
    wheels."""
    env = os.environ.get("DSLC_LIBDEVICE")
    if env and os.path.exists(env):
        return env
    candidates = glob.glob("/usr/local/cuda*/nvvm/libdevice/libdevice*.bc")
    try:
        import importlib.util
        for pkg in ("nvidia.cuda_nvcc", "nvidia.nvvm", "nvidia.cu13", "nvidia"):
            spec = importlib.util.find_spec(pkg)
            for root in (spec.submodule_search_locations or []) if spec else []:
                candidates += glob.glob(os.path.join(root, "**", "libdevice*.bc"), recursive=True)
    except (ImportError, ValueError):
        pass
    if not candidates:
        raise LibdeviceNotFound(
            "libdevice (libdevice.10.bc) was not found: install the CUDA toolkit or the "
            "'nvidia-cuda-nvcc' pip package, or set DSLC_LIBDEVICE to the file")
    return sorted(candidates)[-1]


def _libdevice():
    global _libdevice_bytes
    with _lock:
        if _libdevice_bytes is None:
            with open(libdevice_path(), "rb") as f:
                _libdevice_bytes = f.read()
        return _libdevice_bytes


#: threads per block the runtime launches (a power of two: the block reduction is a tree)
BLOCK = 256
#: most blocks a launch may have (the block partials of a reduction are arrays this long)
MAX_BLOCKS = 2048
#: loop nests of fewer than 2 * GRAIN elements run in thread 0. Measured on an H100: a job inside
#: a loop costs ~3.5 us (its two grid barriers); thread 0 alone takes ~0.023 us per element of
#: `x * 0.999 + 0.001` and ~0.27 us per element of B1's math, so a job pays from ~150 and ~15
#: elements (GRAIN 4096 had B1 on 8000 elements take 1.9 ms instead of 0.05)
GRAIN = 64
#: rows per step of a 1-D job whose loads are issued ahead, divided by the arrays it reads (at
#: least 2): measured on an H100, 8 rows of one array take a copy from 1.5 to 2.1 TB/s
UNROLL = 8
_RED_SLOTS = 1024                     # shared-memory slots of the block reduction (max block size)
BAD_LAUNCH = -1                       # the status of a launch shape the kernel cannot run
GRID_STUCK = -2                       # the status when the grid could not gather (not co-resident)
GRID_TIMEOUT_NS = 10_000_000_000      # no arrival at a grid barrier for this long: give up


def _sreg(module, b, name):
    fname = f"llvm.nvvm.read.ptx.sreg.{name}"
    f = module.globals.get(fname) or ll.Function(module, ll.FunctionType(I32, []), fname)
    return b.call(f, [])


def _global(module, name, ty, addrspace=0):
    g = module.globals.get(name)
    if g is None:
        g = ll.GlobalVariable(module, ty, name, addrspace=addrspace)
        g.linkage = "internal"
        g.initializer = ll.Constant(ty, None)
    return g


def _asm(b, text):
    b.call(ll.InlineAsm(ll.FunctionType(ll.VoidType(), []), text, "~{memory}", side_effect=True), [])


def _barrier(b):
    """barrier.sync 0: every thread of the block. Not the `.aligned` form LLVM's intrinsic
    emits: thread 0 reaches a barrier from the sequential program while its warp's other
    threads wait in the worker loop (allowed from sm_70 on)."""
    _asm(b, "barrier.sync 0;")


def _now(b):
    return b.call(ll.InlineAsm(ll.FunctionType(I64, []), "mov.u64 $0, %globaltimer;", "=l", side_effect=True), [])


def _grid_sync_fn(module):
    """i32 dslc.gpu.grid_sync(): a barrier of the whole grid: a block barrier, then one thread per
    block arrives on a global counter and waits for the generation to change. Returns 1 when the
    grid cannot gather: the counter made no progress for GRID_TIMEOUT_NS while blocks other than
    block 0 were missing (a launch of more blocks than fit at once, by hand), after which every
    barrier of the launch returns 1 at once. Only block 0 missing is thread 0 at work: no limit."""
    fn = module.globals.get("dslc.gpu.grid_sync")
    if fn is not None:
        return fn
    fn = ll.Function(module, ll.FunctionType(I32, []), "dslc.gpu.grid_sync")
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    count = _global(module, "dslc.gpu.count", I32)
    gen = _global(module, "dslc.gpu.gen", I32)
    abort = _global(module, "dslc.gpu.abort", I32)
    verdict = _global(module, "dslc.gpu.verdict", I32, addrspace=3)
    zero, one = ll.Constant(I32, 0), ll.Constant(I32, 1)
    b = ll.IRBuilder(fn.append_basic_block("entry"))
    _barrier(b)
    with b.if_then(b.icmp_unsigned("==", _sreg(module, b, "tid.x"), zero)):
        b.store(zero, verdict)
        g = b.load_atomic(gen, "acquire", 4)
        last = b.sub(_sreg(module, b, "nctaid.x"), one)
        old = b.atomic_rmw("add", count, one, "acq_rel")
        with b.if_else(b.icmp_unsigned("==", old, last)) as (then, otherwise):
            with then:
                b.store_atomic(zero, count, "monotonic", 4)
                b.atomic_rmw("add", gen, one, "release")
            with otherwise:
                spin, check, stalled, give_up, done = (fn.append_basic_block(n) for n in
                                                       ("spin", "check", "stalled", "give_up", "spun"))
                start, mine = _now(b), b.add(old, one)
                pre = b.block
                b.branch(spin)
                b.position_at_end(spin)
                since = b.phi(I64)
                seen = b.phi(I32)
                spins = b.phi(I32)
                since.add_incoming(start, pre)
                seen.add_incoming(mine, pre)
                spins.add_incoming(zero, pre)
                _asm(b, "nanosleep.u32 32;")
                moved_on = b.icmp_unsigned("!=", b.load_atomic(gen, "acquire", 4), g)
                spins1 = b.add(spins, one)
                fast = fn.append_basic_block("spin.fast")
                b.cbranch(moved_on, done, fast)
                b.position_at_end(fast)
                # the slow checks every 4096 polls: polling the counter and the clock on every
                # spin of every block cost the jobs ~20% of their memory bandwidth
                rare = b.icmp_unsigned("==", b.and_(spins1, ll.Constant(I32, 4095)), zero)
                since.add_incoming(since, fast)
                seen.add_incoming(seen, fast)
                spins.add_incoming(spins1, fast)
                b.cbranch(rare, check, spin)
                b.position_at_end(check)
                aborted = b.icmp_unsigned("!=", b.load_atomic(abort, "monotonic", 4), zero)
                now = _now(b)
                c = b.load_atomic(count, "monotonic", 4)
                progress = b.icmp_unsigned("!=", c, seen)
                since2 = b.select(progress, now, since)
                stuck = b.and_(b.icmp_unsigned("<", c, last),
                               b.icmp_unsigned(">", b.sub(now, since2), ll.Constant(I64, GRID_TIMEOUT_NS)))
                b.cbranch(b.or_(aborted, stuck), give_up, stalled)
                b.position_at_end(give_up)
                b.store_atomic(one, abort, "monotonic", 4)
                b.store(one, verdict)
                b.branch(done)
                b.position_at_end(stalled)
                since.add_incoming(since2, stalled)
                seen.add_incoming(c, stalled)
                spins.add_incoming(spins1, stalled)
                b.branch(spin)
                b.position_at_end(done)
    _barrier(b)
    result = b.load(verdict)
    _barrier(b)                          # before a later barrier's leader resets the verdict
    b.ret(result)
    return fn


class NVPTXCodegen(FunctionCodegen):
    """The CPU code generator with math routed to libdevice (no vector math, no BLAS) and parallel
    loop nests run as jobs of the whole grid (see the module docstring)."""

    grain = GRAIN
    flat_jobs = True                    # a 2-D map split by row would not coalesce its loads

    def __init__(self, module, fn, symbol, boundscheck=True):
        super().__init__(module, fn, symbol, boundscheck, threads=True)
        self.jobs = []                  # (chunk function, its context global)
        self._finals = {}               # partials global's name -> the global its total goes to
        self._group_sums = None         # in a group of rows: id(slot) -> its pending narrow terms

    def call_math(self, name: str, dtype: str, args, op=None):
        if name not in _LIBDEVICE_MATH:
            raise UnsupportedError(f"no GPU lowering for math function '{name}'")
        fname = f"__nv_{name}{'f' if dtype == 'f32' else ''}"
        ty = LLTYPE[dtype]
        f = self.module.globals.get(fname)
        if f is None:
            f = ll.Function(self.module, ll.FunctionType(ty, [ty] * len(args)), fname)
        return self.b.call(f, args)

    def elem_ptr(self, av, idx):
        # a job's arrays are all in global memory (parameters, device malloc; never thread 0's
        # stack, see _can_capture): ld.global/st.global skip the generic address check
        if not self.in_parallel:
            return super().elem_ptr(av, idx)
        b = self.b
        base = b.addrspacecast(av.ptr, ll.PointerType(av.ptr.type.pointee, addrspace=1))
        return b.gep(base, [self.flat(av.dims, idx)], inbounds=True)

    def sreg(self, name):
        return self.b.zext(_sreg(self.module, self.b, name), I64)

    def can_fork(self) -> bool:
        return False                    # a fork's regions run one after the other in the thread

    # ---- parallel loop hooks (FunctionCodegen._outlined_loop) ---------------------------------
    def _chunk_count(self, n0, total):
        b = self.b
        big = b.and_(b.icmp_signed(">=", total, self.i64(2 * self.grain)), b.icmp_signed(">=", n0, self.i64(2)))
        return b.select(big, self.i64(2), self.i64(1))

    def _partials_buffer(self, dtype):
        m = self.module
        part = _global(m, m.get_unique_name("dslc.gpu.partials"), ll.ArrayType(LLTYPE[dtype], MAX_BLOCKS))
        self._finals[part.name] = _global(m, m.get_unique_name("dslc.gpu.final"), LLTYPE[dtype])
        return part

    def _can_capture(self, captured) -> bool:
        # thread 0's stack is its own: a loop body reading it must run in thread 0
        return not any(_on_stack(v) for v in captured)

    def _inline_single_chunk(self) -> bool:
        return True                     # a chunk function has block barriers: never one thread alone

    def _chunk_rows(self, lo, hi, body, dims, reads):
        """Rows lo, lo + S, lo + 2S, ... below hi (S: the grid's threads). A 1-D loop whose body
        reads arrays of its own extent runs UNROLL rows per step with every such load issued
        first: one load in flight per thread cannot cover the memory latency."""
        b = self.b
        step = b.mul(self.sreg("nctaid.x"), self.sreg("ntid.x"))
        ahead = []
        if len(dims) == 1:
            for r in self.leaf_reads(reads):
                av = self.values.get(r)
                if (isinstance(av, ArrayVal) and av.lazy is None and av.ptr is not None
                        and len(av.dims) == 1 and r.type.shape[0] != 1):
                    ahead.append(av)
        if not ahead or UNROLL < 2:
            self.for_range(hi, body, start=lo, step=step)
            return
        unroll = max(2, UNROLL // len(ahead)) if len(ahead) > 1 else UNROLL
        pre = b.block
        head = self.llfn.append_basic_block("rows.head")
        group = self.llfn.append_basic_block("rows.group")
        rest = self.llfn.append_basic_block("rows.rest")
        # i < last: rows i .. i+(U-1)S exist, and (checked once) every array loaded ahead has them
        # (the body indexes an array of the loop's extent by the row; extents are equal by the
        # kernel's shape checks, but as other SSA values)
        fits = ll.Constant(ll.IntType(1), 1)
        for av in ahead:
            fits = b.and_(fits, b.icmp_signed(">=", av.dims[0], hi))
        last = b.select(fits, b.sub(hi, b.mul(step, self.i64(unroll - 1))), lo)
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64)
        i.add_incoming(lo, pre)
        b.cbranch(b.icmp_signed("<", i, last), group, rest)
        b.position_at_end(group)
        rows = [i] + [b.add(i, b.mul(step, self.i64(u))) for u in range(1, unroll)]
        loaded = {}
        for r in rows:
            for av in ahead:
                loaded[(id(av.ptr), (id(r),))] = self.load_elem(av, [r])
        self._preloaded, self._group_sums = loaded, {}
        try:
            for r in rows:
                body(r)
            self._flush_group_sums()
        finally:
            self._preloaded, self._group_sums = None, None
        i.add_incoming(b.add(i, b.mul(step, self.i64(unroll))), b.block)
        b.branch(head)
        b.position_at_end(rest)
        self.for_range(hi, body, start=i, step=step)

    def accumulate(self, slot, v, dt, adt, fold):
        # float32 sums accumulate in float64, but converting every element costs as much issue
        # time as ~8 float32 operations (H100: 16 conversions per clock and SM): a group of rows
        # loaded ahead is summed in float32 first and added to the total once
        if self._group_sums is None or dt == adt:
            super().accumulate(slot, v, dt, adt, fold)
            return
        self._group_sums.setdefault(id(slot), (slot, dt, adt, fold, []))[4].append(v)

    def _flush_group_sums(self):
        """Add each group's float32 sum (a pairwise tree, for short dependency chains) to its total."""
        b = self.b
        for slot, dt, adt, fold, vs in self._group_sums.values():
            while len(vs) > 1:
                vs = [b.fadd(vs[k], vs[k + 1]) if k + 1 < len(vs) else vs[k] for k in range(0, len(vs), 2)]
            b.store(fold(b.load(slot), self.convert(vs[0], dt, adt)), slot)

    def _finish_chunk(self, accs, slots, partials, chunk):
        # a failed row still reaches the block reduction: its barriers need every thread
        b = self.b
        ok_end = b.block
        reduce = self.llfn.append_basic_block("reduce")
        b.branch(reduce)
        b.position_at_end(self.fail_block)
        failed = b.load(self.status)
        fail_end = b.block
        b.branch(reduce)
        b.position_at_end(reduce)
        st = b.phi(I32)
        st.add_incoming(ll.Constant(I32, 0), ok_end)
        st.add_incoming(failed, fail_end)
        zero = self.i64(0)
        for (dt, _, combine), s_, part in zip(accs, slots, partials):
            self._block_reduce(b.load(s_), dt, combine, b.gep(part, [zero, self.sreg("ctaid.x")]))
        if accs:
            self._last_block_combines(accs, partials)
        b.ret(st)

    def _last_block_combines(self, accs, partials):
        """The last block to finish combines every block's partial into the job's totals: thread
        t folds partials t, t + T, ... in order, then the block's tree; the same order whichever
        block is last."""
        b, m = self.b, self.module
        done = _global(m, "dslc.gpu.done", I32)
        flag = _global(m, "dslc.gpu.last", I32, addrspace=3)
        tid, nt, nblocks = self.sreg("tid.x"), self.sreg("ntid.x"), self.sreg("nctaid.x")
        with b.if_then(b.icmp_signed("==", tid, self.i64(0))):
            b.fence("seq_cst")
            old = b.atomic_rmw("add", done, ll.Constant(I32, 1), "acq_rel")
            last = b.icmp_unsigned("==", b.zext(old, I64), b.sub(nblocks, self.i64(1)))
            b.store(b.zext(last, I32), flag)
        _barrier(b)
        with b.if_then(b.icmp_unsigned("!=", b.load(flag), ll.Constant(I32, 0))):
            b.fence("seq_cst")
            for (dt, init, combine), part in zip(accs, partials):
                acc = self.alloca_scalar(dt, init)
                self.for_range(nblocks, lambda c: b.store(
                    combine(b.load(acc), b.load(b.gep(part, [self.i64(0), c]))), acc), start=tid, step=nt)
                self._block_reduce(b.load(acc), dt, combine, self._finals[part.name])
            with b.if_then(b.icmp_signed("==", tid, self.i64(0))):
                b.store_atomic(ll.Constant(I32, 0), done, "monotonic", 4)
        _barrier(b)

    def _block_reduce(self, v, dt, combine, target):
        """*target = the combination of v over the block's threads (a tree in shared memory)."""
        b = self.b
        red = _global(self.module, "dslc.gpu.red", ll.ArrayType(I64, _RED_SLOTS), addrspace=3)
        sh = b.bitcast(red, ll.PointerType(LLTYPE[dt], addrspace=3))
        tid, nt = self.sreg("tid.x"), self.sreg("ntid.x")
        b.store(v, b.gep(sh, [tid]))
        _barrier(b)
        # s = the largest power of two below nt, then halves: slot t absorbs slot t + s
        top = self.i64(0)
        k = 1
        while k < _RED_SLOTS:
            top = b.select(b.icmp_signed(">", nt, self.i64(k)), self.i64(k), top)
            k *= 2
        pre = b.block
        head, step, done = (self.llfn.append_basic_block(n) for n in ("tree.head", "tree.step", "tree.done"))
        b.branch(head)
        b.position_at_end(head)
        s = b.phi(I64)
        s.add_incoming(top, pre)
        b.cbranch(b.icmp_signed(">", s, self.i64(0)), step, done)     # uniform in the block
        b.position_at_end(step)
        pair = b.add(tid, s)
        with b.if_then(b.and_(b.icmp_signed("<", tid, s), b.icmp_signed("<", pair, nt))):
            mine = b.gep(sh, [tid])
            b.store(combine(b.load(mine), b.load(b.gep(sh, [pair]))), mine)
        _barrier(b)
        s.add_incoming(b.lshr(s, self.i64(1)), b.block)
        b.branch(head)
        b.position_at_end(done)
        with b.if_then(b.icmp_signed("==", tid, self.i64(0))):
            b.store(b.load(b.gep(sh, [self.i64(0)])), target)
        _barrier(b)                     # before the next reduction reuses the slots

    def _stuck_exit(self, verdict):
        """After a grid barrier: if the grid could not gather, the kernel ends with GRID_STUCK."""
        b = self.b
        with b.if_then(b.icmp_unsigned("!=", verdict, ll.Constant(I32, 0)), likely=False):
            b.store(ll.Constant(I32, GRID_STUCK), self.status)
            b.branch(self.fail_block)
            b.position_at_end(self.llfn.append_basic_block("after.stuck"))

    def _run_chunks(self, sub, captured, ctx_t, n0, chunks, accs, partials, results, single):
        """Thread 0's side of a job: post it, run its own rows, wait, then take the first error or
        combine the block partials in block order."""
        b, m = self.b, self.module
        k = len(self.jobs)
        ctx = _global(m, m.get_unique_name("dslc.gpu.ctx"), ctx_t)
        self.jobs.append((sub, ctx))
        for i, v in enumerate(captured):
            b.store(v, b.gep(ctx, [ll.Constant(I32, 0), ll.Constant(I32, i)]))
        b.store(n0, _global(m, "dslc.gpu.n0", I64))
        b.store(ll.Constant(I32, 0), _global(m, "dslc.gpu.failed", I32))
        b.store(ll.Constant(I32, k), _global(m, "dslc.gpu.job", I32))
        grid_sync = _grid_sync_fn(m)
        self._stuck_exit(b.call(grid_sync, []))
        b.call(_run_job_fn(m), [ll.Constant(I32, k)])
        self._stuck_exit(b.call(grid_sync, []))
        failed = b.load(_global(m, "dslc.gpu.failed", I32))
        with b.if_then(b.icmp_unsigned("!=", failed, ll.Constant(I32, 0)), likely=False):
            b.store(b.load(_global(m, "dslc.gpu.status", I32)), self.status)
            with b.if_then(b.icmp_unsigned("!=", self.err, ll.Constant(self.err.type, None))):
                errs = _global(m, "dslc.gpu.err", ll.ArrayType(I64, 3))
                for i in range(3):
                    b.store(b.load(b.gep(errs, [ll.Constant(I32, 0), ll.Constant(I32, i)])),
                            b.gep(self.err, [self.i64(i)]))
            b.branch(self.fail_block)
        for part, r in zip(partials, results):
            b.store(b.load(self._finals[part.name]), r)


def _on_stack(v, depth=0) -> bool:
    if isinstance(v, ll.AllocaInstr):
        return True
    if depth < 8 and isinstance(v, (ll.GEPInstr, ll.CastInstr)):
        return _on_stack(v.operands[0], depth + 1)
    return False


def _run_job_fn(module):
    """void dslc.gpu.run_job(i32 job): this thread's rows of a job; filled in by `_finish_jobs`
    once every job of the kernel is known."""
    fn = module.globals.get("dslc.gpu.run_job")
    if fn is None:
        fn = ll.Function(module, ll.FunctionType(ll.VoidType(), [I32]), "dslc.gpu.run_job")
        fn.linkage = "internal"
        fn.attributes.add("noinline")
    return fn


def _finish_jobs(module, jobs):
    """The body of dslc.gpu.run_job: a switch over the kernel's jobs; a failing row's status and
    details go to the job's error slot (the first to claim it)."""
    fn = _run_job_fn(module)
    entry = fn.append_basic_block("entry")
    b = ll.IRBuilder(entry)
    gtid = b.zext(b.add(b.mul(_sreg(module, b, "ctaid.x"), _sreg(module, b, "ntid.x")),
                        _sreg(module, b, "tid.x")), I64)
    errbuf = b.alloca(ll.ArrayType(I64, 3))
    err0 = b.gep(errbuf, [ll.Constant(I32, 0), ll.Constant(I32, 0)])
    n0 = b.load(_global(module, "dslc.gpu.n0", I64))
    done = fn.append_basic_block("done")
    sw = b.switch(fn.args[0], done)
    results = [(ll.Constant(I32, 0), entry)]
    for k, (sub, ctx) in enumerate(jobs):
        case = fn.append_basic_block(f"job{k}")
        sw.add_case(ll.Constant(I32, k), case)
        b.position_at_end(case)
        results.append((b.call(sub, [b.bitcast(ctx, PTR), gtid, n0, gtid, err0]), case))
        b.branch(done)
    b.position_at_end(done)
    st = b.phi(I32)
    for v, blk in results:
        st.add_incoming(v, blk)
    with b.if_then(b.icmp_unsigned("!=", st, ll.Constant(I32, 0)), likely=False):
        first = b.cmpxchg(_global(module, "dslc.gpu.failed", I32), ll.Constant(I32, 0), ll.Constant(I32, 1),
                          "monotonic", "monotonic")
        with b.if_then(b.extract_value(first, 1)):
            b.store(st, _global(module, "dslc.gpu.status", I32))
            errs = _global(module, "dslc.gpu.err", ll.ArrayType(I64, 3))
            for i in range(3):
                b.store(b.load(b.gep(errbuf, [ll.Constant(I32, 0), ll.Constant(I32, i)])),
                        b.gep(errs, [ll.Constant(I32, 0), ll.Constant(I32, i)]))
    b.ret_void()


def _worker_fn(module):
    """void dslc.gpu.worker(): every thread but the first: wait for a job, run it, until job -1."""
    fn = ll.Function(module, ll.FunctionType(ll.VoidType(), []), "dslc.gpu.worker")
    fn.linkage = "internal"
    grid_sync = _grid_sync_fn(module)
    b = ll.IRBuilder(fn.append_basic_block("entry"))
    loop, run, out = (fn.append_basic_block(n) for n in ("wait", "run", "out"))
    b.branch(loop)
    b.position_at_end(loop)
    stuck = b.icmp_unsigned("!=", b.call(grid_sync, []), ll.Constant(I32, 0))
    job = b.load(_global(module, "dslc.gpu.job", I32))
    b.cbranch(b.or_(stuck, b.icmp_signed("<", job, ll.Constant(I32, 0))), out, run)
    b.position_at_end(run)
    b.call(_run_job_fn(module), [job])
    stuck = b.icmp_unsigned("!=", b.call(grid_sync, []), ll.Constant(I32, 0))
    b.cbranch(stuck, out, loop)
    b.position_at_end(out)
    b.ret_void()
    return fn


def build_module(fn: ir.Function, symbol: str, boundscheck: bool = True) -> tuple[ll.Module, list]:
    """An NVPTX module with the kernel `symbol` (see the module docstring) and its error sites."""
    _initialise()
    module = ll.Module(name=symbol)
    module.triple = TRIPLE
    module.data_layout = DATA_LAYOUT
    cg = NVPTXCodegen(module, fn, symbol + "__impl", boundscheck)
    cg.build()
    inner = cg.llfn
    argtys = [a.type for a in inner.args[:-1]]
    kern = ll.Function(module, ll.FunctionType(ll.VoidType(), argtys + [ll.PointerType(I32), ll.PointerType(I64)]),
                       symbol)
    kern.calling_convention = "ptx_kernel"
    b = ll.IRBuilder(kern.append_basic_block())
    args = list(kern.args)
    sreg = {n: _sreg(module, b, n) for n in ("tid.x", "tid.y", "tid.z", "ctaid.x", "ctaid.y", "ctaid.z",
                                             "ntid.x", "ntid.y", "ntid.z", "nctaid.x", "nctaid.y", "nctaid.z")}
    anyidx = sreg["tid.x"]
    for n in ("tid.y", "tid.z", "ctaid.x", "ctaid.y", "ctaid.z"):
        anyidx = b.or_(anyidx, sreg[n])
    first = b.icmp_unsigned("==", anyidx, ll.Constant(I32, 0))
    bad = b.or_(b.icmp_unsigned(">", sreg["nctaid.x"], ll.Constant(I32, MAX_BLOCKS)),
                b.icmp_unsigned(">", sreg["ntid.x"], ll.Constant(I32, _RED_SLOTS)))
    for n in ("ntid.y", "ntid.z", "nctaid.y", "nctaid.z"):
        bad = b.or_(bad, b.icmp_unsigned("!=", sreg[n], ll.Constant(I32, 1)))
    with b.if_then(bad, likely=False):
        with b.if_then(first):
            b.store(ll.Constant(I32, BAD_LAUNCH), args[-2])
        b.ret_void()
    with b.if_else(first) as (then, otherwise):
        with then:
            status = b.call(inner, args[:-2] + [args[-1]])
            b.store(status, args[-2])
            if cg.jobs:
                b.store(ll.Constant(I32, -1), _global(module, "dslc.gpu.job", I32))
                b.call(_grid_sync_fn(module), [])
        with otherwise:
            if cg.jobs:
                b.call(_worker_fn(module), [])
    b.ret_void()
    if cg.jobs:
        _finish_jobs(module, cg.jobs)
    return module, cg.sites


def emit_ptx(fn: ir.Function, symbol: str, boundscheck: bool = True, arch: str = DEFAULT_ARCH,
             opt: int = 3) -> tuple[str, list]:
    """PTX text for `fn` (an entry named `symbol`) and its error sites."""
    import re
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", symbol):
        raise ValueError(f"invalid PTX entry name {symbol!r}")   # LLVM would abort the process
    module, sites = build_module(fn, symbol, boundscheck)
    ref = llvm.parse_assembly(str(module))
    lib = llvm.parse_bitcode(_libdevice())
    lib.triple = TRIPLE
    lib.data_layout = DATA_LAYOUT
    ref.link_in(lib)
    for f in ref.functions:
        if f.name != symbol and not f.is_declaration:
            f.linkage = "internal"
    ref.verify()
    tm = llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=arch, features="+ptx80", opt=opt)
    if opt > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=opt)
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(ref, pb)
    return tm.emit_assembly(ref), sites


def aot_ptx(entries, boundscheck: bool = True, arch: str = DEFAULT_ARCH, opt: int = 3) -> str:
    """One PTX module with a kernel per entry point (`entries`: objects with `.fn` (prepared IR)
    and `.symbol`), for `dslc --target cuda`: each kernel takes the C entry point's arguments
    followed by `int32* status, int64* err` in device memory."""
    import re
    _initialise()
    symbols = [e.symbol for e in entries]
    for sym in symbols:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", sym):
            raise ValueError(f"invalid PTX entry name {sym!r}")
    ref = None
    for e in entries:
        module, _ = build_module(e.fn, e.symbol, boundscheck)
        m = llvm.parse_assembly(str(module))
        if ref is None:
            ref = m
        else:
            ref.link_in(m)
    lib = llvm.parse_bitcode(_libdevice())
    lib.triple = TRIPLE
    lib.data_layout = DATA_LAYOUT
    ref.link_in(lib)
    for f in ref.functions:
        if f.name not in symbols and not f.is_declaration:
            f.linkage = "internal"
    ref.verify()
    tm = llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=arch, features="+ptx80", opt=opt)
    if opt > 0:
        pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=opt))
        pb.getModulePassManager().run(ref, pb)
    return tm.emit_assembly(ref)
