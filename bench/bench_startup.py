"""Start-up time of a new process (issue 7: "a new process with a warm disk cache reaches its first
result in <= 20 ms of dslc time"; "B4's grad compiled cold in <= 150 ms").

Runs fresh Python subprocesses on a temporary $DSLC_CACHE_DIR: one cold (empty cache), then warm
ones, and prints per phase (median and best of the warm runs):

    import    `import dsl` (+ `from dsl import kernel, grad`)
    decorate  the two `@kernel` definitions
    call      first call of B1 (the primal)        dslc time = import + decorate + call
    grad      first call of grad(B1)
    b4 grad   first call of grad(B4, argnums=(1, 2)) (needs ~1 MB of inputs: created before timing)

The interpreter's own start and `import numpy` are not counted. `--no-pyc` runs the children with
PYTHONDONTWRITEBYTECODE=1 and no bytecode cache for dslc's modules (what this repository's dev
container does: every import recompiles dslc's sources, which no installed package does).

    python3 bench/bench_startup.py [--runs 7] [--no-pyc]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = '''
from __future__ import annotations
import time
t0 = time.perf_counter()
import numpy as np
t1 = time.perf_counter()
rng = np.random.default_rng(0)
x = np.linspace(0, 1, 1000, dtype=np.float32)
X4, W1 = rng.standard_normal((1024, 256)).astype(np.float32), (rng.standard_normal((256, 256)) / 16).astype(np.float32)
W2, Y = (rng.standard_normal((256, 10)) / 16).astype(np.float32), rng.standard_normal((1024, 10)).astype(np.float32)
t1 = time.perf_counter()
import dsl
from dsl import kernel, grad
t2 = time.perf_counter()


@kernel
def b1(x: f32[n]) -> f32:
    return sum(sin(x) * exp(-x * x) + tanh(x) ** 2)


@kernel
def b4(X: f32[n, d], W1: f32[d, h], W2: f32[h, o], Y: f32[n, o]) -> f32:
    return mean((tanh(X @ W1) @ W2 - Y) ** 2)


t3 = time.perf_counter()
r = b1(x)
t4 = time.perf_counter()
g = grad(b1)(x)
t5 = time.perf_counter()
g4 = grad(b4, argnums=(1, 2))(X4, W1, W2, Y)
t6 = time.perf_counter()
import json, sys
print(json.dumps({"import": t2 - t1, "decorate": t3 - t2, "call": t4 - t3, "grad": t5 - t4, "b4 grad": t6 - t5,
                  "modules": [m for m in ("lark", "llvmlite", "compiler.pipeline") if m in sys.modules]}))
'''

PHASES = ("import", "decorate", "call", "grad", "b4 grad")


def run_child(script: str, cache: str, no_pyc: bool, pycache: str, root: str = ROOT) -> dict:
    env = dict(os.environ, DSLC_CACHE_DIR=cache, PYTHONPATH=root)
    if no_pyc:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        # a private bytecode cache (the dev container sets PYTHONDONTWRITEBYTECODE=1): as an
        # installed package, whose .pyc files pip writes at install time
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    r = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        sys.exit(f"child failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def fmt(v: float) -> str:
    return f"{v * 1e3:8.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="warm runs (default 7)")
    ap.add_argument("--no-pyc", action="store_true", help="no bytecode cache for dslc's own modules")
    ap.add_argument("--root", default=ROOT, help="the dslc checkout to measure (default: this one)")
    ap.add_argument("--cold-runs", type=int, default=1, help="cold runs, each on an empty cache (default 1)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="dslc-bench-startup-")
    try:
        script = os.path.join(tmp, "startup_child.py")
        with open(script, "w") as f:
            f.write(CHILD)
        cache, pycache = os.path.join(tmp, "cache"), os.path.join(tmp, "pycache")
        if not args.no_pyc:                  # write the .pyc files
            run_child(script, os.path.join(tmp, "warmup-cache"), False, pycache, args.root)
        colds = []
        for k in range(args.cold_runs):
            shutil.rmtree(cache, ignore_errors=True)
            colds.append(run_child(script, cache, args.no_pyc, pycache, args.root))
        warm = [run_child(script, cache, args.no_pyc, pycache, args.root) for _ in range(args.runs)]
        print(f"dslc start-up, ms ({'no bytecode cache' if args.no_pyc else 'with bytecode cache'}; "
              f"{args.runs} warm runs; the interpreter and numpy not counted)")
        print(f"{'':18s}" + "".join(f"{p:>10s}" for p in PHASES) + f"{'dslc time':>11s}   heavy modules imported")

        def row(label, vals, mods):
            dslc = vals["import"] + vals["decorate"] + vals["call"]
            print(f"{label:18s}" + "".join(f"{fmt(vals[p]):>10s}" for p in PHASES) + f"{fmt(dslc):>11s}   "
                  + (", ".join(mods) or "none"))
        cold = {p: statistics.median(c[p] for c in colds) for p in PHASES}
        row("cold" + (" (median)" if len(colds) > 1 else ""), cold, colds[0]["modules"])
        med = {p: statistics.median(w[p] for w in warm) for p in PHASES}
        best = {p: min(w[p] for w in warm) for p in PHASES}
        mods = sorted({m for w in warm for m in w["modules"]})
        row("warm (median)", med, mods)
        row("warm (best)", best, mods)
        totals = sorted(w["import"] + w["decorate"] + w["call"] for w in warm)
        print(f"warm dslc time per run: {', '.join(f'{t * 1e3:.1f}' for t in totals)} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
