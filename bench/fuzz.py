"""Long differential fuzz run of the compiler against the reference evaluator (dsl/interpret.py).

    python bench/fuzz.py --n 10000 [--workers 2] [--start 0] [--deriv-every 4] [--out report.json]

Program `seed` is `tests/fuzz/gen.random_program(seed, ...)`: every `--deriv-every`-th seed is a
smooth program whose JVP is checked against finite differences (and, every other one of those, a
straight-line program whose VJP is checked by the dot-product test); the others check the primal
only. Batches of seeds run in worker subprocesses, so a crash (or a hang, past `--timeout`) is
counted against the seed that was running and the batch goes on after it. Prints the counts:
programs tried, ok, mismatches, unstable (ill-conditioned points, not bugs), crashes, hangs,
internal errors, compile errors by kind, and the derivative checks done. Every mismatch is
printed with its seed; reproduce one with `--start SEED --n 1 --verbose`.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# this script's own directory would shadow the `fuzz` package of tests/ (tests/fuzz/)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
for p in (ROOT, os.path.join(ROOT, "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)


def program_for(seed: int, deriv_every: int):
    from fuzz.gen import random_program
    if deriv_every and seed % deriv_every == 0:
        return random_program(seed, smooth=True, straight=(seed // deriv_every) % 2 == 0)
    return random_program(seed)


def worker(start: int, count: int, deriv_every: int) -> None:
    from fuzz.check import check
    for seed in range(start, start + count):
        print(json.dumps({"seed": seed, "start": True}), flush=True)
        try:
            prog = program_for(seed, deriv_every)
            r = check(prog, seed)
        except Exception as e:  # noqa: BLE001  (the generator itself failed)
            r = {"status": "internal", "kind": f"generator: {type(e).__name__}: {e}", "detail": "", "checks": []}
            prog = None
        r["seed"] = seed
        if r["status"] not in ("mismatch", "internal"):
            r["detail"] = ""
        elif prog is not None:
            r["source"] = prog.source
        print(json.dumps(r), flush=True)


def run(args) -> dict:
    cache = tempfile.mkdtemp(prefix="dslc-fuzz-cache-")
    env = dict(os.environ, DSLC_CACHE_DIR=cache)
    queue = [(s, min(args.batch, args.start + args.n - s)) for s in range(args.start, args.start + args.n, args.batch)]
    running = []
    stats = collections.Counter()
    compile_kinds = collections.Counter()
    internal_kinds = collections.Counter()
    checks = collections.Counter()
    bad = []
    t0 = time.time()

    def launch(start, count):
        log = tempfile.TemporaryFile(mode="w+")
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", str(start), str(count),
                              "--deriv-every", str(args.deriv_every)], stdout=log, stderr=subprocess.DEVNULL,
                             env=env)
        running.append((p, start, count, log, time.time()))

    def collect(p, start, count, log, began, killed):
        log.seek(0)
        done = set()
        current = None
        for line in log:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("start"):
                current = r["seed"]
                continue
            done.add(r["seed"])
            stats["tried"] += 1
            stats[r["status"]] += 1
            for c in r.get("checks", []):
                checks[c.split(":")[0]] += 1
            if r["status"] == "compile_error":
                compile_kinds[r["kind"]] += 1
            if r["status"] == "internal":
                internal_kinds[r["kind"]] += 1
            if r["status"] in ("mismatch", "internal"):
                bad.append(r)
        log.close()
        if p.returncode != 0 or killed:
            crashed = current if current is not None and current not in done else None
            if crashed is not None:
                stats["tried"] += 1
                stats["hang" if killed else "crash"] += 1
                bad.append({"seed": crashed, "status": "hang" if killed else "crash",
                            "detail": f"worker exit status {p.returncode}"})
            if crashed is None and not done:
                stats["worker failures"] += 1     # died before its first program: do not retry
                bad.append({"seed": start, "status": "worker failure", "detail": f"exit status {p.returncode}"})
                return
            nxt = (crashed + 1) if crashed is not None else max(done) + 1
            if nxt < start + count:
                queue.append((nxt, start + count - nxt))

    import signal

    def _stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _stop)     # kill PID / an ignored SIGINT in the background
    try:
        _loop(args, queue, running, launch, collect, stats, t0)
    except KeyboardInterrupt:             # stop early: report what has finished
        for p, *_ in running:
            p.kill()
        print("interrupted: the counts below cover the programs finished so far", flush=True)
    return {"stats": stats, "compile_kinds": compile_kinds, "internal_kinds": internal_kinds, "checks": checks,
            "bad": bad, "seconds": time.time() - t0}


def _loop(args, queue, running, launch, collect, stats, t0):
    last_print = t0
    while queue or running:
        while queue and len(running) < args.workers:
            launch(*queue.pop(0))
        time.sleep(0.2)
        for item in list(running):
            p, start, count, log, began = item
            killed = False
            if p.poll() is None:
                if time.time() - began > args.timeout + 10 * count:
                    p.kill()
                    p.wait()
                    killed = True
                else:
                    continue
            running.remove(item)
            collect(p, start, count, log, began, killed)
        if time.time() - last_print > 60:
            last_print = time.time()
            print(f"  ... {stats['tried']} programs, {stats['mismatch']} mismatches, {stats['crash']} crashes, "
                  f"{time.time() - t0:.0f} s", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="number of programs")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--workers", type=int, default=max(1, min(os.cpu_count() or 1, 8)))
    ap.add_argument("--batch", type=int, default=50, help="programs per worker subprocess")
    ap.add_argument("--deriv-every", type=int, default=4, help="every k-th program checks derivatives (0: none)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per batch (plus 10 s per program)")
    ap.add_argument("--out", help="write the full report as JSON")
    ap.add_argument("--verbose", action="store_true", help="print each failing program's source and detail")
    ap.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], args.deriv_every)
        return 0
    rep = run(args)
    s = rep["stats"]
    print(f"programs tried:   {s['tried']}  (seeds {args.start}..{args.start + args.n - 1}, "
          f"{rep['seconds']:.0f} s, {args.workers} workers)")
    print(f"ok:               {s['ok']}")
    print(f"mismatches:       {s['mismatch']}")
    print(f"crashes:          {s['crash']}")
    print(f"hangs:            {s['hang']}")
    if s["worker failures"]:
        print(f"worker failures:  {s['worker failures']}")
    print(f"internal errors:  {s['internal']}")
    print(f"unstable (ill-conditioned, not counted as bugs): {s['unstable']}")
    print(f"compile errors:   {s['compile_error']}")
    for k, v in rep["compile_kinds"].most_common():
        print(f"    {v:5d}  {k}")
    for k, v in rep["internal_kinds"].most_common():
        print(f"    internal {v:5d}  {k}")
    print("checks done:      " + ", ".join(f"{k} {v}" for k, v in sorted(rep["checks"].items())))
    for r in rep["bad"]:
        print(f"  seed {r['seed']}: {r['status']}: {(r.get('kind') or r.get('detail') or '').splitlines()[0] if (r.get('kind') or r.get('detail')) else ''}")
        if args.verbose:
            print(r.get("source", ""))
            print(r.get("detail", ""))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({k: (dict(v) if isinstance(v, collections.Counter) else v) for k, v in rep.items()}, f,
                      indent=1, default=str)
    return 1 if (s["mismatch"] or s["crash"] or s["hang"] or s["internal"]) else 0


if __name__ == "__main__":
    sys.exit(main())
