"""`derive explain TOPIC`: the seed documents' questions, answered from the derivation.

An answer is a list of blocks: prose with inline formulas (:class:`Para`),
displayed equations and tables.  Every formula is a SymPy expression built from
the proved derivation and printed by :mod:`derive.latex`, and every claim that
an expression is, or is not, zero is checked here exactly before it is printed
(:func:`require`).  The numbers come from the proved expressions as well:
written out for one group of five elements (:func:`derive.proofs.concrete`) and
evaluated in 30-digit arithmetic, so they are the same on every machine; the
layout answer uses float64 NumPy, as the kernels do.  The documents print the
same answers (:mod:`derive.docs.documents`).
"""
from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import mpmath
import numpy as np
import sympy as sp

from ..docs.latex import Equation, Math, Partial, equation, math
from ..forward.graph import Model
from ..forward.library import BY_NAME
from ..math.algebra import BatchSum, Elem, M, expand_sums
from ..math.derivation import Derivation, derive
from ..math.stages import inline
from ..proofs import first as proofs

# Symbols that only the answers use (the printer knows their names).
U, T = Elem("u", real=True), Elem("t", real=True)
DX, DXHAT = Elem("dx", real=True), Elem("dxhat", real=True)
DXNAIVE, DXSEED = Elem("dxnaive", real=True), Elem("dxseed", real=True)
DXINSIDE, DXOUTSIDE = Elem("dxinside", real=True), Elem("dxoutside", real=True)
B, DB, DBNAIVE = sp.symbols("b db dbnaive", real=True)
DMU, DVAR, DMUSEED = sp.symbols("dmu dvar dmuseed", real=True)
L = sp.Symbol("L", real=True)


# ----------------------------------------------------------------------------- symbols

class Names(NamedTuple):
    """The batch-norm symbols the answers speak of, taken from a derivation's own model."""

    x: sp.Symbol
    dy: sp.Symbol
    y: sp.Symbol
    mu: sp.Symbol
    var: sp.Symbol
    std: sp.Symbol
    xhat: sp.Symbol
    eps: sp.Symbol
    x_i: sp.Symbol     #: the column copy of x (element i of the Jacobian entry)
    xhat_i: sp.Symbol  #: the column copy of xhat


def bn_names(model: Model) -> Names:
    """The answers' symbols from ``model`` (a batch-norm graph: it has mu, var, std, xhat, eps)."""
    copies = proofs.column_copies(model)
    xhat = model.sym("xhat")
    return Names(model.x, model.dy, model.output.symbol, model.sym("mu"), model.sym("var"),
                 model.sym("std"), xhat, model.sym("eps"), copies[model.x], copies[xhat])


# ----------------------------------------------------------------------------- blocks

@dataclass(frozen=True)
class Code:
    """A name from the seeds' code, printed in a fixed-width font."""

    text: str


@dataclass(frozen=True)
class Para:
    parts: tuple  #: str (prose), Math (inline formula) or Code


@dataclass(frozen=True)
class Table:
    header: tuple  #: cells: str, Math or Code
    rows: tuple    #: tuples of cells


@dataclass(frozen=True)
class Answer:
    topic: str
    title: str
    seed: str
    blocks: tuple  #: Para, Equation or Table


def para(*parts) -> Para:
    return Para(tuple(parts))

def listing(items) -> list:
    """a, b and c, as parts of a paragraph."""
    out: list = []
    for n, item in enumerate(items):
        if n:
            out.append(" and " if n == len(items) - 1 else ", ")
        out.append(item)
    return out


def require(ok: bool, claim: str) -> None:
    """Refuse to print an answer whose computed claim is false."""
    if not ok:
        raise RuntimeError(f"derive explain: a computed claim failed: {claim}")


def is_zero(expr: sp.Expr) -> bool:
    return sp.cancel(sp.together(expr)) == 0


# ----------------------------------------------------------------------------- numbers

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


# ----------------------------------------------------------------------------- shared pieces

def naive_gradient(d: Derivation) -> sp.Expr:
    """The backward pass with mu and var held constant: the test-mode stages, in sigma_eps."""
    return d.lemmas.canonical(inline(d.test_stages))


