"""The brute force, node by node: the forward graph of one concrete group as a list of
assignments (a tape), and reverse and forward mode over it.

For a group of ``size`` elements every node of the forward graph becomes one assignment per
element (``xhat_3 = (x_3 - mu)/sqrt(var + eps)``) or one per group (``mu = (x_0 + ... + x_5)/6``),
with its own symbol.  Reverse mode walks the tape backwards: the adjoint of an assignment
``v = f(u_1, ..., u_n)`` is the sum, over the assignments that read v, of their adjoint times
the local partial derivative (the multivariable chain rule).  Every adjoint is itself an
assignment, so a second pass over the first pass's tape gives the second derivatives.
Forward mode carries d/dx_i through the forward assignments: a column of the Jacobian.

Nothing here reads a derived formula: the tape is the forward graph at a concrete size, and
every derivative is sympy.diff of one small assignment.  A result is a symbol of the tape;
:class:`derive.proofs.ring.TapeZero` tests an identity between such symbols and
expressions without writing them out in the leaves.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..forward.graph import Model
from ..math.algebra import at_size, indexed


@dataclass
class Tape:
    """Assignments ``symbol = expr`` in the order they are computed (each symbol once)."""

    steps: dict = field(default_factory=dict)

    def let(self, symbol: sp.Symbol, expr: sp.Expr) -> sp.Symbol:
        if symbol in self.steps:
            raise ValueError(f"{symbol} is assigned twice")
        self.steps[symbol] = sp.sympify(expr)
        return symbol

    def fresh(self, stem: str, expr: sp.Expr) -> sp.Symbol:
        return self.let(sp.Symbol(f"_{stem}{len(self.steps)}"), expr)

    def reverse(self, seeds: dict, wrt: list, stem: str = "adj") -> dict:
        """{leaf: the symbol of d(sum of seed * output)/d leaf} for every leaf in ``wrt``.

        ``seeds`` maps a symbol of the tape to its adjoint (an expression).  The adjoints are
        appended to this tape, so the result can be differentiated again."""
        wanted = set(wrt)
        terms: dict = {s: [a] for s, a in seeds.items()}
        for symbol, expr in reversed(list(self.steps.items())):
            if symbol not in terms:
                continue  # no path from here to a seeded output
            adjoint = self.fresh(stem, sp.Add(*terms[symbol]))
            for u in sorted(expr.free_symbols, key=sp.default_sort_key):
                if u in self.steps or u in wanted:
                    local = sp.diff(expr, u)
                    if local != 0:
                        terms.setdefault(u, []).append(adjoint * local)
        return {w: self.fresh(stem, sp.Add(*terms.get(w, []))) for w in wrt}

    def tangents(self, leaf: sp.Symbol, through: list, stem: str = "tan") -> dict:
        """Forward mode: {symbol: the symbol of d symbol/d leaf} for every assignment among
        ``through`` (in tape order) that reads ``leaf``, directly or not."""
        tangent: dict = {leaf: sp.Integer(1)}
        for symbol in through:
            expr = self.steps[symbol]
            terms = [sp.diff(expr, u) * tangent[u] for u in sorted(expr.free_symbols, key=sp.default_sort_key)
                     if u in tangent]
            if terms:
                tangent[symbol] = self.fresh(stem, sp.Add(*terms))
        del tangent[leaf]
        return tangent


@dataclass(frozen=True)
class Group:
    """The forward pass of one concrete group on a tape."""

    tape: Tape
    size: int
    xs: list          #: x_0 .. x_{size-1}
    dys: list         #: the upstream gradient of each output
    ys: list          #: the output's symbol at each element
    nodes: list       #: the symbols of the forward pass, in order
    opaque: dict      #: stop-gradient value -> its opaque symbol


def covers(model: Model) -> bool:
    """True for the graphs the tape was built and tested for: one input, and no function of values
    besides clamps and stop-gradients (the library's).  Others (several inputs, exp/log/sigmoid/...)
    are proved on the written-out group (derive.proofs.first.concrete)."""
    from ..forward.functions import Absolute, Sign, Smooth
    if getattr(model, "inputs", ()) or getattr(model, "domains", ()) or getattr(model, "imports", ()):
        return False
    return not any(n.definition.atoms(Smooth, Sign, Absolute) for n in model.nodes + model.lets)


def forward(model: Model, size: int, opaque: dict) -> Group:
    """Every node of ``model`` at ``size`` elements, one assignment per element or group.
    ``opaque``: stop-gradient values and the symbols that stand for them (first.opaque_values)."""
    tape = Tape()
    for node in model.nodes:
        definition = node.definition.xreplace(opaque)
        for k in range(size if node.per_element else 1):
            symbol = indexed(node.symbol, k) if node.per_element else node.symbol
            tape.let(symbol, at_size(definition, size, k, {}))
    out = model.output.symbol
    return Group(tape, size, [indexed(model.x, k) for k in range(size)],
                 [indexed(model.dy, k) for k in range(size)],
                 [indexed(out, k) for k in range(size)], list(tape.steps), opaque)


def at(group: Group, model: Model, expr: sp.Expr, k: int) -> sp.Expr:
    """A symbolic-m expression at element k of ``group``, in the symbols of its tape: the
    abbreviations written out, m the size, sums over the group written as sums."""
    for let in reversed(model.lets):
        expr = expr.xreplace({let.symbol: let.definition})
    return at_size(expr.xreplace(group.opaque), group.size, k, {})

