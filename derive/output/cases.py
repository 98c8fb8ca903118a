"""The inputs on which every backend's kernels run before anything is written, and the answers the
proved expressions give on them, evaluated directly from SymPy (:mod:`derive.math.evaluate`).

A case is one shape of the input -- a group of m elements, m = 1, 2, 3 and 4 where the proofs cover
it, on one reduced axis and, where the layout has two, spread over both -- in one mode (training,
and test where the graph keeps running statistics), in float64.  Parameters, running buffers and
the upstream gradient are random, so no term can hide behind a 0 or a 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..math import evaluate
from ..math.algebra import Elem

GROUPS = 2        #: the group count of a layout with groups (group norm)
SIZES = (1, 2, 3, 4)


@dataclass
class Case:
    name: str                      #: e.g. "train, x (4, 3)"
    training: bool
    m: int                         #: the group size
    x: np.ndarray
    groups: int | None
    weights: list[np.ndarray]      #: one flat array per parameter, in the graph's order
    constants: dict                #: the graph's constants by their own names (their defaults)
    running: dict                  #: buffer -> its value before the step (flat)
    dout: np.ndarray
    upstream: list = field(default_factory=list)   #: bar_dx, bar_d<param>...: the double backward's seeds
    expected: dict = field(default_factory=dict)   #: "out", "running:<buffer>", "grad:<k>" -> value
    facade: dict = field(default_factory=dict)     #: "running:<buffer>" in torch's convention
    inputs: dict = field(default_factory=dict)     #: an input with its own groups -> its array (its own shape)
    view_shape: tuple = ()                         #: the working view x is laid out in


def view_shapes(spec, m: int) -> list[tuple[int, ...]]:
    """Working-view shapes whose groups have ``m`` elements."""
    ndim = len(spec.layout.split(",")) + (1 if spec.groups else 0)
    if spec.any_rank:
        ndim = 2
    reduced = sorted(a % ndim for a in spec.reduce_axes)
    base = [3 if a == 0 else 2 for a in range(ndim)]
    if spec.groups:
        base[1] = GROUPS
    out = []
    first = list(base)
    for k, a in enumerate(reduced):
        first[a] = m if k == 0 else 1
    out.append(tuple(first))
    if len(reduced) > 1 and m == 4:
        second = list(first)
        second[reduced[0]], second[reduced[-1]] = 2, 2
        out.append(tuple(second))
    return out


def x_shape(spec, view: tuple[int, ...]) -> tuple[int, ...]:
    return (view[0], view[1] * view[2]) + view[3:] if spec.groups else view


def features(view: evaluate.View, name: str) -> tuple[int, ...]:
    """The shape a parameter or input is given in: the sizes of the axes it spans (() for one value); a
    parameter on the layout's own axes as one flat vector (group norm's (C,) spans (G, C/G) of its view)."""
    if name not in dict(view.leaf_axes):
        n = int(np.prod([view.shape[a] for a in view.param_axes]))
        return (n,) if view.param_axes else ()
    return tuple(view.shape[a] for a in view.spans(name))


def own_shape(spec, name: str, view: evaluate.View, m: int) -> tuple[int, ...]:
    """The shape of an input with its own groups: x's groups on its other axes, in order, and groups of
    m + 1 elements (not x's m, so that a kernel dividing by the wrong size is caught)."""
    given = dict(spec.inputs)[name]
    letters = (given.layout or spec.layout).split(",")
    ndim = len(letters) if not letters[0].startswith("...") else len(view.shape)
    own = sorted(a % ndim for a in given.reduce_axes)
    groups = iter(n for a, n in enumerate(view.shape) if a not in view.axes)
    return tuple((m + 1 if a == own[0] else 1) if a in own else next(groups) for a in range(ndim))


def sizes(d) -> list[int]:
    """The group sizes the first-order proofs cover (m = 1 is left out where the formula divides by 0)."""
    proved = {p.size for p in d.proofs if p.size.startswith("m=")}
    return [m for m in SIZES if f"m={m}" in proved]


def cases(d, facade_rule=None, seed: int = 0) -> list[Case]:
    """Every case of derivation ``d``, with the proved expressions' answers.  ``facade_rule``: the
    running update in the convention of the entry's torch names (graph symbols), if it differs."""
    spec, model = d.spec, d.model
    rng = np.random.default_rng(seed)
    out = []
    modes = [True] + ([False] if d.test_model is not None else [])
    for training in modes:
        for m in sizes(d):
            if training and m < spec.min_group:
                continue
            for view_shape in view_shapes(spec, m):
                view = evaluate.View(view_shape, tuple(a % len(view_shape) for a in spec.reduce_axes),
                                     tuple(a % len(view_shape) for a in spec.param_axes),
                                     evaluate.view_of(spec, x_shape(spec, view_shape), GROUPS).leaf_axes)
                n_param = int(np.prod([view_shape[a] for a in view.param_axes]))
                weights = [rng.uniform(0.5, 1.5, features(view, p.name)) * rng.choice([-1, 1]) for p in model.params]
                running = {r.buffer: rng.uniform(0.5, 1.5, n_param) for r in model.running}
                x = rng.standard_normal(view_shape) * 2 + 0.5
                case = Case(f"{'train' if training else 'test'}, x {x_shape(spec, view_shape)}", training, m,
                            x.reshape(x_shape(spec, view_shape)), GROUPS if spec.groups else None, weights,
                            {c.symbol.name: c.default for c in model.constants}, running,
                            rng.standard_normal(x_shape(spec, view_shape)), view_shape=view_shape)
                # the double backward at m >= 2: a group of one is constant, its variance 0, and the second
                # order's terms of 1/std**4 (1e10 at eps = 1e-5) cancel to what float64 cannot resolve to 1e-10
                if training and d.second is not None and m >= 2 and not (model.domains or view.leaf_axes):
                    case.upstream = [rng.standard_normal(case.x.shape)] + [rng.standard_normal(w.shape)
                                                                          for w in weights]
                case.inputs = {dm.input.name: rng.standard_normal(own_shape(spec, dm.input.name, view, m)) * 1.5 - 0.3
                               for dm in model.domains}
                case.inputs.update({s.name: rng.standard_normal(features(view, s.name)) * 0.8 + 0.6
                                    for s in model.inputs})
                answer(d, case, view, facade_rule)
                out.append(case)
    return out


#: over_rows: the rows of the reduced axis put in front of a case's view
ROWS = 3


def over_rows(d, case: Case, seed: int = 1) -> tuple[evaluate.View, Case] | None:
    """``case`` on a view with one more reduced axis in front, of ROWS rows that no parameter spans, with
    the proved expressions' answers there: every group then runs over several rows (O > 1 in
    generated/numba/_layout.py), as in views that the kernel contract takes (layer norm over
    (3, N, D) with axes (0, 2)) and the entry's own layout never gives.  None where a leaf has axes or
    groups of its own."""
    spec = d.spec
    model = d.model if case.training else d.test_model
    ndim = len(case.view_shape)
    if model.domains or model.inputs or evaluate.view_of(spec, case.x.shape, GROUPS).leaf_axes:
        return None
    view = evaluate.View((ROWS, *case.view_shape), (0, *sorted(a % ndim + 1 for a in spec.reduce_axes)),
                         tuple(sorted(a % ndim + 1 for a in spec.param_axes)))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(view.shape) * 2 + 0.5
    rows = Case(f"{case.name} over {ROWS} rows: view {view.shape}, axes {view.axes}", case.training,
                case.m * ROWS, x, case.groups, [w.copy() for w in case.weights], dict(case.constants),
                {k: v.copy() for k, v in case.running.items()}, rng.standard_normal(view.shape),
                view_shape=view.shape)
    answer(d, rows, view, None)
    return view, rows


def answer(d, case: Case, view: evaluate.View, facade_rule) -> None:
    """The proved expressions' answers on ``case``."""
    model = d.model if case.training else d.test_model
    weights = {p.name: w for p, w in zip(model.params, case.weights)}
    running = {k: v.reshape(view.stat_shape) for k, v in case.running.items()}
    domains = {dm.input.name for dm in model.domains}
    own = {name: (a, evaluate.own_view(d.spec, name, a.shape)) for name, a in case.inputs.items() if name in domains}
    broadcast = {name: a for name, a in case.inputs.items() if name not in domains}
    env = evaluate.forward(model, case.x.reshape(view.shape), weights, case.constants, view, running, broadcast, own)
    case.expected["out"] = np.asarray(env[model.output.symbol.name]).reshape(case.x.shape)
    if case.training:
        for r in model.running:
            case.expected[f"running:{r.buffer}"] = np.asarray(env["new_" + r.buffer]).reshape(-1)
        for r, rule in zip(model.running, facade_rule or ()):
            case.facade[f"running:{r.buffer}"] = np.asarray(evaluate.value(rule, env, view)).reshape(-1)
    stages = d.stages if case.training else d.test_stages
    back = evaluate.backward(stages, d.params, env, case.dout.reshape(view.shape), view)
    case.expected["grad:0"] = np.asarray(back[stages[-1].symbol.name]).reshape(case.x.shape)
    for k, p in enumerate(d.params, 1):
        case.expected[f"grad:{k}"] = np.asarray(back[p.symbol.name]).reshape(-1)
    if model.domains or model.inputs:   # each input's gradient after the parameters' (those with own groups last)
        grads = evaluate.gradients(d, env, case.dout.reshape(view.shape), view, training=case.training)
        for k, s in enumerate((*model.inputs, *(dm.input for dm in model.domains)), 1 + len(d.params)):
            case.expected[f"grad:{k}"] = np.asarray(grads["d" + s.name]).reshape(-1)
    if case.upstream:
        second_answer(d, case, env, view)


def agree(got, expected, tol: float = 1e-10) -> float | None:
    """The relative error of ``got`` against ``expected`` when it exceeds ``tol`` (or the shapes or
    finiteness differ: inf); None when they agree."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if got.size != expected.size:
        return float("inf")
    got, expected = got.reshape(-1), expected.reshape(-1)
    if not np.array_equal(np.isfinite(got), np.isfinite(expected)):
        return float("inf")
    finite = np.isfinite(expected)
    if not finite.any():
        return None
    err = np.max(np.abs(got[finite] - expected[finite])) / max(1.0, float(np.max(np.abs(expected[finite]))))
    return err if err > tol else None


def second_answer(d, case: Case, env: dict, view: evaluate.View) -> None:
    """The double backward's answers: the gradients of sum(bar_dx*dx) + sum(bar_dp*dp) with respect to
    dout ("grad2:dout"), x ("grad2:0") and each parameter ("grad2:k"), from the proved compact forms."""
    so = d.second
    env = dict(env)
    env[d.model.dy.name] = case.dout.reshape(view.shape)
    for k, (seed, value) in enumerate(zip(so.graph.upstream, case.upstream)):
        env[seed.name] = value.reshape(view.shape if k == 0 else view.param_shape)   # bar_dx, then bar_dp
    inputs = [d.model.dy, d.model.x, *d.model.params]
    keys = ["grad2:dout"] + [f"grad2:{k}" for k in range(len(inputs) - 1)]
    found = {r.wrt: r.symbol for r in so.results}
    outer = tuple(a for a in range(len(view.shape)) if a not in view.param_axes and a not in view.axes)
    for key, v in zip(keys, inputs):
        shape = view.shape if v in (d.model.dy, d.model.x) else view.param_shape
        if v not in found:
            case.expected[key] = np.zeros(int(np.prod(shape)))
            continue
        value = np.broadcast_to(evaluate.value(so.compact[found[v]], env, view), view.shape if isinstance(
            v, Elem) else view.stat_shape)
        if v in d.model.params:
            value = view.param_sum(value) if isinstance(v, Elem) else np.sum(value, axis=outer, keepdims=True)
        case.expected[key] = np.asarray(value).reshape(-1)
