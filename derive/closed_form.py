"""From the staged chain rule to the compact result, by rewriting, not by typing it in.

The steps (each kept, so the documents can show what the simplifier did):

1. inline   -- substitute dxhat, dvar and dmu into dx;
2. reduce   -- write x = mu + sigma_eps*xhat, distribute every sum, and use
               sum_k xhat_k = 0 and sum_k xhat_k^2 = m*var/sigma_eps^2;
3. collect  -- put the result over one denominator (sympy.factor).

What remains is dx in the per-element symbols dy, xhat (gamma) and named
reductions such as sum_k dy_k and sum_k dy_k*xhat_k.  :func:`coefficients`
then splits it into per-group coefficients, dx = a*dy + b*xhat + c.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .algebra import M, BatchSum, expand_sums, split_by_elements
from .model import EPS, STD, VAR, X, XHAT, Model
from .stages import Stage, inline


def canonical(expr: sp.Expr, model: Model, extra: dict[sp.Symbol, sp.Expr] | None = None) -> sp.Expr:
    """``expr`` in the normalized variables, with every sum reduced.

    x -> mu + sigma_eps*xhat (``extra`` gives the same rule for other copies
    of x), var -> its expression in sigma_eps, and sums distributed over
    monomials with the two facts of the normalization.
    """
    if model.spec.eps == "outside":
        # sqrt(var) = sigma_eps - eps; rewriting the root first avoids |sigma_eps - eps|.
        expr = expr.replace(
            lambda e: e.is_Pow and e.base == VAR and e.exp.is_Rational and e.exp.q == 2,
            lambda e: (STD - EPS) ** (2 * e.exp),
        )
    rules = {X: model.x_in_xhat, **(extra or {})}
    expr = expr.xreplace(rules).xreplace({VAR: model.var_in_std})
    return expand_sums(expr, facts(model))


def facts(model: Model) -> dict[sp.Expr, sp.Expr]:
    """Sums that the normalization fixes: sum xhat = 0 (centred), sum xhat^2 = m var / sigma_eps^2."""
    out = {XHAT**2: M * model.var_in_std / STD**2}
    if model.spec.centred:
        out[XHAT] = sp.Integer(0)
    return out


@dataclass(frozen=True)
class Compact:
    steps: tuple[tuple[str, sp.Expr], ...]   #: (what was done, dx after it)
    dx: sp.Expr                              #: the compact result

    @property
    def reductions(self) -> list[BatchSum]:
        """The named reductions the result is written with, sorted for determinism."""
        return sorted(self.dx.atoms(BatchSum), key=sp.default_sort_key)


def compact(model: Model, stages: tuple[Stage, ...]) -> Compact:
    inlined = inline(stages)
    reduced = canonical(inlined, model)
    collected = sp.factor(reduced)
    steps = (("inline the stages", inlined), ("reduce the sums", reduced),
             ("collect over one denominator", collected))
    return Compact(steps, collected)


def coefficients(dx: sp.Expr) -> list[tuple[sp.Expr, sp.Expr]]:
    """dx as sum of (per-group coefficient) * (monomial of per-element symbols).

    For batch normalization: dx = (gamma/sigma_eps)*dy + (-gamma S_dyxhat/(m sigma_eps))*xhat
    + (-gamma S_dy/(m sigma_eps)); pairs sorted by monomial for determinism.
    """
    return [(sp.factor(c), mono) for c, mono in split_by_elements(dx)]
