"""The elementwise pass of a numba kernel with its per-group factors multiplied out once per group.

A stored per-element result that is affine in the per-element values it reads -- batch norm's
``out = beta + gamma*inv_std*(x_mu_hi - mu_lo)``, in ``x_mu_hi = x - mu_hi`` -- is printed as
``x_mu_hi*out_coef_x_mu_hi + out_coef_1``, its coefficients (``gamma*inv_std`` and
``beta - gamma*inv_std*mu_lo``) assigned once per group after the last pass.  In the cols
strategies every per-group value is an array over the tile's columns, one load per element each:
batch norm's forward pass at (4096, 1024) float32 read five such arrays and took 1.22 ms on one
thread; with two, 0.76 ms.  A difference of x and a per-group value (``x - mu``) is kept as one
per-element value (never multiplied out: a mean far from zero would cancel), and so is every
result another one reads.  Substituting the coefficients' definitions back gives each result
exactly as it was (checked).  Nothing here walks the derivation: it rewrites the schedule's
assignments only.

The price is range: a coefficient is a product of per-group values rounded once to the working
dtype, so ``gamma*inv_std`` must fit float32 where before only the normalized x̂ times gamma had
to (with eps = 1e-5, std is at least 3.2e-3, so |gamma| beyond about 1e36 overflows it; torch's own
CPU kernels round the same product).  A result that reads a per-element value inside a function
(a clamp) or a parameter that varies inside the group is left as it was.
"""
from __future__ import annotations

import dataclasses

import sympy as sp

from ...ir.program import Function, is_scalar
from ...ir.schedule import Pass, inline
from ...math.algebra import Elem


def _differences(elements, x: Elem) -> dict:
    """The element locals that are x less a per-group value: local -> that value."""
    out = {}
    for s, v in elements:
        rest = v - x
        if v.has(x) and not rest.has(x) and not any(isinstance(t, Elem) for t in rest.free_symbols):
            out[s] = v
    return out


def _centre(expr, x: Elem, made: dict, local):
    """``expr`` with each ``x - g`` (g one per-group value) read through a per-element local (made:
    value -> local; a difference met for the first time, in a sum of x and one per-group value, gets
    a new one)."""
    def one(node):
        terms = list(sp.Add.make_args(node))
        if x not in terms:
            return node
        for value, name in made.items():
            if value - x in terms:
                terms.remove(x)
                terms.remove(value - x)
                return sp.Add(name, *terms)
        groups = [t for t in terms if (-t).is_Symbol and not isinstance(-t, Elem)]
        if len(groups) != 1 or len(terms) != 2:
            return node
        made[x + groups[0]] = Elem(local(f"{x.name}_{(-groups[0]).name}"), real=True)
        return made[x + groups[0]]
    return expr.replace(lambda n: isinstance(n, sp.Add), one)


def _operands(expr) -> set:
    """The per-group values and parameters ``expr`` reads (not per-element ones, not m or eps)."""
    return {s for s in expr.free_symbols if not isinstance(s, Elem) and not is_scalar(s)}


def fold_elements(f: Function, x: Elem, local) -> Function:
    """``f`` with each stored result folded where that reads fewer per-group operands (see the module)."""
    sc = f.schedule
    elements = list(sc.elements)
    stores = set(sc.stores)
    made = {v: s for s, v in _differences(elements, x).items()}   # x - g -> its per-element local
    folded, group = {}, []
    for s, value in elements:
        if s not in stores:
            continue
        full = inline(value, [(t, v) for t, v in elements if t not in stores])
        centred = _centre(full, x, made, local)
        atoms = sorted((t for t in centred.free_symbols if isinstance(t, Elem)), key=lambda t: t.name)
        if centred.has(x) or not atoms:
            continue
        try:
            poly = sp.Poly(sp.expand(centred), *atoms)
        except sp.PolynomialError:   # a per-element value inside a function (a clamp, a sigmoid)
            continue
        if poly.total_degree() > 1:
            continue
        coefficients = [(a, poly.coeff_monomial(a)) for a in atoms] + [(None, poly.coeff_monomial(1))]
        if any(isinstance(t, Elem) for _, c in coefficients for t in c.free_symbols):
            continue   # a parameter that varies inside the group: no per-group factor to take out
        new, terms = [], []
        for a, c in coefficients:
            if c == 0:
                continue
            k = c
            if not (c.is_Symbol or c.is_Number):
                k = sp.Symbol(local(f"{s.name}_coef_{a.name if a is not None else 1}"))
                new.append((k, c))
            terms.append(k if a is None else a * k)
        result = sp.Add(*terms)
        locals_read = [v for v, t in made.items() if result.has(t)]
        after = _operands(result).union(*(_operands(v) for v in locals_read))
        if len(after) >= len(_operands(full)):
            continue
        if sp.expand(result.xreplace(dict(new)) - centred) != 0:
            raise ValueError(f"{s} = {value}: folding its per-group factors changed it to {result}")
        folded[s] = result
        group += new
    if not folded:
        return f
    centred_locals = [(t, v) for v, t in made.items()]
    body = centred_locals + [(s, folded.get(s, v)) for s, v in elements if s not in made.values()]
    needed, live = set(stores), []
    for s, v in reversed(body):   # the locals that only a folded result read are dropped
        if s in needed:
            live.append((s, v))
            needed |= {t for t in v.free_symbols if isinstance(t, Elem)}
    passes = list(sc.passes) or [Pass((), (), ())]
    passes[-1] = dataclasses.replace(passes[-1], group=tuple(passes[-1].group) + tuple(group))
    return dataclasses.replace(f, schedule=dataclasses.replace(sc, passes=tuple(passes),
                                                               elements=tuple(reversed(live))))
