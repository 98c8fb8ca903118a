"""The split across processes: which reductions cross ranks, and how per-rank statistics merge.

When a group spans the batch axis (axis 0 in ``Spec.reduce_axes``), every rank holds
part of every group, so each ``BatchSum`` of the forward nodes and of the compact
backward crosses processes.  The forward and the backward then run in three steps:

1. local reductions -- each rank r evaluates the graph's own reductions over its n_r
   elements (its local statistics mu_r, var_r, ...);
2. one collective -- the forward gathers (n_r, local statistics) from every rank; the
   backward all-reduces the compact form's sums, packed into one tensor;
3. local application -- the merged statistics (below) and the global sums are used
   exactly as a single process would use them.

The merge is derived from the graph, not typed: a reduction node
``s = (1/m) sum_k f(x_k, t)`` that reads earlier statistics t is written, on rank r,
around that rank's own t_r.  With delta_r = t - t_r, Taylor's formula is exact for a
polynomial f::

    sum_{k in r} f(x_k, t) = sum_j delta_r^j / j! * sum_{k in r} d^j f/dt^j (x_k, t_r)

and every local sum on the right is either the node itself at t_r (n_r * s_r), a
count (sum of a constant) or a sum that the graph's own definitions make zero
(sum_{k in r} (x_k - mu_r) = 0).  For batch norm this is Chan et al.'s parallel
variance: m sigma^2 = sum_r n_r sigma_r^2 + sum_r n_r (mu_r - mu)^2.
:func:`prove_merge` checks it exactly against the single-process statistics of the
concatenated batch, for parts of several sizes with symbolic values.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..forward.graph import Model
from ..forward.layout import Spec
from .algebra import BatchSum, Elem, M
from . import seeded

BATCH_AXIS = 0


class PartSum(sp.Function):
    """sum over the ranks (the parts of the batch) of a per-rank quantity."""

    nargs = 1


class SplitError(ValueError):
    """A graph whose reductions cannot be merged from per-rank statistics."""


def crosses(spec: Spec) -> bool:
    """True when one normalization group spans the batch axis, so its sums cross processes."""
    return BATCH_AXIS in spec.reduce_axes


def local(s: sp.Symbol) -> sp.Symbol:
    """The rank's own value of a per-group statistic s (mu -> mu_r)."""
    return sp.Symbol(f"{s.name}_r", real=True)


COUNT = sp.Symbol("m_r", nonnegative=True, integer=True)   #: the rank's number of elements per group


@dataclass(frozen=True)
class Merge:
    """How one reduction node is recovered from the ranks' parts."""

    stat: sp.Symbol          #: the graph's statistic (mu, var)
    local: sp.Symbol         #: its per-rank value (mu_r, var_r)
    definition: sp.Expr      #: the node's definition: the local step evaluates it with m -> m_r
    merged: sp.Expr          #: stat in PartSum's of per-rank quantities and earlier merged statistics


@dataclass(frozen=True)
class Split:
    """The forward and backward of one graph, split into local steps and collectives."""

    forward: tuple[Merge, ...]           #: the reductions the forward gathers, in graph order
    backward: tuple[BatchSum, ...]       #: the compact backward's sums, all-reduced in ONE collective
    forward_sums: tuple[BatchSum, ...]   #: every BatchSum of the forward nodes (they all cross)


def linear_sum(summand: sp.Expr) -> sp.Expr:
    """sum_k summand, distributed over the terms: per-group factors come out, sum of a constant is m."""
    total = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(summand)):
        const, rest = term.as_independent(Elem, as_Add=False)
        total += const * (M if rest == 1 else BatchSum(rest))
    return total


