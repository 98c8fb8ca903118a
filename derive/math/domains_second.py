"""The second order through an input with its own groups (AdaIN's style features y).

The first-order backward has two parts: the main one (dx, the parameters' gradients, and the
adjoints d<o> of the statistics o of y that the graph reads, derive.math.closed_form.gradients)
and y's own, dy_k = D(y_k; o, d<o>) (derive.math.domains).  With upstream adjoints bar_dx,
bar_d<leaf> and bar_dy, the second-order loss is

    L2 = [sum_i bar_dx_i*dx_i + sum bar_d<leaf>*d<leaf>]  +  S,    S = sum_k bar_dy_k * dy_k.

S reads the main part only through d<o>, so the main double backward (derive.math.second_order,
where each d<o> is one more output) is seeded with bar_d<o> = dS/dd<o>, and it returns, besides
bar_x, bar_dout and the parameters', an adjoint bar_<o> for each statistic.  The rest is reverse
mode over y's side, from the loss

    S + sum_o bar_<o> * o      (o written out as y's reductions)

to y and to each d<o>: bar_y, and the seeds bar_d<o> (which do not depend on bar_<o>).
The compact forms distribute the sums with the facts y's reductions define.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..forward.model import Model, Node
from .algebra import BatchSum, expand_sums
from .closed_form import collect
from .domains import DomainGradient
from .second_order import PREFIX, SecondOrder, reduction_symbol
from .stages import Stage, adjoint_symbol, inline, reverse


@dataclass(frozen=True)
class DomainSecond:
    """The second order on the side of one input with its own groups."""

    first: DomainGradient
    nodes: tuple[Node, ...]        #: its reductions, its group sums, d<input> (per element), the loss
    upstream: sp.Symbol            #: bar_d<input>, the adjoint of its gradient (per element of its group)
    outside: dict                  #: statistic o -> bar_<o>, the main double backward's adjoint of o
    stages: tuple[Stage, ...]      #: reverse mode over ``nodes``; the last are the results
    results: tuple[Stage, ...]     #: bar_<input> (per element), then bar_d<o> for each statistic (per group)
    compact: dict                  #: result symbol -> its compact form


def derive(model: Model, dg: DomainGradient, main: SecondOrder) -> DomainSecond:
    y, d = dg.input, dg.domain
    dy = adjoint_symbol(y)
    upstream = adjoint_symbol(dy, PREFIX)
    results = {r.wrt: r.symbol for r in main.results}
    outside = {o: results.get(o, sp.Integer(0)) for o in d.outputs}
    sums = sorted(dg.compact.atoms(BatchSum), key=sp.default_sort_key)
    names = {s: reduction_symbol(s) for s in sums}
    own = [Node(names[s], s, "group sum", "reduce") for s in sums]
    own.append(Node(dy, dg.compact.xreplace(names), f"d{y.name}", "elementwise"))
    loss = BatchSum(upstream * dy) + sp.Add(*[bar * o for o, bar in outside.items()])
    own.append(Node(sp.Symbol(f"loss2_{y.name}", real=True), loss, "loss", "reduce"))
    nodes = d.nodes + tuple(own)
    seeds = list(dg.seeds.values())
    staged = reverse(nodes, {own[-1].symbol: sp.Integer(1)}, [y, *seeds], PREFIX + "total_")
    n = 1 + len(seeds)
    renamed = tuple(Stage(adjoint_symbol(v, PREFIX), st.expr, st.wrt, st.paths)
                    for v, st in zip([y, *seeds], staged[-n:]))
    staged = staged[:-n] + renamed
    written: dict = {}
    for node in own[:-1]:
        written[node.symbol] = node.definition.xreplace(written)
    compact = {}
    for k, r in enumerate(renamed):
        value = inline(staged, len(staged) - n + k).xreplace(written)
        compact[r.symbol] = collect(expand_sums(value, dg.facts))
    return DomainSecond(dg, nodes, upstream, outside, staged, renamed, compact)


def derive_all(model: Model, firsts: tuple[DomainGradient, ...], main: SecondOrder) -> tuple[DomainSecond, ...]:
    return tuple(derive(model, dg, main) for dg in firsts)


def seeds_of(ds: DomainSecond) -> dict:
    """bar_d<o> -> its compact value: the seeds of the main double backward's outputs d<o>."""
    return {r.symbol: ds.compact[r.symbol] for r in ds.results[1:]}

