"""The kernel IR of the double backward (derive.second_order) for the tensor backends.

``assignments``: the named group sums of the compact second order, then for every result
(bar_x, bar_dout, one per parameter the backward reads) its per-group coefficients and
the result itself, as ``sum coefficient * monomial``.  A per-group result of a shared
parameter is summed again outside the group (OuterSum), a per-element one over the
parameter's sum axes (ParamSum), as the first-order parameter gradients are.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..backends.numpy.kernels import coefficient_name, reduction_name
from ..math.algebra import Elem, OuterSum, ParamSum
from ..math.derivation import Derivation

Assignment = tuple[sp.Symbol, sp.Expr]


@dataclass(frozen=True)
class SecondKernels:
    assignments: tuple[Assignment, ...]
    upstream: tuple[str, ...]               #: bar_dx, bar_dgamma, ...: the adjoints it receives
    results: tuple[tuple[str, str | None], ...]  #: (input, its result or None): dout, x, params
    reads: tuple[str, ...]                  #: forward values and inputs it reads


def build(d: Derivation) -> SecondKernels | None:
    so = d.second
    if so is None:
        return None
    names = {s: sp.Symbol(reduction_name(s), real=True) for s in so.reductions}
    out: list[Assignment] = [(names[s], s) for s in so.reductions]
    for r in so.results:
        terms = []
        for c, mono in so.coefficients(r.symbol):
            if c.is_Number:
                terms.append(c * mono)
                continue
            coef = sp.Symbol(f"{r.symbol.name}_{coefficient_name(mono)}", real=True)
            out.append((coef, d.lemmas.fold(c.xreplace(names))))
            terms.append(coef * mono)
        value = sp.Add(*terms)
        if value == 0:  # no path from this input (mean-only batch norm's x): torch's None
            continue
        if r.wrt in d.model.params:
            value = ParamSum(value) if isinstance(r.wrt, Elem) else OuterSum(value)
        out.append((r.symbol, value))
    done = {s for s, _ in out}
    upstream = tuple(s.name for s in so.graph.upstream)
    free = set().union(*(e.free_symbols for _, e in out)) - done
    skip = {"m", *upstream, *(c.symbol.name for c in d.model.constants)}
    by_input = {r.wrt: r.symbol.name for r in so.results if r.symbol in done}
    inputs = (d.model.dy, d.model.x, *d.model.params)
    return SecondKernels(tuple(out), upstream, tuple((v.name, by_input.get(v)) for v in inputs),
                         tuple(sorted(s.name for s in free if s.name not in skip)))
