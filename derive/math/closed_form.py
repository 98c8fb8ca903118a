"""From the staged chain rule to the compact result, by rewriting, not by typing it in.

The steps (each kept, so the documents can show what the simplifier did):

1. inline   -- substitute the earlier stages (dxhat, dvar, dmu) into dx;
2. reduce   -- apply the graph's proved lemmas (derive.lemmas): the change of
               variables (x = mu + sigma_eps*xhat for batch norm), the inversions
               (var = sigma_eps^2 - eps), and the sum facts (sum_k xhat_k = 0, ...),
               distributing every sum over its monomials;
3. collect  -- put the result over one denominator (sympy.factor).

What remains is dx in per-element symbols (dy, xhat, gamma) and named reductions
such as sum_k dy_k and sum_k dy_k*xhat_k.  :func:`coefficients` then splits it
into per-group coefficients, dx = a*dy + b*xhat + c.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..forward.model import Model
from .algebra import BatchSum, split_by_elements
from .lemmas import Lemmas
from .stages import Stage, backward, collected, inline, leaf_stages
from . import seeded


#: sympy.factor of a larger sum takes minutes (the double backward of a graph with a function of
#: a normalized value: 400 s for 3600 operations) and makes it larger; such a sum is put over one
#: denominator without factoring.  The library's largest is 178.
FACTOR_LIMIT = 400


def collect(expr: sp.Expr) -> sp.Expr:
    """``expr`` over one denominator: factored when it is small enough (:data:`FACTOR_LIMIT`)."""
    return seeded.factor(expr) if sp.count_ops(expr) <= FACTOR_LIMIT else sp.together(expr)


@dataclass(frozen=True)
class Compact:
    steps: tuple[tuple[str, sp.Expr], ...]   #: (what was done, dx after it)
    dx: sp.Expr                              #: the compact result

    @property
    def reductions(self) -> list[BatchSum]:
        """The named reductions the result is written with, sorted for determinism."""
        return sorted(self.dx.atoms(BatchSum), key=sp.default_sort_key)


def compact(lemmas: Lemmas, stages: tuple[Stage, ...]) -> Compact:
    inlined = inline(stages)
    reduced = lemmas.canonical(inlined)
    collected = collect(reduced)
    steps = (("inline the stages", inlined), ("reduce the sums", reduced),
             ("collect over one denominator", collected))
    return Compact(steps, collected)


def coefficients(dx: sp.Expr) -> list[tuple[sp.Expr, sp.Expr]]:
    """dx as sum of (per-group coefficient) * (monomial of per-element symbols).

    For batch normalization: dx = (gamma/sigma_eps)*dy + (-gamma S_dyxhat/(m sigma_eps))*xhat
    + (-gamma S_dy/(m sigma_eps)); pairs sorted by monomial for determinism.
    """
    return [(collect(c), mono) for c, mono in split_by_elements(dx)]


@dataclass(frozen=True)
class Gradient:
    """The gradient of one leaf besides x (a parameter, another input, an imported statistic).

    ``stage`` is reverse mode's d<leaf> in the node adjoints (per element, or per group for a
    per-group leaf); ``compact`` is the same with the node adjoints inlined and reduced by the
    lemmas (in forward values, dout and named reductions); ``collected`` is the tensor
    gradient: ParamSum(local) or OuterSum(per-group value) (derive.math.stages.collected).
    When only the output reads the leaf, ``stage`` reads dout alone and ``compact`` is it.
    """

    leaf: sp.Symbol
    stage: Stage
    compact: sp.Expr
    collected: Stage


def gradients(model: Model, lemmas: Lemmas) -> tuple[Gradient, ...]:
    """A :class:`Gradient` for every leaf of ``model.differentiable``, in that order."""
    nodes = backward(model)[:-1]
    adjoints = {st.symbol for st in nodes}
    out = []
    for st in leaf_stages(model):
        value = st.expr
        if value.free_symbols & adjoints:
            value = collect(lemmas.canonical(inline(nodes + (st,))))
        symbol = sp.Symbol("d" + st.wrt.name, real=True)
        out.append(Gradient(st.wrt, st, value, collected(symbol, st.wrt, value, st.paths)))
    return tuple(out)