def merge_node(node, earlier: dict[sp.Symbol, "Merge"], model: Model) -> Merge:
    """The merge of the reduction ``node``, derived by Taylor's formula around the local statistics."""
    (inner,) = node.definition.atoms(BatchSum)
    scale = seeded.simplify(node.definition / inner)
    if scale not in (1, 1 / M):
        raise SplitError(f"{node.symbol}: a reduction must be a sum or a mean")
    f = inner.args[0]
    reads = sorted((s for s in f.free_symbols if s in earlier), key=sp.default_sort_key)
    deltas = {s: sp.Symbol(f"delta_{s.name}", real=True) for s in reads}
    shifted = sp.expand(f.xreplace({s: local(s) + deltas[s] for s in reads}))
    own_local = f.xreplace({s: local(s) for s in reads})
    facts = {}
    for s in reads:   # the rank's own statistic s_r is the graph's node over its elements
        (sub,) = earlier[s].definition.atoms(BatchSum)
        scale_s = seeded.simplify(earlier[s].definition / sub)
        eq = linear_sum(sub.args[0].xreplace({t: local(t) for t in earlier})) - local(s) / scale_s
        (unknown,) = eq.atoms(BatchSum)
        facts[unknown] = seeded.solve(eq, unknown)[0]
    per_rank = sp.Integer(0)
    poly = sp.Poly(shifted, *deltas.values()) if deltas else None
    terms = poly.terms() if poly else [((), shifted)]
    for powers, coeff in terms:
        delta = sp.Mul(*[d ** p for d, p in zip(deltas.values(), powers)])
        if sp.expand(coeff - own_local) == 0:
            local_sum = local(node.symbol) / scale
        else:
            local_sum = sp.expand(linear_sum(coeff).xreplace(facts))
            if local_sum.has(BatchSum):
                raise SplitError(f"{node.symbol}: the local sum {coeff} is not a statistic of the graph")
        per_rank += delta * local_sum
    per_rank = per_rank.xreplace({d: s - local(s) for s, d in deltas.items()}).xreplace({M: COUNT})
    merged = PartSum(per_rank) * (1 / PartSum(COUNT) if scale != 1 else 1)
    return Merge(node.symbol, local(node.symbol), node.definition, merged)


def split(model: Model, compact_dx: sp.Expr) -> Split:
    """The split of a training graph whose groups span the batch axis."""
    merges: dict[sp.Symbol, Merge] = {}
    for node in model.nodes:
        if node.kind == "reduce":
            merges[node.symbol] = merge_node(node, merges, model)
    fsums = sorted({s for n in model.nodes for s in n.definition.atoms(BatchSum)}, key=sp.default_sort_key)
    back = sorted(compact_dx.atoms(BatchSum), key=sp.default_sort_key)
    return Split(tuple(merges.values()), tuple(back), tuple(fsums))


def expand_parts(expr: sp.Expr, parts: list[dict[sp.Symbol, sp.Expr]]) -> sp.Expr:
    """PartSum(f) -> f(part 1) + f(part 2) + ...: each part maps per-rank symbols to values."""
    return expr.replace(lambda e: isinstance(e, PartSum),
                        lambda e: sp.Add(*[e.args[0].xreplace(p) for p in parts]))


def prove_merge(model: Model, s: Split, sizes: tuple[int, ...]) -> bool:
    """Exact: the merged statistics of parts of ``sizes`` (symbolic values) equal the graph's
    statistics of the concatenated batch.  A size may be 0 (a rank without samples)."""
    values = [[sp.Symbol(f"x_{r}_{k}", real=True) for k in range(n)] for r, n in enumerate(sizes)]

    def stats_of(xs: list[sp.Expr]) -> dict[sp.Symbol, sp.Expr]:
        out: dict[sp.Symbol, sp.Expr] = {}
        for mg in s.forward:
            inner = mg.definition.xreplace(out)
            out[mg.stat] = inner.replace(
                lambda e: isinstance(e, BatchSum),
                lambda e: sp.Add(*[e.args[0].xreplace({model.x: v}) for v in xs])).xreplace({M: len(xs)})
        return out

    whole = stats_of([v for part in values for v in part])
    parts = []
    for xs in values:
        own = stats_of(xs) if xs else {mg.stat: sp.Integer(0) for mg in s.forward}
        parts.append({COUNT: len(xs), **{mg.local: own[mg.stat] for mg in s.forward}})
    merged: dict[sp.Symbol, sp.Expr] = {}
    for mg in s.forward:
        merged[mg.stat] = expand_parts(mg.merged, parts).xreplace(merged)
        if sp.cancel(sp.together(merged[mg.stat] - whole[mg.stat])) != 0:
            return False
    return True


PROOF_SIZES = ((2, 3), (1, 2, 2), (3, 0, 1))
