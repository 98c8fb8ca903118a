"""Exact proofs of the second order (derive.second_order).

* For every batch size m <= M, on the tape of a group of m elements (derive.proofs.tape):
  reverse mode over the forward assignments, seeded with dy, gives the brute-force first
  order (dx, and each parameter's gradient); it is contracted with the upstream adjoints,
  L2 = sum_i bar_dx_i*dx_i + bar_dgamma*dgamma + bar_dbeta*dbeta, and reverse mode over that
  whole tape, seeded with 1 at L2, gives dL2/dx_k, dL2/ddout_k, dL2/dgamma: each must equal
  the compact result, element by element.  Only the forward graph enters the brute force.
* For a symbolic m: staged == compact in the reduction algebra, and bar_dout, which is
  linear in the upstream adjoints, equals the Jacobian-vector product
  sum_i (dy_j/dx_i)*bar_dx_i + bar_dgamma*dy_j/dgamma + bar_dbeta*dy_j/dbeta from the forward-mode
  Jacobian entry (an independent route: forward mode over the forward graph).

Equal means: the difference is identically zero (derive.proofs.ring.TapeZero, the test of
derive.proofs.exact computed on the tape).
"""
from __future__ import annotations

import time

import sympy as sp

from ..forward.graph import Model
from ..math.algebra import BatchSum, Elem, indexed
from ..math.lemmas import Lemmas
from ..math.second_order import SecondOrder, definitions
from ..math.stages import inline
from . import tape
from .exact import symbolic_zero, zero_modulo_roots
from .first import (I, J, Proof, ProofError, at, check, column_copies, concrete, jacobian_entry, opaque_values,
                    param_grad, undefined, vjp)
from .ring import TapeZero


def _upstream_at(symbol: sp.Symbol, k: int) -> sp.Symbol:
    return indexed(symbol, k) if isinstance(symbol, Elem) else symbol


def loss(group: tape.Group, model: Model, so: SecondOrder) -> sp.Symbol:
    """L2 on the tape of a concrete group, from the brute-force first order: reverse mode over
    the forward assignments, seeded with dy, gives dx and each leaf's gradient (the leaf of each
    output after dx: a parameter, or another input)."""
    g, t = so.graph, group.tape
    params = [[indexed(p, k) for k in range(group.size)] if isinstance(p, Elem) else [p]
              for p in g.shares_of]
    first = t.reverse(dict(zip(group.ys, group.dys)), group.xs + [w for ws in params for w in ws], "d")
    total = sp.Add(*[_upstream_at(g.seeds[g.outputs[0]], i) * first[x] for i, x in enumerate(group.xs)])
    for ws, out in zip(params, g.outputs[1:]):
        seed = g.seeds[out]
        total += sp.Add(*[_upstream_at(seed, k) * first[w] for k, w in enumerate(ws)])
    return t.fresh("L2_", total)


def loss_written(c, model: Model, so: SecondOrder) -> sp.Expr:
    """L2 for a concrete group written out (graphs the tape does not cover), from the brute-force first order."""
    g = so.graph
    dx = vjp(c)
    total = sp.Add(*[_upstream_at(g.seeds[g.outputs[0]], i) * dx[i] for i in range(c.size)])
    for p, out in zip(g.shares_of, g.outputs[1:]):
        seed = g.seeds[out]
        if isinstance(p, Elem):
            total += sp.Add(*[_upstream_at(seed, k) * param_grad(c, p, k) for k in range(c.size)])
        else:
            total += seed * param_grad(c, p, 0)
    return total


def prove_sizes_written(model: Model, so: SecondOrder, max_m: int, progress=None) -> list[Proof]:
    log: list[Proof] = []
    for size in range(1, max_m + 1):
        if progress:
            progress(f"second order m={size}")
        t0 = time.perf_counter()
        c = concrete(model, size)
        first = so.compact[so.results[0].symbol]
        if size == 1 and undefined(at(c, model, first, 0)):
            log.append(Proof("left out: the second order divides by zero at every point", "m=1", 0.0))
            continue
        l2 = loss_written(c, model, so)
        label = f"m={size}"
        for r in so.results:
            v = r.wrt
            for k in range(size if isinstance(v, Elem) else 1):
                brute = sp.diff(l2, indexed(v, k) if isinstance(v, Elem) else v)
                if not zero_modulo_roots(brute - at(c, model, so.compact[r.symbol], k)):
                    raise ProofError(model.name, f"second order: d L2/d {v} == compact {r.symbol}", label)
        check(model.name, "second order: " + ", ".join(f"d L2/d {r.wrt} == {r.symbol}" for r in so.results)
             , label, True, log, t0)
    return log


