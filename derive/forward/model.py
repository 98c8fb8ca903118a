"""The forward graph as the engine sees it: nodes, leaves and the running statistics.

A :class:`Model` is what :meth:`derive.forward.graph.Graph.model` builds: one normalization
group in one mode.  Its leaves are the input ``x`` (per element), the parameters and the
other inputs (each per element or per group, see derive.forward.layout), the statistics of
test mode, the running values read in training, and the statistics of inputs with their own
groups (:class:`Domain`), which the graph reads as per-group values.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..math.algebra import M, Elem


@dataclass(frozen=True)
class Node:
    """One node ``symbol = definition`` of the forward graph."""

    symbol: sp.Symbol
    definition: sp.Expr           #: with every ``let`` expanded, so reverse mode sees through it
    label: str
    kind: str                     #: "reduce", "elementwise" or "output"

    @property
    def per_element(self) -> bool:
        return isinstance(self.symbol, Elem)


@dataclass(frozen=True)
class Constant:
    symbol: sp.Symbol
    default: float
    fraction: bool = False
    minimum: float | None = None  #: the least value the param dict may give (None: any positive value)


@dataclass(frozen=True)
class Running:
    """A running statistic: its buffer, the batch statistic it tracks, its update rule."""

    buffer: str
    stat: sp.Symbol
    update: sp.Expr               #: in the symbols ``running`` (before), ``batch`` and the constants

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.buffer, real=True)


RUNNING, BATCH = sp.Symbol("running", real=True), sp.Symbol("batch", real=True)


@dataclass(frozen=True)
class Domain:
    """An input with its own groups (AdaIN's style features): its reductions, in order.

    In its own reductions the input is the per-element symbol and ``m`` is the size of ITS
    group; the reductions' values are per-group leaves of the main graph (``outputs``).
    """

    input: Elem
    nodes: tuple[Node, ...]        #: its reductions, each over its own group
    outputs: tuple[sp.Symbol, ...]  #: the reductions the main graph reads

    def node(self, symbol: sp.Symbol) -> Node:
        return next(n for n in self.nodes if n.symbol == symbol)


@dataclass(frozen=True)
class Model:
    """The forward graph of one normalization in one mode, as the engine sees it."""

    name: str
    training: bool
    x: Elem
    dy: Elem
    params: tuple[sp.Symbol, ...]
    constants: tuple[Constant, ...]
    lets: tuple[Node, ...]        #: abbreviations, in definition order (definitions expanded)
    nodes: tuple[Node, ...]       #: topological order, the output last
    stats: tuple[sp.Symbol, ...]  #: statistics that are leaves (test mode)
    running: tuple[Running, ...]
    reads_running: tuple[sp.Symbol, ...] = ()  #: running buffers read in training
    inputs: tuple[sp.Symbol, ...] = ()   #: the inputs besides x that the graph reads directly
    domains: tuple[Domain, ...] = ()     #: the inputs with their own groups

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    def node(self, symbol: sp.Symbol) -> Node:
        return next(n for n in self.nodes + self.lets if n.symbol == symbol)

    @property
    def imports(self) -> tuple[sp.Symbol, ...]:
        """The statistics of the inputs with their own groups: per-group leaves here."""
        return tuple(s for d in self.domains for s in d.outputs)

    @property
    def leaves(self) -> tuple[sp.Symbol, ...]:
        return (self.x, *self.params, *self.inputs, *self.imports, *self.stats, *self.reads_running)

    @property
    def differentiable(self) -> tuple[sp.Symbol, ...]:
        """The leaves besides x that get a gradient: parameters, other inputs, imported statistics."""
        return (*self.params, *self.inputs, *self.imports)

    @property
    def symbols(self) -> dict[str, sp.Symbol]:
        """Every named quantity of the graph, by name."""
        out = {s.name: s for s in self.leaves}
        out.update({d.input.name: d.input for d in self.domains})
        out.update({c.symbol.name: c.symbol for c in self.constants})
        out.update({n.symbol.name: n.symbol for n in self.lets + self.nodes})
        return out

    def sym(self, name: str) -> sp.Symbol | None:
        return self.symbols.get(name)

    @property
    def scalars(self) -> tuple[sp.Symbol, ...]:
        """Symbols that are Python numbers in a kernel: m and the constants."""
        return (M, *(c.symbol for c in self.constants))

    def param(self, name: str) -> sp.Symbol | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def gamma(self):
        return self.param("gamma")

    @property
    def beta(self):
        return self.param("beta")
