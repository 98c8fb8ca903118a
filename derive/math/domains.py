"""The gradient of an input with its own groups (AdaIN's style features), by reverse mode.

Such an input reaches the loss only through its reductions (mu_s = mean(s), var_s = ...),
which the main graph reads as per-group leaves.  The main graph's reverse mode gives their
adjoints d<stat> (derive.math.closed_form.gradients, one per imported statistic); reverse mode
over the input's own reductions, seeded with those adjoints, gives

    ds_i = sum over its reductions r of dr * dr/ds_i

and the chain rule composes the two.  The compact form distributes the sums and uses the
facts the reductions define (sum_k s_k = m*mu_s, ...), with m the size of ITS group.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..forward.model import Domain, Model, Node
from .algebra import Elem, expand_sums
from .closed_form import collect
from .lemmas import reduction_facts
from .stages import Stage, adjoint_symbol, inline, reverse

PREFIX = "dtotal_"  #: a statistic's total adjoint, apart from its seed d<stat> from the main graph


@dataclass(frozen=True)
class DomainGradient:
    """d<input> for one input with its own groups."""

    domain: Domain
    seeds: dict                    #: statistic -> its adjoint d<stat> (a per-group value of the main backward)
    #: the total adjoint dtotal_<reduction> of each reduction (its seed plus what later ones pass
    #: back), latest first, then d<input>
    stages: tuple[Stage, ...]
    compact: sp.Expr               #: d<input> per element of its own group, in s, its statistics and the seeds
    facts: dict                    #: the sums its reductions define, used to reduce the compact form

    @property
    def input(self) -> Elem:
        return self.domain.input


def model_of(model: Model, domain: Domain) -> Model:
    """The input's reductions as a graph of their own (for the lemmas and the proofs)."""
    return Model(f"{model.name}:{domain.input.name}", model.training, domain.input, Elem("dout", real=True), (),
                 model.constants, (), domain.nodes, (), ())


def derive(model: Model, domain: Domain) -> DomainGradient:
    seeds = {o: adjoint_symbol(o) for o in domain.outputs}
    # A statistic may also be read by a later one (var_s reads mu_s): its total adjoint is its
    # seed plus what it collects, so reverse mode runs from the loss sum_o seed_o*o.
    loss = Node(sp.Symbol(f"loss_{domain.input.name}", real=True), sp.Add(*[v * o for o, v in seeds.items()]),
                "loss", "reduce")
    staged = reverse(domain.nodes + (loss,), {loss.symbol: sp.Integer(1)}, [domain.input], PREFIX)
    last = staged[-1]
    staged = staged[:-1] + (Stage(adjoint_symbol(domain.input), last.expr, last.wrt, last.paths),)
    facts = {domain.input ** p: v for p, v in reduction_facts(model_of(model, domain)).items()}
    compact = collect(expand_sums(inline(staged), facts))
    return DomainGradient(domain, seeds, staged, compact, facts)


def derive_all(model: Model) -> tuple[DomainGradient, ...]:
    return tuple(derive(model, d) for d in model.domains)
