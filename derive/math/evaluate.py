"""Evaluate a forward graph and its derived backward on NumPy arrays, without generating code.

The generated kernels are the product; this is a small interpreter for graphs that
are never written to disk, such as the slipped graphs of :mod:`derive.slips`, and for the
derivation of a user's graph before the backends print it.  Each expression of the model
(forward nodes, abbreviations, running updates, stages dx̂ … dx, dγ, dβ, the compact forms)
is turned into a NumPy function by ``sympy.lambdify``, with the engine's functions given
their meaning on a :class:`View`:

    BatchSum(f)  = sum of f over the group's axes (keepdims)
    ParamSum(f)  = sum of f over every axis the leaf (the stage's wrt) does not span
    OuterSum(v)  = the per-group v summed over the groups that share the leaf
    StopGrad(f)  = f (its derivative is 0, its value is f)
    Step(u, a)   = 1 where u > 0, a where u = 0, 0 where u < 0
    exp, log, sigmoid, tanh, softplus, abs, sign, clamp_min, clamp_max: NumPy's
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from ..forward.graph import BATCH, RUNNING, Model
from ..forward.layout import Spec
from .algebra import Elem, OuterSum, ParamSum
from .stages import Stage

#: the numeric meaning of each function of derive.forward.functions and of algebra.Step
FUNCTIONS = {
    "Exp": np.exp, "Log": np.log, "Tanh": np.tanh, "Sign": np.sign, "Absolute": np.abs,
    "Sigmoid": lambda u: 0.5 * (1.0 + np.tanh(0.5 * np.asarray(u, dtype=np.float64))),
    "Softplus": lambda u: np.logaddexp(0.0, u),
    "ClampMin": np.maximum, "ClampMax": np.minimum,
    "Step": lambda u, at_zero: np.where(np.asarray(u) > 0, 1.0, np.where(np.asarray(u) == 0, float(at_zero), 0.0)),
}
LATE = ("BatchSum", "ParamSum", "OuterSum", "StopGrad")


@dataclass(frozen=True)
class View:
    """The working view of x: its shape, the axes of one group, the axes the parameters span."""

    shape: tuple[int, ...]
    axes: tuple[int, ...]
    param_axes: tuple[int, ...]
    leaf_axes: tuple = ()          #: (name, axes) for every leaf whose axes are not param_axes

    @property
    def m(self) -> int:
        return int(np.prod([self.shape[a] for a in self.axes]))

    @property
    def param_shape(self) -> tuple[int, ...]:
        return tuple(n if a in self.param_axes else 1 for a, n in enumerate(self.shape))

    @property
    def stat_shape(self) -> tuple[int, ...]:
        return tuple(1 if a in self.axes else n for a, n in enumerate(self.shape))

    def spans(self, name: str) -> tuple[int, ...]:
        """The axes the leaf ``name`` spans (param_axes unless the layout says otherwise)."""
        return dict(self.leaf_axes).get(name, self.param_axes)

    def shape_of(self, name: str) -> tuple[int, ...]:
        spans = self.spans(name)
        return tuple(n if a in spans else 1 for a, n in enumerate(self.shape))

    def batch_sum(self, a):
        return np.sum(np.broadcast_to(a, self.shape), axis=self.axes, keepdims=True)

    def param_sum(self, a, spans=None):
        spans = self.param_axes if spans is None else spans
        other = tuple(k for k in range(len(self.shape)) if k not in spans)
        return np.sum(np.broadcast_to(a, self.shape), axis=other, keepdims=True)

    def outer_sum(self, a, spans):
        other = tuple(k for k in range(len(self.shape)) if k not in spans and k not in self.axes)
        return np.sum(np.broadcast_to(a, self.stat_shape), axis=other, keepdims=True)


def _norm(axes, ndim: int) -> tuple[int, ...]:
    return tuple(sorted(a % ndim for a in axes))


def view_of(spec: Spec, x_shape: tuple[int, ...], groups: int | None = None,
            axes: tuple[int, ...] | None = None) -> View:
    """The view the generated kernels use (group norm: (N, G, C/G, H, W)); ``axes`` overrides the group."""
    shape = tuple(x_shape)
    if spec.groups:
        n, c, *rest = shape
        shape = (n, groups, c // groups, *rest)
    leaves = tuple((name, _norm(spec.leaf_axes(name), len(shape)))
                   for name in sorted({n for n, _ in spec.axes} | {n for n, i in spec.inputs if i.axes is not None}))
    leaves += tuple((name, tuple(range(len(shape)))) for name, i in spec.inputs  # x's shape: every axis
                    if i.axes is None and not i.own_groups)
    leaves = tuple(sorted(leaves))
    if not leaves:  # the library's views, as before
        return View(shape, spec.reduce_axes if axes is None else axes, spec.param_axes)
    return View(shape, _norm(spec.reduce_axes if axes is None else axes, len(shape)),
                _norm(spec.param_axes, len(shape)), leaves)


def own_view(spec: Spec, name: str, shape: tuple[int, ...]) -> View:
    """The view of an input with its own groups: its own shape and reduce axes."""
    given = dict(spec.inputs)[name]
    return View(tuple(shape), _norm(given.reduce_axes, len(shape)), ())


def _numeric(view: View, spans=None):
    return {"BatchSum": view.batch_sum, "StopGrad": lambda a: a,
            "ParamSum": lambda a: view.param_sum(a, spans),
            "OuterSum": lambda a: view.outer_sum(a, view.param_axes if spans is None else spans)}


@lru_cache(maxsize=None)
def _compile(expr: sp.Expr, args: tuple[sp.Symbol, ...]):
    import unicodedata   # names Python reads as one (the micro sign and mu) get plain names of their kind
    if len({unicodedata.normalize("NFKC", s.name) for s in args}) < len(args):
        plain = {s: type(s)(f"a{k}_", **s.assumptions0) for k, s in enumerate(args)}
        expr, args = expr.xreplace(plain), tuple(plain[s] for s in args)
    return sp.lambdify(args, expr, modules=[{n: _Late(n) for n in LATE}, FUNCTIONS, "numpy"])


class _Late:
    """A placeholder bound to the current view at call time (lambdified code is cached per expression)."""

    current: dict = {}

    def __init__(self, name: str):
        self.name = name

    def __call__(self, a):
        return _Late.current[self.name](a)


def value(expr: sp.Expr, env: dict, view: View, spans=None):
    """``expr`` evaluated with the values in ``env`` (by symbol name) on ``view``; ``spans``: the
    axes of the leaf whose gradient a ParamSum or OuterSum collects (default: param_axes)."""
    expr = sp.sympify(expr)
    args = tuple(sorted(expr.free_symbols, key=lambda s: s.name))
    _Late.current = _numeric(view, spans)
    return _compile(expr, args)(*(env[s.name] for s in args))


def scalars(model: Model, params: dict, view: View) -> dict:
    env = {"m": view.m}
    for c in model.constants:
        env[c.symbol.name] = float(params.get(c.symbol.name, c.default))
    return env


def forward(model: Model, x, weights: dict, params: dict, view: View, running: dict | None = None,
            inputs: dict | None = None, own: dict | None = None) -> dict:
    """Every forward value of ``model`` (nodes, abbreviations, running updates) by name.

    ``weights``: gamma, beta (any shape with their elements in order); ``params``: eps, momentum;
    ``running``: the running buffers, used as the statistics in test mode and updated in training;
    ``inputs``: the other inputs by name; ``own``: name -> (array, View) for an input with its own
    groups (its reductions are evaluated on its view, then read per group of x).
    """
    env = scalars(model, params, view)
    env[model.x.name] = np.asarray(x, dtype=np.float64).reshape(view.shape)
    for p in model.params:
        env[p.name] = np.asarray(weights[p.name], dtype=np.float64).reshape(view.shape_of(p.name))
    for s in model.inputs:
        shape = view.shape_of(s.name) if s.name in dict(view.leaf_axes) else view.shape
        env[s.name] = np.asarray(inputs[s.name], dtype=np.float64).reshape(shape)
    for d in model.domains:
        array, own_v = own[d.input.name]
        sub = {**scalars(model, params, own_v), d.input.name: np.asarray(array, dtype=np.float64).reshape(own_v.shape)}
        for node in d.nodes:
            sub[node.symbol.name] = value(node.definition, sub, own_v)
            env[node.symbol.name] = np.reshape(sub[node.symbol.name], view.stat_shape)
        env["@" + d.input.name] = sub
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
        env[st.symbol.name] = value(st.expr, env, view, view.spans(st.wrt.name))
    return env


def gradients(d, env: dict, dout, view: View, training: bool = True, staged: bool = False) -> dict:
    """Every gradient of the derivation ``d`` -- dx, d<leaf> for each parameter and input, each
    input with its own groups last -- from its compact forms (``staged``: the stages inlined),
    continuing ``env`` from :func:`forward` in the same mode.  name -> array (keepdims shapes)."""
    from .stages import inline
    test = not training and d.test_model is not None
    model = d.test_model if test else d.model
    env = dict(env)
    env["dout"] = np.asarray(dout, dtype=np.float64).reshape(view.shape)
    nodes = (d.test_stages if test else d.stages)[:-1]
    dx = inline(d.test_stages) if test else (inline(d.stages) if staged else d.compact.dx)
    out = {"d" + model.x.name: value(dx, env, view)}
    for g in (d.test_grads or d.grads) if test else d.grads:
        if test and not d.test_grads:  # only the output reads the leaves: the same expression as in training
            local = g.stage.expr
        else:
            local = inline(nodes + (g.stage,)) if (staged or test) else g.compact
        name = g.collected.symbol.name
        env[name] = value(local, env, view)
        if g.leaf not in model.imports:
            wrap = ParamSum if isinstance(g.leaf, Elem) else OuterSum  # local: per element, or per group
            out[name] = value(wrap(local), env, view, view.spans(g.leaf.name))
    for dg in d.domains:
        sub = dict(env["@" + dg.input.name])
        own_v = own_view(d.spec, dg.input.name, sub[dg.input.name].shape)
        for seed in dg.seeds.values():
            sub[seed.name] = np.reshape(env[seed.name], own_v.stat_shape)
        expr = inline(dg.stages) if staged else dg.compact
        out["d" + dg.input.name] = np.broadcast_to(value(expr, sub, own_v), own_v.shape)
    return out


def second(d, env: dict, dout, upstream: dict, view: View) -> dict:
    """The double backward of ``d`` (training mode): the gradients of
    L2 = sum bar_dx*dx + sum over the leaves bar_d<leaf>*d<leaf> with respect to x, dout and each
    leaf the backward reads, from the compact forms of d.second (and of d.domains_second for an
    input with its own groups).  ``upstream``: 'bar_dx' and 'bar_d<leaf>' by name, each in its
    tensor's shape.  Returns 'bar_x', 'bar_dout', 'bar_<leaf>'."""
    so, model = d.second, d.model
    env = dict(env)
    env["dout"] = np.asarray(dout, dtype=np.float64).reshape(view.shape)
    for g in d.grads:  # the first order's adjoints of the imported statistics (their sides read them)
        if g.leaf in model.imports:
            env[g.collected.symbol.name] = value(g.compact, env, view)
    sides = []
    for ds in d.domains_second:  # the seeds bar_d<o> of the main double backward come from y's side
        sub = dict(env["@" + ds.first.input.name])
        own_v = own_view(d.spec, ds.first.input.name, sub[ds.first.input.name].shape)
        sub[ds.upstream.name] = np.asarray(upstream[ds.upstream.name], dtype=np.float64).reshape(own_v.shape)
        for seed in ds.first.seeds.values():
            sub[seed.name] = np.reshape(env[seed.name], own_v.stat_shape)
        for r in ds.results[1:]:
            env[r.symbol.name] = np.reshape(value(ds.compact[r.symbol], sub, own_v), view.stat_shape)
        sides.append((ds, sub, own_v))
    for o in so.graph.outputs:
        seed = so.graph.seeds[o].name
        if seed in env:
            continue
        shape = view.shape if o == so.graph.outputs[0] else view.shape_of(o.name[1:])
        env[seed] = np.asarray(upstream[seed], dtype=np.float64).reshape(shape)
    out = {}
    for r in so.results:
        local = value(so.compact[r.symbol], env, view)
        if r.wrt in model.imports:
            env[r.symbol.name] = local
        elif r.wrt in (model.x, model.dy):
            out[r.symbol.name] = np.broadcast_to(local, view.shape)
        else:
            wrap = ParamSum if isinstance(r.wrt, Elem) else OuterSum
            out[r.symbol.name] = value(wrap(r.symbol), {r.symbol.name: local}, view, view.spans(r.wrt.name))
    for ds, sub, own_v in sides:
        for o, bar in ds.outside.items():
            sub[str(bar)] = np.reshape(env[bar.name], own_v.stat_shape) if bar.is_Symbol else 0.0
        result = ds.results[0]
        out[result.symbol.name] = np.broadcast_to(value(ds.compact[result.symbol], sub, own_v), own_v.shape)
    return out
