"""The facts a forward graph implies, found from the graph and proved before they are used.

* **Inversions.** An abbreviation such as std = sqrt(var + eps) is solved for the
  reduction it reads: var = std^2 - eps (or, when var appears only under the root,
  sqrt(var) = std - eps).  Proved by substituting back.
* **The change of variables.** The normalized node (the last per-element node that
  is linear in x, e.g. xhat = (x - mu)/std) is solved for x: x = mu + std*xhat.
  Proved by substituting back.
* **Sum facts.** sum_k z_k and sum_k z_k^2 for that node z, reduced with the
  definitions of the reductions (sum_k x_k = m*mu, sum_k (x_k - mu)^2 = m*var) to
  per-group values: sum xhat = 0 and sum xhat^2 = m*var/std^2 for batch norm.
  Derived in the reduction algebra for a symbolic m (linearity and the node
  definitions are the only steps) and checked again exactly by expanding the sums
  for m = 1..M.

A graph without such facts gets an empty :class:`Lemmas`; its backward pass is then
less compact, never wrong.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..forward.graph import Model, StopGrad
from .algebra import BatchSum, Elem, M, at_size, expand_sums
from . import seeded


class LemmaError(RuntimeError):
    def __init__(self, name: str, claim: str):
        super().__init__(f"proof failed: {name}: lemma {claim}")
        self.variant, self.claim, self.size = name, f"lemma {claim}", "symbolic m"
        self.args_ = (name, claim)

    def __reduce__(self):  # so that a worker process can hand it back
        return type(self), self.args_


@dataclass(frozen=True)
class Lemmas:
    roots: dict = field(default_factory=dict)       #: sqrt(v) -> its value through an abbreviation
    inverses: dict = field(default_factory=dict)    #: reduction v -> its value through an abbreviation
    x_rule: dict = field(default_factory=dict)      #: {x: value through the normalized node}
    variable: Elem | None = None                    #: the normalized node z
    sums: dict = field(default_factory=dict)        #: {z: sum, z**2: sum}
    folds: tuple = ()                               #: (definition, symbol) of the other abbreviations
    proved: tuple[str, ...] = ()                    #: the claims, as text

    def rewrite(self, expr: sp.Expr, extra: dict | None = None) -> sp.Expr:
        """``expr`` in the normalized variables: roots, then x, then the reductions."""
        if self.roots:
            expr = expr.replace(
                lambda e: e.is_Pow and e.base in self.roots and e.exp.is_Rational and e.exp.q == 2,
                lambda e: self.roots[e.base] ** (2 * e.exp))
        expr = expr.xreplace({**self.x_rule, **(extra or {})})
        return self.fold(expr.xreplace(self.inverses))

    def fold(self, expr: sp.Expr) -> sp.Expr:
        """Name the abbreviations that were not inverted (r, d of batch renorm; den of L2)."""
        for definition, symbol in self.folds:
            expr = expr.xreplace({definition: symbol})
        return expr

    def abbreviate(self, expr: sp.Expr) -> sp.Expr:
        """Write each inverted abbreviation back as its symbol: sqrt(var + eps) -> std."""
        for v, value in self.inverses.items():
            if v in self.roots:
                expr = expr.replace(lambda e: e.is_Pow and e.base == v and e.exp.is_Rational and e.exp.q == 2,
                                    lambda e: self.roots[v] ** (2 * e.exp))
            else:
                expr = sp.powsimp(expr.xreplace({v: value}), force=False)
        return expr

    def canonical(self, expr: sp.Expr, extra: dict | None = None) -> sp.Expr:
        """Rewrite, then distribute every sum over its monomials with the sum facts."""
        return expand_sums(self.rewrite(expr, extra), self.sums)


def _zero(expr: sp.Expr) -> bool:
    return seeded.simplify(sp.cancel(sp.together(expr))) == 0


def solve(lhs: sp.Expr, rhs: sp.Expr, unknown: sp.Symbol) -> list:
    """The solutions of lhs = rhs for ``unknown``; none when SymPy cannot solve it."""
    calls = sorted((f for f in (lhs - rhs).atoms(sp.Function) if not f.has(unknown)), key=sp.default_sort_key)
    mask = {f: sp.Dummy(f"f{k}", real=True) for k, f in enumerate(calls)}
    try:
        found = seeded.solve(sp.Eq(lhs.xreplace(mask), rhs.xreplace(mask)), unknown)
    except (NotImplementedError, ValueError):
        return []
    back = {v: k for k, v in mask.items()}
    return [f.xreplace(back) for f in found]


def inversions(model: Model) -> tuple[dict, dict, list[str], set]:
    """Solve each abbreviation for the reduction it reads (v = ..., or sqrt(v) = ...)."""
    reductions = {n.symbol for n in model.nodes if n.kind == "reduce"} | set(model.stats)
    roots, inverses, claims, used = {}, {}, [], set()
    for let in model.lets:
        read = sorted(let.definition.free_symbols & reductions, key=str)
        if len(read) != 1 or let.definition.has(StopGrad) or read[0] in inverses or read[0] in roots:
            continue
        v = read[0]
        u = sp.Dummy("u", nonnegative=True)
        under_root = let.definition.xreplace({sp.sqrt(v): u})
        if not under_root.has(v):
            solved = solve(under_root, let.symbol, u)
            if len(solved) == 1 and _zero(under_root.xreplace({u: solved[0]}) - let.symbol):
                roots[v], inverses[v] = solved[0], solved[0] ** 2
                used.add(let.symbol)
                claims.append(f"sqrt({v}) = {solved[0]}")
            continue
        solved = [s for s in solve(let.definition, let.symbol, v)
                  if _zero(let.definition.xreplace({v: s}) - let.symbol)]
        if len(solved) == 1:
            inverses[v] = solved[0]
            used.add(let.symbol)
            claims.append(f"{v} = {solved[0]}")
    return roots, inverses, claims, used


def folding(model: Model, inverted: Lemmas, used: set) -> tuple:
    """(definition, symbol) for every abbreviation that is not an inversion, latest first,
    each definition both as written and in the inverted variables."""
    out = []
    for let in reversed(model.lets):
        if let.symbol not in used:
            out += [(let.definition, let.symbol), (inverted.rewrite(let.definition), let.symbol)]
    return tuple(out)


def change_of_variables(model: Model) -> tuple[dict, Elem | None, list[str]]:
    """x through the last per-element node z that is linear in x: x = z's definition solved for x."""
    x = model.x
    candidates = [n for n in model.nodes if n.per_element and n.definition.has(x)
                  and not n.definition.atoms(Elem) - {x}]
    t = sp.Symbol("_t")
    for node in reversed(candidates):
        written = sp.expand(node.definition.xreplace({x: t}))
        if not written.is_polynomial(t) or sp.degree(written, t) != 1:
            continue
        if sp.diff(written, t).free_symbols & set(model.differentiable):
            continue  # x = (z - b)/a would divide by a parameter, which may be 0
        solved = solve(node.definition, node.symbol, x)
        if len(solved) == 1 and _zero(node.definition.xreplace({x: solved[0]}) - node.symbol):
            return {x: solved[0]}, node.symbol, [f"{x} = {{}}"]
    return {}, None, []


