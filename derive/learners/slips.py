"""The catalogue of known slips: wrong answers DERIVED from the forward graph with one thing changed.

No wrong formula is typed in.  Each slip changes one thing and lets the engine do
the rest: a graph built from the library entry's own ``forward(g)`` through a
:class:`SlipGraph` that alters one call (a stop-gradient around μ, a variance
over m − 1, ε outside the root), or one change to a derived result (the running
update with momentum and 1 − momentum exchanged, dγ without its sum, one term of
the compact form with its sign flipped, the statistics taken over the wrong axes,
γ left out of the first stage dx̂ = γ·dy, the derived result at another ε).
Its backward comes from :func:`derive.stages.backward`; the formula a learner is
missing (or has extra) is the difference of the derived expressions, printed by
:mod:`derive.latex`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import sympy as sp

from ..docs.latex import math
from ..forward.graph import BATCH, RUNNING, Graph, Model, StopGrad
from ..forward.library import BY_NAME, Entry
from ..ir.program import abbreviate
from ..math import closed_form
from ..math import lemmas as lemmas_mod
from ..math import stages as stages_mod
from ..math.algebra import M
from ..math import seeded

FAMILIES = ("batchnorm", "layernorm", "spatial_batchnorm", "spatial_groupnorm")


class SlipGraph(Graph):
    """A Graph that makes one change to the calls of an entry's ``forward(g)``."""

    def __init__(self, name: str, params_vary: bool, stop=(), var_over_m_minus_1=False, eps_outside=False):
        super().__init__(name, params_vary)
        self.stop, self.var_m1, self.eps_outside = stop, var_over_m_minus_1, eps_outside

    def mean(self, name, summand, label="mean"):
        if self.var_m1 and name == "var":
            s = self._reduce(name, summand, label, 1 / (M - 1))
        else:
            s = super().mean(name, summand, label)
        return self.stop_gradient(s) if name in self.stop else s

    def let(self, name, expr, label=""):
        if self.eps_outside:
            eps = next(c.symbol for c in self._constants if c.symbol.name == "eps")
            expr = sp.sympify(expr).replace(
                lambda e: e.is_Pow and e.exp == sp.S.Half and e.base.has(eps),
                lambda e: sp.sqrt(e.base - eps) + eps)
        return super().let(name, expr, label)

    def running(self, buffer, stat, update=None):
        return super().running(buffer, stat.args[0] if isinstance(stat, StopGrad) else stat, update)


def strip(expr: sp.Expr, model: Model | None = None) -> sp.Expr:
    """The value of an expression: stop_gradient(a) is a; with ``model``, in that model's symbols
    (a slipped graph may give a node other assumptions, e.g. var not known to be >= 0)."""
    expr = expr.replace(lambda e: isinstance(e, StopGrad), lambda e: e.args[0])
    if model is None:
        return expr
    return expr.xreplace({s: model.sym(s.name) for s in expr.free_symbols if model.sym(s.name) is not None})


@dataclass(frozen=True)
class Derived:
    """A (possibly slipped) derivation, ready for :mod:`derive.evaluate`."""

    train: Model
    test: Model | None
    stages: tuple
    params: tuple
    axes: tuple[int, ...] | None = None    #: the group's axes, when not the layout's
    dx: sp.Expr | None = None              #: replaces the stages' dx (a flipped compact form)
    unsummed: tuple[str, ...] = ()         #: parameter gradients returned per element
    flipped: sp.Expr | None = None         #: the term of the compact form whose sign dx flips
    dropped: str | None = None             #: the parameter left out of the first stage (dx̂ = dy)
    constants: tuple[tuple[str, float], ...] = ()  #: constants the learner fixes (eps = 1e-8)


def derived(entry: Entry, graph: Graph | None = None) -> Derived:
    g = graph or entry.graph()
    if graph is not None:
        entry.forward(g)
    train = g.model(True)
    test = g.model(False) if g.has_running else None
    return Derived(train, test, stages_mod.backward(train), stages_mod.parameter_gradients(train))


@cache
def correct(family: str) -> Derived:
    return derived(BY_NAME[family])


@cache
def lemmas(family: str):
    return lemmas_mod.find(correct(family).train, 3)


