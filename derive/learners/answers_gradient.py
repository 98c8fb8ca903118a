"""The answers about the gradient itself: seed 000's naive backward, seed 004's bias, and
where epsilon goes."""
from __future__ import annotations

from collections.abc import Mapping

import mpmath
import sympy as sp

from ..docs.blocks import Answer, Table, equation, para
from ..docs.latex import Partial, math
from ..math.algebra import BatchSum, Elem, M, expand_sums
from ..math.derivation import Derivation
from ..math.stages import inline
from ..proofs import first as proofs
from .numbers import (
    DATA_DY,
    DATA_T,
    DATA_X,
    DIGITS,
    EPSILON,
    GAMMA,
    Group,
    finite_difference,
    fixed,
    mp,
    rel_error,
    sci,
    setting,
)
from .pieces import bn_names, column_sum, is_zero, jacobian_display, naive_gradient, require, words
from ..math import seeded


def naive(ds: Mapping[str, Derivation]) -> Answer:
    w = words()
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(ds["batchnorm"].model)
    d = ds["batchnorm"]
    wrong = naive_gradient(d)
    diff = seeded.factor(d.compact.dx - wrong)
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
        equation(w.dxnaive, wrong),
        equation(w.dx, d.compact.dx),
        para("They differ by what flows through ", math(MU), " and ", math(VAR), ":"),
        equation(w.dx - w.dxnaive, diff),
        para("The naive gradient is right only when both sums vanish; for any other upstream "
             "gradient it is wrong in every element. The seed fears that the derivative of the "
             "batch-norm output with respect to its input is insanely complex to calculate. The "
             "whole Jacobian is one line (see the Jacobian section of the batchnorm derivation):"),
        equation(Partial(Y, X_I), jacobian_display(d), index="j"),
        para("A gradient check tells the two apart. One feature of ", math(sp.Eq(M, 5, evaluate=False)),
             " samples, ", setting(d.model.gamma, GAMMA), ", ", setting(EPS, EPSILON),
             ", and the loss ", math(sp.Eq(w.L, BatchSum(DY * Y), evaluate=False)),
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
    w = words()
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(ds["batchnorm"].model)
    d = ds["batchnorm"]
    mean = d.model.node(MU).definition
    with_bias = {X: w.u + w.b}
    centred = sp.expand(expand_sums((X - mean).xreplace(with_bias), {}))
    require(not centred.has(w.b), "the bias cancels from x - mu")
    slip = sp.expand(expand_sums((X - BatchSum(X)).xreplace(with_bias), {}))
    require(slip.has(w.b), "without 1/N the bias does not cancel")
    only = seeded.solve(slip.coeff(w.b), M)
    wrong_db = seeded.factor(d.lemmas.canonical(BatchSum(naive_gradient(d))))
    require(d.symbolic.sum_dx == 0 and column_sum(d) == 0 and not is_zero(wrong_db),
            "db = 0, dy_j/db = 0, and the naive db is not 0")
    rows = bias_steps(d)
    n = sp.Symbol("N", positive=True, integer=True)
    return Answer("bias", "Why does a bias before batch normalization get no gradient?", "004", (
        para("Seed 004 quotes Ioffe and Szegedy: a layer adds a learned bias ", math(w.b),
             " to its input, ", math(sp.Eq(X, w.u + w.b, evaluate=False)), ", and subtracts the mean. "
             "The seed writes the mean as the plain sum of the ", math(X), "; it needs the factor ",
             math(1 / n), ", as in the model's mean node (the paper's ", math(n), " is our ", math(M),
             "):"),
        equation(MU, mean),
        para("With the mean, the bias cancels exactly:"),
        equation(X - MU, centred),
        para("so neither the normalized input nor the output depends on ", math(w.b),
             " at all. Without the ", math(1 / n), ", as the seed writes it, ", math(w.b), " stays in:"),
        equation(X - BatchSum(X), slip),
        para("which cancels only for ", math(sp.Eq(M, only[0], evaluate=False)),
             ". The chain rule says the same. The bias reaches the loss through every ", math(X),
             ", each with derivative 1, so its gradient is the sum of the ", math(w.dx),
             ", which the derivation proves to be zero for every batch size:"),
        equation(w.db, BatchSum(w.dx)),
        equation(BatchSum(w.dx), d.symbolic.sum_dx),
        para("Summing the proved Jacobian entry over ", math(proofs.I),
             " gives the same answer for each output:"),
        equation(Partial(Y, w.b), column_sum(d), index="j"),
        para("Ioffe and Szegedy's point is what happens when a gradient step ignores how the mean "
             "depends on ", math(w.b), ". Then ", math(w.db), " is computed as if ", math(MU), " and ",
             math(VAR), " were constants, from the naive gradient of the previous answer:"),
        equation(w.dbnaive, wrong_db),
        para("which is not zero. The step moves ", math(w.b), ", the next forward pass subtracts the "
             "moved mean, and the output and the loss come out exactly as before; the next step "
             "sees the same gradient and moves ", math(w.b), " by the same amount again. So ",
             math(w.b), " drifts without bound while nothing is learned. Five steps with learning "
             "rate 0.5 on the loss ", math(sp.Eq(w.L, BatchSum((Y - w.t) ** 2) / 2, evaluate=False)),
             " (the five samples of the previous answer as ", math(w.u), ", targets ", math(w.t, "k"),
             " = " + ", ".join(DATA_T) + "):"),
        Table(("step", "b, naive step", "loss", "b, true gradient", "loss"), rows),
        para("Seed 002's network is this example: it adds ", math(w.b), " before batch normalization "
             "and updates it with a gradient computed from the gradient of the batch-norm output, "
             "so its ", math(w.b), " drifts in the same way, while the true ", math(w.db),
             " is zero. The usual fix is to drop ", math(w.b), ": ", math(d.model.beta),
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
    return seeded.factor(seeded.limit(in_r, r, 0, "+"))


def eps(ds: Mapping[str, Derivation]) -> Answer:
    w = words()
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(ds["batchnorm"].model)
    inside, outside = ds["batchnorm"], ds["batchnorm_eps_outside"]
    reduced_in, reduced_out = inside.compact.steps[1][1], outside.compact.steps[1][1]
    diff = seeded.factor(reduced_out - reduced_in)
    require(not is_zero(diff) and is_zero(diff.subs(EPS, 0)), "the two differ, and only through eps")
    dvar_out = next(st for st in outside.stages if st.wrt == VAR)
    require(any(p.base == VAR and p.exp == sp.S.Half for p in dvar_out.expr.atoms(sp.Pow)),
            "with eps outside, dvar divides by sqrt(var)")
    left_out = {p.size for p in outside.proofs if p.claim.startswith("left out")}
    first = next((n for n in range(1, outside.max_m + 2) if f"m={n}" not in left_out))
    limit_in, limit_out = at_zero_variance(inside, reduced_in), at_zero_variance(outside, reduced_out)
    ratio = seeded.factor(limit_out / limit_in)
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
        equation(w.dxinside, reduced_in),
        equation(w.dxoutside, reduced_out),
        para("They differ only in the coefficient of ", math(XHAT), ", and only through ", math(EPS),
             ":"),
        equation(w.dxoutside - w.dxinside, diff),
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
        equation(w.dxoutside, limit_out),
        para("which is what the generated kernels return at a constant group (a quotient whose "
             "denominator vanishes counts as 0 there), and what finite differences measure. With ",
             math(EPS), " inside, no denominator falls below the square root of ", math(EPS),
             ", and the same limit is"),
        equation(w.dxinside, limit_in),
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
        equation(w.dxoutside / w.dxinside, ratio),
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
