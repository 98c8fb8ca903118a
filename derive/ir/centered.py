"""The compact dx in x - mu for a graph with the mean of x and no normalized node (see :func:`centered`)."""
from __future__ import annotations

import sympy as sp

from ..math.algebra import BatchSum, Elem, M, expand_sums
from ..math.derivation import Derivation
from ..math import seeded


def centered(d: Derivation) -> tuple[Elem, sp.Expr, list] | None:
    """For a graph with the mean mu of x and no normalized node (layer norm in one line,
    gamma*(x - mu)/sqrt(var + eps) + beta): the compact dx written in xc = x - mu, as the proved compact
    form with x = xc + mu and the sums the reductions define (sum xc = 0, sum xc**2 = m*var), checked equal
    to it exactly.  In x, its per-group coefficients are large and cancel (at a constant group
    1/(eps + var)**(3/2) times terms that sum to 0); in xc they do not.  None where it does not apply."""
    from ..math.lemmas import reduction_facts
    model, dx = d.model, d.compact.dx
    x = model.x
    mu = next((n.symbol for n in model.nodes if n.definition == BatchSum(x) / M), None)
    if d.lemmas.x_rule or mu is None or not dx.has(x):
        return None
    xc = Elem(f"{x.name}_centered", real=True)
    powers = reduction_facts(model)
    facts = {x ** p: v for p, v in powers.items()}
    own = {xc: sp.Integer(0)}
    if 2 in powers:
        own[xc ** 2] = sp.expand(powers[2] - 2 * mu * powers[1] + M * mu ** 2)
    # x inside a function (sigmoid(x)) stays x: such a function is one per-element factor meanwhile
    inside = sorted((f for f in dx.atoms(sp.Function) if not isinstance(f, BatchSum) and f.has(x)),
                    key=sp.default_sort_key)
    masks = {f: Elem(f"_f{k}", real=True) for k, f in enumerate(inside)}
    shifted = dx.xreplace(masks).xreplace({x: xc + mu})
    value = sp.expand(expand_sums(shifted, own)).xreplace({v: f for f, v in masks.items()})
    exact = expand_sums(value.xreplace({xc: x - mu}), facts) - expand_sums(dx, facts)
    if seeded.simplify(exact) != 0:   # a rewrite that is not exactly the proved form is never printed
        return None
    from ..math.closed_form import coefficients
    return xc, x - mu, coefficients(value)
