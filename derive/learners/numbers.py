"""The numbers of the answers, from the proved expressions.

The expressions are written out for one group of five elements
(:func:`derive.proofs.first.concrete`) and evaluated in 30-digit arithmetic, so
the numbers are the same on every machine.
"""
from __future__ import annotations

from collections.abc import Callable

import mpmath
import sympy as sp

from ..docs.latex import Math, math
from ..math.derivation import Derivation
from ..proofs import first as proofs
from .pieces import bn_names

#: one feature of a batch of five samples, its upstream gradient and the parameters
DATA_X = ("0.8", "-1.2", "2.5", "0.3", "-0.6")
DATA_DY = ("0.5", "-1.0", "0.25", "0.75", "-0.3")
DATA_T = ("1.0", "0.0", "-1.0", "0.5", "0.0")
GAMMA, BETA, EPSILON = "1.5", "-0.2", "1e-5"
DIGITS = 30


def mp(values) -> list:
    return [mpmath.mpf(v) for v in values]


class Group:
    """One group of ``size`` elements written out element by element, evaluated with mpmath."""

    def __init__(self, d: Derivation, size: int):
        X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(d.model)
        self.d, self.c = d, proofs.concrete(d.model, size)
        self.args = [*self.c.xs, *self.c.dys, d.model.gamma, d.model.beta, EPS]

    def compile(self, exprs: list) -> Callable:
        f = sp.lambdify(self.args, exprs, "mpmath")
        return lambda xs, dys: f(*xs, *dys, *mp((GAMMA, BETA, EPSILON)))

    def gradient(self, expr: sp.Expr) -> Callable:
        """A symbolic-m per-element expression, at every element of the group."""
        return self.compile([proofs.at(self.c, self.d.model, expr, k) for k in range(self.c.size)])

    def defined(self, expr: sp.Expr, xs, dys) -> bool:
        """Whether ``expr`` has a value at every element, in exact arithmetic (no 0/0)."""
        values = dict(zip(self.args, [*map(sp.Rational, xs), *map(sp.Rational, dys),
                                      *map(sp.Rational, (GAMMA, BETA, EPSILON))]))
        at = [proofs.at(self.c, self.d.model, expr, k).xreplace(values) for k in range(self.c.size)]
        return not any(v.has(sp.nan, sp.zoo, sp.oo, -sp.oo) for v in at)

    def outputs(self) -> Callable:
        return self.compile(list(self.c.ys))

    def loss(self) -> Callable:
        """L = sum_k dy_k y_k, so that dL/dy = dy."""
        return self.compile([sp.Add(*[dy * y for dy, y in zip(self.c.dys, self.c.ys)])])


def finite_difference(loss: Callable, xs: list, dys: list, step: str = "1e-5") -> list:
    """Central differences of the loss in every x_i (CS231n's step h = 1e-5 by default)."""
    h, out = mpmath.mpf(step), []
    for i in range(len(xs)):
        up, down = list(xs), list(xs)
        up[i] += h
        down[i] -= h
        out.append((loss(up, dys)[0] - loss(down, dys)[0]) / (2 * h))
    return out


def rel_error(a, b) -> float:
    """The largest absolute difference over the largest absolute entry."""
    scale = max(max(abs(v) for v in a), max(abs(v) for v in b))
    return float(max(abs(p - q) for p, q in zip(a, b)) / scale)


def fixed(value, digits: int = 6) -> str:
    text = f"{float(value):.{digits}f}"
    return text.lstrip("-") if float(text) == 0 else text


def sci(value) -> str:
    return "0" if value == 0 else f"{float(value):.1e}"


def setting(symbol: sp.Symbol, value: str) -> Math:
    """An inline ``symbol = value`` for the numeric examples."""
    return math(sp.Eq(symbol, sp.Float(value), evaluate=False))