def prove_sizes(model: Model, so: SecondOrder, max_m: int, progress=None) -> list[Proof]:
    """m = 1..M: d L2/d v by reverse mode over the tape of L2 (node by node), for every v the
    results are taken with respect to, equals the compact result at every element."""
    if not tape.covers(model):
        return prove_sizes_written(model, so, max_m, progress)
    log: list[Proof] = []
    first = so.compact[so.results[0].symbol]
    for size in range(1, max_m + 1):
        if progress:
            progress(f"second order m={size}")
        t0 = time.perf_counter()
        if size == 1 and undefined(at(concrete(model, 1), model, first, 0)):
            log.append(Proof("left out: the second order divides by zero at every point", "m=1", 0.0))
            continue
        group = tape.forward(model, size, opaque_values(model))
        l2 = loss(group, model, so)
        wrt = [[indexed(r.wrt, k) for k in range(size)] if isinstance(r.wrt, Elem) else [r.wrt]
               for r in so.results]
        grads = group.tape.reverse({l2: sp.Integer(1)}, [v for vs in wrt for v in vs], "bar")
        claims = [(grads[v] - tape.at(group, model, so.compact[r.symbol], k), r)
                  for r, vs in zip(so.results, wrt) for k, v in enumerate(vs)]
        zero = TapeZero(group.tape.steps, [c for c, _ in claims])
        label = f"m={size}"
        for claim, r in claims:
            if not zero(claim):
                raise ProofError(model.name, f"second order: d L2/d {r.wrt} == compact {r.symbol}", label)
        check(model.name, "second order: " + ", ".join(f"d L2/d {r.wrt} == {r.symbol}" for r in so.results)
             , label, True, log, t0)
    return log


def jvp(jac: sp.Expr, model: Model, lemmas: Lemmas, tangent: sp.Symbol) -> sp.Expr:
    """sum_i (dy_j/dx_i) * tangent_i for a symbolic group, at element j (the generic symbols)."""
    delta = sp.KroneckerDelta(I, J)
    expanded = sp.expand(jac)
    diag = expanded.coeff(delta)
    off = sp.expand(expanded - diag * delta)
    copies = column_copies(model)
    out = tangent * diag.xreplace({v: k for k, v in copies.items()})
    back = {v: k for k, v in copies.items()}
    for term in sp.Add.make_args(off):
        at_i, at_j = term.as_independent(*copies.values(), as_Add=False)[::-1]
        out += at_j * BatchSum(tangent * at_i.xreplace(back))
    return lemmas.canonical(out)


def prove_symbolic(model: Model, so: SecondOrder, jac: sp.Expr, lemmas: Lemmas) -> list[Proof]:
    name, label, log = model.name, "symbolic m", []
    written = definitions(so.graph, model)
    n = len(so.results)
    t0 = time.perf_counter()
    for k, r in enumerate(so.results):
        staged = lemmas.canonical(inline(so.stages, len(so.stages) - n + k).xreplace(written))
        if not symbolic_zero(staged - so.compact[r.symbol]):
            raise ProofError(name, f"second order: staged {r.symbol} == compact", label)
    check(name, "second order: staged == compact for " + ", ".join(str(r.symbol) for r in so.results),
          label, True, log, t0)
    return log + prove_jvp(model, so, jac, lemmas)


def prove_jvp(model: Model, so: SecondOrder, jac: sp.Expr, lemmas: Lemmas) -> list[Proof]:
    """bar_dout by an independent route: forward mode over the forward graph (the Jacobian entry)."""
    name, label, log = model.name, "symbolic m", []
    t0 = time.perf_counter()
    g = so.graph
    y = model.output.definition
    expected = jvp(jac, model, lemmas, g.seeds[g.outputs[0]])
    for p, out in zip(g.shares_of, g.outputs[1:]):
        if not any(n.definition.has(p) for n in model.nodes[:-1]):  # only the output reads it
            expected += g.seeds[out] * lemmas.canonical(sp.diff(y, p))
        elif isinstance(p, Elem):
            expected += jvp(jacobian_entry(model, lemmas, p), model, lemmas, g.seeds[out])
        else:
            expected += g.seeds[out] * jacobian_entry(model, lemmas, p)
    gdy = next(r for r in so.results if r.wrt == model.dy)
    ok = symbolic_zero(sp.expand(lemmas.canonical(expected)) - so.compact[gdy.symbol])
    check(name, f"second order: {gdy.symbol} == forward-mode Jacobian times the upstream adjoints",
          label, ok, log, t0)
    return log
