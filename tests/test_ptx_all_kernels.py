"""Every fully annotated kernel defined in the test suite's modules, with its JVP and VJP, compiled
to PTX (compiler.codegen.nvptx.aot_ptx, ~120 entries per module) and assembled by
`ptxas -arch=sm_90`. Skipped without ptxas or libdevice (see tests/gpu_tools.py).

Speed: the suite has ~860 entry points and their PTX runs to ~2.3 million lines (~2,800 a kernel:
the sequential program with inline copies of small loops, each job's function with its unrolled
rows, the grid machinery). ptxas costs ~70 us a line whatever its -O, and LLVM's O3 (what `.ptx()`
ships) costs ~4x its O0 in generation, so this test compiles at LLVM O0, assembles with ptxas -O0
(the optimisation level changes no PTX rule) and runs ptxas on one batch while Python generates
the next: ~4 minutes of CPU. When pytest selects it, conftest.py starts it in a background process
at the end of collection, so it overlaps the rest of the suite. The O3 PTX of a few kernels is
assembled by tests/test_ptx.py and tests/test_jacobian_basis.py."""
from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from compiler.diagnostics import DslcError, UnsupportedError
from gpu_tools import INSTALL_HINT, PTXAS, find_libdevice
from suite_kernels import GPU_UNSUPPORTED as ALLOWED_UNSUPPORTED, forms, suite_kernels, symbol

pytestmark = pytest.mark.skipif(PTXAS is None or find_libdevice() is None, reason=INSTALL_HINT)

LLVM_OPT = 0
PTXAS_FLAGS = ["-arch=sm_90", "-O0"]
BATCH = 120                 # entries per PTX module: small enough to overlap ptxas with generation
MIN_ENTRIES = 800           # 860 entry points when written


class _Entry:
    def __init__(self, label, form, fn, boundscheck):
        self.label, self.form, self.fn, self.boundscheck = label, form, fn, boundscheck
        self.symbol = symbol(label, form)

    @property
    def name(self):
        return f"{self.label} ({self.form})"


def _collect():
    entries, skipped = [], []
    for label, k in suite_kernels():
        try:
            entries += [_Entry(label, form, fn, k.boundscheck) for form, fn in forms(k)]
        except DslcError:              # kernels written to fail compilation (error tests)
            skipped.append(label)
    return entries, skipped


def _ptx(entries, unsupported, failures):
    """[(PTX text, its entries)] for `entries`; a batch that fails is split in halves until the
    entries at fault are found, so one bad kernel does not hide the others."""
    from compiler.codegen import nvptx
    try:
        return [(nvptx.aot_ptx([e for e in entries], entries[0].boundscheck, opt=LLVM_OPT), entries)]
    except UnsupportedError as err:
        if len(entries) == 1:
            unsupported[entries[0].name] = str(err)
            return []
    except Exception as err:
        if len(entries) == 1:
            failures.append(f"{entries[0].name}: PTX generation raised {type(err).__name__}: {err}")
            return []
    mid = len(entries) // 2
    return _ptx(entries[:mid], unsupported, failures) + _ptx(entries[mid:], unsupported, failures)


def _functions_at(path, stderr):
    """The PTX functions holding the lines ptxas complains about ('..., line N; error ...')."""
    lines = {int(n) for n in re.findall(r"line (\d+);", stderr)}
    found, current = set(), None
    with open(path) as f:
        for i, text in enumerate(f, 1):
            m = re.match(r"\s*(?:\.visible\s+|\.weak\s+)?\.(?:entry|func)\s+(?:\([^)]*\)\s*)?([\w$.]+)", text)
            if m:
                current = m.group(1)
            if i in lines and current:
                found.add(current)
    return sorted(found)


