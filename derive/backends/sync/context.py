"""The sync backend's template context: the IR's split across processes (:class:`derive.ir.program.Split`)
printed as torch operations over one rank's part of the batch, with the collectives between them."""
from __future__ import annotations

import sympy as sp

from ...ir.program import KernelIR
from .printer import code


def sync_context(ir: KernelIR) -> dict:
    s = ir.split
    grads = set(ir.grads[1:])
    vectors = {r.stat: sp.Symbol(ir.names.local(f"{r.stat.name}_vec"), real=True) for r in ir.running}
    running = [(a.target.name, r.stat.name, vectors[r.stat].name, code(a.value.xreplace(vectors)))
               for a, r in zip(ir.facade_updates, ir.running)]
    forward_values = {a.target for a in s.forward} | {a.target for a in s.merged}
    reads = sorted({sym.name for a in s.sums + s.backward for sym in a.value.free_symbols} & {
        v.name for v in forward_values})
    return {
        "m_local": s.m_local.name, "count": s.count.name,
        "local": [(a.target.name, code(a.value)) for a in s.local],
        "locals": [a.target.name for a in s.local],
        "merge": [(a.target.name, code(a.value)) for a in s.merged],
        "stats": [a.target.name for a in s.merged],
        "nodes": [(a.target.name, code(a.value)) for a in s.forward],
        "reads": reads,
        "sums": [(a.target.name, code(a.value)) for a in s.sums],
        "apply": [(a.target.name, code(a.value)) for a in s.backward if a.target not in grads],
        "params": [(a.target.name, code(a.value)) for a in s.backward if a.target in grads],
        "grads": [g.name for g in ir.grads],
        "running": running,
        "output": ir.output.name,
    }
