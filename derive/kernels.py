"""The kernel IR: what each generated function computes, as printed (lhs, rhs) pairs.

Everything here is printed from a derivation expression; the templates only
lay the pairs out.  Abbreviations keep the code readable: powers of the
denominator sqrt(var + eps) are written with ``std``.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .algebra import BatchSum, OuterSum, ParamSum
from .derivation import Derivation
from .model import BATCH, MU, RUNNING, STD, VAR, XHAT, Model, running_update
from .block_printer import BlockCollector, BlockFunction
from .printers import code, elementwise

Pairs = tuple[tuple[str, str], ...]


def abbreviate(expr: sp.Expr, model: Model) -> sp.Expr:
    """Write sigma_eps (and its powers) as the symbol ``std``."""
    if model.spec.eps == "inside":
        return expr.xreplace({model.std_definition.base: STD**2})
    return expr.xreplace({model.std_definition: STD})


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
    backward_staged: Pairs    #: dxhat, dvar, dmu, dx
    x_from_cache: Pairs       #: x = mu + sigma_eps*xhat: the cache keeps xhat, not the caller's x
    backward_test: Pairs      #: the backward of the test-mode (affine) map
    backward_test_fast: Pairs #: the same in the fast layout
    reductions: Pairs         #: the compact form's named reductions
    coefficients: Pairs       #: its per-group coefficients
    dx_fast: str              #: dx = sum of coefficient * per-element monomial
    params: Pairs             #: dgamma, dbeta
    params_fast: Pairs        #: the same, reusing the compact form's reductions
    blocks: tuple[BlockFunction, ...]  #: the block functions the fast statements call


MU_HI, MU_LO = sp.Symbol("mu_hi", real=True), sp.Symbol("mu_lo", real=True)


def forward_pairs(model: Model, blocks: BlockCollector) -> Pairs:
    """The forward pass in the fast layout: per-element nodes are evaluated in blocks.

    The mean is summed in float64 and split into mu_hi + mu_lo in the working
    dtype; per-element work then subtracts both in turn (see _blocks.split), so
    float32 data far from zero keeps its spread.
    """
    out = []
    split: dict = {}
    for node in model.nodes:
        if node.symbol == XHAT:
            out.append(("std", code(model.std_definition, fast=True)))
        expr = abbreviate(node.definition, model)
        if model.spec.centred and MU in expr.free_symbols and not split:
            out.append(("mu_hi, mu_lo", "_blocks.split(mu, work)"))
            split = {MU: MU_HI + MU_LO}
        expr = expr.xreplace(split)
        name = node.symbol.name
        out.append((name, elementwise(expr, blocks, name) if node.per_element
                    else code(expr, fast=True, blocks=blocks, exact_sums=node.symbol == MU)))
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


def stage_pairs(model: Model, stages, blocks: BlockCollector | None = None) -> Pairs:
    """One statement per stage; in the fast layout (with ``blocks``) per-element stages run in blocks."""
    def one(s):
        expr = abbreviate(s.expr, model)
        if blocks is None:
            return code(expr)
        return elementwise(expr, blocks, s.symbol.name) if s.per_element else code(expr, True, blocks)
    return tuple((s.symbol.name, one(s)) for s in stages)


def build(d: Derivation) -> Kernels:
    test = d.test_model
    blocks = BlockCollector()
    running = ()
    if test is not None:
        update = running_update()
        running = tuple(
            (name, code(update.xreplace({RUNNING: sp.Symbol(name), BATCH: stat})))
            for name, stat in (("running_mean", MU), ("running_var", VAR))
            if stat != MU or d.spec.centred)
    reductions = tuple((reduction_name(s), code(s, fast=True, blocks=blocks)) for s in d.compact.reductions)
    names = {s: sp.Symbol(reduction_name(s)) for s in d.compact.reductions}
    coefficients = tuple((coefficient_name(mono), code(c.xreplace(names))) for c, mono in d.coefficients)
    terms = [sp.Symbol(coefficient_name(mono)) * mono for _, mono in d.coefficients]
    dx_fast = elementwise(sp.Add(*terms), blocks, "dx")
    return Kernels(
        forward_train=forward_pairs(d.model, blocks),
        forward_test=forward_pairs(test, blocks) if test is not None else (),
        running=running,
        backward_staged=stage_pairs(d.model, d.stages),
        x_from_cache=(("x", code(d.model.x_in_xhat)),),
        backward_test=stage_pairs(test, d.test_stages) if test is not None else (),
        backward_test_fast=stage_pairs(test, d.test_stages, blocks) if test is not None else (),
        reductions=reductions,
        coefficients=coefficients,
        dx_fast=dx_fast,
        params=tuple((p.symbol.name, code(p.expr)) for p in d.params),
        params_fast=fast_parameter_gradients(d, names, blocks),
        blocks=tuple(blocks.all()),
    )