def jacobian_display(d: Derivation) -> sp.Expr:
    """d.jacobian with the factor of the Kronecker delta taken out: (gamma/sigma_eps)(delta_ij - ...)."""
    delta = sp.KroneckerDelta(proofs.I, proofs.J)
    scale = sp.factor(sp.expand(d.jacobian).coeff(delta))
    shown = scale * sp.expand(sp.cancel(d.jacobian / scale))
    require(is_zero(shown - d.jacobian), "the rearranged Jacobian entry equals the proved one")
    return shown


def column_sum(d: Derivation) -> sp.Expr:
    """sum_i dy_j/dx_i from the proved Jacobian entry: the delta gives i = j, the rest sums over i."""
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(d.model)
    delta = sp.KroneckerDelta(proofs.I, proofs.J)
    jac = sp.expand(d.jacobian)
    on, off = jac.coeff(delta), sp.expand(jac - jac.coeff(delta) * delta)
    xhat_j = sp.Symbol("xhat_j", real=True)
    swap = {XHAT: xhat_j, XHAT_I: XHAT}
    summed = expand_sums(BatchSum(off.xreplace(swap)), d.lemmas.sums)
    return sp.factor(on + summed.xreplace({xhat_j: XHAT}))


# ----------------------------------------------------------------------------- topics

def naive(ds: Mapping[str, Derivation]) -> Answer:
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(ds["batchnorm"].model)
    d = ds["batchnorm"]
    wrong = naive_gradient(d)
    diff = sp.factor(d.compact.dx - wrong)
    require(not is_zero(diff), "the naive gradient differs from the true one")
    group = Group(d, len(DATA_X))
    xs, dys = mp(DATA_X), mp(DATA_DY)
    with mpmath.workdps(DIGITS):
        true = group.gradient(d.compact.dx)(xs, dys)
        fake = group.gradient(inline(d.test_stages))(xs, dys)
        fd = finite_difference(group.loss(), xs, dys)
    errors = [rel_error(true, fd), rel_error(fake, fd)]
    require(errors[0] < 1e-6 < errors[1], "finite differences pass the true gradient and fail the naive one")
    return Answer("naive", "Can backprop ignore the normalization step?", "000", (
        para("Seed 000 asks whether backpropagation through batch normalization may keep the old "
             "formulas and treat the batch statistics ", math(MU), " and ", math(VAR),
             " as constants. Holding them constant is exactly the backward pass of the test-mode "
             "model, where ", math(MU), " and ", math(VAR), " are fixed running statistics. "
             "Its chain rule has a single path:"),
        *[equation(st.symbol, st.expr) for st in d.test_stages],
        para("Written with ", math(STD), ", the naive gradient and the true one "
             "(the proved compact form) are"),
        equation(DXNAIVE, wrong),
        equation(DX, d.compact.dx),
        para("They differ by what flows through ", math(MU), " and ", math(VAR), ":"),
        equation(DX - DXNAIVE, diff),
        para("The naive gradient is right only when both sums vanish; for any other upstream "
             "gradient it is wrong in every element. The seed fears that the derivative of the "
             "batch-norm output with respect to its input is insanely complex to calculate. The "
             "whole Jacobian is one line (see the Jacobian section of the batchnorm derivation):"),
        equation(Partial(Y, X_I), jacobian_display(d), index="j"),
        para("A gradient check tells the two apart. One feature of ", math(sp.Eq(M, 5, evaluate=False)),
             " samples, ", setting(d.model.gamma, GAMMA), ", ", setting(EPS, EPSILON),
             ", and the loss ", math(sp.Eq(L, BatchSum(DY * Y), evaluate=False)),
             " for a fixed upstream gradient; central finite differences with step 1e-5, "
             "evaluated in 30-digit arithmetic. The columns are the true gradient, the naive one "
             "and the finite differences:"),
        Table(("", math(X), math(DY), "true", "naive", "finite difference"),
              tuple((str(i + 1), DATA_X[i], DATA_DY[i], fixed(true[i]), fixed(fake[i]), fixed(fd[i]))
                    for i in range(len(xs)))),
        Table(("gradient", "relative error vs finite differences", "below 1e-6?"),
              (("true (proved compact form)", sci(errors[0]), "passes"),
               ("naive (mean and variance held constant)", sci(errors[1]), "fails"))),
        para("The relative error is the largest absolute difference divided by the largest "
             "absolute entry. So no: the backward pass must be rewritten to include the batch "
             "statistics, and the derivation shows how."),
    ))


