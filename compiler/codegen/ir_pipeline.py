"""LLVM's IR optimisation pipeline as dslc runs it, for the compiling process and the final-code
server (emit_server.py, which imports it as a script's sibling): llvmlite and `re` only."""
from __future__ import annotations

import re

import llvmlite.binding as llvm


def optimise(mod_ref, tm, level: int = 3):
    """Run LLVM's pipeline at `level` on `mod_ref`; returns the optimised module (a new ModuleRef
    when fast-math flags had to be dropped: `without_fast_math`)."""
    pto = llvm.create_pipeline_tuning_options(speed_level=level)
    pto.loop_vectorization = level >= 2
    pto.slp_vectorization = level >= 2
    pto.loop_unrolling = level >= 2
    pb = llvm.create_pass_builder(tm, pto)
    pm = pb.getModulePassManager()
    pm.run(mod_ref, pb)
    return without_fast_math(mod_ref)


# an instruction's fast-math flags, after its opcode (LLVM prints them in this position only)
_FAST_MATH = re.compile(r"(= (?:tail |musttail |notail )?(?:fadd|fsub|fmul|fdiv|frem|fneg|fcmp|call|phi|select))"
                        r"((?: (?:reassoc|nsz|nnan|ninf|arcp|contract|afn|fast))+)(?= )")


def without_fast_math(ref):
    """`ref` without fast-math flags. The kernel's reductions carry `reassoc nsz` so that the loop
    vectoriser may split them into partial sums; once it has, the flags are dropped, so that no
    backend pass (MachineCombiner, DAG combines) reorders arithmetic again and machine code
    generated at any optimisation level computes the same bits (the two tiers: tiering.py)."""
    text = str(ref)
    if not _FAST_MATH.search(text):
        return ref
    new = llvm.parse_assembly(_FAST_MATH.sub(r"\1", text))
    new.name = ref.name
    return new