def dx_expr(family: str, d: Derived) -> sp.Expr:
    """dx in the correct graph's reductions and abbreviations (σ_ε, Σ dy x̂)."""
    lem = lemmas(family)
    expr = d.dx if d.dx is not None else strip(stages_mod.inline(d.stages), correct(family).train)
    return lem.canonical(expr)


@cache
def compact_terms(family: str) -> tuple[sp.Expr, ...]:
    """The terms of the compact dx, coefficient times monomial, sorted by monomial."""
    c = closed_form.compact(lemmas(family), correct(family).stages)
    return tuple(coef * mono for coef, mono in closed_form.coefficients(c.dx))


# ----------------------------------------------------------------------------- the changes

def _graph(**change) -> Callable[[str], Derived]:
    def build(family: str) -> Derived:
        entry = BY_NAME[family]
        return derived(entry, SlipGraph(entry.spec.name, entry.spec.gamma_varies, **change))
    return build


def _swap_momentum(family: str) -> Derived:
    d = correct(family)
    def swap(model: Model) -> Model:
        mom = model.sym("momentum")
        return dataclasses.replace(model, running=tuple(
            dataclasses.replace(r, update=r.update.xreplace({mom: 1 - mom})) for r in model.running))
    return dataclasses.replace(d, train=swap(d.train))


def _unsummed(family: str) -> Derived:
    return dataclasses.replace(correct(family), unsummed=("gamma",))


def _over(axes: tuple[int, ...], params_vary: bool) -> Callable[[str], Derived]:
    """The entry's graph with its statistics over ``axes`` of the working view (e.g. each row of an
    (N, D) batch: axes (1,)); ``params_vary``: whether γ then varies inside one group."""
    def build(family: str) -> Derived:
        entry = BY_NAME[family]
        d = derived(entry, SlipGraph(entry.spec.name, params_vary))
        return dataclasses.replace(d, test=None, axes=axes)
    return build


def _dropped(param: str) -> Callable[[str], Derived]:
    """The derived backward with ``param`` set to 1 in its first stage: dx̂ = dy instead of γ·dy;
    the later stages, derived from dx̂, are kept."""
    def build(family: str) -> Derived:
        d = correct(family)
        first = d.stages[0]
        p = {s: sp.Integer(1) for s in first.expr.free_symbols if s.name == param}
        stage = dataclasses.replace(first, expr=first.expr.xreplace(p))
        return dataclasses.replace(d, stages=(stage, *d.stages[1:]), dropped=param)
    return build


def _constant(name: str, value: float) -> Callable[[str], Derived]:
    """The derived forward and backward, evaluated with the constant ``name`` fixed at ``value``."""
    def build(family: str) -> Derived:
        return dataclasses.replace(correct(family), constants=((name, value),))
    return build


def _flip(k: int) -> Callable[[str], Derived]:
    def build(family: str) -> Derived:
        terms = compact_terms(family)
        return dataclasses.replace(correct(family), dx=sp.Add(*terms) - 2 * terms[k], flipped=terms[k])
    return build


@dataclass(frozen=True)
class Slip:
    id: str
    sentence: str
    topic: str                                  #: the `derive explain` topic that answers it
    build: Callable[[str], Derived]
    families: tuple[str, ...] = FAMILIES

    def derived(self, family: str) -> Derived:
        return _built(self.id, family)


def _has_running(family: str) -> bool:
    return correct(family).test is not None