def bias(ds: Mapping[str, Derivation]) -> Answer:
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(ds["batchnorm"].model)
    d = ds["batchnorm"]
    mean = d.model.node(MU).definition
    with_bias = {X: U + B}
    centred = sp.expand(expand_sums((X - mean).xreplace(with_bias), {}))
    require(not centred.has(B), "the bias cancels from x - mu")
    slip = sp.expand(expand_sums((X - BatchSum(X)).xreplace(with_bias), {}))
    require(slip.has(B), "without 1/N the bias does not cancel")
    only = sp.solve(slip.coeff(B), M)
    wrong_db = sp.factor(d.lemmas.canonical(BatchSum(naive_gradient(d))))
    require(d.symbolic.sum_dx == 0 and column_sum(d) == 0 and not is_zero(wrong_db),
            "db = 0, dy_j/db = 0, and the naive db is not 0")
    rows = bias_steps(d)
    n = sp.Symbol("N", positive=True, integer=True)
    return Answer("bias", "Why does a bias before batch normalization get no gradient?", "004", (
        para("Seed 004 quotes Ioffe and Szegedy: a layer adds a learned bias ", math(B),
             " to its input, ", math(sp.Eq(X, U + B, evaluate=False)), ", and subtracts the mean. "
             "The seed writes the mean as the plain sum of the ", math(X), "; it needs the factor ",
             math(1 / n), ", as in the model's mean node (the paper's ", math(n), " is our ", math(M),
             "):"),
        equation(MU, mean),
        para("With the mean, the bias cancels exactly:"),
        equation(X - MU, centred),
        para("so neither the normalized input nor the output depends on ", math(B),
             " at all. Without the ", math(1 / n), ", as the seed writes it, ", math(B), " stays in:"),
        equation(X - BatchSum(X), slip),
        para("which cancels only for ", math(sp.Eq(M, only[0], evaluate=False)),
             ". The chain rule says the same. The bias reaches the loss through every ", math(X),
             ", each with derivative 1, so its gradient is the sum of the ", math(DX),
             ", which the derivation proves to be zero for every batch size:"),
        equation(DB, BatchSum(DX)),
        equation(BatchSum(DX), d.symbolic.sum_dx),
        para("Summing the proved Jacobian entry over ", math(proofs.I),
             " gives the same answer for each output:"),
        equation(Partial(Y, B), column_sum(d), index="j"),
        para("Ioffe and Szegedy's point is what happens when a gradient step ignores how the mean "
             "depends on ", math(B), ". Then ", math(DB), " is computed as if ", math(MU), " and ",
             math(VAR), " were constants, from the naive gradient of the previous answer:"),
        equation(DBNAIVE, wrong_db),
        para("which is not zero. The step moves ", math(B), ", the next forward pass subtracts the "
             "moved mean, and the output and the loss come out exactly as before; the next step "
             "sees the same gradient and moves ", math(B), " by the same amount again. So ",
             math(B), " drifts without bound while nothing is learned. Five steps with learning "
             "rate 0.5 on the loss ", math(sp.Eq(L, BatchSum((Y - T) ** 2) / 2, evaluate=False)),
             " (the five samples of the previous answer as ", math(U), ", targets ", math(T, "k"),
             " = " + ", ".join(DATA_T) + "):"),
        Table(("step", "b, naive step", "loss", "b, true gradient", "loss"), rows),
        para("Seed 002's network is this example: it adds ", math(B), " before batch normalization "
             "and updates it with a gradient computed from the gradient of the batch-norm output, "
             "so its ", math(B), " drifts in the same way, while the true ", math(DB),
             " is zero. The usual fix is to drop ", math(B), ": ", math(d.model.beta),
             " does its job."),
    ))


