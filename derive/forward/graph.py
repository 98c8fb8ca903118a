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
per-group expression (it is an abbreviation, not a stage of the backward pass).
Elementwise functions (exp, log, sigmoid, tanh, softplus, abs, sign, max, min, clamps,
stop_gradient) may appear anywhere, inside reductions too, each with torch's derivative
(:mod:`derive.forward.functions`).  Which axes form a group, the parameters' shapes and
the param dict are the layout (:mod:`derive.forward.layout`), kept apart from the math.
The reference of every method is docs/graph.md.
"""
from __future__ import annotations

import keyword
from dataclasses import replace
from typing import Callable, Mapping

import sympy as sp

from ..math.algebra import BatchSum, Const, Elem, M
from .functions import (Absolute, ClampMax, ClampMin, Exp, Log, Sigmoid, Sign, Softplus, StopGrad, Tanh,
                        clip, from_sympy)
from .model import BATCH, RUNNING, Constant, Domain, Model, Node, Running

__all__ = ["Graph", "GraphError", "Model", "Node", "Constant", "Running", "Domain", "RUNNING", "BATCH",
           "StopGrad", "ClampMin", "ClampMax", "clip"]


class GraphError(ValueError):
    """A graph that cannot be derived; the message names the node at fault."""


class Graph:
    """Builds a :class:`Model`.

    ``params_vary``: the parameters take a value per element (the layout's param_axes cross
    its reduce_axes).  ``kinds``: per leaf name, "element", "group" or (an input) "own" --
    what the layout says about that leaf (:meth:`derive.forward.layout.Spec.kind`).
    """

    def __init__(self, name: str, params_vary: bool = False, kinds: Mapping[str, str] | None = None):
        self.name, self.params_vary = name, params_vary
        self.kinds = dict(kinds or {})
        self._x: Elem | None = None
        self._inputs: list[sp.Symbol] = []
        self._own: dict[Elem, list[Node]] = {}
        self._params: list[sp.Symbol] = []
        self._constants: list[Constant] = []
        self._lets: list[Node] = []
        self._nodes: list[Node] = []
        self._running: list[tuple[str, sp.Symbol, Callable | None]] = []
        self._reads: list[sp.Symbol] = []
        self._names: set[str] = {"m", "running", "batch"}

    # ----------------------------------------------------------------- leaves
    def _name(self, name: str, what: str) -> str:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise GraphError(f"{what} {name!r}: a name must be a Python identifier, not a keyword")
        if name in self._names:
            raise GraphError(f"{what} {name!r}: the name is already used in this graph")
        if (name == "dout" or name.startswith("bar_") or "d" + name in self._names
                or (name.startswith("d") and name[1:] in self._names)):
            raise GraphError(f"{what} {name!r}: the name d<name> of a named quantity is its gradient "
                             "(and dout, bar_<name> are the upstream gradients); choose another name")
        self._names.add(name)
        return name

    def input(self, name: str = "x") -> Elem:
        """The input ``x`` (the first call), or another input laid out as LAYOUT.inputs[name] says."""
        if self._x is None:
            self._x = Elem(self._name(name, "input"), real=True)
            return self._x
        kind = self.kinds.get(name)
        if kind is None:
            raise GraphError(f"input {name!r}: a second input needs its layout: "
                             f"LAYOUT = Spec(..., inputs={{{name!r}: Input(...)}}) (see docs/graph.md)")
        s = (sp.Symbol if kind == "group" else Elem)(self._name(name, "input"), real=True)
        if kind == "own":
            self._own[s] = []
        else:
            self._inputs.append(s)
        return s

    def param(self, name: str) -> sp.Symbol:
        """A learned parameter; per element or per group as the layout's axes say."""
        kind = self.kinds.get(name, "element" if self.params_vary else "group")
        p = (Elem if kind == "element" else sp.Symbol)(self._name(name, "param"), real=True)
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
    def _known(self) -> set:
        own = {n.symbol for nodes in self._own.values() for n in nodes}
        return {self._x, M, *self._inputs, *self._own, *own, *self._params,
                *(c.symbol for c in self._constants), *self._reads, *(n.symbol for n in self._nodes + self._lets)}

    def _expand(self, expr, where: str) -> sp.Expr:
        try:
            expr = sp.sympify(expr)
        except (sp.SympifyError, TypeError) as e:
            raise GraphError(f"{where}: not an expression of the graph ({e})") from None
        if not isinstance(expr, sp.Expr):
            raise GraphError(f"{where}: not an expression of the graph: {expr!r}")
        unknown = sorted((s.name for s in expr.free_symbols if s not in self._known()))
        if unknown:
            raise GraphError(f"{where}: undefined symbol {', '.join(unknown)}")
        expr = from_sympy(expr.xreplace({n.symbol: n.definition for n in self._lets}))
        self._check_rules(expr, where)
        return expr

    def _check_rules(self, expr: sp.Expr, where: str) -> None:
        for f in sorted(expr.atoms(sp.Max, sp.Min, sp.Piecewise, sp.Heaviside), key=str):
            raise GraphError(f"{where}: {type(f).__name__} of {len(f.args)} arguments has no derivative rule "
                             "that torch uses; write it with g.max / g.min / g.clamp")
        for f in sorted(expr.atoms(sp.Function), key=str):
            if type(f) in (BatchSum, StopGrad, ClampMin, ClampMax, Exp, Log, Sigmoid, Tanh, Softplus,
                           Absolute, Sign):
                continue
            name = type(f).__name__
            raise GraphError(f"{where}: {name} has no derivative rule; use g.exp, g.log, g.sigmoid, g.tanh, "
                             "g.softplus, g.abs, g.sign, g.max, g.min or g.clamp")
        if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo, sp.I):
            raise GraphError(f"{where}: the expression is not a finite real number ({expr})")

    def _own_input(self, expr: sp.Expr) -> Elem | None:
        found = [s for s in self._own if expr.has(s)]
        return found[0] if found else None

    def _main_only(self, expr: sp.Expr, where: str) -> None:
        s = self._own_input(expr)
        if s is not None:
            raise GraphError(f"{where}: reads the input {s.name!r}, which has its own groups "
                             f"(LAYOUT inputs[{s.name!r}].reduce_axes): read it only inside its reductions")

    def _per_group(self, expr: sp.Expr, where: str) -> sp.Expr:
        outside = expr.replace(lambda e: isinstance(e, BatchSum), lambda e: sp.Integer(0))
        if outside.has(Elem):
            raise GraphError(f"{where}: a per-group value reads a per-element quantity outside a reduction")
        return expr

    def sum(self, name: str, summand, label: str = "sum") -> sp.Symbol:
        """sum_k summand_k over the m elements of the group."""
        return self._reduce(name, summand, label, sp.Integer(1))

    def mean(self, name: str, summand, label: str = "mean") -> sp.Symbol:
        """(1/m) sum_k summand_k."""
        return self._reduce(name, summand, label, 1 / M)

    def _reduce(self, name: str, summand, label: str, scale) -> sp.Symbol:
        where = f"reduction {name!r}"
        summand = self._expand(summand, where)
        if not summand.has(Elem):
            raise GraphError(f"{where}: the summand has no per-element quantity")
        nonneg = summand.is_nonnegative is True
        s = sp.Symbol(self._name(name, "reduction"), real=True, **({"nonnegative": True} if nonneg else {}))
        node = Node(s, scale * BatchSum(summand), label, "reduce")
        own = self._own_input(summand)
        if own is None:
            self._nodes.append(node)
            return s
        mine = {own, M, *(n.symbol for n in self._own[own]), *(c.symbol for c in self._constants)}
        if summand.free_symbols - mine or summand.has(BatchSum):
            other = sorted(str(v) for v in summand.free_symbols - mine) or ["a nested reduction"]
            raise GraphError(f"{where}: a reduction over the input {own.name!r} (its own groups) may read only "
                             f"{own.name!r}, its earlier reductions and constants; it reads {', '.join(other)}")
        self._own[own].append(node)
        return s

    def let(self, name: str, expr, label: str = "") -> sp.Symbol:
        """A per-group abbreviation (e.g. std = sqrt(var + eps)); its definition is inlined."""
        where = f"let {name!r}"
        value = self._per_group(self._expand(expr, where), where)
        assumptions = {"positive": True} if value.is_positive else {"real": True}
        s = sp.Symbol(self._name(name, "let"), **assumptions)
        self._lets.append(Node(s, value, label or name, "let"))
        return s

    def elementwise(self, name: str, expr, label: str = "") -> Elem:
        """A named per-element node: a stage of the backward pass (d<name>)."""
        where = f"node {name!r}"
        value = self._expand(expr, where)
        self._main_only(value, where)
        e = Elem(self._name(name, "node"), real=True)
        self._nodes.append(Node(e, value, label or name, "elementwise"))
        return e

    def output(self, expr, name: str = "out") -> Elem:
        """The output of the layer, per element; the last node."""
        e = self.elementwise(name, expr, "output")
        self._nodes[-1] = replace(self._nodes[-1], kind="output")
        return e

    def running(self, buffer: str, stat: sp.Symbol, update: Callable | None = None) -> None:
        """Track the batch statistic ``stat`` in ``buffer``; ``update(running, batch, constants)``
        gives the new value (default: CS231n's momentum*running + (1 - momentum)*batch)."""
        if stat not in {n.symbol for n in self._nodes if n.kind == "reduce"}:
            raise GraphError(f"running {buffer!r}: {stat} is not a reduction of this graph")
        self._running.append((buffer, stat, update))

    # ----------------------------------------------------------------- functions
    @staticmethod
    def stop_gradient(expr) -> sp.Expr:
        return StopGrad(sp.sympify(expr))

    m = M   #: the number of elements of a group (for update rules such as torch's m/(m - 1))
    clamp_min = staticmethod(ClampMin)
    clamp_max = staticmethod(ClampMax)
    max = staticmethod(ClampMin)        #: max(a, b) with clamp_min's rule: the gradient goes to a at a tie
    min = staticmethod(ClampMax)        #: min(a, b) with clamp_max's rule
    clip = staticmethod(clip)
    clamp = staticmethod(clip)
    sqrt = staticmethod(sp.sqrt)
    exp = staticmethod(Exp)
    log = staticmethod(Log)
    sigmoid = staticmethod(Sigmoid)
    tanh = staticmethod(Tanh)
    softplus = staticmethod(Softplus)
    abs = staticmethod(Absolute)
    sign = staticmethod(Sign)

    # ----------------------------------------------------------------- models
    def model(self, training: bool = True) -> Model:
        if self._x is None:
            raise GraphError(f"{self.name}: the graph has no input (g.input)")
        if not self._nodes or self._nodes[-1].kind != "output":
            raise GraphError(f"{self.name}: the graph has no output (g.output), or nodes follow it")
        for s, nodes in self._own.items():
            if not nodes:
                raise GraphError(f"input {s.name!r}: has its own groups but no reduction reads it")
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
        read = set().union(*(n.definition.free_symbols for n in nodes + lets))
        domains = tuple(Domain(s, tuple(ns), tuple(n.symbol for n in ns if n.symbol in read))
                        for s, ns in self._own.items())
        return Model(self.name, training, self._x, Elem("dout", real=True), tuple(self._params),
                     tuple(self._constants), tuple(lets), tuple(nodes), stats, tuple(running), reads,
                     tuple(self._inputs), domains)

    @property
    def has_running(self) -> bool:
        return bool(self._running)
