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

from ..math.algebra import BatchSum, Const, Elem, M, OuterSum, ParamSum


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


class Hoist:
    """Every power of a per-group value that is a division or a root (``1/std``, ``(var + eps)**(-1/2)``)
    in a per-element expression, replaced by a per-group value assigned once per group, in the pass
    its base is ready after (``setup``, before the first loop, for a value the function reads):
    ``(x - mu)/std`` is printed ``(x - mu)*inv_std``, a product in the elementwise loop instead of a
    division (about twice as fast).  ``inv_std`` is ``1/std`` by its definition, so the expressions are
    the same ones (checked: substituting the definitions back gives each expression as it was);
    ``local(base)`` names the new values."""

    def __init__(self, level: dict, group: list, setup: list, local):
        self.level, self.group, self.setup, self.local = level, group, setup, local
        self.made: dict = {}

    def per_group(self, expr) -> bool:
        free = expr.free_symbols
        return (any(s in self.level for s in free)
                and all(s in self.level or s == M or isinstance(s, Const) for s in free))

    def __call__(self, target, value):
        made, level = self.made, self.level
        powers = [p for p in value.atoms(sp.Pow) if self.per_group(p.base) and not (p.exp.is_Integer and p.exp > 0)]
        for p in sorted(powers, key=sp.default_sort_key):
            if p not in made:
                stem = p.base.name if isinstance(p.base, sp.Symbol) else "den"
                stem = f"inv_{stem}" if p.exp == -1 else f"pow_{stem}"
                taken = {s.name for s in made.values()}
                name = next(n for n in (self.local(stem if k == 0 else f"{stem}_{k}") for k in range(len(made) + 1))
                            if n not in taken)
                made[p] = sp.Symbol(name)
                n = max(level[s] for s in p.free_symbols if s in level)
                (self.group[n] if n >= 0 else self.setup).append((made[p], p))
                level[made[p]] = n
        new = value.xreplace({p: made[p] for p in powers}) if powers else value
        if new.xreplace({s: p for p, s in made.items()}) != value:
            raise ValueError(f"{target} = {value}: hoisting its per-group powers changed it to {new}")
        return target, new


def schedule(body, results, local=None, given=()) -> Schedule:
    """The passes of ``body`` (a sequence of Assign); ``results``: what the function returns;
    ``local``: a namer of new locals, to :func:`hoist` per-group divisions out of the elementwise
    loop (none: no hoisting); ``given``: the per-group values it reads (the forward's statistics,
    which a backward that recomputes x̂ divides by)."""
    elements: list = []
    #: per-group value or accumulator -> the pass it is ready after (-1: read by the function, ready before any)
    level: dict = {s: -1 for s in given}
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

    def per_group(expr) -> bool:
        free = expr.free_symbols
        return bool(free) and all(s in level or s == M or isinstance(s, Const) for s in free)

    def accumulate(s: BatchSum, target) -> sp.Symbol:
        if s not in accumulators:
            summand = inline(s.args[0], elements)
            n = ready(summand)
            grow(n)
            # a factor that is one value per group (1/std in a backward that recomputes x̂) multiplies the
            # sum once, after the loop, instead of every summand: sum(f*c) = c*sum(f), exactly
            factors = sp.Mul.make_args(summand)
            scale = sp.Mul(*[f for f in factors if per_group(f)])
            if scale != 1 and local is not None:
                acc = sp.Symbol(local(f"{target.name}_acc"))
                sums[n].append((acc, sp.Mul(*[f for f in factors if not per_group(f)])))
                group[n].append((target, scale * acc))
            else:
                sums[n].append((target, summand))
            accumulators[s] = target
            level[target] = n
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
        n = max(0, max((level[s] for s in value.free_symbols if s in level), default=0))
        grow(n)
        group[n].append((target, value))
        level[target] = n
    setup: list = []                     #: per-group values of what the function reads, before the first loop
    if local is not None:
        grow(0)
        hoist = Hoist(level, group, setup, local)
        for k in range(len(sums)):
            sums[k] = [hoist(*pair) for pair in sums[k]]
            partials[k] = [hoist(*pair) for pair in partials[k]]
        elements = [hoist(*pair) for pair in elements]
    stores = tuple(s for s in results if isinstance(s, Elem))
    kept = [k for k in range(len(sums)) if sums[k] or partials[k] or group[k]]
    passes = tuple(Pass(tuple(sums[k]), tuple(partials[k]), tuple(group[k])) for k in kept)
    if setup:
        passes = (Pass((), (), tuple(setup)),) + passes
    return Schedule(passes, tuple(elements), stores, tuple(outer))
