"""Runs the Triton backend's kernels on a verification case (see derive.output.verify), on the CPU
through Triton's interpreter (TRITON_INTERPRET=1: the verifier sets it from ``BACKEND.options`` before
triton is imported).

The Triton functions take the working view that generated.torch lays out, so the case is laid out by
generated.torch's own helpers (its generic API's view and layout), then: the training forward, the
running update of generated.torch on the Triton batch statistics, and the compact backward -- or, in
test mode, the test forward and backward.
"""
from __future__ import annotations

import importlib
import os

from ..tensors import reads

FACADE = True   #: the running statistics follow the convention of the entry's torch names


def covers(build) -> bool:
    return True


def selects(case) -> bool:
    """The interpreter runs a kernel's programs one by one in Python: groups of 2 and 3 in each mode."""
    return case.m in (2, 3)


def run(package: str, build, case) -> list:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the Triton kernels are verified under TRITON_INTERPRET=1, "
                           "set before triton imports")
    import torch
    ir, spec = build.ir, build.spec
    torch_module = importlib.import_module(f"{package}.torch.{spec.name}")
    kernels = importlib.import_module(f"{package}.triton.{spec.name}")
    rt = importlib.import_module(f"{package}.torch._runtime")
    x = torch.tensor(case.x)
    view, layout, shape, _ = rt.working_view(x, torch_module._REDUCE_AXES, torch_module._PARAM_AXES,
                                             case.groups if spec.groups else None)
    params = {p.name: rt.parameter(torch.tensor(w), view, shape, 1.0, p.name)
              for p, w in zip(ir.params, case.weights)}
    const = {c.symbol.name: case.constants[ir.names.original(c.symbol).name] for c in ir.constants}
    buffers = {r.buffer: torch.tensor(case.running[ir.names.original(r.symbol).name]) for r in ir.running}
    dout = torch.tensor(case.dout).reshape(view.shape)
    known = {ir.x.name: view, **params}
    name = spec.name
    if case.training:
        known.update({s.name: buffers[s.name].reshape(layout["stat_shape"]) for s in ir.reads_running})
        values = kernels.forward_train(view, *params.values(), *(known[s.name] for s in ir.reads_running),
                                       **const, **layout)
        grads = kernels.backward_train_fused(dout, **{n: known.get(n, values.get(n)) for n in
                                                      reads(ir["backward_step"], ir)}, **const, **layout)
        found = []
        if ir.has_running:
            torch_module.update_running(buffers, **values, **const, **layout)
            found = [(name, f"running:{ir.names.original(r.symbol).name}", buffers[r.buffer].numpy())
                     for r in ir.running]
    else:
        stats = {stat: buffers[buffer].reshape(layout["stat_shape"])
                 for buffer, stat in torch_module.STATS.items()}
        known.update(stats)
        values = kernels.forward_test(view, *params.values(), *(stats[s.name] for s in ir.stats),
                                      **const, **layout)
        grads = kernels.backward_test(dout, **{n: known.get(n, values.get(n)) for n in
                                               reads(ir["backward_test_step"], ir)}, **const, **layout)
        found = []
    found.append((f"{name} (forward)", "out", values[ir.output.name].reshape(x.shape).numpy()))
    found += [(f"{name} (backward)", f"grad:{k}", g.reshape(-1).numpy() if k else g.reshape(x.shape).numpy())
              for k, g in enumerate(grads)]
    return found
