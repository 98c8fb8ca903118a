"""The values a learner's outputs are compared with, each computed once per process.

- :func:`expected`: the kernels of :mod:`generated` (the proved derivation) on one case;
- :func:`slipped`: a slip's derivation (:mod:`derive.learners.slips`) on one case, evaluated
  by :mod:`derive.math.evaluate`;
- :func:`fed`: the CORRECT backward stages evaluated on the forward values of a slipped
  forward: what a right backward computes from the cache of a forward with that slip.

A grading run asks for the same cases for every submission; the caches make the derived
values a cost per run, not per submission.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..forward.library import BY_NAME
from ..math import evaluate
from . import slips
from .cases import EPS, MOMENTUM, RUNNING, args, cases


@lru_cache(maxsize=None)
def _generated() -> dict:
    import generated
    return {n: getattr(generated, n) for n in dir(generated) if n.split("_")[-1] in ("forward", "backward", "alt")}


def _frozen(d: dict) -> dict:
    for v in d.values():
        if isinstance(v, np.ndarray):
            v.flags.writeable = False
    return d


@lru_cache(maxsize=None)
def expected(family: str, kind: str, index: int) -> dict:
    """{output name: array} of the generated kernels on case ``index`` (train, test or a backward)."""
    fns, case = _generated(), cases(family)[index]
    fwd = fns[f"{family}_forward"]
    if kind == "test":
        return _frozen({"out": fwd(*args(family, "test", case))[0]})
    a = args(family, "train", case)
    out, cache = fwd(*a)
    if kind == "train":
        return _frozen({"out": out, **{k: a[-1].get(k) for k in case.running if family in RUNNING}})
    dx, dgamma, dbeta = fns[f"{family}_{kind}"](case.dout.copy(), cache)
    return _frozen({"dx": dx, "dgamma": dgamma, "dbeta": dbeta})


def _setting(d: slips.Derived, family: str, index: int):
    case = cases(family)[index]
    view = evaluate.view_of(BY_NAME[family].spec, case.x.shape, case.groups, d.axes)
    params = {"eps": EPS, "momentum": MOMENTUM, **dict(d.constants)}
    return case, view, {"gamma": case.gamma, "beta": case.beta}, params


@lru_cache(maxsize=None)
def slipped(slip_id: str, family: str, kind: str, index: int) -> dict | None:
    """The outputs of a slip's derivation on case ``index``; None where it has no test mode;
    None for an output (the running averages of a slip over other axes) it does not define."""
    d = slips.BY_ID[slip_id].derived(family)
    case, view, weights, params = _setting(d, family, index)
    c = case.x.shape[1]
    if kind == "test":
        if d.test is None:
            return None
        return _frozen({"out": evaluate.forward(d.test, case.x, weights, params, view, case.running)["out"]
                        .reshape(case.x.shape)})
    env = evaluate.forward(d.train, case.x, weights, params, view, case.running if d.axes is None else {})
    if kind == "train":
        run = {k: (env["new_" + k].reshape(c) if d.axes is None else None)
               for k in case.running if family in RUNNING}
        return _frozen({"out": env["out"].reshape(case.x.shape), **run})
    b = evaluate.backward(d.stages, d.params, env, case.dout, view)
    dx = b["dx"] if d.dx is None else evaluate.value(d.dx, b, view)
    grads = {}
    for st in d.params:
        name = st.symbol.name
        if name[1:] in d.unsummed:
            grads[name] = np.broadcast_to(evaluate.value(st.expr.args[0], b, view), view.shape).reshape(case.x.shape)
        else:
            grads[name] = b[name].reshape(case.gamma.shape)
    return _frozen({"dx": np.broadcast_to(dx, view.shape).reshape(case.x.shape), **grads})


@lru_cache(maxsize=None)
def fed(slip_id: str, family: str, index: int) -> dict:
    """The correct backward on the values of the slipped forward (its μ, σ², x̂ ...), on the
    layout's own groups: a right backward fed the cache of a forward with this slip."""
    d, good = slips.BY_ID[slip_id].derived(family), slips.correct(family)
    case, view, weights, params = _setting(d, family, index)
    right = evaluate.view_of(BY_NAME[family].spec, case.x.shape, case.groups)
    env = {**evaluate.forward(d.train, case.x, weights, params, view, {}), "m": right.m}
    b = evaluate.backward(good.stages, good.params, env, case.dout, right)
    return _frozen({"dx": np.broadcast_to(b["dx"], right.shape).reshape(case.x.shape),
                    **{st.symbol.name: b[st.symbol.name].reshape(case.gamma.shape) for st in good.params}})
