"""The kernel IR: what each generated function computes, as printed (lhs, rhs) pairs.

Everything here is printed from a derivation expression; the templates only
lay the pairs out.  Abbreviations keep the code readable: powers of the
denominator sqrt(var + eps) are written with ``std``.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ...forward.graph import BATCH, RUNNING, Model
from ...math.algebra import BatchSum, Elem, M, OuterSum, ParamSum
from ...math.derivation import Derivation
from ...math.lemmas import Lemmas
from .blocks import BlockCollector, BlockFunction
from .printer import code, elementwise

Pairs = tuple[tuple[str, str], ...]


def abbreviate(expr: sp.Expr, lemmas: Lemmas) -> sp.Expr:
    """Write every abbreviation (std = sqrt(var + eps), ...) and its powers as its symbol."""
    return lemmas.fold(lemmas.abbreviate(expr))


def exact_means(model: Model) -> set:
    """Means of the input itself (mu = sum x / m): summed in float64 and split into hi + lo."""
    return {n.symbol for n in model.nodes if n.kind == "reduce" and n.definition == BatchSum(model.x) / M}


def lets_ready(model: Model, lemmas: Lemmas, available: set, done: set) -> Pairs:
    """The abbreviations that can be computed from ``available``, in definition order."""
    out = []
    for let in model.lets:
        others = Lemmas(folds=tuple((e, s) for e, s in lemmas.folds if s != let.symbol))
        earlier = model.lets[:model.lets.index(let)]
        value = others.fold(let.definition.xreplace({l.definition: l.symbol for l in earlier}))
        if let.symbol not in done and value.free_symbols <= available:
            done.add(let.symbol)
            available.add(let.symbol)
            out.append((let.symbol.name, code(value, fast=True)))
    return tuple(out)


def reduction_name(s: BatchSum) -> str:
    """A stable name for a named reduction: sum_dout_xhat for sum_k dout_k*xhat_k."""
    factors = sorted(str(f) for f in sp.Mul.make_args(s.args[0]))
    return "sum_" + "_".join(factors)


def coefficient_name(mono: sp.Expr) -> str:
    return "coef_" + ("_".join(sorted(str(f) for f in sp.Mul.make_args(mono))) if mono != 1 else "1")


@dataclass(frozen=True)
class Kernels:
    forward_train: Pairs      #: mu, var, std, xhat, out
    forward_test: Pairs       #: std, xhat, out from the running statistics
    running: Pairs            #: running_mean, running_var updates
    backward_staged: Pairs    #: dxhat, dvar, dmu, dx, in the fast layout (block passes, float64 sums)
    backward_test: Pairs      #: the backward of the test-mode (affine) map
    backward_test_fast: Pairs #: the same in the fast layout
    reductions: Pairs         #: the compact form's named reductions
    coefficients: Pairs       #: its per-group coefficients
    dx_fast: str              #: dx = sum of coefficient * per-element monomial
    params: Pairs             #: dgamma, dbeta
    params_fast: Pairs        #: the same, reusing the compact form's reductions
    blocks: tuple[BlockFunction, ...]  #: the block functions the fast statements call
    reads: dict = None        #: {"staged" | "compact" | "test": names the form reads, from free symbols}


MU_HI, MU_LO = sp.Symbol("mu_hi", real=True), sp.Symbol("mu_lo", real=True)


def forward_pairs(model: Model, lemmas: Lemmas, blocks: BlockCollector) -> Pairs:
    """The forward pass in the fast layout: per-element nodes are evaluated in blocks.

    A mean of the input is summed in float64 and split into mu_hi + mu_lo in the
    working dtype; per-element work then subtracts both in turn (see _blocks.split),
    so float32 data far from zero keeps its spread.
    """
    out: list = []
    split: dict = {}
    available = {model.x, *model.params, *model.scalars, *model.stats, *model.reads_running}
    done: set = set()
    means = exact_means(model)
    for node in model.nodes:
        out += lets_ready(model, lemmas, available, done)
        expr = abbreviate(node.definition, lemmas)
        used = sorted(expr.free_symbols & means, key=str)
        if used and not split:
            for mu in used:
                out.append((f"{mu.name}_hi, {mu.name}_lo", f"_blocks.split({mu.name}, work)"))
                split[mu] = sp.Symbol(f"{mu.name}_hi", real=True) + sp.Symbol(f"{mu.name}_lo", real=True)
        expr = expr.xreplace(split)
        name = node.symbol.name
        out.append((name, elementwise(expr, blocks, name) if node.per_element
                    else code(expr, fast=True, blocks=blocks, exact_sums=node.symbol in means)))
        available.add(node.symbol)
    out += lets_ready(model, lemmas, available, done)
    return tuple(out)


def fast_parameter_gradients(d: Derivation, names: dict, blocks: BlockCollector) -> Pairs:
    """dgamma, dbeta; when gamma is constant in each group they are sums of group sums
    the compact form already computed: ParamSum(f) = OuterSum(BatchSum(f))."""
    out = []
    for p in d.params:
        local = p.expr.args[0]
        if not d.spec.gamma_varies and BatchSum(local) in names:
            expr = OuterSum(names[BatchSum(local)])
        else:
            expr = ParamSum(local)
        out.append((p.symbol.name, code(expr, fast=True, blocks=blocks)))
    return tuple(out)


def kernel_stages(d: Derivation, stages) -> list[tuple[sp.Symbol, sp.Expr]]:
    """The stages as the kernels compute them: the sums proved to vanish are 0, and x is
    written through the cached normalized node (x = mu + std*xhat), so the backward
    needs neither the caller's x nor a rebuilt copy of it."""
    zero = {s: sp.Integer(0) for s in d.symbolic.vanishing}
    out = []
    for st in stages:
        expr = st.expr.xreplace(zero).xreplace(d.lemmas.x_rule)
        out.append((st.symbol, sp.factor_terms(abbreviate(expr, d.lemmas))))
    return out


