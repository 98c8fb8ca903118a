"""Runs the torch backend's generic API on a verification case, and gradgradchecks its derived double
backward (see derive.output.verify)."""
from __future__ import annotations

import importlib

from ...forward.graph import StopGrad
from ..numba.verify import STRATEGIES, forced

FACADE = True   #: the running statistics follow the convention of the entry's torch names


def covers(build) -> bool:
    return True


def function(package: str, build):
    module = importlib.import_module(f"{package}.torch.{build.spec.name}")
    return getattr(module, build.spec.name)


def keywords(build, case) -> dict:
    ir = build.ir
    kw = {c.symbol.name: case.constants[ir.names.original(c.symbol).name] for c in ir.constants}
    if build.spec.groups:
        kw["num_groups"] = case.groups
    if ir.has_running:
        kw["training"] = case.training
    return kw


def run(package: str, build, case) -> list:
    """The generic API's output, gradients and running statistics through the printed operations, and
    again through the compiled kernels that generated.torch runs on CPU tensors (generated.numba, when
    it imports: every tensor sent there, whatever its size), once in each strategy of the numba layout
    that the case's view can take (derive.backends.numba.verify.forced)."""
    found = first_order(package, build, case)
    runtime = importlib.import_module(f"{package}.torch._runtime")
    if runtime.fast(build.spec.name, _Like()) is not None:
        layout = importlib.import_module(f"{package}.numba._layout")
        before = runtime.NUMBA_MIN_ELEMENTS
        runtime.NUMBA_MIN_ELEMENTS = 0
        try:
            for strategy in STRATEGIES:   # each driver of the kernel contract, not only the case's own
                with forced(layout, strategy):
                    found += [(f"{where} (numba kernels, {strategy})", key, value)
                              for where, key, value in first_order(package, build, case, second_order=False)]
        finally:
            runtime.NUMBA_MIN_ELEMENTS = before
    return found


class _Like:
    """What runtime.fast() reads of a tensor: a large float64 CPU one."""

    class device:
        type = "cpu"

    @property
    def dtype(self):
        import torch
        return torch.float64

    def numel(self):
        return 1 << 62


def first_order(package: str, build, case, second_order: bool = True) -> list:
    import torch
    fn, ir = function(package, build), build.ir
    x = torch.tensor(case.x, requires_grad=True)
    params = [torch.tensor(w, requires_grad=True) for w in case.weights]
    # after x: the inputs with their own groups, then those that broadcast; their gradients after the parameters'
    own, broadcast = ([torch.tensor(case.inputs[ir.names.original(s).name], requires_grad=True) for s in leaves]
                      for leaves in ([dm.input for dm in ir.domains], ir.inputs))
    buffers = {r.buffer: torch.tensor(case.running[ir.names.original(r.symbol).name]) for r in ir.running}
    out = fn(x, *own, *broadcast, *params, **buffers, **keywords(build, case))
    out.backward(torch.tensor(case.dout))
    name = build.spec.name
    found = [(name, "out", out.detach().numpy())]
    found += [(f"{name} (backward)", f"grad:{k}", t.grad.numpy() if t.grad is not None else 0 * t.detach().numpy())
              for k, t in enumerate([x, *params, *broadcast, *own])]
    if case.training:
        found += [(name, f"running:{ir.names.original(r.symbol).name}", buffers[r.buffer].numpy())
                  for r in ir.running]
    if case.upstream and second_order:
        found += second(fn, build, case)
    return found


def second(fn, build, case) -> list:
    """The derived double backward through autograd: the gradients of the first-order gradients
    contracted with the case's upstream seeds, with respect to dout, x and the parameters."""
    import torch
    ir = build.ir
    x = torch.tensor(case.x, requires_grad=True)
    params = [torch.tensor(w, requires_grad=True) for w in case.weights]
    dout = torch.tensor(case.dout, requires_grad=True)
    buffers = {r.buffer: torch.tensor(case.running[ir.names.original(r.symbol).name]) for r in ir.running}
    out = fn(x, *params, **buffers, **keywords(build, case))
    grads = torch.autograd.grad(out, [x, *params], dout, create_graph=True)
    seeds = [torch.tensor(u) for u in case.upstream]
    used = [(g, s) for g, s in zip(grads, seeds) if g.requires_grad]
    if not used:
        return []
    found = torch.autograd.grad([g for g, _ in used], [dout, x, *params], [s for _, s in used], allow_unused=True)
    keys = ["grad2:dout"] + [f"grad2:{k}" for k in range(len(params) + 1)]
    tensors = [dout, x, *params]
    return [(f"{build.spec.name} (double backward)", key, g.detach().numpy() if g is not None else
             0 * t.detach().numpy()) for key, g, t in zip(keys, found, tensors)]


