"""Every library graph against torch.autograd on the same forward pass.

The forward is evaluated in torch from the graph's own SymPy expressions (a small
evaluator below: sums over the group's axes, stop-gradient as detach, clamps as
torch's clamps), and torch differentiates it.  The generated backward of every
entry, NumPy and numba, training and test mode, must agree within 1e-10 in float64.
A new library entry comes under this test without any edit here.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import sympy as sp
import torch

from derive.forward.graph import ClampMax, ClampMin, StopGrad
from derive.forward.library import ENTRIES
from derive.math.algebra import BatchSum, Const, M

SHAPES = {"N,D": (7, 5), "N,C,H,W": (3, 4, 3, 2), "...,D": (4, 6), "O,I,H,W": (4, 3, 2, 2)}
G = 2


def view_of(spec, shape):
    return (shape[0], G, shape[1] // G) + shape[2:] if spec.groups else shape


def axes_of(spec, view):
    n = len(view)
    return tuple(a % n for a in spec.reduce_axes), tuple(a % n for a in spec.param_axes)


def evaluate(expr, env, axes):
    """A SymPy expression of the graph as torch operations on the working view."""
    if expr in env:
        return env[expr]
    if expr.is_Number:
        return float(expr)
    if isinstance(expr, BatchSum):
        return evaluate(expr.args[0], env, axes).sum(dim=axes, keepdim=True)
    if isinstance(expr, StopGrad):
        return torch.as_tensor(evaluate(expr.args[0], env, axes)).detach()
    if isinstance(expr, ClampMin):
        return torch.clamp_min(torch.as_tensor(evaluate(expr.args[0], env, axes)), evaluate(expr.args[1], env, axes))
    if isinstance(expr, ClampMax):
        return torch.clamp_max(torch.as_tensor(evaluate(expr.args[0], env, axes)), evaluate(expr.args[1], env, axes))
    args = [evaluate(a, env, axes) for a in expr.args]
    if expr.is_Add:
        return sum(args[1:], args[0])
    if expr.is_Mul:
        out = args[0]
        for a in args[1:]:
            out = out * a
        return out
    if expr.is_Pow:
        base, exp = args
        return torch.sqrt(torch.as_tensor(base)) if exp == 0.5 else base ** exp
    raise NotImplementedError(type(expr))


def cases():
    for entry in ENTRIES:
        modes = ("train", "test") if entry.running_stats else ("train",)
        for mode in modes:
            for backend in ("numpy", "numba"):
                yield pytest.param(entry, mode, backend, id=f"{entry.spec.name}-{mode}-{backend}")


@pytest.mark.parametrize("entry,mode,backend", list(cases()))
def test_backward_matches_torch_autograd_of_the_graph(entry, mode, backend):
    spec = entry.spec
    package = "generated" if backend == "numpy" else "generated.numba"
    if backend == "numba":
        pytest.importorskip("numba")
    module = importlib.import_module(f"{package}.{spec.name}")
    model = entry.model(mode == "train")
    rng = np.random.default_rng(len(spec.name))
    shape = SHAPES[spec.layout]
    view = view_of(spec, shape)
    axes, param_axes = axes_of(spec, view)
    x = rng.normal(size=shape) * 1.7 + 0.3
    dout = rng.normal(size=shape)
    features = tuple(shape[a % len(shape)] for a in ((1,) if spec.groups else spec.param_axes))
    param_view = tuple(view[a] if a in param_axes else 1 for a in range(len(view)))
    params = {p.name: rng.normal(size=features) + 1.0 for p in model.params}
    stat_view = param_view if param_axes else tuple(1 if a in axes else n for a, n in enumerate(view))
    running = {r.buffer: (rng.uniform(0.5, 2.0, size=features) if "var" in r.buffer
                          else rng.normal(size=features)) for r in model.running}
    param_dict = {"mode": mode, **{k: v.copy() for k, v in running.items()}} if model.running else {}

    # torch, from the graph's own expressions
    tx = torch.tensor(x.reshape(view), requires_grad=True)
    tp = {k: torch.tensor(v.reshape(param_view), requires_grad=True) for k, v in params.items()}
    env = {model.x: tx, M: float(np.prod([view[a] for a in axes]))}
    env.update({model.sym(k): v for k, v in tp.items()})
    env.update({c.symbol: c.default for c in model.constants})
    for r in model.running:
        value = torch.tensor(running[r.buffer].reshape(stat_view))
        env[r.symbol] = value
        if mode == "test":
            env[r.stat] = value
    for node in model.nodes:
        env[node.symbol] = evaluate(node.definition, env, axes)
    out = env[model.output.symbol]
    (out * torch.tensor(dout.reshape(view))).sum().backward()

    args = [x, *(params[p.name] for p in model.params)] + ([G] if spec.groups else []) + [param_dict]
    y, cache = getattr(module, f"{spec.name}_forward")(*args)
    np.testing.assert_allclose(y, out.detach().numpy().reshape(shape), rtol=1e-10, atol=1e-10)
    names = [n for n in dir(module) if n.startswith(f"{spec.name}_backward")]
    assert names
    for name in names:
        grads = getattr(module, name)(dout, cache)
        np.testing.assert_allclose(grads[0], tx.grad.numpy().reshape(shape), rtol=1e-10, atol=1e-10,
                                   err_msg=f"{name}: dx")
        for p, g in zip(model.params, grads[1:]):
            np.testing.assert_allclose(np.reshape(g, -1), tp[p.name].grad.numpy().reshape(-1),
                                       rtol=1e-10, atol=1e-10, err_msg=f"{name}: d{p.name}")
