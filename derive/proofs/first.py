"""Exact proofs that the derived backward passes are right.

* For every batch size m <= M, on the forward graph of a group of m elements written out
  node by node (derive.proofs.tape): the brute-force vector-Jacobian product (reverse mode
  over that tape, seeded with dy) equals the staged result and the compact result, every
  entry of the m x m Jacobian (forward mode from each x_i) equals the symbolic Jacobian
  entry, and dgamma/dbeta equal the derivatives of the loss with respect to gamma and beta.
* For a symbolic m: staged == compact, the Jacobian entry dy_j/dx_i contracted
  with dy gives the compact result, and the term of dmu that multiplies
  sum_k (x_k - mu) vanishes.

"Equal" always means the difference is identically zero: for concrete sizes
the square root is named r and the numerator of the difference is reduced
modulo r^2 - radicand (:class:`~derive.proofs.ring.TapeZero`, and
:func:`~derive.proofs.exact.zero_modulo_roots` where that route does not apply); for the
symbolic size the difference cancels to 0 in the reduction algebra.
No floating point and no random samples are involved.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import sympy as sp

from ..forward.graph import Model, StopGrad
from ..math.algebra import BatchSum, Elem, OuterSum, at_size, expand_sums, indexed, split_by_elements
from ..math.closed_form import Compact
from ..math.lemmas import Lemmas
from ..math.stages import Stage, inline
from . import tape
from .ring import TapeZero
from .exact import symbolic_zero, zero_modulo_roots
from ..math import seeded

I, J = sp.symbols("i j", integer=True)


class ProofError(RuntimeError):
    """A claimed identity did not reduce to zero."""

    def __init__(self, variant: str, claim: str, size: str, hint: str = ""):
        super().__init__(f"proof failed: {variant}: {claim} at {size}" + (f"; {hint}" if hint else ""))
        self.variant, self.claim, self.size, self.hint = variant, claim, size, hint

    def __reduce__(self):  # so that a worker process can hand it back
        return type(self), (self.variant, self.claim, self.size, self.hint)


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
    xs: list
    dys: list
    ys: list
    opaque: dict = None


def opaque_values(model: Model) -> dict:
    """Every stop-gradient value of the graph as an opaque per-group symbol.

    d/dx sg(f) = 0 whatever f is, so an identity proved for an independent symbol s
    in place of sg(f) holds in particular at s = f: sound, and it keeps clipped ratios of
    whole sums out of the brute-force expressions."""
    found = set()
    for n in model.nodes + model.lets:
        found |= n.definition.atoms(StopGrad)
    return {f: sp.Symbol(f"_sg{k}", real=True) for k, f in enumerate(sorted(found, key=sp.default_sort_key))}


def concrete(model: Model, size: int) -> Concrete:
    opaque = opaque_values(model)
    scalars: dict = {}
    for node in model.nodes:
        if not node.per_element:
            scalars[node.symbol] = at_size(node.definition.xreplace(opaque), size, 0, scalars)
    ys = []
    for k in range(size):
        values: dict = {}
        for node in model.nodes:
            if node.per_element:
                value = at_size(node.definition.xreplace(opaque), size, k, scalars)
                values[indexed(node.symbol, k)] = value.xreplace(values)
        ys.append(values[indexed(model.output.symbol, k)])
    return Concrete(size, scalars, [indexed(model.x, k) for k in range(size)],
                    [indexed(model.dy, k) for k in range(size)], ys, opaque)


def in_leaves(model: Model, expr: sp.Expr) -> sp.Expr:
    """``expr`` with every per-element node and abbreviation replaced by its definition."""
    for node in reversed(model.nodes):
        if node.per_element:
            expr = expr.xreplace({node.symbol: node.definition})
    for let in reversed(model.lets):
        expr = expr.xreplace({let.symbol: let.definition})
    return expr


def at(c: Concrete, model: Model, expr: sp.Expr, k: int) -> sp.Expr:
    """A symbolic-m expression (in x, xhat, mu, var, sigma_eps, ...) at element k of ``c``."""
    return at_size(in_leaves(model, expr).xreplace(c.opaque or {}), c.size, k, c.scalars)


def vjp(c: Concrete) -> list[sp.Expr]:
    """Brute force: dx_i = sum_j dy_j * d y_j / d x_i from the full Jacobian."""
    return [sp.Add(*[dy * sp.diff(y, x) for dy, y in zip(c.dys, c.ys)]) for x in c.xs]


def param_grad(c: Concrete, p: sp.Symbol, k: int) -> sp.Expr:
    """dL/dp by differentiation: p is shared by the group, or p_k belongs to element k."""
    wrt = indexed(p, k) if isinstance(p, Elem) else p
    return sp.Add(*[dy * sp.diff(y, wrt) for dy, y in zip(c.dys, c.ys)])


def group_value(g: Stage) -> sp.Expr:
    """A collected gradient's value for one element (per-element leaf) or one group:
    ParamSum(f) is f, or sum_k f_k; OuterSum(v) is v (derive.math.stages.collected)."""
    inner = g.expr.args[0]
    if isinstance(g.expr, OuterSum) or isinstance(g.wrt, Elem):
        return inner
    return BatchSum(inner)


def check(variant: str, claim: str, size: str, ok: bool, log: list[Proof], t0: float) -> None:
    if not ok:
        raise ProofError(variant, claim, size)
    log.append(Proof(claim, size, time.perf_counter() - t0))


def undefined(expr: sp.Expr) -> bool:
    return expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo)


def prove_sizes(model: Model, stages: tuple[Stage, ...], compact: Compact,
                jacobian: sp.Expr, grads: tuple[Stage, ...], max_m: int, lemmas: Lemmas,
                progress=None) -> list[Proof]:
    """m = 1..M, on the tape of the group (derive.proofs.tape): reverse mode seeded with dy
    gives the vector-Jacobian product and the parameters' gradients, forward mode from each
    x_i a column of the Jacobian.  At m = 1 a group is constant; where the derived formula
    divides by zero there (sqrt(var) with epsilon outside the root has no derivative at
    var = 0), that size is left out, and the log says so."""
    log: list[Proof] = []
    name = model.name
    staged = inline(stages)
    for size in range(1, max_m + 1):
        if progress:
            progress(f"m={size}")
        t0 = time.perf_counter()
        if size == 1 and undefined(at(concrete(model, 1), model, staged, 0)):
            log.append(Proof("left out: the formula divides by zero at every point", "m=1", 0.0))
            continue
        if tape.covers(model):
            group = tape.forward(model, size, opaque_values(model))
            shares = [[(k, indexed(g.wrt, k)) for k in range(size)] if isinstance(g.wrt, Elem) else [(0, g.wrt)]
                      for g in grads]
            brute = group.tape.reverse(dict(zip(group.ys, group.dys)),
                                       group.xs + [w for ws in shares for _, w in ws], "d")
            claims = []  # (difference, what it proves), in the order they are checked
            for i, x in enumerate(group.xs):
                claims += [(brute[x] - tape.at(group, model, staged, i), "Jacobian-vector product == staged"),
                           (brute[x] - tape.at(group, model, compact.dx, i), "Jacobian-vector product == compact")]
                column = group.tape.tangents(x, group.nodes)
                claims += [(column.get(y, 0) - tape_entry(group, model, jacobian, i, j), "Jacobian entry dy_j/dx_i")
                           for j, y in enumerate(group.ys)]
            for g, ws in zip(grads, shares):
                local = group_value(g)
                claims += [(brute[w] - tape.at(group, model, local, k), f"{g.symbol} by differentiation")
                           for k, w in ws]
            zero = TapeZero(group.tape.steps, [c for c, _ in claims])
            for difference, claim in claims:
                if not zero(difference):
                    raise ProofError(name, claim, f"m={size}")
        else:   # inputs besides x: the group written out, and sympy.diff
            c = concrete(model, size)
            brute = vjp(c)
            label = f"m={size}"
            for i in range(size):
                if not zero_modulo_roots(brute[i] - at(c, model, staged, i)):
                    raise ProofError(name, "Jacobian-vector product == staged", label)
                if not zero_modulo_roots(brute[i] - at(c, model, compact.dx, i)):
                    raise ProofError(name, "Jacobian-vector product == compact", label)
                for j in range(size):
                    if not zero_modulo_roots(sp.diff(c.ys[j], c.xs[i]) - entry_at(c, model, jacobian, i, j)):
                        raise ProofError(name, "Jacobian entry dy_j/dx_i", label)
            for g in grads:
                for k in range(size if isinstance(g.wrt, Elem) else 1):
                    mine = at(c, model, group_value(g), k)
                    if not zero_modulo_roots(param_grad(c, g.wrt, k) - mine):
                        raise ProofError(name, f"{g.symbol} by differentiation", label)
        check(name, "Jacobian == staged == compact; " + ", ".join(str(g.symbol) for g in grads),
              f"m={size}", True, log, t0)
    return log


def tape_entry(group: tape.Group, model: Model, jac: sp.Expr, i: int, j: int) -> sp.Expr:
    """The symbolic Jacobian entry at row j, column i of a concrete group, on its tape."""
    columns = {copy_i(s): tape.at(group, model, s, i) for s in per_element_symbols(model)}
    entry = jac.xreplace({sp.KroneckerDelta(I, J): int(i == j)}).xreplace(columns)
    return tape.at(group, model, entry, j)


def prove_test_mode(model: Model, stages: tuple[Stage, ...], max_m: int) -> list[Proof]:
    """Test mode: the statistics are constants, so the map is affine in x; same check, every size."""
    log: list[Proof] = []
    staged = inline(stages)
    for size in range(1, max_m + 1):
        t0 = time.perf_counter()
        group = tape.forward(model, size, opaque_values(model))
        brute = group.tape.reverse(dict(zip(group.ys, group.dys)), group.xs, "d")
        claims = [brute[x] - tape.at(group, model, staged, i) for i, x in enumerate(group.xs)]
        zero = TapeZero(group.tape.steps, claims)
        ok = all(zero(c) for c in claims)
        check(model.name, "test mode: Jacobian-vector product == staged", f"m={size}", ok, log, t0)
    return log


# ---------------------------------------------------------------- symbolic size

def copy_i(s: sp.Symbol) -> sp.Symbol:
    """The column copy s_i of a per-element symbol (element i, where generic symbols are element j)."""
    return sp.Symbol(f"{s.name}_i", real=True)


def per_element_symbols(model: Model) -> list[Elem]:
    return sorted({model.x, *(n.symbol for n in model.nodes if n.per_element),
                   *(p for p in model.params + model.inputs if isinstance(p, Elem))}, key=lambda s: s.name)


def column_copies(model: Model) -> dict:
    return {s: copy_i(s) for s in per_element_symbols(model)}


def entry_at(c: Concrete, model: Model, jac: sp.Expr, i: int, j: int) -> sp.Expr:
    """The symbolic Jacobian entry at row j, column i of a concrete group."""
    columns = {copy_i(s): at(c, model, s, i) for s in per_element_symbols(model)}
    entry = jac.xreplace({sp.KroneckerDelta(I, J): int(i == j)}).xreplace(columns)
    return at(c, model, entry, j)


def jacobian_entry(model: Model, lemmas: Lemmas, wrt: sp.Symbol | None = None) -> sp.Expr:
    """dy_j/dx_i for a symbolic batch, by forward-mode through the graph.

    Generic per-element symbols stand for element j; x_i and xhat_i for element i.
    x_j reaches y_j directly (a Kronecker delta) and through every per-group node.
    ``wrt``: another leaf in place of x (dy_j/dgamma_i, or dy_j/dgamma for a per-group one).
    """
    x = model.x if wrt is None else wrt
    elem = isinstance(x, Elem)
    delta = sp.KroneckerDelta(I, J)
    tangent: dict = {x: delta if elem else sp.Integer(1)}
    copies = column_copies(model)
    for node in model.nodes:
        d = node.definition
        t = sp.Add(*[sp.diff(d, p) * tangent[p] for p in sorted(tangent, key=str) if p != x])
        direct = sp.diff(d, x)
        if not elem:
            t += direct
        elif node.per_element:
            t += direct * delta
        else:  # d/dx_i of a sum over the group: the summand's derivative at element i
            t += direct.xreplace(copies)
        tangent[node.symbol] = t
    raw = tangent[model.output.symbol]
    extra = {copy_i(model.x): v.xreplace(copies) for v in lemmas.x_rule.values()}
    return seeded.factor(lemmas.canonical(raw, extra))


def contract(jac: sp.Expr, model: Model, lemmas: Lemmas) -> sp.Expr:
    """sum_j dy_j * J_ji: the Kronecker delta picks j = i, the rest is a sum over j."""
    delta = sp.KroneckerDelta(I, J)
    expanded = sp.expand(jac)
    on_diagonal = expanded.coeff(delta)
    off = sp.expand(expanded - on_diagonal * delta)
    back = {v: k for k, v in column_copies(model).items()}
    # On the diagonal j = i: the column copies are the generic symbols again.
    diag = model.dy * on_diagonal.xreplace(back)
    summed = expand_sums(BatchSum(model.dy * off), lemmas.sums)
    return diag + summed.xreplace(back)


def sum_over_group(expr: sp.Expr, lemmas: Lemmas) -> sp.Expr:
    """sum_i expr_i, for a per-element expr that may contain reductions."""
    total = sp.Add(*[c * BatchSum(mono) for c, mono in split_by_elements(expr)])
    return seeded.factor(lemmas.canonical(total))


@dataclass(frozen=True)
class Symbolic:
    proofs: list[Proof]
    vanishing: list[sp.Expr]          #: reductions in the stages that are identically 0
    sum_dx: sp.Expr                    #: sum_i dx_i
    sum_dx_xhat: sp.Expr | None        #: sum_i dx_i * z_i for the normalized node z
    model: Model = None


def prove_symbolic(model: Model, stages: tuple[Stage, ...], compact: Compact,
                   jacobian: sp.Expr, lemmas: Lemmas, extras=()) -> Symbolic:
    name, label = model.name, "symbolic m"
    log: list[Proof] = []
    for claim in lemmas.proved:
        log.append(Proof(f"lemma {claim}", label, 0.0))
    t0 = time.perf_counter()
    staged = lemmas.canonical(inline(stages))
    check(name, "staged == compact", label, symbolic_zero(staged - compact.dx), log, t0)
    t0 = time.perf_counter()
    check(name, "sum_j dy_j * (dy_j/dx_i) == compact", label,
          symbolic_zero(lemmas.canonical(contract(jacobian, model, lemmas)) - compact.dx), log, t0)
    sums = sorted({s for st in stages for s in st.expr.atoms(BatchSum)}, key=sp.default_sort_key)
    vanishing = [s for s in sums if lemmas.canonical(s) == 0]
    sum_dx = sum_over_group(compact.dx, lemmas)
    z = lemmas.variable
    sum_dx_z = sum_over_group(compact.dx * z, lemmas) if z is not None else None
    result = Symbolic(log, vanishing, sum_dx, sum_dx_z, model)
    for extra in extras:
        t0 = time.perf_counter()
        claim, ok = extra(result)
        check(name, claim, label, ok, log, t0)
    return result
