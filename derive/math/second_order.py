"""Second order: reverse mode over the backward graph.

The backward pass of one group is itself a graph.  Its inputs are x and dy (and the
parameters); its nodes are the forward nodes it reads, the named reductions of the
compact form (sum_k dy_k, sum_k dy_k*xhat_k, ...), dx, and each parameter's share of
its gradient (dgamma: sum_k dy_k*xhat_k over the group, or dy*xhat per element).
A double backward receives the adjoints of those outputs -- bar_dx (per element),
bar_dgamma, bar_dbeta -- and returns the gradient of

    L2 = sum_i bar_dx_i*dx_i + bar_dgamma*dgamma + bar_dbeta*dbeta

with respect to x, dy and the parameters: bar_x, bar_dout, bar_gamma.  The same reverse mode
that gives the first order (derive.stages.reverse) runs over this graph, with the
upstream adjoints as seeds; the stages are then inlined and reduced with the same
proved lemmas to a compact form (derive.closed_form does this for dx).

The proofs (derive.proofs_second) compare with the brute-force second derivatives.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..forward.graph import Model, Node
from .algebra import BatchSum, Elem, OuterSum, Step, split_by_elements
from .closed_form import Compact, collect
from .lemmas import Lemmas
from .stages import Stage, adjoint_symbol, inline, reverse

PREFIX = "bar_"  #: the adjoints of the second-order loss: bar_x = dL2/dx (printed x with a bar)


def reduction_symbol(s: BatchSum) -> sp.Symbol:
    """sum_dout_xhat for sum_k dout_k*xhat_k: the name the kernels use (derive.kernels.reduction_name)."""
    factors = sorted(str(f) for f in sp.Mul.make_args(s.args[0]))
    return sp.Symbol("sum_" + "_".join(factors), real=True)


@dataclass(frozen=True)
class BackwardGraph:
    """The backward pass of one group as a graph, and the adjoints it is seeded with."""

    nodes: tuple[Node, ...]         #: forward nodes, reductions, dx, the parameters' shares
    outputs: tuple[sp.Symbol, ...]  #: dx, then one share per parameter
    seeds: dict                     #: output -> its upstream adjoint (bar_dx, bar_dgamma, ...)
    leaves: tuple[sp.Symbol, ...]   #: x, dout, the parameters the backward reads
    shares_of: tuple[sp.Symbol, ...] = ()  #: the leaf whose gradient each output after dx is

    @property
    def upstream(self) -> tuple[sp.Symbol, ...]:
        return tuple(self.seeds[o] for o in self.outputs)


def backward_graph(model: Model, compact: Compact, params: tuple[Stage, ...], dx: sp.Symbol) -> BackwardGraph:
    # The output node too, when the backward reads it (L2 normalization writes dx with it).
    read = compact.dx.free_symbols.union(*(p.expr.free_symbols for p in params))
    forward = [n for n in model.nodes if n is not model.output or n.symbol in read]
    # Abbreviations (std) are written out, so that reverse mode sees every path through them.
    lets = {let.symbol: let.definition for let in model.lets}
    # the group sums of dx, then those only the parameters' gradients read: each a node of its own
    more = set().union(*(p.expr.args[0].atoms(BatchSum) for p in params)) - set(compact.reductions)
    reductions = compact.reductions + sorted(more, key=sp.default_sort_key)
    names = {s: reduction_symbol(s) for s in reductions}
    sums = [Node(names[s], s.xreplace(lets), "group sum", "reduce") for s in reductions]
    nodes = forward + sums + [Node(dx, compact.dx.xreplace(names).xreplace(lets), "dx", "elementwise")]
    outputs = [dx]
    for p in params:
        local = p.expr.args[0].xreplace(lets).xreplace(names)
        if isinstance(p.wrt, Elem):
            share = Node(Elem(p.symbol.name, real=True), local, f"{p.symbol}", "elementwise")
        elif isinstance(p.expr, OuterSum):  # a per-group value: the group's share as it stands
            share = Node(p.symbol, local, f"{p.symbol}", "reduce")
        else:
            share = Node(p.symbol, BatchSum(local), f"{p.symbol}", "reduce")
        nodes.append(share)
        outputs.append(share.symbol)
    seeds = {o: adjoint_symbol(o, PREFIX) for o in outputs}
    read = set().union(*(n.definition.free_symbols for n in nodes))
    leaves = [model.x, model.dy] + [p for p in model.differentiable if p in read]
    return BackwardGraph(tuple(nodes), tuple(outputs), seeds, tuple(leaves), tuple(p.wrt for p in params))


@dataclass(frozen=True)
class SecondOrder:
    graph: BackwardGraph
    stages: tuple[Stage, ...]             #: reverse mode over the backward graph
    results: tuple[Stage, ...]            #: bar_x, bar_dout, and one per parameter the backward reads
    compact: dict                         #: result symbol -> its compact form
    steps: dict                           #: result symbol -> ((what was done, expr), ...)

    def coefficients(self, symbol: sp.Symbol) -> list[tuple[sp.Expr, sp.Expr]]:
        return [(collect(c), mono) for c, mono in split_by_elements(self.compact[symbol])]

    @property
    def reductions(self) -> list[BatchSum]:
        found = set().union(*(e.atoms(BatchSum) for e in self.compact.values()))
        return sorted(found, key=sp.default_sort_key)


def definitions(graph: BackwardGraph, model: Model) -> dict:
    """The backward graph's own nodes (reductions, dx, shares) written out."""
    own = [n for n in graph.nodes if n not in model.nodes]
    out: dict = {}
    for n in own:
        out[n.symbol] = n.definition.xreplace(out)
    return out


def derive(model: Model, lemmas: Lemmas, compact: Compact, params: tuple[Stage, ...],
           dx: sp.Symbol) -> SecondOrder:
    graph = backward_graph(model, compact, params, dx)
    staged = reverse(graph.nodes, graph.seeds, graph.leaves, PREFIX)
    n = len(graph.leaves)
    results = staged[-n:]
    written = definitions(graph, model)
    out, steps = {}, {}
    for k, st in enumerate(results):
        inlined = inline(staged, len(staged) - n + k)
        opened = inlined.xreplace(written)
        reduced = lemmas.canonical(opened)
        # a step is 0 or 1, so its powers are itself (the proofs check the result on each side)
        collected = collect(reduced).replace(
            lambda e: e.is_Pow and isinstance(e.base, Step) and e.exp.is_Integer and e.exp > 0,
            lambda e: e.base)
        steps[st.symbol] = (("inline the stages", inlined), ("write out the group sums", opened),
                            ("reduce the sums", reduced), ("collect over one denominator", collected))
        out[st.symbol] = collected
    return SecondOrder(graph, staged, results, out, steps)
