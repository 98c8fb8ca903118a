"""Exact proofs that the derived backward passes are right.

* For every batch size m <= M: the brute-force vector-Jacobian product
  (the full m x m Jacobian from ``sympy.diff``, contracted with dy) equals
  the staged result and the compact result, and dgamma/dbeta equal the
  derivatives of the loss with respect to gamma and beta.
* For a symbolic m: staged == compact, the Jacobian entry dy_j/dx_i contracted
  with dy gives the compact result, and the term of dmu that multiplies
  sum_k (x_k - mu) vanishes.

"Equal" always means the difference is identically zero: for concrete sizes
the square root is named r and the numerator of the difference is reduced
modulo r^2 - radicand (:func:`~derive.algebra.zero_modulo_root`); for the
symbolic size the difference cancels to 0 in the reduction algebra.
No floating point and no random samples are involved.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import sympy as sp

from .algebra import BatchSum, Elem, at_size, expand_sums, indexed, split_by_elements, zero_modulo_root
from .closed_form import Compact, canonical, facts
from .model import DY, EPS, MU, STD, VAR, X, XHAT, Model
from .stages import Stage, inline

ROOT = sp.Symbol("r", positive=True)
I, J = sp.symbols("i j", integer=True)


class ProofError(RuntimeError):
    """A claimed identity did not reduce to zero."""

    def __init__(self, variant: str, claim: str, size: str):
        super().__init__(f"proof failed: {variant}: {claim} at {size}")
        self.variant, self.claim, self.size = variant, claim, size


@dataclass(frozen=True)
class Proof:
    claim: str
    size: str
    seconds: float


# ---------------------------------------------------------------- concrete sizes

@dataclass(frozen=True)
class Concrete:
    """The forward pass of one group of ``size`` elements, written out element by element."""

    size: int
    scalars: dict
    radicand: sp.Expr
    xs: list
    dys: list
    ys: list


def concrete(model: Model, size: int) -> Concrete:
    scalars: dict = {}
    for node in model.nodes:
        if not node.per_element:
            scalars[node.symbol] = at_size(node.definition, size, 0, scalars)
    ys = []
    for k in range(size):
        values: dict = {}
        for node in model.nodes:
            if node.per_element:
                value = at_size(node.definition, size, k, scalars)
                values[indexed(node.symbol, k)] = value.xreplace(values)
        ys.append(values[indexed(model.output.symbol, k)])
    var = scalars.get(VAR, VAR)
    radicand = var + EPS if model.spec.eps == "inside" else var
    return Concrete(size, scalars, radicand, [indexed(X, k) for k in range(size)],
                    [indexed(DY, k) for k in range(size)], ys)


def at(c: Concrete, model: Model, expr: sp.Expr, k: int) -> sp.Expr:
    """A symbolic-m expression (in x, xhat, mu, var, sigma_eps) at element k of ``c``."""
    std = model.std_definition
    xhat = (X - MU if model.spec.centred else X) / STD
    expr = expr.xreplace({XHAT: xhat}).xreplace({STD: std})
    return at_size(expr, c.size, k, c.scalars)


def vjp(c: Concrete) -> list[sp.Expr]:
    """Brute force: dx_i = sum_j dy_j * d y_j / d x_i from the full Jacobian."""
    return [sp.Add(*[dy * sp.diff(y, x) for dy, y in zip(c.dys, c.ys)]) for x in c.xs]


def param_grad(c: Concrete, p: sp.Symbol, k: int) -> sp.Expr:
    """dL/dp by differentiation: p is shared by the group, or p_k belongs to element k."""
    wrt = indexed(p, k) if isinstance(p, Elem) else p
    return sp.Add(*[dy * sp.diff(y, wrt) for dy, y in zip(c.dys, c.ys)])


def check(variant: str, claim: str, size: str, ok: bool, log: list[Proof], t0: float) -> None:
    if not ok:
        raise ProofError(variant, claim, size)
    log.append(Proof(claim, size, time.perf_counter() - t0))


def sizes(model: Model, max_m: int) -> range:
    """m = 1 .. M; with eps outside the root, sqrt(var) is not differentiable at var = 0,
    which is every point when m = 1, so that size is left out."""
    return range(1 if model.spec.eps == "inside" else 2, max_m + 1)


def prove_sizes(model: Model, stages: tuple[Stage, ...], compact: Compact,
                jacobian: sp.Expr, grads: tuple[Stage, ...], max_m: int) -> list[Proof]:
    log: list[Proof] = []
    name = model.spec.name
    staged = inline(stages)
    for size in sizes(model, max_m):
        t0 = time.perf_counter()
        c = concrete(model, size)
        brute = vjp(c)

        def same(a: sp.Expr, b: sp.Expr) -> bool:
            return zero_modulo_root(a - b, c.radicand, ROOT)

        label = f"m={size}"
        for i in range(size):
            if not same(brute[i], at(c, model, staged, i)):
                raise ProofError(name, "Jacobian-vector product == staged", label)
            if not same(brute[i], at(c, model, compact.dx, i)):
                raise ProofError(name, "Jacobian-vector product == compact", label)
            for j in range(size):
                if not same(sp.diff(c.ys[j], c.xs[i]), entry_at(c, model, jacobian, i, j)):
                    raise ProofError(name, "Jacobian entry dy_j/dx_i", label)
        for g in grads:
            for k in range(size if isinstance(g.wrt, Elem) else 1):
                local = g.expr.args[0]
                mine = at(c, model, local if isinstance(g.wrt, Elem) else BatchSum(local), k)
                if not same(param_grad(c, g.wrt, k), mine):
                    raise ProofError(name, f"{g.symbol} by differentiation", label)
        check(name, "Jacobian == staged == compact; dgamma, dbeta", label, True, log, t0)
    return log


def prove_test_mode(model: Model, stages: tuple[Stage, ...], max_m: int) -> list[Proof]:
    """Test mode: mu and var are constants, so the map is affine in x; same check, every size."""
    log: list[Proof] = []
    staged = inline(stages)
    for size in range(1, max_m + 1):
        t0 = time.perf_counter()
        c = concrete(model, size)
        brute = vjp(c)
        ok = all(zero_modulo_root(brute[i] - at(c, model, staged, i), c.radicand, ROOT)
                 for i in range(size))
        check(model.spec.name, "test mode: Jacobian-vector product == staged", f"m={size}",
              ok, log, t0)
    return log


# ---------------------------------------------------------------- symbolic size

X_I = sp.Symbol("x_i", real=True)
XHAT_I = sp.Symbol("xhat_i", real=True)
GAMMA_I = sp.Symbol("gamma_i", real=True)


def entry_at(c: Concrete, model: Model, jac: sp.Expr, i: int, j: int) -> sp.Expr:
    """The symbolic Jacobian entry at row j, column i of a concrete group."""
    columns = {X_I: indexed(X, i), XHAT_I: at(c, model, XHAT, i), GAMMA_I: indexed(model.gamma, i)}
    entry = jac.xreplace({sp.KroneckerDelta(I, J): int(i == j)}).xreplace(columns)
    return at(c, model, entry, j)


def jacobian_entry(model: Model) -> sp.Expr:
    """dy_j/dx_i for a symbolic batch, by forward-mode through the graph.

    Generic per-element symbols stand for element j; x_i and xhat_i for element i.
    x_j reaches y_j directly (a Kronecker delta) and through every per-group node.
    """
    delta = sp.KroneckerDelta(I, J)
    tangent: dict = {X: delta}
    for node in model.nodes:
        d = node.definition
        t = sp.Add(*[sp.diff(d, p) * tangent[p] for p in sorted(tangent, key=str) if p != X])
        direct = sp.diff(d, X)
        if node.per_element:
            t += direct * delta
        else:  # d/dx_i of a sum over the group: the summand's derivative at element i
            t += direct.xreplace(column_copies(model))
        tangent[node.symbol] = t
    raw = tangent[model.output.symbol]
    return sp.factor(canonical(raw, model, {X_I: model.x_in_xhat.xreplace({XHAT: XHAT_I})}))


def column_copies(model: Model) -> dict:
    out = {X: X_I, XHAT: XHAT_I}
    if isinstance(model.gamma, Elem):
        out[model.gamma] = GAMMA_I
    return out


def contract(jac: sp.Expr, model: Model) -> sp.Expr:
    """sum_j dy_j * J_ji: the Kronecker delta picks j = i, the rest is a sum over j."""
    delta = sp.KroneckerDelta(I, J)
    expanded = sp.expand(jac)
    on_diagonal = expanded.coeff(delta)
    off = sp.expand(expanded - on_diagonal * delta)
    # On the diagonal j = i: the column copies are the generic symbols again.
    diag = DY * on_diagonal.xreplace({v: k for k, v in column_copies(model).items()})
    summed = expand_sums(BatchSum(DY * off), facts(model))
    return diag + summed.xreplace({v: k for k, v in column_copies(model).items()})


def sum_over_group(expr: sp.Expr, model: Model) -> sp.Expr:
    """sum_i expr_i, for a per-element expr that may contain reductions."""
    total = sp.Add(*[c * BatchSum(mono) for c, mono in split_by_elements(expr)])
    return sp.factor(canonical(total, model))


@dataclass(frozen=True)
class Symbolic:
    proofs: list[Proof]
    vanishing: list[sp.Expr]          #: reductions in the stages that are identically 0
    sum_dx: sp.Expr                    #: sum_i dx_i
    sum_dx_xhat: sp.Expr               #: sum_i dx_i * xhat_i


def prove_symbolic(model: Model, stages: tuple[Stage, ...], compact: Compact,
                   jacobian: sp.Expr) -> Symbolic:
    name, label = model.spec.name, "symbolic m"
    log: list[Proof] = []
    t0 = time.perf_counter()
    staged = canonical(inline(stages), model)
    check(name, "staged == compact", label, sp.cancel(staged - compact.dx) == 0, log, t0)
    t0 = time.perf_counter()
    check(name, "sum_j dy_j * (dy_j/dx_i) == compact", label,
          sp.cancel(canonical(contract(jacobian, model), model) - compact.dx) == 0, log, t0)
    t0 = time.perf_counter()
    sums = sorted({s for st in stages for s in st.expr.atoms(BatchSum)}, key=sp.default_sort_key)
    vanishing = [s for s in sums if canonical(s, model) == 0]
    if model.spec.centred:
        check(name, "sum_k (x_k - mu) == 0 in dmu", label,
              any(s.args[0] == X - MU for s in vanishing), log, t0)
    t0 = time.perf_counter()
    sum_dx = sum_over_group(compact.dx, model)
    sum_dx_xhat = sum_over_group(compact.dx * XHAT, model)
    if model.spec.centred:
        check(name, "sum_i dx_i == 0", label, sum_dx == 0, log, t0)
    return Symbolic(log, vanishing, sum_dx, sum_dx_xhat)

