"""The documents' section "Second order", printed from derive.second_order's proved expressions."""
from __future__ import annotations

import sympy as sp

from ..math.algebra import BatchSum, Elem
from ..math.second_order import SecondOrder
from .blocks import Code, equation, listing, para
from .latex import math


def loss_of(so: SecondOrder) -> sp.Expr:
    """L2 as the proofs form it: the upstream adjoints times the backward's outputs, summed."""
    g = so.graph
    return sp.Add(*[BatchSum(g.seeds[o] * o) if isinstance(o, Elem) else g.seeds[o] * o for o in g.outputs])


def section(d) -> list:
    so: SecondOrder | None = d.second
    if so is None:
        return []
    g = so.graph
    own = [n for n in g.nodes if n not in d.model.nodes]
    sums = [n for n in own if n.kind == "reduce" and n.symbol not in g.outputs]
    dx, shares = g.outputs[0], [n for n in own if n.symbol in g.outputs[1:]]
    leaves = listing([math(v) for v in g.leaves])
    blocks: list = [para(
        "The backward pass is itself a graph, with inputs ", *leaves, ". Besides the forward "
        "quantities it reads, it computes the group sums of the compact form",
        *([" (for the kernels, named by their summands)"] if sums else []), ":")]
    blocks += [equation(n.symbol, n.definition) for n in sums]
    blocks.append(para("then ", math(dx), " by the compact form above", *([
        ", and each parameter's share of its gradient:"] if shares else ["."])))
    blocks += [equation(n.symbol, n.definition) for n in shares]
    L2 = sp.Symbol("L_2")
    blocks += [
        para("A second derivative (torch's ", Code("gradgradcheck"), ", a Hessian-vector product, a "
             "gradient penalty) sends adjoints of these outputs back through the backward pass: ",
             *listing([math(s) for s in g.upstream]), ". The double backward returns the gradient of"),
        equation(L2, loss_of(so)),
        para("with respect to ", *leaves, ". Reverse mode over the backward graph, the same walk that "
             "gave the stages of the first order, seeded with those adjoints, gives:"),
    ]
    blocks += [equation(st.symbol, st.expr) for st in so.stages]
    blocks.append(para("Substituting the stages, writing the group sums out and reducing them with the "
                       "same proved lemmas gives the compact second order:"))
    for r in so.results:
        blocks.append(equation(r.symbol, so.compact[r.symbol]))
    blocks.append(para(
        "Each of these is proved like the first order (see the next section): for every batch size up "
        f"to {d.max_m}, ", math(L2), " is formed from the brute-force backward pass and SymPy "
        "differentiates it once more; for a symbolic batch size the stages reduce to the compact "
        "form, and ", math(next(r.symbol for r in so.results if r.wrt == d.model.dy)),
        " equals the Jacobian entry applied to ", math(g.upstream[0]),
        ". generated.torch computes the double backward from these expressions."))
    return blocks
