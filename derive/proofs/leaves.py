"""Exact proofs of the gradients of the leaves besides x, where the first-order proofs
(derive.proofs.first) do not already cover them.

* The compact form of a leaf's gradient (derive.math.closed_form.gradients) equals its
  staged form for a symbolic m, when it had to be reduced (a leaf inside the graph).
  (For every m <= M both are checked against differentiation by derive.proofs.first.prove_sizes.)
* Test mode: each leaf's staged gradient equals differentiation, for every m <= M.
* An input with its own groups (derive.math.domains): for every m <= M (the size of ITS
  group), sum_o seed_o * o, differentiated by s_k, equals the staged and the compact d<input>.
"""
from __future__ import annotations

import time

import sympy as sp

from ..forward.model import Model
from ..math.algebra import Elem, at_size, expand_sums, indexed
from ..math.closed_form import Gradient
from ..math.domains import DomainGradient, model_of
from ..math.domains_second import DomainSecond
from ..math.lemmas import Lemmas
from ..math.stages import backward, inline
from .exact import symbolic_zero, zero_modulo_roots
from .first import Proof, ProofError, at, concrete, param_grad


def prove_compact(model: Model, grads: tuple[Gradient, ...], lemmas: Lemmas) -> list[Proof]:
    nodes = backward(model)[:-1]
    reduced = [g for g in grads if g.compact is not g.stage.expr and g.compact != g.stage.expr]
    if not reduced:
        return []
    t0 = time.perf_counter()
    for g in reduced:
        staged = lemmas.canonical(inline(nodes + (g.stage,)))
        if not symbolic_zero(staged - g.compact):
            raise ProofError(model.name, f"staged {g.stage.symbol} == compact", "symbolic m")
    names = ", ".join(str(g.stage.symbol) for g in reduced)
    return [Proof(f"staged == compact for {names}", "symbolic m", time.perf_counter() - t0)]


def prove_test_mode(model: Model, grads: tuple[Gradient, ...], max_m: int) -> list[Proof]:
    """Test mode: each leaf's gradient (staged, inlined) against differentiation, m = 1..M."""
    if not grads:
        return []
    nodes = backward(model)[:-1]
    log = []
    for size in range(1, max_m + 1):
        t0 = time.perf_counter()
        c = concrete(model, size)
        for g in grads:
            value = inline(nodes + (g.stage,))
            for k in range(size if isinstance(g.leaf, Elem) else 1):
                if not zero_modulo_roots(param_grad(c, g.leaf, k) - at(c, model, value, k)):
                    raise ProofError(model.name, f"test mode: {g.stage.symbol} by differentiation", f"m={size}")
        log.append(Proof("test mode: " + ", ".join(str(g.stage.symbol) for g in grads) + " by differentiation",
                         f"m={size}", time.perf_counter() - t0))
    return log


def prove_domain(model: Model, dg: DomainGradient, max_m: int) -> list[Proof]:
    """d<input> for an input with its own groups, against differentiation, m = 1..M (its group's m)."""
    sub = model_of(model, dg.domain)
    s = dg.input
    log = []
    staged = inline(dg.stages)
    for size in range(1, max_m + 1):
        t0 = time.perf_counter()
        scalars: dict = {}
        for node in sub.nodes:
            scalars[node.symbol] = at_size(node.definition, size, 0, scalars)
        loss = sp.Add(*[seed * scalars[o] for o, seed in dg.seeds.items()])
        for k in range(size):
            brute = sp.diff(loss, indexed(s, k))
            for what, mine in (("staged", staged), ("compact", dg.compact)):
                if not zero_modulo_roots(brute - at_size(mine, size, k, scalars)):
                    raise ProofError(model.name, f"d{s.name} ({s.name} has its own groups): "
                                     f"differentiation == {what}", f"m={size}")
        log.append(Proof(f"d{s.name} by differentiation == staged == compact", f"m={size}",
                         time.perf_counter() - t0))
    t0 = time.perf_counter()
    if not symbolic_zero(expand_sums(staged, dg.facts) - dg.compact):
        raise ProofError(model.name, f"staged d{s.name} == compact", "symbolic m")
    log.append(Proof(f"staged d{s.name} == compact", "symbolic m", time.perf_counter() - t0))
    return log


def prove_domain_second(model: Model, ds: DomainSecond, max_m: int) -> list[Proof]:
    """The second order on the side of an input with its own groups, m = 1..M (its group's m):
    S = sum_k bar_dy_k*dy_k (dy_k by differentiation) + sum_o bar_<o>*o, differentiated by y_k and
    by each seed d<o>, equals the compact bar_y and bar_d<o>; and staged == compact for a symbolic m."""
    dg, y = ds.first, ds.first.input
    sub = model_of(model, dg.domain)
    log = []
    for size in range(1, max_m + 1):
        t0 = time.perf_counter()
        scalars: dict = {}
        for node in sub.nodes:
            scalars[node.symbol] = at_size(node.definition, size, 0, scalars)
        first = sp.Add(*[seed * scalars[o] for o, seed in dg.seeds.items()])
        loss = sp.Add(*[indexed(ds.upstream, k) * sp.diff(first, indexed(y, k)) for k in range(size)])
        loss += sp.Add(*[bar * scalars[o] for o, bar in ds.outside.items()])
        for r in ds.results:
            for k in range(size if isinstance(r.wrt, Elem) else 1):
                wrt = indexed(r.wrt, k) if isinstance(r.wrt, Elem) else r.wrt
                if not zero_modulo_roots(sp.diff(loss, wrt) - at_size(ds.compact[r.symbol], size, k, scalars)):
                    raise ProofError(model.name, f"second order: d S/d {r.wrt} == compact {r.symbol} "
                                     f"({y.name} has its own groups)", f"m={size}")
        log.append(Proof("second order: " + ", ".join(f"d S/d {r.wrt} == {r.symbol}" for r in ds.results),
                         f"m={size}", time.perf_counter() - t0))
    t0 = time.perf_counter()
    written: dict = {}
    for node in ds.nodes[len(dg.domain.nodes):-1]:
        written[node.symbol] = node.definition.xreplace(written)
    n = len(ds.results)
    for k, r in enumerate(ds.results):
        staged = expand_sums(inline(ds.stages, len(ds.stages) - n + k).xreplace(written), dg.facts)
        if not symbolic_zero(staged - ds.compact[r.symbol]):
            raise ProofError(model.name, f"second order: staged {r.symbol} == compact", "symbolic m")
    log.append(Proof("second order: staged == compact for " + ", ".join(str(r.symbol) for r in ds.results),
                     "symbolic m", time.perf_counter() - t0))
    return log