def bias_steps(d: Derivation) -> tuple:
    """b and the loss along gradient descent, with the naive db and with the true db."""
    group = Group(d, len(DATA_X))
    us, ts = mp(DATA_X), mp(DATA_T)
    rows = []
    with mpmath.workdps(DIGITS):
        forward = group.outputs()
        naive_dx = group.gradient(inline(d.test_stages))
        true_dx = group.gradient(d.compact.dx)
        b = {"naive": mpmath.mpf(0), "true": mpmath.mpf(0)}
        for step in range(6):
            row = [str(step)]
            for kind, gradient in (("naive", naive_dx), ("true", true_dx)):
                xs = [u + b[kind] for u in us]
                ys = forward(xs, [0] * len(xs))
                dys = [y - t for y, t in zip(ys, ts)]
                row += [fixed(b[kind]), fixed(sum(dy**2 for dy in dys) / 2)]
                b[kind] -= mpmath.mpf("0.5") * sum(gradient(xs, dys))
            rows.append(tuple(row))
    return tuple(rows)


def at_zero_variance(d: Derivation, reduced: sp.Expr) -> sp.Expr:
    """The limit of the reduced compact form as var -> 0, computed by SymPy.

    With r = sqrt(var) and z = (x - mu)/r (bounded as var -> 0), xhat = r z / sigma_eps
    and sigma_eps is its definition in r; the sums follow by linearity."""
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(d.model)
    r, z = sp.Symbol("r", positive=True), Elem("z", real=True)
    std = d.model.node(STD).definition.subs(VAR, r**2)
    in_r = expand_sums(reduced.xreplace({XHAT: r * z / std}).xreplace({STD: std}), {})
    return sp.factor(sp.limit(in_r, r, 0, "+"))


def eps(ds: Mapping[str, Derivation]) -> Answer:
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(ds["batchnorm"].model)
    inside, outside = ds["batchnorm"], ds["batchnorm_eps_outside"]
    reduced_in, reduced_out = inside.compact.steps[1][1], outside.compact.steps[1][1]
    diff = sp.factor(reduced_out - reduced_in)
    require(not is_zero(diff) and is_zero(diff.subs(EPS, 0)), "the two differ, and only through eps")
    dvar_out = next(st for st in outside.stages if st.wrt == VAR)
    require(any(p.base == VAR and p.exp == sp.S.Half for p in dvar_out.expr.atoms(sp.Pow)),
            "with eps outside, dvar divides by sqrt(var)")
    left_out = {p.size for p in outside.proofs if p.claim.startswith("left out")}
    first = next((n for n in range(1, outside.max_m + 2) if f"m={n}" not in left_out))
    limit_in, limit_out = at_zero_variance(inside, reduced_in), at_zero_variance(outside, reduced_out)
    ratio = sp.factor(limit_out / limit_in)
    require(not limit_out.has(sp.nan, sp.zoo, sp.oo) and limit_out.free_symbols <= reduced_out.free_symbols
            and not ratio.has(DY), "the limit at var = 0 is finite, and the two limits are proportional")
    rows = eps_rows(inside, outside, limit_out)
    return Answer("eps", "Where does epsilon go?", "000", (
        para("Seed 000 normalizes with ", math(EPS), " outside the square root; most code, and "
             "seeds 002 and 003, put it inside. Both are derived. The variant batchnorm has"),
        equation(STD, inside.model.node(STD).definition),
        para("and the variant batchnorm_eps_outside has"),
        equation(STD, outside.model.node(STD).definition),
        para("Each written with its own ", math(STD), " and ", math(XHAT), ", the two compact "
             "forms (after the sums are reduced) are"),
        equation(DXINSIDE, reduced_in),
        equation(DXOUTSIDE, reduced_out),
        para("They differ only in the coefficient of ", math(XHAT), ", and only through ", math(EPS),
             ":"),
        equation(DXOUTSIDE - DXINSIDE, diff),
        para("The bigger difference is where the variance vanishes. With ", math(EPS),
             " outside, the variance stage divides by the square root of the variance:"),
        equation(dvar_out.symbol, dvar_out.expr),
        para("so at ", math(sp.Eq(VAR, 0, evaluate=False)), " (a constant feature, or a batch of "
             "one) the formulas read 0/0, and that variant's exact proofs start at ",
             math(sp.Eq(M, first, evaluate=False)), ". The gradient itself has a limit there: ",
             math(XHAT), " and the sum it multiplies both vanish like the square root of the "
             "variance, so the term divided by it goes to 0. SymPy's limit of the outside compact "
             "form as ", math(VAR), " goes to 0 (with ", math(X), " minus ", math(MU),
             " shrinking in proportion to the square root of the variance) is"),
        equation(DXOUTSIDE, limit_out),
        para("which is what the generated kernels return at a constant group (a quotient whose "
             "denominator vanishes counts as 0 there), and what finite differences measure. With ",
             math(EPS), " inside, no denominator falls below the square root of ", math(EPS),
             ", and the same limit is"),
        equation(DXINSIDE, limit_in),
        para("Both gradients pass a finite-difference check against their own forward pass: they "
             "are two different functions, each differentiated correctly. Five samples, ",
             setting(EPS, EPSILON), ", three spreads of the same data. The table gives the relative "
             "difference between the two gradients and each one's relative error against central "
             "differences with step 1e-12, in 30-digit arithmetic (at the constant data, the limits "
             "above):"),
        Table(("data", "inside vs outside", "FD error, inside", "FD error, outside"), rows),
        para("For ordinary activations the placement changes the gradient by a relative amount of "
             "the order of ", math(EPS), " over the variance; for a nearly constant feature it "
             "changes it completely, and for a constant one the outside gradient is the inside one "
             "times"),
        equation(DXOUTSIDE / DXINSIDE, ratio),
    ))


