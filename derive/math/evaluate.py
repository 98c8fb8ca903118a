"""Evaluate a forward graph and its derived backward on NumPy arrays, without generating code.

The generated kernels are the product; this is a small interpreter for graphs that
are never written to disk, such as the slipped graphs of :mod:`derive.slips`.
Each expression of the model (forward nodes, abbreviations, running updates,
stages dx̂ … dx, dγ, dβ) is turned into a NumPy function by ``sympy.lambdify``,
with the engine's functions given their meaning on a :class:`View`:

    BatchSum(f)  = sum of f over the group's axes (keepdims)
    ParamSum(f)  = sum of f over every axis the parameter does not span
    StopGrad(f)  = f (its derivative is 0, its value is f)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from ..forward.graph import BATCH, RUNNING, Model
from ..forward.layout import Spec
from .stages import Stage


@dataclass(frozen=True)
class View:
    """The working view of x: its shape, the axes of one group, the axes the parameters span."""

    shape: tuple[int, ...]
    axes: tuple[int, ...]
    param_axes: tuple[int, ...]

    @property
    def m(self) -> int:
        return int(np.prod([self.shape[a] for a in self.axes]))

    @property
    def param_shape(self) -> tuple[int, ...]:
        return tuple(n if a in self.param_axes else 1 for a, n in enumerate(self.shape))

    @property
    def stat_shape(self) -> tuple[int, ...]:
        return tuple(1 if a in self.axes else n for a, n in enumerate(self.shape))

    def batch_sum(self, a):
        return np.sum(np.broadcast_to(a, self.shape), axis=self.axes, keepdims=True)

    def param_sum(self, a):
        other = tuple(k for k in range(len(self.shape)) if k not in self.param_axes)
        return np.sum(np.broadcast_to(a, self.shape), axis=other, keepdims=True)


def view_of(spec: Spec, x_shape: tuple[int, ...], groups: int | None = None,
            axes: tuple[int, ...] | None = None) -> View:
    """The view the generated kernels use (group norm: (N, G, C/G, H, W)); ``axes`` overrides the group."""
    shape = tuple(x_shape)
    if spec.groups:
        n, c, *rest = shape
        shape = (n, groups, c // groups, *rest)
    return View(shape, spec.reduce_axes if axes is None else axes, spec.param_axes)


def _numeric(view: View):
    return {"BatchSum": view.batch_sum, "ParamSum": view.param_sum, "StopGrad": lambda a: a}


#: the engine's functions of values, by their meaning (a clamp is max/min; a step is torch's mask)
_VALUES = {"ClampMin": np.maximum, "ClampMax": np.minimum,
           "Step": lambda a, h: np.heaviside(a, h), "Heaviside": lambda a, h=0.5: np.heaviside(a, h)}


@lru_cache(maxsize=None)
def _compile(expr: sp.Expr, args: tuple[sp.Symbol, ...]):
    import unicodedata   # names Python reads as one (the micro sign and mu) get plain names of their kind
    if len({unicodedata.normalize("NFKC", s.name) for s in args}) < len(args):
        plain = {s: type(s)(f"a{k}_", **s.assumptions0) for k, s in enumerate(args)}
        expr, args = expr.xreplace(plain), tuple(plain[s] for s in args)
    return sp.lambdify(args, expr, modules=[{n: _Late(n) for n in ("BatchSum", "ParamSum", "StopGrad")}, _VALUES,
                                            "numpy"])


class _Late:
    """A placeholder bound to the current view at call time (lambdified code is cached per expression)."""

    current: dict = {}

    def __init__(self, name: str):
        self.name = name

    def __call__(self, a):
        return _Late.current[self.name](a)


def value(expr: sp.Expr, env: dict, view: View):
    """``expr`` evaluated with the values in ``env`` (by symbol name) on ``view``."""
    expr = sp.sympify(expr)
    args = tuple(sorted(expr.free_symbols, key=lambda s: s.name))
    _Late.current = _numeric(view)
    return _compile(expr, args)(*(env[s.name] for s in args))


def scalars(model: Model, params: dict, view: View) -> dict:
    env = {"m": view.m}
    for c in model.constants:
        env[c.symbol.name] = float(params.get(c.symbol.name, c.default))
    return env


def forward(model: Model, x, weights: dict, params: dict, view: View, running: dict | None = None) -> dict:
    """Every forward value of ``model`` (nodes, abbreviations, running updates) by name.

    ``weights``: gamma, beta (any shape with their elements in order); ``params``: eps, momentum;
    ``running``: the running buffers, used as the statistics in test mode and updated in training.
    """
    env = scalars(model, params, view)
    env[model.x.name] = np.asarray(x, dtype=np.float64).reshape(view.shape)
    for p in model.params:
        env[p.name] = np.asarray(weights[p.name], dtype=np.float64).reshape(view.param_shape)
    running = running or {}
    for r in model.running:
        before = running.get(r.buffer, np.zeros(view.stat_shape))
        env[r.buffer] = np.asarray(before, dtype=np.float64).reshape(view.stat_shape)
    for s in model.stats:
        env[s.name] = env[next(r.buffer for r in model.running if r.stat == s)]
    for node in model.nodes:
        env[node.symbol.name] = value(node.definition, env, view)
    for let in model.lets:
        env[let.symbol.name] = value(let.definition, env, view)
    if model.training:
        for r in model.running:
            update = r.update.xreplace({RUNNING: r.symbol, BATCH: r.stat})
            env["new_" + r.buffer] = value(update, env, view)
    return env


def backward(stages: tuple[Stage, ...], params: tuple[Stage, ...], env: dict, dout, view: View) -> dict:
    """dx and the parameter gradients, continuing ``env`` from :func:`forward`."""
    env = dict(env)
    env["dout"] = np.asarray(dout, dtype=np.float64).reshape(view.shape)
    for st in stages + params:
        env[st.symbol.name] = value(st.expr, env, view)
    return env

