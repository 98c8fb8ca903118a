"""The kernels' share of an input with its own groups (AdaIN's style features, derive.math.domains): the
adjoints of its statistics that the backward functions return, and its own statistics and gradient over
its own view (:class:`~derive.ir.program.DomainIR`)."""
from __future__ import annotations

import sympy as sp

from ..math.algebra import M
from ..math.derivation import Derivation
from .bodies import Assign, abbreviate, name_sums


def import_gradients(d: Derivation, staged_form: bool) -> list[Assign]:
    """The adjoint of each statistic of an input with its own groups (AdaIN's mu_y, var_y): one value
    per group of x (compact, or from the stages' adjoints), the seed of that input's own backward."""
    zero = {s: sp.Integer(0) for s in d.symbolic.vanishing}
    out = []
    for g in d.grads:
        if g.leaf in d.model.imports:
            expr = g.stage.expr.xreplace(zero).xreplace(d.lemmas.x_rule) if staged_form else g.compact
            lets = {let.definition: let.symbol for let in d.model.lets}
            out.append(Assign(g.collected.symbol, sp.factor_terms(abbreviate(expr, d.lemmas)).xreplace(lets)))
    return out


def domain_bodies(dg, m: sp.Symbol) -> tuple[list[Assign], list[Assign]]:
    """An input with its own groups (derive.math.domains): its statistics over its own view, and its
    gradient from the seeds, with ``m`` the size of ITS group."""
    forward_body = [Assign(n.symbol, n.definition.xreplace({M: m})) for n in dg.domain.nodes]
    # one term per seed, its per-element factor as the forward has it (2*dvar_y*(y - mu_y)/m_y: no
    # cancellation between y*dvar_y and mu_y*dvar_y far from zero)
    value = sp.collect(sp.expand(dg.compact.xreplace({M: m})), list(dg.seeds.values()), sp.factor_terms)
    return name_sums(forward_body), [Assign(dg.stages[-1].symbol, value)]
