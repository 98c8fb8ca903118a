r"""Displayed equations cut into lines that fit the page.

An equation whose right-hand side prints wider than :data:`LIMIT` is cut, from
the outside in, only where it is too wide; every piece is SymPy's printout of a
subexpression of the expression the equation was built from, and the pieces,
joined, read as that expression:

* a sum of terms is cut between terms, and each line after the first starts with
  the sign of its first term; a term wider than a line is cut in turn;
* a quotient whose numerator is too wide is printed as the rest of the numerator
  over the denominator, times the numerator's widest sum:
  ``\frac{\gamma}{m \sigma} \Bigl( ... \Bigr)``;
* a product is cut inside its widest sum, printed last; the other factors keep
  SymPy's printout, a group sum among them in brackets;
* a group sum ``\sum_{k=1}^{m}`` is cut inside its summand.

``\biggl(``, ``\Bigl(`` and their right halves are the brackets that may span lines
(``\left(`` and ``\right)`` may not).  Before cutting, an abbreviation of the forward pass whose
definition is too wide to be a factor of a line (:func:`wide_lets`: batch
renormalization's clipped, stop-gradient ratios r and d) is printed by its name,
as the document defines it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import sympy as sp

from ..math.algebra import ParamSum
from .blocks import Equation
from .latex import TEX, NotationPrinter, math, shown

#: the widest line, in units of :func:`width` (about 6 pt each at worst: some 400 pt of a 478 pt line)
LIMIT = 64
#: an abbreviation whose definition is wider than this is printed by its name in other equations
WIDE_LET = LIMIT / 4


def width(tex: str) -> float:
    """A rough printed width of ``tex`` in characters: a fraction is as wide as its wider part."""
    n, total = 0, 0.0

    def group(start: int) -> tuple[str, int]:
        depth = 0
        for end in range(start, len(tex)):
            depth += {"{": 1, "}": -1}.get(tex[end], 0)
            if depth == 0:
                return tex[start + 1:end], end + 1
        return tex[start + 1:], len(tex)

    while n < len(tex):
        if tex.startswith(r"\frac", n):
            top, n = group(n + 5)
            bottom, n = group(n)
            total += max(width(top), width(bottom))
        elif tex.startswith((r"\left", r"\right"), n):
            n += 5 if tex.startswith(r"\left", n) else 6
        elif tex[n] == "\\":
            end = n + 1
            while end < len(tex) and tex[end].isalpha():
                end += 1
            n, total = end, total + 1
        elif tex[n] in "^_":
            inner, n = group(n + 1) if tex[n + 1] == "{" else (tex[n + 1], n + 2)
            total += 0.7 * width(inner)
        elif tex[n] in "{} ":
            n += 1
        else:
            total += 2.5 if tex[n] in "+-=" else 1
            n += 1
    return total


def wide_lets(lets: Iterable) -> dict[sp.Expr, sp.Symbol]:
    """{definition: name} of the abbreviations (``Model.lets``) too wide to be a factor of a line."""
    return {let.definition: let.symbol for let in lets if width(math(let.definition).tex) > WIDE_LET}


def lines(eq: Equation, abbreviations: Mapping[sp.Expr, sp.Symbol] | None = None,
          limit: float = LIMIT) -> list[str]:
    """The LaTeX of ``eq``'s right-hand side, one string per line (one line when it fits).

    ``abbreviations`` ({definition: name}) are printed by name, except in the equation
    that defines the name."""
    rhs = eq.rhs
    rules = {k: v for k, v in (abbreviations or {}).items() if v != eq.lhs.expr}
    expr = rhs.expr.xreplace(rules) if rules else rhs.expr
    display = shown(expr, rhs.index, TEX, rhs.param_index)
    return Cutter(rhs.index, rhs.param_index).cut(display, limit, limit)


def prefixed(head: str, cut: list[str]) -> list[str]:
    return [head + cut[0], *cut[1:]]


def is_sum(e: sp.Expr) -> bool:
    return isinstance(e, (sp.Sum, ParamSum))


class Cutter:
    """Cuts a display-form expression (:func:`derive.docs.latex.shown`) into lines of LaTeX.

    Every method takes two budgets, in :func:`width` units: ``first`` for what is left
    of the line the piece starts on, ``rest`` for each line after it."""

    def __init__(self, index: str = "i", param_index: str | None = None):
        self.printer = NotationPrinter(index, param_index)
        self.param_index = param_index
        self.depth = 0  #: how many \Bigl( are open: the outer brackets are drawn bigger

    def tex(self, e: sp.Expr) -> str:
        return self.printer._print(e)

    def cut(self, e: sp.Expr, first: float, rest: float) -> list[str]:
        whole = self.tex(e)
        if width(whole) <= first:
            return [whole]
        if e.is_Add:
            return self.terms(e, first, rest)
        if e.could_extract_minus_sign():
            return prefixed("- ", self.cut(-e, first - 2.5, rest))
        num, den = sp.fraction(e, exact=True)
        if den != 1:
            return self.quotient(num, den, first, rest) or [whole]
        if e.is_Mul:
            return self.product(sp.Mul.make_args(e), first, rest) or [whole]
        if is_sum(e):
            return self.summation(e, first, rest)
        return [whole]

    def terms(self, e: sp.Add, first: float, rest: float) -> list[str]:
        """Terms packed into lines, each line after the first led by the sign of its first term.
        A term wider than a line is cut too, going on from the current line if much of it is left."""
        out, line = [], ""
        for n, term in enumerate(self.printer._as_ordered_terms(e)):
            budget = rest if out else first
            sign = "" if n == 0 else " + "
            if n and term.could_extract_minus_sign():
                sign, term = " - ", -term
            piece = self.tex(term)
            if self.printer._needs_add_brackets(term):
                piece = rf"\left({piece}\right)"
            if width(piece) > rest:
                left = budget - width(line + sign)
                if left < rest / 2:
                    out.append(line)
                    line, sign, left = "", sign.strip() + " " if sign else "", rest - 2.5
                cut = prefixed(line + sign, self.cut(term, left, rest - 2.5))
                out += cut[:-1]
                line = cut[-1]
                continue
            if line and width(line + sign + piece) > budget:
                out.append(line)
                line, sign = sign.strip() + " ", ""
            line += sign + piece
        out.append(line)
        return [text for text in out if text]

    def split(self, factors: tuple) -> tuple[str, sp.Expr] | None:
        """(the other factors' LaTeX, the widest sum among ``factors``), or None without a sum."""
        sums = [f for f in factors if f.is_Add or is_sum(f)]
        if not sums:
            return None
        widest = max(sums, key=lambda f: width(self.tex(f)))
        others = list(factors)
        others.remove(widest)
        plain = [f for f in others if not is_sum(f)]
        parts = [self.tex(sp.Mul(*plain, evaluate=False)) if len(plain) > 1 else
                 rf"\left({self.tex(plain[0])}\right)" if plain[0].is_Add else self.tex(plain[0])] \
            if plain else []
        parts += [rf"\left({self.tex(f)}\right)" for f in others if is_sum(f)]
        return " ".join(parts), widest

    def factor(self, f: sp.Expr, first: float, rest: float) -> list[str]:
        """A factor cut over lines: a sum of terms goes in brackets that span them."""
        if not f.is_Add:
            return self.cut(f, first, rest)
        size = ("\\biggl", "\\biggr") if self.depth == 0 else ("\\Bigl", "\\Bigr")
        self.depth += 1
        try:
            cut = self.cut(f, first - 2, rest - 1)
        finally:
            self.depth -= 1
        return [f"{size[0]}(" + cut[0], *cut[1:-1], cut[-1] + f"{size[1]})"] if len(cut) > 1 else \
            [f"{size[0]}(" + cut[0] + f"{size[1]})"]

    def quotient(self, num: sp.Expr, den: sp.Expr, first: float, rest: float) -> list[str] | None:
        """The numerator's widest sum, cut, times the rest of the quotient."""
        found = self.split(sp.Mul.make_args(num))
        if found is None:
            return None
        others, widest = found
        head = rf"\frac{{{others or '1'}}}{{{self.tex(den)}}} "
        return prefixed(head, self.factor(widest, first - width(head), rest))

    def product(self, factors: tuple, first: float, rest: float) -> list[str] | None:
        """The widest sum among ``factors``, cut, after the other factors."""
        found = self.split(factors)
        if found is None:
            return None
        others, widest = found
        head = others + " " if others else ""
        return prefixed(head, self.factor(widest, first - width(head), rest))

    def summation(self, s: sp.Expr, first: float, rest: float) -> list[str]:
        """The sum sign, then its summand cut over lines (as SymPy prints it: the summand last)."""
        if isinstance(s, ParamSum):
            head = rf"\sum_{{{self.param_index}}} "
        else:
            k, lo, hi = s.limits[0]
            head = rf"\sum_{{{self.tex(k)}={self.tex(lo)}}}^{{{self.tex(hi)}}} "
        return prefixed(head, self.factor(s.args[0], first - width(head), rest))
