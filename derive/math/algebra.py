"""A small algebra of batch reductions on top of SymPy.

One normalization group holds ``m`` elements.  A per-element quantity is an
:class:`Elem` symbol (``x`` stands for ``x_i``); a reduction over the group is
``BatchSum(f)`` = sum_k f(x_k, dy_k, ...).  Because the batch size stays a
symbol, an identity proved here holds for every batch size at once.

Three facts make reductions computable:

* linearity: ``BatchSum(c*f) = c*BatchSum(f)`` when ``c`` is the same for
  every element, and ``BatchSum(c) = m*c``;
* differentiation: d/dx_i sum_k f(x_k) = f'(x_i), and d/dc sum_k f = sum_k df/dc
  for a per-group scalar c (see :meth:`BatchSum._eval_derivative`);
* the normalization itself: in the variables xhat = (x - mu)/sigma_eps,
  sum_k xhat_k = 0 and sum_k xhat_k^2 = m*var/sigma_eps^2 (see :func:`canonical`).
"""
from __future__ import annotations

from collections.abc import Mapping

import sympy as sp

M = sp.Symbol("m", positive=True, integer=True)


class Elem(sp.Symbol):
    """A per-element quantity of one normalization group, e.g. ``x_i``."""


class Const(sp.Symbol):
    """A constant of the layer (eps, momentum, ...): a Python number in the kernels."""


def elems_of(expr: sp.Basic) -> list[Elem]:
    """The per-element symbols of ``expr``, sorted by name for determinism."""
    return sorted(expr.atoms(Elem), key=lambda s: s.name)


class Step(sp.Heaviside):
    """Heaviside(a, at_zero) as a clamp's backward uses it: a mask, whose derivative torch
    takes to be 0 everywhere (so a second derivative has no Dirac delta at the kink)."""

    def __new__(cls, arg, at_zero, **options):
        return sp.Function.__new__(cls, sp.sympify(arg), sp.sympify(at_zero), **options)

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class BatchSum(sp.Function):
    """sum over the m elements of one normalization group."""

    nargs = 1

    @classmethod
    def eval(cls, arg):
        arg = sp.factor_terms(arg)
        if not arg.has(Elem):
            return M * arg
        const, rest = arg.as_independent(*elems_of(arg), as_Add=False)
        if rest.could_extract_minus_sign():
            const, rest = -const, -rest
        if const != 1:
            return const * cls(rest)
        return None

    def _eval_derivative(self, s):
        # d/dx_i sum_k f(x_k) = f'(x_i): the Kronecker delta picks element i.
        if isinstance(s, Elem):
            return sp.diff(self.args[0], s)
        return BatchSum(sp.diff(self.args[0], s))


class ParamSum(sp.Function):
    """sum over every axis that gamma does not span: how dgamma and dbeta are collected.

    It only appears as the outermost call of a parameter gradient; the
    printers turn it into a sum over the kernel's parameter-sum axes.
    """

    nargs = 1


class OuterSum(sp.Function):
    """sum over the parameter-sum axes that lie outside one group.

    When gamma is constant in each group, ParamSum(f) = OuterSum(BatchSum(f)):
    the group sums the backward already computed are summed once more.
    """

    nargs = 1


def mask_atoms(expr: sp.Expr) -> tuple[sp.Expr, dict]:
    """``expr`` (expanded, its sums hidden) with every non-polynomial per-element part -- a
    function application such as sigmoid(v*x) or [z - tau >= 0], a root or an inverse
    such as 1/(1 + x**2) -- replaced by a per-element placeholder, so that it is a polynomial
    in the element symbols and the placeholders.  Returns (masked, placeholder -> part).
    The placeholders are numbered in SymPy's sort order of the parts: deterministic."""
    found: set = set()

    def walk(e, table):
        if e.is_Atom or isinstance(e, BatchSum) or not e.has(Elem):
            return e
        if isinstance(e, sp.Function):
            return table(e)
        if e.is_Pow and not (e.exp.is_Integer and e.exp >= 0):
            if e.exp.is_Integer:  # 1/b**k: a power of the part 1/b
                return table(sp.Pow(e.base, -1)) ** (-e.exp)
            return table(e)
        return e.func(*[walk(a, table) for a in e.args])

    def collect(part):
        found.add(part)
        return part

    walk(expr, collect)
    if not found:
        return expr, {}
    parts = sorted(found, key=sp.default_sort_key)
    names = {part: Elem(f"@a{k}", real=True) for k, part in enumerate(parts)}
    return walk(expr, names.__getitem__), {v: k for k, v in names.items()}


