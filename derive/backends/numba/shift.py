"""The statistics of a numba kernel in one pass: the sums around a shift, each group's first element.

The variance needs the mean, so the schedule (:mod:`derive.ir.schedule`) gives the forward two
passes over x: ``sum_x``, then ``sum_var = sum (x - mu)**2``.  A summand that is a polynomial f in
the mean mu is, by Taylor's formula (exact for a polynomial), around any per-group value s::

    sum_k f(x_k, mu) = sum_j (mu - s)**j / j! * sum_k d^j f / d mu^j (x_k, s)

and the sums on the right read x and s only, so they join the first pass; ``sum_x`` itself is
taken as ``sum (x - s) + m*s``.  With s the group's first element, |mu - s| is at most
sqrt(m*var) (one sample's deviation is at most all of them), so for the variance the two sides
of the formula cancel to at most a factor m: float64 sums over m = 4096 elements keep 12 digits
of the variance, where the data's own float32 rounding keeps 7.  The identity is checked
summand by summand (``sp.expand`` of the difference is 0) before it is used.  The shift is a
per-group input of the kernel that its dispatch function reads from x (``_layout.first``).
"""
from __future__ import annotations

import dataclasses
import functools

import sympy as sp

from ...ir.program import Function
from ...ir.schedule import Pass
from ...math.algebra import Elem, M
from ...math import seeded


def _one_of(summand):
    """(factor, summand): the summand factored, so that (x - s)**2 stays the square of a difference
    (not x**2 - 2*x*s + s**2), and its numeric factor taken out, so that sums that differ by one
    are one."""
    return seeded.factor(summand).as_coeff_Mul()


def _accumulator(sums: list, x: Elem, local, summand, stem):
    """The accumulator of sum(summand) in ``sums`` (a new one appended, or one met before, times a
    number); the sum of a constant summand is m times it."""
    c, rest = _one_of(summand)
    if not rest.has(x):
        return c * rest * M
    for acc, v in sums:
        for sign in (1, -1):
            if sp.expand(v - sign * rest) == 0:
                return sign * c * acc
    acc = sp.Symbol(local(stem))
    sums.append((acc, rest))
    return c * acc


def shift_moments(f: Function, x: Elem, local) -> tuple[Function, tuple]:
    """``f`` with a second pass that only needs the mean of x merged into the first (see the module),
    and the shifts it reads (per-group inputs, each group's first element of x); ``f`` and () where
    there is no such pair of passes."""
    sc = f.schedule
    passes = list(sc.passes)
    for a in range(len(passes) - 1):
        first, second = passes[a], passes[a + 1]
        total = next((acc for acc, summand in first.sums if summand == x), None)
        mean = next((s for s, v in first.group if total is not None and v == total / M), None)
        later = {s for s, _ in first.group} - {mean}
        if (mean is None or not second.sums or second.partials
                or any(v.free_symbols & later for _, v in second.sums)):
            continue
        try:
            polys = [sp.Poly(v, mean) for _, v in second.sums]
        except sp.PolynomialError:
            continue
        shift = sp.Symbol(local(f"{x.name}_shift"))
        sums = [(acc, v) for acc, v in first.sums if acc != total]
        accumulator = functools.partial(_accumulator, sums, x, local)
        centred = accumulator(x - shift, f"{total.name}_shifted")
        group = [(total, centred + M * shift)] + list(first.group)
        for (target, summand), poly in zip(second.sums, polys):
            parts = [(j, sp.diff(summand, mean, j).xreplace({mean: shift}) / sp.factorial(j))
                     for j in range(poly.degree() + 1)]
            if sp.expand(sp.Add(*[(mean - shift) ** j * d for j, d in parts]) - summand) != 0:
                raise ValueError(f"{target} = sum({summand}): its sums around {shift} are not it")
            stems = [f"{target.name}_shifted" + (str(j) if j else "") for j, _ in parts]
            group.append((target, sp.Add(*[(mean - shift) ** j * accumulator(d, stem)
                                           for (j, d), stem in zip(parts, stems) if d != 0])))
        group += list(second.group)
        merged = Pass(tuple(sums), first.partials, tuple(group))
        passes[a:a + 2] = [merged]
        return dataclasses.replace(f, schedule=dataclasses.replace(sc, passes=tuple(passes))), ((shift, x),)
    return f, ()