def _on_rows(module, build, view, rows) -> list:
    """The output and first-order gradients of ``module``'s training or test pass on the working view
    ``view`` (evaluate.View) of the case ``rows``."""
    import torch
    ir = build.ir
    runtime = importlib.import_module(module.__name__.rsplit(".", 1)[0] + "._runtime")
    const = {c.symbol.name: rows.constants[ir.names.original(c.symbol).name] for c in ir.constants}
    layout = runtime.layout(view.shape, view.axes, view.param_shape)
    x = torch.tensor(rows.x, requires_grad=True)
    params = [torch.tensor(w.reshape(view.param_shape), requires_grad=True) for w in rows.weights]
    if rows.training:
        buffers = {r.buffer: torch.tensor(rows.running[ir.names.original(r.symbol).name]) for r in ir.running}
        out = module.train(x, params, buffers, const, layout)
    else:
        stats = {stat: torch.tensor(rows.running[ir.names.original(r.symbol).name]).reshape(view.stat_shape)
                 for stat, r in zip(module.STATS.values(), ir.running)}   # STATS: in the order of ir.running
        out = module.test(x, params, stats, const, layout)
    out.backward(torch.tensor(rows.dout))
    return [("out", out)] + [(f"grad:{k}", t.grad if t.grad is not None else 0 * t)
                             for k, t in enumerate([x, *params])]


def over_rows(package: str, build, cases) -> str | None:
    """Each mode's case of groups of 2 on a view with groups over several rows (cases.over_rows: one
    more reduced axis in front), through the printed operations and then the numba kernels in every
    strategy, against the proved expressions' answers there: the first disagreement, or None."""
    from ...output.cases import agree
    from ...output.cases import over_rows as stacked
    module = importlib.import_module(f"{package}.torch.{build.spec.name}")
    runtime = importlib.import_module(f"{package}.torch._runtime")
    runs = [("printed operations", None)]
    if runtime.fast(build.spec.name, _Like()) is not None:
        runs += [(f"numba kernels, {strategy}", strategy) for strategy in STRATEGIES]
    chosen = {c.training: c for c in reversed(cases) if c.m == 2}
    for case in chosen.values():
        made = stacked(build.derivation, case)
        if made is None:
            continue
        view, rows = made
        for where, strategy in runs:
            before = runtime.NUMBA_MIN_ELEMENTS
            try:
                if strategy:
                    runtime.NUMBA_MIN_ELEMENTS = 0
                    with forced(importlib.import_module(f"{package}.numba._layout"), strategy):
                        found = _on_rows(module, build, view, rows)
                else:
                    found = _on_rows(module, build, view, rows)
            finally:
                runtime.NUMBA_MIN_ELEMENTS = before
            for key, value in found:
                err = agree(value.detach().numpy(), rows.expected[key])
                if err is not None:
                    return (f"{build.spec.name} ({where}): {key} differs from the proved expression by {err:.3g} "
                            f"(relative; case {rows.name})")
    return None


def check(package: str, build, cases) -> str | None:
    """Groups over several rows agree with the proved expressions (over_rows); and the derived double
    backward passes gradgradcheck (float64) in every mode, on a group of 3 -- for a
    graph without stop-gradients: where one is, autograd's derivative is not the function's own, which
    finite differences measure; there the comparison with the proved compact forms (run) checks it."""
    import torch
    problem = over_rows(package, build, cases)
    if problem:
        return problem
    fn, ir = function(package, build), build.ir
    if any(a.value.has(StopGrad) for f in ir.functions.values() for a in f.body):
        return None
    if ir.domains or ir.inputs or ir.spans:   # no derived double backward printed there yet (see derive.ir)
        return None
    chosen = {c.training: c for c in reversed(cases) if c.m == 3}
    for case in chosen.values():
        buffers = {r.buffer: torch.tensor(case.running[ir.names.original(r.symbol).name]) for r in ir.running}
        kw = keywords(build, case)

        def f(*inputs):
            return fn(*inputs, **{k: v.clone() for k, v in buffers.items()}, **kw)

        inputs = [torch.tensor(case.x, requires_grad=True)] + [torch.tensor(w, requires_grad=True)
                                                              for w in case.weights]
        if not torch.autograd.gradgradcheck(f, tuple(inputs), raise_exception=False):
            return f"the double backward fails torch.autograd.gradgradcheck (case {case.name})"
    return None