def expand_sums(expr: sp.Expr, facts: Mapping[sp.Expr, sp.Expr]) -> sp.Expr:
    """Distribute every BatchSum over the monomials of its argument.

    ``facts`` maps a monomial of element symbols to its known sum
    (``1 -> m``, ``xhat -> 0``, ...); every other monomial stays a named
    reduction ``BatchSum(monomial)``.  A non-polynomial per-element part (sigmoid(v*x),
    a clamp's step, 1/x) is one factor of a monomial (:func:`mask_atoms`).
    """

    def one(arg):
        # A sum inside the summand (the second order has them) is a per-group scalar there.
        inner = sorted(arg.atoms(BatchSum), key=sp.default_sort_key)
        hidden = {s: sp.Dummy(f"sum{k}") for k, s in enumerate(inner)}
        arg = sp.expand(arg.xreplace(hidden))
        back = {v: k for k, v in hidden.items()}
        arg, parts = mask_atoms(arg)
        gens = elems_of(arg)
        if not gens:
            return M * arg.xreplace(back)
        total = sp.Integer(0)
        for monom, coeff in sorted(sp.Poly(arg, *gens).terms(), key=lambda t: t[0]):
            mono = sp.Mul(*[g**p for g, p in zip(gens, monom)]).xreplace(parts).xreplace(back)
            total += coeff.as_expr().xreplace(back) * facts.get(mono, BatchSum(mono) if mono != 1 else M)
        return total

    return expr.replace(lambda e: isinstance(e, BatchSum), lambda e: one(e.args[0]))


def split_by_elements(expr: sp.Expr) -> list[tuple[sp.Expr, sp.Expr]]:
    """``expr`` as [(coefficient, monomial)], polynomial in the per-element symbols
    that stand outside any sum (and in the non-polynomial per-element parts, see
    :func:`mask_atoms`); coefficients are per-group scalars."""
    sums = sorted(expr.atoms(BatchSum), key=sp.default_sort_key)
    hidden = {s: sp.Symbol(f"_sum{k}") for k, s in enumerate(sums)}
    masked, parts = mask_atoms(sp.expand(expr.xreplace(hidden)))
    gens = elems_of(masked)
    back = {v: k for k, v in hidden.items()}
    if not gens:
        return [(expr, sp.Integer(1))]
    out = []
    for monom, coeff in sorted(sp.Poly(masked, *gens).terms(), key=lambda t: t[0], reverse=True):
        mono = sp.Mul(*[g**p for g, p in zip(gens, monom)]).xreplace(parts).xreplace(back)
        out.append((coeff.as_expr().xreplace(back), mono))
    return out


def at_size(expr: sp.Expr, size: int, index: int, scalars: Mapping[sp.Symbol, sp.Expr]) -> sp.Expr:
    """``expr`` for a batch of ``size`` elements, evaluated at element ``index``.

    Every element symbol ``e`` becomes ``e_index`` (``e_k`` inside a
    BatchSum, summed over k), ``m`` becomes ``size``, and per-group scalars
    are replaced through ``scalars`` (e.g. mu -> (x_0 + ... )/size).
    """

    def concrete(e: sp.Expr, k: int) -> sp.Expr:
        return e.xreplace({s: indexed(s, k) for s in e.atoms(Elem)})

    def unfold(e: sp.Expr) -> sp.Expr:
        return e.replace(lambda t: isinstance(t, BatchSum),
                         lambda t: sp.Add(*[concrete(t.args[0], k) for k in range(size)]))

    out = unfold(expr)
    out = concrete(out, index)
    return out.xreplace({M: sp.Integer(size)}).xreplace(dict(scalars))


def indexed(s: sp.Symbol, k: int) -> sp.Symbol:
    """The concrete element ``s_k``: a plain symbol, with no sign assumed, so that
    sqrt(x_k**2) stays a root (an algebraic number) instead of |x_k|, whose derivative
    would bring sign(x_k) and a Dirac delta into the second derivatives."""
    return sp.Symbol(f"{s.name}_{k}")