def reduction_facts(model: Model) -> dict:
    """sum_k x_k^p from the reduction nodes: each definition is solved for its highest power of x."""
    x, known = model.x, {}
    for node in model.nodes:
        if node.kind != "reduce":
            continue
        (summed,) = node.definition.atoms(BatchSum)
        scale = seeded.simplify(node.definition / summed)
        arg = summed.args[0]
        if arg.atoms(Elem) != {x} or not sp.expand(arg).is_polynomial(x):
            continue
        poly = sp.Poly(sp.expand(arg), x)
        top = poly.degree()
        rest = sum((coeff * known.get(p, BatchSum(x ** p) if p else M)
                    for (p,), coeff in poly.terms() if p != top), sp.Integer(0))
        known[top] = sp.expand((node.symbol / scale - rest) / poly.coeff_monomial(x ** top))
    return known


def sum_of(expr: sp.Expr, model: Model, powers: dict) -> sp.Expr | None:
    """sum_k expr_k as a per-group value, or None when the reductions do not determine it."""
    total = sp.Integer(0)
    for (p,), c in sp.Poly(sp.expand(expr), model.x).terms():
        if p and p not in powers:
            return None
        total += c * (powers[p] if p else M)
    return None if total.has(BatchSum) else sp.expand(total)


def find(model: Model, max_m: int = 3) -> Lemmas:
    """Every lemma of ``model``, each proved; raises LemmaError when one does not hold."""
    roots, inverses, claims, used = inversions(model)
    folds = folding(model, Lemmas(roots, inverses), used)
    roots = {v: Lemmas(folds=folds).fold(r) for v, r in roots.items()}
    x_rule, z, more = change_of_variables(model)
    x_rule = {x: seeded.simplify(Lemmas(roots, inverses, folds=folds).fold(Lemmas(roots, inverses).abbreviate(v)))
              for x, v in x_rule.items()}
    claims += [c.format(v) for c, v in zip(more, x_rule.values())]
    sums: dict = {}
    if z is not None:
        powers = reduction_facts(model)
        zdef = Lemmas(folds=folds).fold(model.node(z).definition)
        for k in (1, 2):
            value = sum_of(zdef ** k, model, powers)
            if value is None:
                continue
            partial = Lemmas(roots, inverses, folds=folds)
            value = seeded.factor(partial.rewrite(value))
            check_at_sizes(model, z, k, value, partial, max_m)
            sums[z ** k] = value
            claims.append(f"sum_k {z}_k{'^2' if k == 2 else ''} = {value}")
    else:  # no normalized node: the sums of x the reductions define (sum_k x_k = m*mu), in x itself
        partial = Lemmas(roots, inverses, folds=folds)
        for k, value in sorted(reduction_facts(model).items()):
            if value.has(BatchSum) or k > 2:
                continue
            value = seeded.factor(partial.rewrite(value))
            check_at_sizes(model, model.x, k, value, partial, max_m)
            sums[model.x ** k] = value
            claims.append(f"sum_k {model.x}_k{'^2' if k == 2 else ''} = {value}")
    return Lemmas(roots, inverses, x_rule, z, sums, folds=folds, proved=tuple(claims))


def check_at_sizes(model: Model, z: Elem, k: int, value: sp.Expr, partial: Lemmas, max_m: int) -> None:
    """The sum fact, once more with the sum written out for m = 1..max_m: exact, no sampling."""
    zdef = z if z == model.x else model.node(z).definition
    for size in range(1, max_m + 1):
        scalars: dict = {}
        for node in model.nodes:
            if node.kind == "reduce":
                scalars[node.symbol] = at_size(node.definition, size, 0, scalars)
        lhs = at_size(BatchSum(zdef ** k), size, 0, scalars)
        rhs = value
        for let in model.lets:
            rhs = rhs.xreplace({let.symbol: let.definition})
        rhs = at_size(rhs, size, 0, scalars)
        if not _zero(lhs - rhs):
            raise LemmaError(model.name, f"sum_k {z}_k^{k} = {value} at m={size}")
