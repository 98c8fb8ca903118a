"""The staged chain rule: reverse-mode differentiation of the model's graph.

Walking the graph from the output back to x, each node v gets the adjoint
dv = dL/dv as the sum over the nodes c that consume v:

    dv_i = dc_i * dc_i/dv_i            both per element
    dv   = sum_k dc_k * dc_k/dv        c per element, v a per-group scalar
    dv_i = dc * dc/dv_i                c a reduction over v (d/dv_i sum_k f = f'(v_i))
    dv   = dc * dc/dv                  both scalars

For batch normalization this is exactly the textbook sequence
dxhat, dvar, dmu, dx: x reaches the loss through xhat, var and mu.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..forward.graph import GraphError, Model
from .algebra import BatchSum, Elem, OuterSum, ParamSum


@dataclass(frozen=True)
class Stage:
    """One named step ``symbol = expr`` of the backward pass."""

    symbol: sp.Symbol
    expr: sp.Expr
    wrt: sp.Symbol            #: the forward quantity this is the gradient of
    paths: tuple[sp.Symbol, ...]  #: the consumers it collects gradient from

    @property
    def per_element(self) -> bool:
        return isinstance(self.symbol, Elem)


def adjoint_symbol(v: sp.Symbol, prefix: str = "d") -> sp.Symbol:
    kind = Elem if isinstance(v, Elem) else sp.Symbol
    return kind(prefix + v.name, real=True)


def reverse(nodes, seeds: dict, leaves, prefix: str = "d") -> tuple[Stage, ...]:
    """Reverse mode over ``nodes`` (topological order): ``seeds`` gives the adjoints of the
    outputs; every other node, then each leaf, gets the stage ``prefix + name``."""
    adjoint = dict(seeds)
    stages: list[Stage] = []
    targets = [n.symbol for n in reversed(nodes) if n.symbol not in seeds] + list(leaves)
    for v in targets:
        consumers = [n for n in nodes if v in n.definition.free_symbols]
        terms = []
        for c in consumers:
            term = adjoint[c.symbol] * sp.diff(c.definition, v)
            if c.per_element and not isinstance(v, Elem):
                term = BatchSum(term)
            terms.append(term)
        adjoint[v] = adjoint_symbol(v, prefix)
        stages.append(Stage(adjoint[v], sp.Add(*terms), v, tuple(c.symbol for c in consumers)))
    return tuple(stages)


def backward(model: Model) -> tuple[Stage, ...]:
    """The stages d(node) for every node but the output, then dx."""
    return reverse(model.nodes, {model.output.symbol: model.dy}, [model.x])


def leaf_stages(model: Model) -> tuple[Stage, ...]:
    """Reverse mode continued past dx to every other leaf that gets a gradient (parameters,
    other inputs, statistics of inputs with their own groups): d<leaf> collects from every
    node that reads it, in the node adjoints of :func:`backward` -- per element for a
    per-element leaf, a per-group value (its consumers' terms summed over the group) else."""
    leaves = model.differentiable
    full = reverse(model.nodes, {model.output.symbol: model.dy}, [model.x, *leaves])
    return full[len(full) - len(leaves):]


def collected(symbol: sp.Symbol, leaf: sp.Symbol, value: sp.Expr, paths=()) -> Stage:
    """The tensor gradient of ``leaf`` from its per-element or per-group ``value``: summed over
    every axis the leaf does not span.  ParamSum(f) sums f over those axes; a per-group value
    written as a sum over the group (c*BatchSum(f) + ...) is ParamSum(c*f + ...), any other is
    OuterSum(value) (summed over the groups that share the leaf)."""
    if isinstance(leaf, Elem):
        return Stage(symbol, ParamSum(value), leaf, paths)
    local = []
    for term in sp.Add.make_args(value):
        sums = [f for f in sp.Mul.make_args(term) if isinstance(f, BatchSum)]
        rest = term / sums[0] if len(sums) == 1 else None
        if rest is None or rest.has(BatchSum) or rest.has(Elem):
            return Stage(symbol, OuterSum(value), leaf, paths)
        local.append(rest * sums[0].args[0])
    return Stage(symbol, ParamSum(sp.Add(*local)), leaf, paths)


def parameter_gradients(model: Model) -> tuple[Stage, ...]:
    """dgamma, dbeta, ...: ParamSum of the upstream gradient times dy/dparam, for parameters that
    only the output reads (the form the kernels print); see derive.math.closed_form.gradients
    for the general case, of which this is the special case."""
    y = model.output
    out = []
    for p in model.params:
        for n in model.nodes[:-1]:
            if n.definition.has(p):
                raise GraphError(f"param {p.name!r}: read by node {n.symbol.name!r}, not only by the output; "
                                 "use derive.math.closed_form.gradients")
        local = model.dy * sp.diff(y.definition, p)
        out.append(Stage(sp.Symbol("d" + p.name, real=True), ParamSum(local), p, (y.symbol,)))
    return tuple(out)


def inline(stages: tuple[Stage, ...], upto: int = -1) -> sp.Expr:
    """Stage ``upto`` (the last by default) with every earlier stage substituted into it."""
    upto %= len(stages)
    expr = stages[upto].expr
    for st in reversed(stages[:upto]):
        expr = expr.xreplace({st.symbol: st.expr})
    return expr