def eps_rows(inside: Derivation, outside: Derivation, limit_out: sp.Expr) -> tuple:
    spreads = (("spread 1 (the data of naive)", None), ("spread 1e-3 (1 + x/1000)", "0.001"),
               ("constant (all 1)", "0"))
    groups = [Group(inside, 5), Group(outside, 5)]
    rows = []
    for label, spread in spreads:
        exact = [sp.Rational(x) if spread is None else 1 + sp.Rational(spread) * sp.Rational(x)
                 for x in DATA_X]
        grads, errors = [], []
        for g in groups:
            dx = g.d.compact.dx if g.defined(g.d.compact.dx, exact, DATA_DY) else limit_out
            require(g.defined(dx, exact, DATA_DY), "the gradient, or its limit, has a value")
            with mpmath.workdps(DIGITS):
                xs, dys = mp(str(x) for x in exact), mp(DATA_DY)
                grads.append(g.gradient(dx)(xs, dys))
                errors.append(sci(rel_error(grads[-1], finite_difference(g.loss(), xs, dys, "1e-12"))))
        rows.append((label, sci(rel_error(*grads)), *errors))
    return tuple(rows)


LAYOUT_X = ((0.8, -1.1, 0.3), (-1.2, 0.4, 1.7), (2.5, 0.9, -0.8), (0.3, -2.0, 0.6), (-0.6, 1.3, -1.5))
LAYOUT_DY = ((0.5, 0.2, -0.7), (-1.0, 0.6, 0.1), (0.25, -0.4, 0.9), (0.75, 1.1, -0.2), (-0.3, -0.5, 0.4))


def numpy_pass(d: Derivation, x, dout, gamma, beta, axis: int) -> dict:
    """The proved forward pass, compact dx, dgamma and dbeta in float64, every sum over ``axis``."""
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(d.model)
    modules = [{"BatchSum": lambda a: np.sum(a, axis=axis, keepdims=True)}, "numpy"]
    values = {X: x, DY: dout, d.model.gamma: gamma, d.model.beta: beta, EPS: float(EPSILON),
              M: x.shape[axis]}

    def ev(expr):
        names = sorted(expr.free_symbols, key=lambda s: s.name)
        return sp.lambdify(names, expr, modules)(*[values[s] for s in names])

    for node in d.model.nodes:
        values[node.symbol] = ev(node.definition)
    values[STD] = ev(d.model.node(STD).definition)
    out = {"y": values[Y], "dx": ev(d.compact.dx)}
    for p in d.params:
        out[p.symbol.name] = np.sum(ev(p.expr.args[0]), axis=axis)
    return out


