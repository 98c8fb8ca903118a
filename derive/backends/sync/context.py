"""generated/sync: batch norm across processes, printed from the split of batch norm's derivation
(:mod:`derive.math.split`) in torch's conventions."""
from __future__ import annotations

import sympy as sp

from ...forward.graph import BATCH, RUNNING
from ...math.algebra import BatchSum, M
from ...math.split import split
from .printer import code


def sync_context(d) -> dict:
    """Pre-printed (lhs, rhs) pairs of generated/sync from the derivation ``d`` of a crossing graph,
    in torch's conventions (momentum weights the batch, running_var is unbiased)."""
    model = d.model
    s = split(model, d.compact.dx)
    m_local = sp.Symbol("m_local", positive=True)
    lets = {n.definition: n.symbol for n in model.lets}
    lets.update({1 / n.definition: 1 / n.symbol for n in model.lets})
    to_local = {mg.stat: mg.local for mg in s.forward}
    local_pairs = [(mg.local.name, code(mg.definition.xreplace(to_local).xreplace({M: m_local})))
                   for mg in s.forward]
    merge_pairs = [(mg.stat.name, code(mg.merged)) for mg in s.forward]
    let_pairs = [(n.symbol.name, code(n.definition)) for n in model.lets]
    nodes = [(n.symbol.name, code(n.definition.xreplace(lets))) for n in model.nodes if n.kind != "reduce"]
    sums = {b: sp.Symbol(f"sum_{k}", real=True) for k, b in enumerate(s.backward)}
    sum_pairs = [(sums[b].name, code(b)) for b in s.backward]
    dx = code(d.compact.dx.xreplace(sums).xreplace(lets))
    params = []
    for stage in d.params:
        as_group = stage.expr.replace(lambda e: type(e).__name__ == "ParamSum", lambda e: BatchSum(e.args[0]))
        params.append((stage.symbol.name, code(as_group.xreplace(sums))))
    mom = next(c.symbol for c in model.constants if c.symbol.name == "momentum")
    torch_momentum = sp.Symbol("momentum", positive=True)
    running = []
    for r in model.running:
        batch = sp.Symbol(f"{r.stat.name}_vec", real=True)
        if r.buffer == "running_var":        # torch keeps the unbiased variance, with the global count
            batch = batch * M / (M - 1)
        rule = r.update.xreplace({mom: 1 - torch_momentum}).xreplace({RUNNING: r.symbol, BATCH: batch})
        running.append((r.buffer, r.stat.name, code(rule)))
    return {"local": local_pairs, "merge": merge_pairs, "lets": let_pairs, "nodes": nodes,
            "elementwise": nodes[:-1], "sums": sum_pairs, "dx": dx, "params": params, "running": running,
            "stats": [mg.stat.name for mg in s.forward], "locals": [mg.local.name for mg in s.forward],
            "param_names": [p.name for p in model.params], "output": model.output.symbol.name,
            "constants": [c.symbol.name for c in model.constants if c.symbol.name != "momentum"]}


def sync_jobs(derivations) -> dict:
    """{path under generated/: (template, context)}: generated/sync, from batch norm's derivation."""
    found = [d for d in derivations if d.spec.name == "batchnorm"]
    return {"sync/__init__.py": ("torch_sync.py.jinja", sync_context(found[0]))} if found else {}
