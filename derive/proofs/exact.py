"""The exact zero test that every proof uses: is a difference identically 0?

Every square root is named r_k (innermost first), and every remaining function application
(a clamp, a step) becomes an opaque symbol, consistently on both sides of a difference; the
difference is put over one denominator and its numerator reduced modulo r_k^2 - b_k.  A zero
remainder with a nonzero denominator proves the identity.  No floats, no sampling.
"""
from __future__ import annotations

import itertools

import sympy as sp

from ..forward.functions import Absolute, Sign
from ..math.algebra import BatchSum, Step
from ..math import seeded


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
    expr = expr.replace(Absolute, lambda a: Sign(a) * a)   # |u| = sign(u)*u for every real u
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
    expr = _canonical_calls(expr)
    roots = [(r, _canonical_calls(b)) for r, b in roots]   # a root of a function: the same atoms
    if _is_zero(expr, roots):
        return True
    # A step and the clamps it decides: on each side of the kink the clamp is one of its
    # arguments and the step is 0 or 1, so the identity is proved on each side.
    if not expr.atoms(Step) and not expr.atoms(Sign):
        return False
    return all(_is_zero(case, roots) for signs in _signs(expr) for case in _sides(signs))


def _signs(expr: sp.Expr):
    """``expr`` for each value -1, 0, 1 of every sign(u) in it (once, unchanged, when there is none)."""
    signs = sorted(expr.atoms(Sign), key=sp.default_sort_key)
    for values in itertools.product((-1, 0, 1), repeat=len(signs)):
        yield expr.xreplace(dict(zip(signs, values)))


#: above this many operations a symbolic-m difference is tested by :func:`zero_modulo_roots`
#: (every sum an atom, m a symbol): exact too, and much faster on large differences
LARGE = 400


def symbolic_zero(expr: sp.Expr) -> bool:
    """The symbolic-m test: ``expr`` cancels to 0, each function application taken as an atom
    whose arguments are put in one canonical form first (so sigmoid(v*(a + b)) and
    sigmoid(a*v + b*v) are the same atom)."""
    if sp.count_ops(expr) > LARGE:  # sympy.cancel takes minutes there; the ring route seconds
        return zero_modulo_roots(expr)
    if sp.cancel(expr) == 0:
        return True
    expr = expr.replace(Absolute, lambda a: Sign(a) * a)   # |u| = sign(u)*u for every real u
    canonical = expr.replace(lambda e: isinstance(e, sp.Function) and not isinstance(e, BatchSum)
                             and bool(e.args),
                             lambda e: e.func(*[_canonical(a) for a in e.args]))
    if sp.cancel(canonical) == 0:
        return True
    # A step is 0 or 1 and a sign -1, 0 or 1 (step*(step - 1) = 0): the identity on each side.
    if not canonical.atoms(Step) and not canonical.atoms(Sign):
        return False
    return all(sp.cancel(case) == 0 for signs in _signs(canonical) for case in _sides(signs))


def _canonical_calls(expr: sp.Expr) -> sp.Expr:
    return expr.replace(lambda e: isinstance(e, sp.Function) and not isinstance(e, BatchSum),
                        lambda e: e.func(*[_canonical(a) for a in e.args]))


def _canonical(e: sp.Expr) -> sp.Expr:
    return seeded.factor(sp.together(e))


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
    calls = sorted(expr.atoms(sp.Function).union(*(b.atoms(sp.Function) for _, b in roots)),
                   key=sp.default_sort_key)
    opaque = {f: sp.Symbol(f"_f{k}", real=True) for k, f in enumerate(calls)}
    expr = expr.xreplace(opaque)
    roots = [(r, b.xreplace(opaque)) for r, b in roots]
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
