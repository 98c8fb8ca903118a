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

import itertools
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


def expand_sums(expr: sp.Expr, facts: Mapping[sp.Expr, sp.Expr]) -> sp.Expr:
    """Distribute every BatchSum over the monomials of its argument.

    ``facts`` maps a monomial of element symbols to its known sum
    (``1 -> m``, ``xhat -> 0``, ...); every other monomial stays a named
    reduction ``BatchSum(monomial)``.
    """

    def one(arg):
        # A sum inside the summand (the second order has them) is a per-group scalar there.
        inner = sorted(arg.atoms(BatchSum), key=sp.default_sort_key)
        hidden = {s: sp.Dummy(f"sum{k}") for k, s in enumerate(inner)}
        arg = sp.expand(arg.xreplace(hidden))
        back = {v: k for k, v in hidden.items()}
        gens = elems_of(arg)
        if not gens:
            return M * arg.xreplace(back)
        total = sp.Integer(0)
        for monom, coeff in sorted(sp.Poly(arg, *gens).terms(), key=lambda t: t[0]):
            mono = sp.Mul(*[g**p for g, p in zip(gens, monom)])
            total += coeff.as_expr().xreplace(back) * facts.get(mono, BatchSum(mono) if mono != 1 else M)
        return total

    return expr.replace(lambda e: isinstance(e, BatchSum), lambda e: one(e.args[0]))


def split_by_elements(expr: sp.Expr) -> list[tuple[sp.Expr, sp.Expr]]:
    """``expr`` as [(coefficient, monomial)], polynomial in the per-element symbols
    that stand outside any sum; coefficients are per-group scalars."""
    sums = sorted(expr.atoms(BatchSum), key=sp.default_sort_key)
    hidden = {s: sp.Symbol(f"_sum{k}") for k, s in enumerate(sums)}
    masked = sp.expand(expr.xreplace(hidden))
    gens = elems_of(masked)
    back = {v: k for k, v in hidden.items()}
    if not gens:
        return [(expr, sp.Integer(1))]
    out = []
    for monom, coeff in sorted(sp.Poly(masked, *gens).terms(), key=lambda t: t[0], reverse=True):
        mono = sp.Mul(*[g**p for g, p in zip(gens, monom)])
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


def _polynomials(expr: sp.Expr, ring, gens: list) -> tuple:
    """``expr`` (rational in ``gens``) as (numerator, denominator) in ``ring``, with no gcd:
    denominators are kept as products of the polynomials that were divided by, so that a
    sum over a common factor such as (r + eps)**3 is put over the largest power, not a product."""
    index = {g: ring.gens[i] for i, g in enumerate(gens)}
    one = ring.one

    def times(n, factors: dict, exclude: dict | None = None):
        for f, k in factors.items():
            k -= (exclude or {}).get(f, 0)
            if k:
                n = n * f ** k
        return n

    def go(e):
        if e.is_Symbol:
            return index[e], {}
        if e.is_Rational:
            return ring(e.p), ({ring(e.q): 1} if e.q != 1 else {})
        if e.is_Add:
            parts = [go(a) for a in e.args]
            common: dict = {}
            for _, d in parts:
                for f, k in d.items():
                    common[f] = max(common.get(f, 0), k)
            total = ring.zero
            for n, d in parts:
                total += times(n, common, d)
            return total, common
        if e.is_Mul:
            n, d = one, {}
            for a in e.args:
                n2, d2 = go(a)
                n = n * n2
                for f, k in d2.items():
                    d[f] = d.get(f, 0) + k
            return n, d
        if e.is_Pow and e.exp.is_Integer:
            n, d = go(e.base)
            k = int(e.exp)
            if k >= 0:
                return n ** k, {f: j * k for f, j in d.items()}
            return times(one, {f: -j * k for f, j in d.items()}), {n: -k}
        raise TypeError(f"not rational: {e}")

    n, d = go(expr)
    return n, times(one, d)


def _zero_in_ring(expr: sp.Expr, roots: list) -> bool:
    """The fast route: sparse polynomials (sympy.polys.rings), remainders by r^2*den(b) - num(b)."""
    from sympy.polys.rings import ring as make_ring
    rs = [r for r, _ in reversed(roots)]
    gens = rs + sorted(expr.free_symbols.union(*(b.free_symbols for _, b in roots)) - set(rs),
                       key=sp.default_sort_key)
    ring = make_ring(gens, sp.QQ)[0]
    num, den = _polynomials(expr, ring, gens)
    relations = []
    for r, b in reversed(roots):
        bn, bd = _polynomials(b, ring, gens)
        relations.append(ring.gens[gens.index(r)] ** 2 * bd - bn)
    for rel in relations:
        num = num.rem(rel) if num else num
    if num:
        return False
    for rel in relations:
        den = den.rem(rel)
    return bool(den)


