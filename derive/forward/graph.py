"""The public graph API: the forward pass of a normalization, written as data.

A library entry (or a user's file) is a function ``forward(g)`` that builds the
forward pass of ONE normalization group with a :class:`Graph` ``g``::

    def forward(g):
        x = g.input("x")
        gamma, beta = g.param("gamma"), g.param("beta")
        eps = g.constant("eps", 1e-5)
        mu = g.mean("mu", x, "mean")
        var = g.mean("var", (x - mu) ** 2, "variance")
        std = g.let("std", sp.sqrt(var + eps))
        xhat = g.elementwise("xhat", (x - mu) / std, "normalized input")
        g.output(gamma * xhat + beta)
        g.running("running_mean", mu)
        g.running("running_var", var)

Per-element quantities are :class:`~derive.algebra.Elem` symbols (``x`` is x_i);
a reduction is a sum or a mean over the m elements of the group; ``let`` names a
per-group expression (it is an abbreviation, not a stage of the backward pass);
``stop_gradient`` and ``clamp_min``/``clamp_max`` carry their own derivative
rules (torch's).  Which axes form a group, the parameters' shapes and the
param dict are the layout (:mod:`derive.forward.layout`), kept apart from the math.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import sympy as sp

from ..math.algebra import BatchSum, Const, Elem, M, Step


class GraphError(ValueError):
    """A graph that cannot be derived; the message names the node at fault."""


class StopGrad(sp.Function):
    """stop_gradient(f): the value of f, with derivative 0 (torch's ``detach``)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class ClampMin(sp.Function):
    """max(a, lo) with torch's rule at the kink: d/da = 1 where a >= lo (clamp_min)."""

    nargs = 2

    @classmethod
    def eval(cls, a, lo):
        if a.is_Number and lo.is_Number:
            return sp.Max(a, lo)
        return None

    def fdiff(self, argindex=1):
        a, lo = self.args
        return Step(a - lo, 1) if argindex == 1 else Step(lo - a, 0)

    def branches(self):
        """(condition, value where it is >= 0, value where it is < 0)."""
        a, lo = self.args
        return a - lo, a, lo


class ClampMax(sp.Function):
    """min(a, hi) with torch's rule at the kink: d/da = 1 where a <= hi (clamp_max)."""

    nargs = 2

    @classmethod
    def eval(cls, a, hi):
        if a.is_Number and hi.is_Number:
            return sp.Min(a, hi)
        return None

    def fdiff(self, argindex=1):
        a, hi = self.args
        return Step(hi - a, 1) if argindex == 1 else Step(a - hi, 0)

    def branches(self):
        """(condition, value where it is >= 0, value where it is < 0)."""
        a, hi = self.args
        return hi - a, a, hi


def clip(a: sp.Expr, lo: sp.Expr, hi: sp.Expr) -> sp.Expr:
    """torch.clamp(a, lo, hi)."""
    return ClampMax(ClampMin(a, lo), hi)


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

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    def node(self, symbol: sp.Symbol) -> Node:
        return next(n for n in self.nodes + self.lets if n.symbol == symbol)

    @property
    def leaves(self) -> tuple[sp.Symbol, ...]:
        return (self.x, *self.params, *self.stats, *self.reads_running)

    @property
    def symbols(self) -> dict[str, sp.Symbol]:
        """Every named quantity of the graph, by name."""
        out = {s.name: s for s in self.leaves}
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


class Graph:
    """Builds a :class:`Model`. ``params_vary``: the parameters take a value per element."""

    def __init__(self, name: str, params_vary: bool = False):
        self.name, self.params_vary = name, params_vary
        self._x: Elem | None = None
        self._params: list[sp.Symbol] = []
        self._constants: list[Constant] = []
        self._lets: list[Node] = []
        self._nodes: list[Node] = []
        self._running: list[tuple[str, sp.Symbol, Callable | None]] = []
        self._reads: list[sp.Symbol] = []
        self._names: set[str] = {"m", "running", "batch"}

    # ----------------------------------------------------------------- leaves
    def _name(self, name: str, what: str) -> str:
        if not isinstance(name, str) or not name.isidentifier():
            raise GraphError(f"{what} {name!r}: a name must be a Python identifier")
        if name in self._names:
            raise GraphError(f"{what} {name!r}: the name is already used in this graph")
        self._names.add(name)
        return name

    def input(self, name: str = "x") -> Elem:
        if self._x is not None:
            raise GraphError(f"input {name!r}: the graph already has the input {self._x.name!r}")
        self._x = Elem(self._name(name, "input"), real=True)
        return self._x

    def param(self, name: str) -> sp.Symbol:
        kind = Elem if self.params_vary else sp.Symbol
        p = kind(self._name(name, "param"), real=True)
        self._params.append(p)
        return p

    def constant(self, name: str, default: float, fraction: bool = False,
                 minimum: float | None = None) -> sp.Symbol:
        """A constant of the layer, read from the param dict (``default`` when absent); positive,
        or in [0, 1] with ``fraction``, or at least ``minimum`` (``minimum=0`` admits 0)."""
        if minimum is not None and minimum < 0:
            raise GraphError(f"constant {name!r}: minimum must be 0 or more, got {minimum}")
        sign = {"nonnegative": True} if minimum == 0 else {"positive": True}
        c = Const(self._name(name, "constant"), **sign)
        self._constants.append(Constant(c, float(default), fraction, minimum))
        return c

    def running_value(self, buffer: str) -> sp.Symbol:
        """The running statistic ``buffer`` as it stands before this step (read in training)."""
        s = sp.Symbol(self._name(buffer, "running value"), real=True)
        self._reads.append(s)
        return s

    # ----------------------------------------------------------------- nodes
    def _expand(self, expr, where: str) -> sp.Expr:
        expr = sp.sympify(expr)
        known = {self._x, M, *self._params, *(c.symbol for c in self._constants), *self._reads,
                 *(n.symbol for n in self._nodes + self._lets)}
        unknown = sorted(s.name for s in expr.free_symbols if s not in known)
        if unknown:
            raise GraphError(f"{where}: undefined symbol {', '.join(unknown)}")
        return expr.xreplace({n.symbol: n.definition for n in self._lets})

    def _check_rules(self, expr: sp.Expr, where: str) -> None:
        for f in sorted(expr.atoms(sp.Max, sp.Min, sp.Abs, sp.sign, sp.Piecewise, sp.Heaviside), key=str):
            raise GraphError(f"{where}: {type(f).__name__} has no derivative rule that torch uses; "
                             "write it with clamp_min / clamp_max")
        for f in sorted(expr.atoms(sp.core.function.AppliedUndef), key=str):
            raise GraphError(f"{where}: {type(f).__name__} has no derivative rule")

    def _per_group(self, expr: sp.Expr, where: str) -> sp.Expr:
        outside = expr.replace(lambda e: isinstance(e, BatchSum), lambda e: sp.Integer(0))
        if outside.has(Elem):
            raise GraphError(f"{where}: a per-group value reads a per-element quantity outside a reduction")
        return expr

    def sum(self, name: str, summand, label: str = "sum") -> sp.Symbol:
        return self._reduce(name, summand, label, sp.Integer(1))

    def mean(self, name: str, summand, label: str = "mean") -> sp.Symbol:
        return self._reduce(name, summand, label, 1 / M)

    def _reduce(self, name: str, summand, label: str, scale) -> sp.Symbol:
        where = f"reduction {name!r}"
        summand = self._expand(summand, where)
        self._check_rules(summand, where)
        if not summand.has(Elem):
            raise GraphError(f"{where}: the summand has no per-element quantity")
        nonneg = summand.is_nonnegative is True
        s = sp.Symbol(self._name(name, "reduction"), real=True, **({"nonnegative": True} if nonneg else {}))
        self._nodes.append(Node(s, scale * BatchSum(summand), label, "reduce"))
        return s

    def let(self, name: str, expr, label: str = "") -> sp.Symbol:
        """A per-group abbreviation (e.g. std = sqrt(var + eps)); its definition is inlined."""
        where = f"let {name!r}"
        value = self._per_group(self._expand(expr, where), where)
        self._check_rules(value, where)
        assumptions = {"positive": True} if value.is_positive else {"real": True}
        s = sp.Symbol(self._name(name, "let"), **assumptions)
        self._lets.append(Node(s, value, label or name, "let"))
        return s

    def elementwise(self, name: str, expr, label: str = "") -> Elem:
        where = f"node {name!r}"
        value = self._expand(expr, where)
        self._check_rules(value, where)
        e = Elem(self._name(name, "node"), real=True)
        self._nodes.append(Node(e, value, label or name, "elementwise"))
        return e

    def output(self, expr, name: str = "out") -> Elem:
        e = self.elementwise(name, expr, "output")
        self._nodes[-1] = replace(self._nodes[-1], kind="output")
        return e

    def running(self, buffer: str, stat: sp.Symbol, update: Callable | None = None) -> None:
        """Track the batch statistic ``stat`` in ``buffer``; ``update(running, batch, constants)``
        gives the new value (default: CS231n's momentum*running + (1 - momentum)*batch)."""
        if stat not in {n.symbol for n in self._nodes if n.kind == "reduce"}:
            raise GraphError(f"running {buffer!r}: {stat} is not a reduction of this graph")
        self._running.append((buffer, stat, update))

    @staticmethod
    def stop_gradient(expr) -> sp.Expr:
        return StopGrad(sp.sympify(expr))

    m = M   #: the number of elements of a group (for update rules such as torch's m/(m - 1))
    clamp_min = staticmethod(ClampMin)
    clamp_max = staticmethod(ClampMax)
    clip = staticmethod(clip)
    sqrt = staticmethod(sp.sqrt)

    # ----------------------------------------------------------------- models
    def model(self, training: bool = True) -> Model:
        if self._x is None:
            raise GraphError(f"{self.name}: the graph has no input (g.input)")
        if not self._nodes or self._nodes[-1].kind != "output":
            raise GraphError(f"{self.name}: the graph has no output (g.output), or nodes follow it")
        consts = {c.symbol.name: c.symbol for c in self._constants}
        running = []
        for buffer, stat, rule in self._running:
            if rule is None:
                if "momentum" not in consts:
                    consts["momentum"] = self.constant("momentum", 0.9, fraction=True)
                update = consts["momentum"] * RUNNING + (1 - consts["momentum"]) * BATCH
            else:
                update = sp.sympify(rule(RUNNING, BATCH, consts))
            running.append(Running(buffer, stat, update))
        nodes, lets, stats = list(self._nodes), list(self._lets), ()
        if not training:
            stats = tuple(r.stat for r in running)
            bind = {r.symbol: r.stat for r in running}
            nodes = [replace(n, definition=n.definition.xreplace(bind)) for n in nodes if n.symbol not in stats]
            lets = [replace(n, definition=n.definition.xreplace(bind)) for n in lets]
        reads = tuple(self._reads) if training else ()
        if not training and set(self._reads) - {r.symbol for r in running}:
            raise GraphError(f"{self.name}: a running value is read but never declared with g.running")
        return Model(self.name, training, self._x, Elem("dout", real=True), tuple(self._params),
                     tuple(self._constants),
                     tuple(lets), tuple(nodes), stats, tuple(running), reads)

    @property
    def has_running(self) -> bool:
        return bool(self._running)
