"""The loop schedule of a function: passes over the elements of each group, decided once.

A loop backend (numba, Triton) runs a function as

    pass 1 .. n:  one loop over the elements of a group, accumulating group sums (float64 or float32
                  accumulators) of per-element summands; then per-group assignments;
    last pass:    one loop over the elements computing the per-element results.

A group sum joins the earliest pass after every per-group value its summand reads (the variance
needs the mean: a second pass); a per-group assignment runs after the pass of the last sum or
per-group value it reads.  Per-element values are not kept between passes: each summand is
written with the per-element assignments before it substituted in (:func:`inline`), so it reads
only inputs and per-group values.  A parameter gradient that varies inside a group
(``ParamSum``) is accumulated per parameter element in the pass its summand is ready in; one that
is a group sum summed over groups (``OuterSum``) is stored per group and combined afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..math.algebra import BatchSum, Elem, OuterSum, ParamSum


@dataclass(frozen=True)
class Pass:
    sums: tuple[tuple[sp.Symbol, sp.Expr], ...]      #: (accumulator, per-element summand)
    partials: tuple[tuple[sp.Symbol, sp.Expr], ...]  #: (gradient, per-element summand): ParamSum partials
    group: tuple[tuple[sp.Symbol, sp.Expr], ...]     #: per-group assignments after the loop


@dataclass(frozen=True)
class Schedule:
    passes: tuple[Pass, ...]
    elements: tuple[tuple[sp.Symbol, sp.Expr], ...]   #: per-element assignments of the last loop
    stores: tuple[sp.Symbol, ...]                     #: per-element results written to arrays
    outer: tuple[tuple[sp.Symbol, sp.Symbol], ...]    #: (gradient, group sum): OuterSum, combined after

    @property
    def assigned(self) -> set:
        out = {s for p in self.passes for s, _ in p.sums + p.group + p.partials}
        return out | {s for s, _ in self.elements} | {g for g, _ in self.outer}

    @property
    def group_values(self) -> tuple[sp.Symbol, ...]:
        return tuple(s for p in self.passes for s, _ in p.group)


def inline(expr: sp.Expr, elements) -> sp.Expr:
    """``expr`` with every per-element local substituted, so that it reads only inputs."""
    for symbol, value in reversed(elements):
        expr = expr.xreplace({symbol: value})
    return expr


def schedule(body, results) -> Schedule:
    """The passes of ``body`` (a sequence of Assign); ``results``: what the function returns."""
    elements: list = []
    level: dict = {}                     #: per-group value or accumulator -> the pass it is ready after
    sums: list[list] = []
    partials: list[list] = []
    group: list[list] = []
    accumulators: dict = {}
    outer = []

    def grow(n: int) -> None:
        while len(sums) <= n:
            sums.append([])
            partials.append([])
            group.append([])

    def ready(expr) -> int:
        """The first pass whose loop can read every per-group value of ``expr``."""
        return 1 + max((level[s] for s in expr.free_symbols if s in level), default=-1)

    def accumulate(s: BatchSum, target) -> sp.Symbol:
        if s not in accumulators:
            summand = inline(s.args[0], elements)
            n = ready(summand)
            grow(n)
            acc = target
            accumulators[s] = acc
            sums[n].append((acc, summand))
            level[acc] = n
        return accumulators[s]

    for a in body:
        target, value = a.target, a.value
        if isinstance(target, Elem):
            elements.append((target, value))
            continue
        if isinstance(value, BatchSum):           # a named group sum: the accumulator is the target
            accumulate(value, target)
            if accumulators[value] != target:
                n = level[accumulators[value]]
                group[n].append((target, accumulators[value]))
                level[target] = n
            continue
        if isinstance(value, ParamSum):
            summand = inline(value.args[0], elements)
            n = ready(summand)
            grow(n)
            partials[n].append((target, summand))
            continue
        if isinstance(value, OuterSum):
            outer.append((target, value.args[0]))
            continue
        if value.has(BatchSum, ParamSum, OuterSum):
            raise ValueError(f"{target} = {value}: a sum inside an expression must be named first "
                             "(derive.ir.program.name_sums)")
        n = max((level[s] for s in value.free_symbols if s in level), default=0)
        grow(n)
        group[n].append((target, value))
        level[target] = n
    stores = tuple(s for s in results if isinstance(s, Elem))
    kept = [k for k in range(len(sums)) if sums[k] or partials[k] or group[k]]
    passes = tuple(Pass(tuple(sums[k]), tuple(partials[k]), tuple(group[k])) for k in kept)
    return Schedule(passes, tuple(elements), stores, tuple(outer))