def layout(ds: Mapping[str, Derivation]) -> Answer:
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(ds["batchnorm"].model)
    d = ds["batchnorm"]
    x, dout = np.array(LAYOUT_X), np.array(LAYOUT_DY)
    gamma, beta = np.array([1.5, 0.5, -1.0]), np.array([0.2, 0.0, -0.1])
    rows_ = numpy_pass(d, x, dout, gamma, beta, axis=0)
    cols = numpy_pass(d, x.T, dout.T, gamma[:, None], beta[:, None], axis=1)
    diffs = {k: float(np.max(np.abs(np.asarray(rows_[k]) - np.asarray(cols[k]).T)))
             for k in ("y", "dx", "dgamma", "dbeta")}
    require(max(diffs.values()) < 1e-12, "the two layouts agree")
    names = ((math(Y), "y"), (math(DX), "dx"), (math(d.params[0].symbol), "dgamma"),
             (math(d.params[1].symbol), "dbeta"))
    return Answer("layout", "Rows or columns: does the layout change the gradient?", "002", (
        para("CS231n stores a batch as rows: ", Code("x"), " has shape (N, D) and every statistic "
             "reduces over axis 0. Seed 002's network stores it as columns: ", Code("Z"), " has shape "
             "(features, batch), it reduces over axis 1 and takes ", Code("m = Z.shape[1]"),
             ". The derivation does not depend on the layout: a normalization group is the ",
             math(M), " values of one feature, wherever they sit, and only the axis of every sum "
             "changes. The proved forward pass and compact gradient, evaluated in float64 NumPy "
             "with every sum over axis 0 on ", Code("x"), " (5 x 3) and with every sum over axis 1 "
             "on its transpose (3 x 5), agree:"),
        Table(("quantity", "largest difference, rows vs transposed columns"),
              tuple((shown, sci(diffs[key])) for shown, key in names)),
        para("The gradient of the first feature in both layouts:"),
        Table(("sample", "rows", "columns"),
              tuple((str(n + 1), fixed(rows_["dx"][n, 0]), fixed(cols["dx"][0, n]))
                    for n in range(x.shape[0]))),
        para("The generated kernels take the column layout directly: ",
             Code("batchnorm_forward(x, gamma, beta, bn_param)"), " with ",
             Code("bn_param['axis'] = 1"), " reduces over axis 1 and keeps gamma, beta and the "
             "running statistics per feature. Seed 002 uses both layouts in different sections "
             "(its BatchNormLayer takes a batch of rows with ", Code("axis=0"),
             ", its NN class a batch of columns with ", Code("axis=1"), "); each is right for its "
             "own layout, as long as the weight gradients follow the same layout."),
    ))


