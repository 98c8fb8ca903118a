"""The exact zero test on a tape (derive.proofs.tape): the test of derive.proofs.exact,
computed assignment by assignment instead of on the expression written out in the leaves.

Each value is a fraction num/den of sparse polynomials over QQ in the leaves (x_k, dy_k,
gamma, eps, ...) and one generator r per square root sqrt(b), with the relation r**2 = b.
Values are computed once, in tape order, and each numerator is reduced modulo the relations
(r**2 written b) as soon as it is computed: that changes it by an element of the ideal they
generate, and sums and products of congruent values stay congruent.  An identity is proved
when the numerator of the difference reduces to 0 and its denominator does not: the criterion
of :func:`derive.proofs.exact.zero_modulo_roots`, which is what the test falls back to, on the
identity written out in the leaves, for what this route does not cover (a function application
such as a clamp or a step, a root other than a square root) or does not prove.

A change of variables keeps most values plain fractions of polynomials.  Where the radicand of
a root is a*c + rest for a leaf c, a nonzero constant a and a rest without c (eps in
sqrt(var + eps)), c is written (g**2 - rest)/a for a new generator g, and sqrt(a*c + rest) is g;
where a denominator that holds a root is a*c + rest (sqrt(var) + eps), c = (g - rest)/a.  Each
is a triangular substitution with a polynomial inverse (g**2 = a*c + rest, g = a*c + rest): an
isomorphism between the quotient rings, so a difference is 0 in one iff it is 0 in the other.
A root with no such leaf keeps its relation; its radicand may read only the leaves and the roots
named before it, over a constant denominator, so that the reduction, outermost root first,
gives a normal form (a denominator that reduces to nonzero is nonzero).  No floats, no sampling.
"""
from __future__ import annotations

import sympy as sp
from sympy.polys.rings import ring as make_ring

from .exact import zero_modulo_roots


class Unsupported(TypeError):
    """An expression this route does not evaluate; the caller falls back to the leaves."""


def _half(e: sp.Expr) -> bool:
    return e.is_Pow and e.exp.is_Rational and e.exp.q == 2


def _candidates(exprs: list) -> list[tuple[str, sp.Expr]]:
    """("root", b) for every sqrt(b), ("den", b) for every 1/b with a root in b; innermost first."""
    out: dict = {}
    for e in exprs:
        for p in sp.postorder_traversal(e):
            if _half(p):
                out.setdefault(("root", p.base), None)
            elif p.is_Pow and p.exp.is_Integer and p.exp < 0 and any(_half(q) for q in p.base.atoms(sp.Pow)):
                out.setdefault(("den", p.base), None)
    return list(out)


