"""Runs the sync backend's function without a process group on a verification case (see
derive.output.verify), and gradgradchecks its second derivative."""
from __future__ import annotations

import importlib

FACADE = True   #: torch's running-statistics convention (sync_batch_norm has F.batch_norm's signature)


def covers(build) -> bool:
    return build.ir.split is not None


def call(package: str, build, case, x, params, buffers):
    sync = importlib.import_module(f"{package}.sync")
    ir = build.ir
    const = {ir.names.original(c.symbol).name: case.constants[ir.names.original(c.symbol).name] for c in ir.constants}
    return sync.sync_batch_norm(x, buffers.get("running_mean"), buffers.get("running_var"), *params,
                                training=True, momentum=const["momentum"], eps=const["eps"])


def run(package: str, build, case) -> list:
    import torch
    if not case.training:
        return []
    ir = build.ir
    x = torch.tensor(case.x, requires_grad=True)
    params = [torch.tensor(w, requires_grad=True) for w in case.weights]
    buffers = {ir.names.original(r.symbol).name: torch.tensor(case.running[ir.names.original(r.symbol).name])
               for r in ir.running}
    out = call(package, build, case, x, params, buffers)
    out.backward(torch.tensor(case.dout))
    found = [("sync_batch_norm", "out", out.detach().numpy())]
    found += [("sync_batch_norm (backward)", f"grad:{k}", t.grad.numpy()) for k, t in enumerate([x, *params])]
    found += [("sync_batch_norm", f"running:{key}", value.numpy()) for key, value in buffers.items()]
    return found


def check(package: str, build, cases) -> str | None:
    import torch
    case = next((c for c in cases if c.training and c.m == 3), None)
    if case is None:
        return None
    inputs = [torch.tensor(case.x, requires_grad=True)] + [torch.tensor(w, requires_grad=True) for w in case.weights]

    def f(x, *params):
        return call(package, build, case, x, params, {})

    if not torch.autograd.gradgradcheck(f, tuple(inputs), raise_exception=False):
        return f"sync_batch_norm's second derivative fails torch.autograd.gradgradcheck (case {case.name})"
    return None