def slips(ds: Mapping[str, Derivation]) -> Answer:
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(ds["batchnorm"].model)
    d = ds["batchnorm"]
    gamma, beta = d.model.gamma, d.model.beta
    out = d.model.output.definition
    y_seed = gamma * X + beta
    y_slip = sp.factor(out - y_seed)
    require(not is_zero(y_slip), "y = gamma x + beta is not the output")
    dx_stage, dmu_stage = d.stages[-1], next(st for st in d.stages if st.wrt == MU)
    seed_dx = DXHAT / sp.sqrt(VAR + beta) + DMU / M + DVAR * 2 * (X - MU) / M
    dx_slip = sp.factor(seed_dx - dx_stage.expr)
    seed_dmu = -BatchSum(DXHAT) / (sp.sqrt(VAR) + beta) + DVAR * BatchSum(2 * (X - MU)) / M
    dmu_slip = seed_dmu - dmu_stage.expr
    dmu_left = sp.factor(dmu_slip.xreplace({s: 0 for s in d.symbolic.vanishing}))
    require(not is_zero(dx_slip) and not is_zero(dmu_left), "beta in place of eps changes dx and dmu")
    dvar_dmu = sp.diff(d.model.node(VAR).definition, MU)
    kink = sp.solve(out.xreplace({XHAT: (X - MU) / STD}), X)
    require(len(kink) == 1 and kink[0] != 0, "the ReLU kink of y is not at x = 0")
    seed_dz = gamma / (M * STD) * (M * DY - BatchSum(DY) - (X - MU) / STD**2 * BatchSum(DY * (X - MU)))
    require(is_zero(d.lemmas.canonical(seed_dz) - d.compact.dx), "seed 002's dZ formula is right")
    as_named = sp.cancel(d.lemmas.canonical(seed_dz.xreplace({DY: gamma * DY})) / d.compact.dx)
    require(as_named == gamma, "read with dZ_norm = dxhat, it is gamma times too large")
    dgamma = d.params[0]
    return Answer("slips", "Slips in the seed documents, and the correct forms", "000 to 004", (
        para("Each slip below is written as a SymPy expression and compared with the proved one; "
             "every difference shown is computed, not typed."),
        para("Seed 003, forward pass: it writes ", math(sp.Eq(Y, y_seed, evaluate=False)),
             ". Scale and shift act on the normalized input, so the difference from the proved "
             "output is"),
        equation(Y - y_seed, y_slip),
        para("and with ", math(X), " in place of ", math(XHAT), " the normalization is lost."),
        para("Seed 003, backward pass: in ", math(DMU), " it divides by ",
             math(sp.sqrt(VAR) + beta), " and in ", math(DX), " by ", math(sp.sqrt(VAR + beta)),
             ": the shift ", math(beta), " stands where ", math(EPS), " belongs. The direct path is"),
        equation(Partial(XHAT, X), sp.diff(d.model.node(XHAT).definition, X)),
        para("and the seed's ", math(DX), ", minus the proved stage, is"),
        equation(DXSEED - DX, dx_slip),
        para("Its ", math(DMU), " has a second slip: it drops the minus sign of"),
        equation(Partial(VAR, MU), dvar_dmu),
        para("That sum is zero, so the sign slip is harmless, and what is left of the "
             "difference is the slip of ", math(beta), ":"),
        equation(DMUSEED - DMU, dmu_slip),
        equation(DMUSEED - DMU, dmu_left),
        para("Seed 003, code: ", Code("dgamma = dout * X_norm"), " returns the per-sample terms ",
             math(DY * XHAT), ", an (N, D) array, instead of their sum over the batch. ",
             math(gamma), " is shared by the ", math(M), " samples of a feature, so its gradient "
             "collects all of them, as the seed's own ", Code("dbeta = np.sum(dout, axis=0)"),
             " does:"),
        equation(dgamma.symbol, dgamma.expr),
        para("Seed 004: the mean is written as the plain sum of the ", math(X),
             ", without the factor ", math(1 / sp.Symbol("N", positive=True)), ". The mean is"),
        equation(MU, d.model.node(MU).definition),
        para("and without the factor, the bias of Ioffe and Szegedy's example would not cancel "
             "(see the answer on the bias)."),
        para("Seed 002, ReLU: the hidden layers compute ", Code("dZ = dA_prev * relu_derivative(Z)"),
             ", but the activation is applied to ", Code("Z_tilde"), ", the batch-norm output ",
             math(Y), ", so the mask must be taken at ", math(Y), ". The output is zero not at ",
             math(sp.Eq(X, 0, evaluate=False)), " but at"),
        equation(X, kink[0]),
        para("and every ", math(X), " between the two points gets the wrong mask. On the five "
             "samples of the naive answer (", setting(gamma, GAMMA), ", ", setting(beta, BETA),
             "), ", *relu_masks(d), "."),
        para("Seed 002, naming: ", Code("batch_norm_backward"), " calls its input ",
             Code("dZ_norm"), ", but it receives the gradient of the batch-norm output ",
             Code("Z_tilde"), ", our ", math(DY), ", not of the normalized ", Code("Z_norm"),
             ", whose gradient is ", math(sp.Eq(DXHAT, gamma * DY, evaluate=False)),
             ". Its formula, in our symbols,"),
        equation(DXSEED, seed_dz),
        para("is exactly the proved compact form once written in the normalized variables:"),
        equation(DXSEED - DX, sp.Integer(0)),
        para("so the code is right and only the name is wrong; fed the gradient of ",
             Code("Z_norm"), ", as the name says, it would return ", math(as_named),
             " times the right answer."),
        para("Seed 002, output layer: it computes ", Code("dW"), " and ", Code("db"), " from ",
             Code("dZL = AL - Y"), ", the gradient of the batch-norm output, instead of the "
             "gradient that ", Code("batch_norm_backward"), " returns, and it passes that returned "
             "gradient on as ", Code("dA_prev"), " without multiplying by the transposed weights. "
             "The true ", math(DB), " is zero (see the answer on the bias)."),
        para("Seed 000: ", math(EPS), " outside the square root (see the answer on epsilon), and "
             "the name m for both the mean and the batch size, so ", Code("m = 1/m * np.sum(Z[2])"),
             " overwrites the batch size it divides by."),
    ))