class TapeZero:
    """``zero(expr)``: is ``expr`` (in the symbols of ``steps`` and the leaves) identically 0?

    ``steps``: the tape's assignments {symbol: expr}, in order; ``exprs``: every expression that
    will be tested (their square roots and leaves are counted up front for the ring)."""

    def __init__(self, steps: dict, exprs: list):
        self.steps, self.order = steps, {s: i for i, s in enumerate(steps)}
        everything = list(steps.values()) + list(exprs)
        self.supported = not any(e.atoms(sp.Function) for e in everything)
        self.candidates = _candidates(everything) if self.supported else []
        leaves = set().union(*(e.free_symbols for e in everything)) - set(steps)
        leaves = sorted(leaves, key=sp.default_sort_key)
        extra = [sp.Dummy(f"g{k}") for k in range(len(self.candidates))]
        self.ring = make_ring(extra + leaves, sp.QQ)[0] if extra + leaves else None
        self.gen = dict(zip(leaves, self.ring.gens[len(extra):])) if self.ring else {}
        self.placeholders = list(self.ring.gens[:len(extra)]) if self.ring else []
        self.override: dict = {}            # eliminated leaf -> its value in the new generators
        self.roots: list[tuple] = []        # (generator, b or None if changed, num(b), den(b)), innermost first
        self.memo: dict = {}
        self.ready = False

    # ------------------------------------------------------------ the test
    def __call__(self, expr: sp.Expr) -> bool:
        try:
            if self.supported and self.ring is not None and self._zero(expr):
                return True
        except Unsupported:
            pass
        return zero_modulo_roots(in_leaves(self.steps, expr))

    def _zero(self, expr: sp.Expr) -> bool:
        if not self.ready:
            self._discover()
        self._prepare(expr)
        num, den = self._value(expr)
        if self._reduce(num):
            return False
        return bool(self._reduce(self._product(den)))

    def _discover(self) -> None:
        """Decide the changes of variables, innermost root first, and name the other roots;
        after each new change every value is computed again."""
        while True:
            self.memo, self.roots = {}, []
            self.spare = self.placeholders[:len(self.placeholders) - len(self.override)]
            for kind, base in self.candidates:
                self._prepare(base)
                num, den = self._value(base)
                leaf = self._linear(num, den)
                if leaf is not None:
                    c, a, rest = leaf
                    g = self.placeholders[-1 - len(self.override)]  # the roots take them from the front
                    self.override[c] = (((g ** 2 if kind == "root" else g) - rest) * (1 / a), {})
                    break
                if kind == "root":
                    self._root(base)
            else:
                self.ready = True
                return

    def _linear(self, num, den: dict):
        """(c, a, rest) if num = a*c + rest for a leaf c not in rest, a constant, no denominator."""
        if den or num.is_ground or len(num) < 2:
            return None
        for c, g in self.gen.items():
            i = self.ring.gens.index(g)
            terms = [(m, k) for m, k in num.items() if m[i]]
            if len(terms) == 1 and terms[0][0][i] == 1 and sum(terms[0][0]) == 1 and c not in self.override:
                a = terms[0][1]
                return c, a, num - g * a
        return None

    # ------------------------------------------------------------ values
    def _prepare(self, expr: sp.Expr) -> None:
        """Compute, in tape order, every assignment that ``expr`` reads (no deep recursion)."""
        need, stack = set(), [s for s in expr.free_symbols if s in self.steps and s not in self.memo]
        while stack:
            s = stack.pop()
            if s in need:
                continue
            need.add(s)
            stack += [u for u in self.steps[s].free_symbols if u in self.steps and u not in self.memo]
        for s in sorted(need, key=self.order.__getitem__):
            num, den = self._value(self.steps[s])
            self.memo[s] = (self._reduce(num), den)

    def _reduce(self, num):
        for gen, square, _, _ in reversed(self.roots):
            if not num:
                break
            if square is not None:
                num = self._substitute(num, gen, square)
        return num

    def _substitute(self, num, gen, square):
        """num with every r**(2q + e) written r**e * square**q (r = gen, r**2 = square): the
        remainder modulo r**2 - square, term by term."""
        i = self.ring.gens.index(gen)
        low, high = {}, {}
        for monom, c in num.items():
            q, e = divmod(monom[i], 2)
            target = low if q == 0 else high.setdefault(q, {})
            target[monom[:i] + (e,) + monom[i + 1:]] = c
        if not high:
            return num
        out = self.ring.from_dict(low)
        power = self.ring.one
        for q in range(1, max(high) + 1):
            power = power * square
            if q in high:
                out += power * self.ring.from_dict(high[q])
        return out

    def _product(self, den: dict):
        out = self.ring.one
        for f, k in den.items():
            out = out * f ** k
        return out

    def _over(self, num, factors: dict) -> tuple:
        """num / prod f**k with each f monic: constant factors and leading coefficients
        move into the numerator, so that equal factors are equal keys."""
        den: dict = {}
        for f, k in factors.items():
            if k == 0:
                continue
            lc = f.LC
            if lc != 1:
                num = num * self.ring.ground_new(lc ** -k)
                f = f.monic()
            for gen, square, _, _ in self.roots:  # a radicand is the square of its root
                if square is not None and f == square.monic():
                    num = num * self.ring.ground_new(square.LC ** k)
                    f = gen ** 2
                    break
            if len(f) == 1:  # a monomial: one factor per generator
                for i, e in enumerate(f.leading_expv()):
                    if e:
                        g = self.ring.gens[i]
                        den[g] = den.get(g, 0) + e * k
            elif not f.is_ground:
                den[f] = den.get(f, 0) + k
        return num, den

    def _root(self, base: sp.Expr):
        bn, bd = self._value(base)
        bd = self._product(bd)
        for gen, _, n, d in self.roots:
            if not self._reduce(bn * d - n * bd):
                return gen
        square = [g for g in self.placeholders if bn == g ** 2 * bd]
        if square:  # a changed variable: sqrt(g**2) = g
            self.roots.append((square[0], None, bn, bd))
            return square[0]
        # A radicand in the leaves and the roots named before it only, over a constant: then
        # reducing by the relations, outermost first, gives a normal form (a nonzero
        # denominator is nonzero modulo the relations), as in derive.proofs.exact.
        known = {self.ring.gens.index(g) for g, _, _, _ in self.roots}
        known |= {i for i, g in enumerate(self.ring.gens) if g not in self.placeholders}
        known |= {self.ring.gens.index(self.placeholders[-1 - k]) for k in range(len(self.override))}
        if not bd.is_ground or any(e and i not in known for m in bn.itermonoms() for i, e in enumerate(m)):
            raise Unsupported("a radicand over a polynomial, or one that reads a root named after it")
        if not self.spare:
            raise Unsupported("more square roots than counted")
        gen = self.spare.pop(0)
        self.roots.append((gen, bn * (1 / bd.LC), bn, bd))
        return gen

    def _value(self, e: sp.Expr) -> tuple:
        found = self.memo.get(e)
        if found is not None:
            return found
        ring = self.ring
        if e.is_Symbol:
            if e in self.steps:
                raise Unsupported(f"{e} read before it is computed")
            if e in self.override:
                out = self.override[e]
            elif e in self.gen:
                out = (self.gen[e], {})
            else:
                raise Unsupported(f"{e} was not counted")
        elif e.is_Rational:
            out = (ring.ground_new(ring.domain.from_sympy(e)), {})
        elif e.is_Add:
            parts = [self._value(a) for a in e.args]
            common: dict = {}
            for _, d in parts:
                for f, k in d.items():
                    common[f] = max(common.get(f, 0), k)
            total = ring.zero
            for n, d in parts:
                for f, k in common.items():
                    if k - d.get(f, 0):
                        n = n * f ** (k - d.get(f, 0))
                total += n
            out = (total, common)
        elif e.is_Mul:
            num, den = ring.one, {}
            for a in e.args:
                n, d = self._value(a)
                num = num * n
                for f, k in d.items():
                    den[f] = den.get(f, 0) + k
            out = (num, den)
        elif e.is_Pow and e.exp.is_Integer:
            n, d = self._value(e.base)
            k = int(e.exp)
            if k >= 0:
                out = (n ** k, {f: j * k for f, j in d.items()})
            elif not n:
                raise Unsupported("division by zero")
            else:
                out = self._over(self._product({f: -j * k for f, j in d.items()}), {n: -k})
        elif _half(e):
            r, k = self._root(e.base), int(e.exp * 2)
            out = (r ** k, {}) if k >= 0 else (ring.one, {r: -k})
        else:
            raise Unsupported(f"not rational in square roots: {type(e).__name__}")
        self.memo[e] = out
        return out


def in_leaves(steps: dict, expr: sp.Expr) -> sp.Expr:
    """``expr`` with every assignment of the tape written out (a tree: large)."""
    values: dict = {}
    for symbol, step in steps.items():
        values[symbol] = step.xreplace(values)
    return expr.xreplace(values)