CATALOGUE: tuple[Slip, ...] = (
    Slip("no-mu-path", "dx ignores the path from x through the mean mu (mu treated as a constant).",
         "naive", _graph(stop=("mu",))),
    Slip("no-var-path", "dx ignores the path from x through the variance sigma^2 (sigma^2 treated as a "
         "constant).", "naive", _graph(stop=("var",))),
    Slip("naive", "dx = gamma * dout / sqrt(var + eps): the paths through both mu and sigma^2 are ignored.",
         "naive", _graph(stop=("mu", "var"))),
    Slip("dgamma-not-summed", "dgamma is dout * xhat per element: it is not summed over the batch.",
         "slips", _unsummed),
    Slip("var-m-1", "The variance divides by m - 1 (np.var(ddof=1), torch.var's default) instead of m.",
         "slips", _graph(var_over_m_minus_1=True)),
    Slip("eps-outside", "epsilon is added outside the square root: (x - mu) / (sqrt(var) + eps).",
         "eps", _graph(eps_outside=True)),
    Slip("wrong-axis", "The statistics are taken over axis 1 (the features of each sample) instead of "
         "axis 0 (the batch): the features x batch layout mixed up.", "layout", _over((1,), True),
         ("batchnorm",)),
    Slip("whole-array", "The statistics are taken over the whole array (np.mean(x) or np.sum(x) with no "
         "axis, as in seed 000) instead of over each group.", "layout", _over((0, 1), True),
         ("batchnorm", "layernorm")),
    Slip("per-position", "Spatial batch norm's statistics are taken per (c, h, w) position over the batch "
         "only (x reshaped to (N, C*H*W), as in seed 001) instead of per channel over (N, H, W).",
         "layout", _over((0,), False), ("spatial_batchnorm",)),
    Slip("no-gamma-in-dxhat", "gamma is left out of dxhat: dxhat = dout instead of gamma * dout.",
         "slips", _dropped("gamma")),
    Slip("eps-1e-8", "epsilon is a constant of the learner's own, 1e-8 (as in seeds 001 and 002), "
         "instead of the param dict's eps.", "eps", _constant("eps", 1e-8)),
    *(Slip(f"sign-{k + 1}", f"Term {k + 1} of the compact form of dx has the wrong sign.", "slips",
           _flip(k)) for k in range(3)),
    Slip("momentum-swapped", "The running averages swap momentum and 1 - momentum "
         "(PyTorch's convention for momentum, with CS231n's default 0.9).", "slips", _swap_momentum,
         ("batchnorm", "spatial_batchnorm")),
)
BY_ID = {s.id: s for s in CATALOGUE}


@cache
def _built(slip_id: str, family: str) -> Derived:
    return BY_ID[slip_id].build(family)


def applies(slip: Slip, family: str) -> bool:
    if slip.id.startswith("sign-"):
        return int(slip.id[5:]) <= len(compact_terms(family))
    return family in slip.families and (slip.id != "momentum-swapped" or _has_running(family))


# ----------------------------------------------------------------------------- the formula

def difference(slip: Slip, family: str) -> tuple[str, sp.Expr]:
    """(what differs, the learner's expression minus the derivation's), from the derived expressions."""
    good, bad = correct(family), slip.derived(family)
    if bad.axes is not None:
        mu = good.train.node(good.train.sym("mu")).definition
        return f"mu, summed over {_axes(bad.axes)} instead of {_axes(BY_NAME[family].spec.reduce_axes)}", mu
    if bad.constants:
        name, value = bad.constants[0]
        return f"{name}, yours minus the derived one", sp.Float(value, 3) - good.train.sym(name)
    if bad.dropped is not None:
        g, b = good.stages[0], bad.stages[0]
        return f"{g.symbol.name}, yours minus the derived one", seeded.factor(b.expr - g.expr)
    for g_node, b_node in zip(good.train.lets + good.train.nodes, bad.train.lets + bad.train.nodes):
        delta = strip(b_node.definition, good.train) - g_node.definition
        if seeded.simplify(delta) != 0:
            return f"{g_node.symbol.name}, yours minus the derived one", sp.factor_terms(sp.together(delta))
    for g_run, b_run in zip(good.train.running, bad.train.running):
        if g_run.update != b_run.update:
            return f"new {g_run.buffer}, yours minus the derived one", seeded.factor(b_run.update - g_run.update).xreplace(
                {RUNNING: g_run.symbol, BATCH: g_run.stat})
    if bad.dx is not None:
        return "dx, the term whose sign is flipped", bad.flipped
    if bad.unsummed:
        p = next(s for s in good.params if s.symbol.name == "d" + bad.unsummed[0])
        return f"{p.symbol.name}, yours minus the derived one", p.expr.args[0] - p.expr
    delta = dx_expr(family, bad) - dx_expr(family, good)
    return "dx, yours minus the derived one", seeded.factor(abbreviate(seeded.factor(delta), lemmas(family)))


def _axes(axes: tuple[int, ...]) -> str:
    words = [str(a) for a in axes]
    return f"axis {words[0]}" if len(words) == 1 else f"axes {', '.join(words[:-1])} and {words[-1]}"


def formula(slip: Slip, family: str) -> dict:
    what, expr = difference(slip, family)
    m = math(expr)
    return {"of": what, "text": m.text, "tex": m.tex}
