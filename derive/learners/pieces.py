"""What the answers of ``derive explain`` share: their symbols, the exact checks, and pieces
of the batch-norm derivation rearranged for the reader.

Every claim that an expression is, or is not, zero is checked exactly before it is
printed (:func:`require`).
"""
from __future__ import annotations

from typing import NamedTuple

import sympy as sp

from ..forward.graph import Model
from ..math.algebra import BatchSum, Elem, expand_sums
from ..math.derivation import Derivation
from ..math.stages import inline
from ..proofs import first as proofs
from ..math import seeded


class Words(NamedTuple):
    """Symbols that only the answers use (the printer knows their names)."""

    u: sp.Symbol          #: the input of the layer before the bias (seed 004)
    t: sp.Symbol          #: a target
    dx: sp.Symbol
    dxhat: sp.Symbol
    dxnaive: sp.Symbol    #: dx with mu and var held constant
    dxseed: sp.Symbol     #: a seed's dx
    dxinside: sp.Symbol   #: dx with eps inside the root
    dxoutside: sp.Symbol  #: dx with eps outside the root
    b: sp.Symbol          #: the bias before batch norm
    db: sp.Symbol
    dbnaive: sp.Symbol
    dmu: sp.Symbol
    dvar: sp.Symbol
    dmuseed: sp.Symbol
    L: sp.Symbol          #: the loss


def words() -> Words:
    """The answers' own symbols: per-element ones are Elem, the others plain real symbols."""
    per_element = ("u", "t", "dx", "dxhat", "dxnaive", "dxseed", "dxinside", "dxoutside")
    return Words(*(Elem(name, real=True) if name in per_element else sp.Symbol(name, real=True)
                   for name in Words._fields))


class Names(NamedTuple):
    """The batch-norm symbols the answers speak of, taken from a derivation's own model."""

    x: sp.Symbol
    dy: sp.Symbol
    y: sp.Symbol
    mu: sp.Symbol
    var: sp.Symbol
    std: sp.Symbol
    xhat: sp.Symbol
    eps: sp.Symbol
    x_i: sp.Symbol     #: the column copy of x (element i of the Jacobian entry)
    xhat_i: sp.Symbol  #: the column copy of xhat


def bn_names(model: Model) -> Names:
    """The answers' symbols from ``model`` (a batch-norm graph: it has mu, var, std, xhat, eps)."""
    copies = proofs.column_copies(model)
    xhat = model.sym("xhat")
    return Names(model.x, model.dy, model.output.symbol, model.sym("mu"), model.sym("var"),
                 model.sym("std"), xhat, model.sym("eps"), copies[model.x], copies[xhat])


def require(ok: bool, claim: str) -> None:
    """Refuse to print an answer whose computed claim is false."""
    if not ok:
        raise RuntimeError(f"derive explain: a computed claim failed: {claim}")


def is_zero(expr: sp.Expr) -> bool:
    return sp.cancel(sp.together(expr)) == 0


def naive_gradient(d: Derivation) -> sp.Expr:
    """The backward pass with mu and var held constant: the test-mode stages, in sigma_eps."""
    return d.lemmas.canonical(inline(d.test_stages))


def jacobian_display(d: Derivation) -> sp.Expr:
    """d.jacobian with the factor of the Kronecker delta taken out: (gamma/sigma_eps)(delta_ij - ...)."""
    delta = sp.KroneckerDelta(proofs.I, proofs.J)
    scale = seeded.factor(sp.expand(d.jacobian).coeff(delta))
    shown = scale * sp.expand(sp.cancel(d.jacobian / scale))
    require(is_zero(shown - d.jacobian), "the rearranged Jacobian entry equals the proved one")
    return shown


def column_sum(d: Derivation) -> sp.Expr:
    """sum_i dy_j/dx_i from the proved Jacobian entry: the delta gives i = j, the rest sums over i."""
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(d.model)
    delta = sp.KroneckerDelta(proofs.I, proofs.J)
    jac = sp.expand(d.jacobian)
    on, off = jac.coeff(delta), sp.expand(jac - jac.coeff(delta) * delta)
    xhat_j = sp.Symbol("xhat_j", real=True)
    swap = {XHAT: xhat_j, XHAT_I: XHAT}
    summed = expand_sums(BatchSum(off.xreplace(swap)), d.lemmas.sums)
    return seeded.factor(on + summed.xreplace({xhat_j: XHAT}))