def relu_masks(d: Derivation) -> list:
    """Paragraph parts: the samples on which the seed's mask (x > 0) and the true one (y > 0) differ."""
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(d.model)
    group = Group(d, len(DATA_X))
    with mpmath.workdps(DIGITS):
        ys = group.outputs()(mp(DATA_X), [0] * len(DATA_X))
    wrong = [k for k, (x, y) in enumerate(zip(mp(DATA_X), ys)) if (x > 0) != (y > 0)]
    require(bool(wrong), "the example has a sample with the wrong mask")
    parts: list = [f"the masks disagree on {len(wrong)} of the {len(ys)} samples: "]
    for n, k in enumerate(wrong):
        parts += [", " if n else "", math(sp.Eq(X, sp.Float(DATA_X[k]), evaluate=False), str(k + 1)),
                  " but ", math(sp.Eq(Y, sp.Float(fixed(ys[k])), evaluate=False), str(k + 1))]
    return parts


TOPICS: dict[str, tuple[Callable[[Mapping[str, Derivation]], Answer], tuple[str, ...]]] = {
    "naive": (naive, ("batchnorm",)),
    "bias": (bias, ("batchnorm",)),
    "eps": (eps, ("batchnorm", "batchnorm_eps_outside")),
    "layout": (layout, ("batchnorm",)),
    "slips": (slips, ("batchnorm",)),
}


def answer(topic: str, ds: Mapping[str, Derivation], max_m: int, progress=None) -> Answer:
    """The answer to ``topic``, deriving any variant it needs that ``ds`` lacks.

    ``progress(name)``, if given, returns the stage callback for deriving variant ``name``."""
    build, needs = TOPICS[topic]
    have = dict(ds)
    for name in needs:
        if name not in have:
            have[name] = derive(BY_NAME[name], max_m, progress and progress(name))
    if progress:
        progress(f"answering {topic}")
    return build(have)


# ----------------------------------------------------------------------------- terminal

def text_part(part) -> str:
    if isinstance(part, Math):
        return part.text
    if isinstance(part, Code):
        return f"`{part.text}`"
    return part


def to_text(a: Answer) -> str:
    from .sources import cite
    title = f"{a.title} (seed {a.seed})"
    lines = [title, "=" * len(title), f"Seed {cite(a.seed)}", ""]
    for block in a.blocks:
        if isinstance(block, Para):
            lines += textwrap.wrap("".join(text_part(p) for p in block.parts), 92,
                                   break_long_words=False, break_on_hyphens=False) + [""]
        elif isinstance(block, Equation):
            lines += [f"    {block.lhs.text} = {block.rhs.text}", ""]
        else:
            cells = [[text_part(c) for c in row] for row in (block.header, *block.rows)]
            widths = [max(len(row[k]) for row in cells) for k in range(len(cells[0]))]
            for n, row in enumerate(cells):
                lines.append("    " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
                if n == 0:
                    lines.append("    " + "  ".join("-" * w for w in widths))
            lines.append("")
    return "\n".join(lines)


def main(topic: str, max_m: int, progress=None) -> int:
    if topic not in TOPICS:
        print(f"derive explain: unknown topic {topic!r}; choose from {', '.join(TOPICS)}",
              file=sys.stderr)
        return 2
    sys.stdout.write(to_text(answer(topic, {}, max_m, progress)))
    return 0