def stage_pairs(d: Derivation, stages, blocks: BlockCollector | None = None) -> Pairs:
    """One statement per stage; in the fast layout (with ``blocks``) per-element stages run in blocks."""
    def one(s):
        symbol, expr = s
        if blocks is None:
            return code(expr)
        return elementwise(expr, blocks, symbol.name) if isinstance(symbol, Elem) else code(expr, True, blocks)
    return tuple((s[0].name, one(s)) for s in kernel_stages(d, stages))


def running_pairs(model: Model) -> Pairs:
    """Each running statistic's update rule, printed with the buffer and the batch statistic."""
    return tuple((r.buffer, code(r.update.xreplace({RUNNING: r.symbol, BATCH: r.stat})))
                 for r in model.running)


def build(d: Derivation) -> Kernels:
    test = d.test_model
    blocks = BlockCollector()
    reductions = tuple((reduction_name(s), code(s, fast=True, blocks=blocks)) for s in d.compact.reductions)
    names = {s: sp.Symbol(reduction_name(s)) for s in d.compact.reductions}
    coefficients = tuple((coefficient_name(mono), f"_blocks.narrow({code(c.xreplace(names))}, work)")
                         for c, mono in d.coefficients if not c.is_Number)
    terms = [(c if c.is_Number else sp.Symbol(coefficient_name(mono))) * mono for c, mono in d.coefficients]
    dx_fast = elementwise(sp.Add(*terms), blocks, "dx")

    def reading(exprs) -> frozenset:
        return frozenset(str(s) for e in exprs for s in e.free_symbols)

    grads = [p.expr for p in d.params]
    reads = {
        "staged": reading([e for _, e in kernel_stages(d, d.stages)] + grads)
        - {s.symbol.name for s in d.stages},
        "compact": reading([d.compact.dx] + grads),
        "test": reading([e for _, e in kernel_stages(d, d.test_stages)]) - {s.symbol.name for s in d.test_stages},
    }
    return Kernels(
        forward_train=forward_pairs(d.model, d.lemmas, blocks),
        forward_test=forward_pairs(test, d.lemmas, blocks) if test is not None else (),
        running=running_pairs(d.model),
        backward_staged=stage_pairs(d, d.stages, blocks),
        backward_test=stage_pairs(d, d.test_stages) if test is not None else (),
        backward_test_fast=stage_pairs(d, d.test_stages, blocks) if test is not None else (),
        reductions=reductions,
        coefficients=coefficients,
        dx_fast=dx_fast,
        params=tuple((p.symbol.name, code(p.expr, fast=True, blocks=blocks)) for p in d.params),
        params_fast=fast_parameter_gradients(d, names, blocks),
        blocks=tuple(blocks.all()),
        reads=reads,
    )