def check_all(workdir) -> dict:
    """Generate and assemble every entry point; the findings as plain data (see the test)."""
    import pathlib
    tmp_path = pathlib.Path(workdir)
    t0 = time.perf_counter()
    entries, skipped = _collect()
    unsupported, failures, jobs = {}, [], []
    # the known refusals alone (they fail fast, before libdevice is linked), so that they do not
    # split the batches of the others
    known = [[e] for e in entries if e.name in ALLOWED_UNSUPPORTED]
    groups = [[e for e in entries if e.boundscheck == bc and e.name not in ALLOWED_UNSUPPORTED]
              for bc in (True, False)]
    batches = known + [g[i:i + BATCH] for g in groups for i in range(0, len(g), BATCH)]
    for batch in batches:
        for text, part in _ptx(batch, unsupported, failures):
            declared = set(re.findall(r"\.entry\s+(\w+)\s*\(", text))
            failures += [f"{e.name}: no .entry {e.symbol} in the PTX" for e in part if e.symbol not in declared]
            src = tmp_path / f"m{len(jobs)}.ptx"
            src.write_text(text)
            proc = subprocess.Popen([PTXAS, *PTXAS_FLAGS, str(src), "-o", str(src.with_suffix(".cubin"))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            jobs.append((proc, src, part))
    assembled = 0
    for proc, src, part in jobs:
        _, err = proc.communicate(timeout=900)
        if proc.returncode:
            at = _functions_at(src, err)
            failures.append(f"ptxas {src.name} ({len(part)} entries) failed in {at}:\n{err[:3000]}")
        else:
            assembled += len(part)
    return {"entries": len(entries), "unique_symbols": len({e.symbol for e in entries}),
            "skipped": skipped, "unsupported": unsupported, "failures": failures, "assembled": assembled,
            "modules": len(jobs), "seconds": time.perf_counter() - t0}


# The check takes minutes of CPU (mostly ptxas), so when pytest selects this test, conftest.py
# starts it in a background process at the end of collection: it then overlaps the rest of the
# suite (which leaves the second core mostly idle) and the test only collects its findings.
_background = {}


def start_background():
    import sys
    import tempfile
    if _background or os.environ.get("DSLC_PTX_ALL_CHILD") or PTXAS is None or find_libdevice() is None:
        return
    workdir = tempfile.mkdtemp(prefix="dslc-ptx-all-")
    out = os.path.join(workdir, "result.json")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, DSLC_PTX_ALL_CHILD="1",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), workdir, out], env=env,
                            cwd=os.path.dirname(os.path.abspath(__file__)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import atexit
    atexit.register(lambda: proc.poll() is None and proc.kill())
    _background.update(proc=proc, out=out)


def test_every_suite_kernel_and_its_derivatives_assemble_with_ptxas(tmp_path):
    import json
    if _background:
        proc = _background["proc"]
        _, err = proc.communicate(timeout=1800)
        assert proc.returncode == 0, f"the background PTX check failed:\n{err[-4000:]}"
        with open(_background["out"]) as f:
            r = json.load(f)
    else:
        r = check_all(tmp_path)
    print(f"\n{r['assembled']} entry points assembled in {r['modules']} modules, {r['seconds']:.0f} s; "
          f"{len(r['skipped'])} kernels skipped (lowering errors), {len(r['unsupported'])} unsupported on the GPU")
    assert r["entries"] >= MIN_ENTRIES, f"only {r['entries']} entry points ({len(r['skipped'])} kernels skipped)"
    assert r["unique_symbols"] == r["entries"]
    assert not r["failures"], "\n".join(r["failures"][:20])
    unsupported = r["unsupported"]
    new, gone = sorted(set(unsupported) - set(ALLOWED_UNSUPPORTED)), sorted(set(ALLOWED_UNSUPPORTED) - set(unsupported))
    why = "\n".join(f"{k}: {v}" for k, v in unsupported.items())
    assert not new and not gone, f"GPU lowering newly refuses {new}, now accepts {gone} (update " \
                                 f"suite_kernels.GPU_UNSUPPORTED)\n{why}"
    assert r["assembled"] >= MIN_ENTRIES - len(ALLOWED_UNSUPPORTED)


if __name__ == "__main__":                 # the background process (start_background)
    import json
    import sys
    os.nice(10)                            # the foreground suite first; this takes the idle core
    result = check_all(sys.argv[1])
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)
