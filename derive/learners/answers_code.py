"""The answers about the seeds' code: the layout of a batch (rows or columns), and the slips."""
from __future__ import annotations

from collections.abc import Mapping

import mpmath
import numpy as np
import sympy as sp

from ..docs.blocks import Answer, Code, Table, equation, para
from ..docs.latex import Partial, math
from ..math.algebra import BatchSum, M
from ..math.derivation import Derivation
from .numbers import BETA, DATA_X, DIGITS, EPSILON, GAMMA, Group, fixed, mp, sci, setting
from .pieces import bn_names, is_zero, require, words
from ..math import seeded

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
    w = words()
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(ds["batchnorm"].model)
    d = ds["batchnorm"]
    x, dout = np.array(LAYOUT_X), np.array(LAYOUT_DY)
    gamma, beta = np.array([1.5, 0.5, -1.0]), np.array([0.2, 0.0, -0.1])
    rows_ = numpy_pass(d, x, dout, gamma, beta, axis=0)
    cols = numpy_pass(d, x.T, dout.T, gamma[:, None], beta[:, None], axis=1)
    diffs = {k: float(np.max(np.abs(np.asarray(rows_[k]) - np.asarray(cols[k]).T)))
             for k in ("y", "dx", "dgamma", "dbeta")}
    require(max(diffs.values()) < 1e-12, "the two layouts agree")
    names = ((math(Y), "y"), (math(w.dx), "dx"), (math(d.params[0].symbol), "dgamma"),
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
    w = words()
    X, DY, Y, MU, VAR, STD, XHAT, EPS, X_I, XHAT_I = bn_names(ds["batchnorm"].model)
    d = ds["batchnorm"]
    gamma, beta = d.model.gamma, d.model.beta
    out = d.model.output.definition
    y_seed = gamma * X + beta
    y_slip = seeded.factor(out - y_seed)
    require(not is_zero(y_slip), "y = gamma x + beta is not the output")
    dx_stage, dmu_stage = d.stages[-1], next(st for st in d.stages if st.wrt == MU)
    seed_dx = w.dxhat / sp.sqrt(VAR + beta) + w.dmu / M + w.dvar * 2 * (X - MU) / M
    dx_slip = seeded.factor(seed_dx - dx_stage.expr)
    seed_dmu = -BatchSum(w.dxhat) / (sp.sqrt(VAR) + beta) + w.dvar * BatchSum(2 * (X - MU)) / M
    dmu_slip = seed_dmu - dmu_stage.expr
    dmu_left = seeded.factor(dmu_slip.xreplace({s: 0 for s in d.symbolic.vanishing}))
    require(not is_zero(dx_slip) and not is_zero(dmu_left), "beta in place of eps changes dx and dmu")
    dvar_dmu = sp.diff(d.model.node(VAR).definition, MU)
    kink = seeded.solve(out.xreplace({XHAT: (X - MU) / STD}), X)
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
        para("Seed 003, backward pass: in ", math(w.dmu), " it divides by ",
             math(sp.sqrt(VAR) + beta), " and in ", math(w.dx), " by ", math(sp.sqrt(VAR + beta)),
             ": the shift ", math(beta), " stands where ", math(EPS), " belongs. The direct path is"),
        equation(Partial(XHAT, X), sp.diff(d.model.node(XHAT).definition, X)),
        para("and the seed's ", math(w.dx), ", minus the proved stage, is"),
        equation(w.dxseed - w.dx, dx_slip),
        para("Its ", math(w.dmu), " has a second slip: it drops the minus sign of"),
        equation(Partial(VAR, MU), dvar_dmu),
        para("That sum is zero, so the sign slip is harmless, and what is left of the "
             "difference is the slip of ", math(beta), ":"),
        equation(w.dmuseed - w.dmu, dmu_slip),
        equation(w.dmuseed - w.dmu, dmu_left),
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
             ", whose gradient is ", math(sp.Eq(w.dxhat, gamma * DY, evaluate=False)),
             ". Its formula, in our symbols,"),
        equation(w.dxseed, seed_dz),
        para("is exactly the proved compact form once written in the normalized variables:"),
        equation(w.dxseed - w.dx, sp.Integer(0)),
        para("so the code is right and only the name is wrong; fed the gradient of ",
             Code("Z_norm"), ", as the name says, it would return ", math(as_named),
             " times the right answer."),
        para("Seed 002, output layer: it computes ", Code("dW"), " and ", Code("db"), " from ",
             Code("dZL = AL - Y"), ", the gradient of the batch-norm output, instead of the "
             "gradient that ", Code("batch_norm_backward"), " returns, and it passes that returned "
             "gradient on as ", Code("dA_prev"), " without multiplying by the transposed weights. "
             "The true ", math(w.db), " is zero (see the answer on the bias)."),
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
