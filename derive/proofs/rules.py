"""The derivative rules of the elementwise functions a graph uses, proved before any proof uses them.

Every proof differentiates the functions of :mod:`derive.forward.functions` by their rules
(the brute-force Jacobians too), so each rule is first checked against SymPy:

* a smooth function (exp, log, sigmoid, tanh, softplus): d/du reference(u) - rule(u), with
  every function in the rule written as its reference, simplifies to 0 (u real; u > 0 for log);
* |u|: on each side of 0 its reference is u or -u, whose derivative is sign(u) there
  (torch's 0 at u = 0 is a convention, as are the clamps' kink rules and sign' = 0).
"""
from __future__ import annotations

import time

import sympy as sp

from ..forward.functions import SMOOTH, Absolute, Log, Sign, Smooth
from ..forward.model import Model
from .first import Proof, ProofError
from ..math import seeded


def used(model: Model) -> list[type]:
    """The function classes with a rule to prove that ``model`` uses, sorted by name."""
    exprs = [n.definition for n in model.nodes + model.lets] + [n.definition for d in model.domains for n in d.nodes]
    kinds = {type(f) for e in exprs for f in e.atoms(sp.Function)}
    return sorted((k for k in kinds if k in SMOOTH or k is Absolute), key=lambda k: k.__name__)


def _reference(expr: sp.Expr) -> sp.Expr:
    return expr.replace(lambda e: isinstance(e, Smooth), lambda e: type(e).reference(e.args[0]))


def holds(kind: type) -> bool:
    """The rule of ``kind``, exactly (see the module's docstring)."""
    if kind is Absolute:
        p = sp.Symbol("p", positive=True)
        return all(seeded.simplify(sp.diff(sp.Abs(side), p) - sp.sign(side) * sp.diff(side, p)) == 0
                   for side in (p, -p))
    u = sp.Symbol("u", positive=True) if kind is Log else sp.Symbol("u", real=True)
    rule = _reference(kind.rule(u))
    return seeded.simplify(sp.diff(kind.reference(u), u) - rule) == 0


def claim(kind: type) -> str:
    u = sp.Symbol("u")
    if kind is Absolute:
        return f"rule: d/du {kind.__name__}(u) = {Sign(u)} (0 at u = 0, torch's)"
    return f"rule: d/du {kind.__name__}(u) = {kind.rule(u)}"


def prove(model: Model) -> list[Proof]:
    """One proof per rule the graph uses; ProofError naming the function and its nodes if one fails."""
    log = []
    for kind in used(model):
        t0 = time.perf_counter()
        if not holds(kind):
            nodes = [n.symbol.name for n in model.nodes + model.lets if n.definition.has(kind)]
            raise ProofError(model.name, f"{claim(kind)} (used by {', '.join(nodes)})", "any u")
        log.append(Proof(claim(kind), "any u", time.perf_counter() - t0))
    return log