def zero_modulo_roots(expr: sp.Expr) -> bool:
    """Exact test that ``expr`` is identically 0.

    Every square root sqrt(b) (innermost first) is named r_k, and every remaining
    non-polynomial function application (a clamp, a Heaviside step) becomes an
    opaque symbol, consistently on both sides of a difference.  The result is put
    over a common denominator and its numerator is reduced modulo r_k**2 - b_k for
    each root.  A zero remainder, with a denominator whose remainder is not zero,
    proves expr == 0: the numerator lies in the ideal that vanishes where every r_k
    is its root, and the denominator does not.  No floats, no sampling.
    """
    expr = expr.replace(lambda e: type(e).__name__ == "StopGrad", lambda e: e.args[0])
    expr = expr.replace(sp.sign, lambda a: a / sp.Abs(a)).replace(sp.Abs, lambda a: sp.sqrt(a ** 2))
    roots: list[tuple[sp.Symbol, sp.Expr]] = []
    while True:
        pows = [p for p in expr.atoms(sp.Pow) if p.exp.is_Rational and p.exp.q == 2
                and not any(q.exp.is_Rational and q.exp.q == 2 for q in p.base.atoms(sp.Pow))]
        if not pows:
            break
        base = sorted({p.base for p in pows}, key=sp.default_sort_key)[0]
        r = sp.Symbol(f"_r{len(roots)}", positive=True)
        roots.append((r, base))
        expr = expr.replace(lambda e: e.is_Pow and e.base == base and e.exp.is_Rational,
                            lambda e: r ** (2 * e.exp))
    expr = expr.replace(lambda e: isinstance(e, sp.Function) and not isinstance(e, BatchSum),
                        lambda e: e.func(*[_canonical(a) for a in e.args]))
    if _is_zero(expr, roots):
        return True
    # A step and the clamps it decides: on each side of the kink the clamp is one of its
    # arguments and the step is 0 or 1, so the identity is proved on each side.
    return bool(expr.atoms(Step)) and all(_is_zero(case, roots) for case in _sides(expr))


def _canonical(e: sp.Expr) -> sp.Expr:
    return sp.factor(sp.together(e))


def _sides(expr: sp.Expr):
    """``expr`` on each side of every step's kink: Step(u, 1) = [u >= 0], Step(u, 0) = 1 - [-u >= 0]."""
    steps = sorted(expr.atoms(Step), key=sp.default_sort_key)
    condition = {s: _canonical(s.args[0] if s.args[1] == 1 else -s.args[0]) for s in steps}
    conditions = sorted(set(condition.values()), key=sp.default_sort_key)
    clamps = [f for f in expr.atoms(sp.Function) if hasattr(f, "branches")]
    for values in itertools.product((0, 1), repeat=len(conditions)):
        holds = dict(zip(conditions, values))
        sub = {s: holds[condition[s]] if s.args[1] == 1 else 1 - holds[condition[s]] for s in steps}
        for f in clamps:
            c, where, otherwise = f.branches()
            if _canonical(c) in holds:
                sub[f] = where if holds[_canonical(c)] else otherwise
        yield expr.xreplace(sub)


def _is_zero(expr: sp.Expr, roots: list) -> bool:
    calls = sorted((f for f in expr.atoms(sp.Function)), key=sp.default_sort_key)
    expr = expr.xreplace({f: sp.Symbol(f"_f{k}", real=True) for k, f in enumerate(calls)})
    try:  # exact either way; the ring route is several times faster on large differences
        if _zero_in_ring(expr, roots):
            return True
    except TypeError:  # not rational in the named roots and atoms
        pass
    num, den = sp.fraction(sp.together(expr))
    num = sp.expand(num)
    for r, base in reversed(roots):
        if num == 0:
            break
        num = sp.expand(sp.rem(num, r ** 2 - base, r))
    if num != 0:
        return False
    # num/den is 0 in the field of fractions modulo the root relations, provided den is not 0 there.
    den = sp.expand(den)
    for r, base in reversed(roots):
        den = sp.expand(sp.rem(den, r ** 2 - base, r))
    return den != 0
