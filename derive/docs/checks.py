"""The closing sections of a document: what was proved and how, the invariants of the input
gradient, and how the sums cross processes when the batch is split."""
from __future__ import annotations

import sympy as sp

from ..math.algebra import BatchSum, M
from ..math.derivation import Derivation
from .blocks import Code, Table, equation, listing, para
from .sections import dx_symbol, m, used_constants

LEFT_OUT = "left out: "


def proved(d: Derivation) -> list:
    claims: dict[str, list[str]] = {}
    left_out: dict[str, list[str]] = {}
    for p in d.proofs:
        target = left_out if p.claim.startswith(LEFT_OUT) else claims
        target.setdefault(p.claim, []).append(p.size)
    lemmas = any(c.startswith("lemma ") for c in claims)
    blocks: list = [
        para("Every equation above is checked exactly, with no floating point and no random "
             "samples, in two ways."),
        para(f"For every batch size from 1 to {d.max_m}, the forward pass is written "
             "out element by element, SymPy differentiates it into the full Jacobian, and the "
             "Jacobian contracted with the upstream gradient is compared with the staged result, "
             "the compact result and the Jacobian entry above; the parameter gradients are "
             "compared with the derivatives of the loss. Each difference must vanish identically: "
             "every square root in it is named, its numerator is reduced modulo the square of "
             "that name minus the radicand (with the statistics written out in the inputs), and "
             "the remainder is 0."),
        para("For a symbolic batch size, the same identities are checked in the algebra of sums "
             "over the group: the difference cancels to 0 using only linearity, the derivative "
             "of a sum",
             ", and the lemmas about the graph (the abbreviations solved for the statistics, the "
             "change of variables and the sum facts), each proved first, by substituting back and "
             "by writing the sums out for small batch sizes." if lemmas else "."),
    ]
    for claim, sizes in left_out.items():
        blocks.append(para(f"Batch size {size_text(sizes).removeprefix('m = ')} is left out: ",
                           claim.removeprefix(LEFT_OUT),
                           ", because every group of that size is constant and the derived formula "
                           "divides by a quantity that is zero there. The kernels return the "
                           "gradient's limit at such a group."))
    blocks.append(para("The claims, as derive's proofs name them:"))
    rows = [(Code(claim), size_text(s)) for claim, s in claims.items()]
    rows += [(Code(claim), size_text(s)) for claim, s in left_out.items()]
    blocks.append(Table(("claim", "checked for"), tuple(rows)))
    return blocks


def size_text(sizes: list[str]) -> str:
    numbers = [int(s[2:]) for s in sizes if s.startswith("m=")]
    if not numbers:
        return ", ".join(sizes)
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 1:
        return f"m = {numbers[0]} to {numbers[-1]}"
    return "m = " + ", ".join(map(str, numbers))


def invariants(d: Derivation) -> list:
    s, dx, z = d.symbolic, dx_symbol(d), d.lemmas.variable
    two = "Two sums" if s.sum_dx_xhat is not None else "One sum"
    blocks: list = [para(f"{two} of the input gradient over the group, derived from the compact "
                         "form:"), equation(BatchSum(dx), s.sum_dx)]
    if s.sum_dx == 0:
        blocks.append(para("The input gradient sums to zero: shifting every input of the group by "
                           "the same amount does not change the output, so the loss "
                           "cannot change along that direction."))
    else:
        blocks.append(para("This variant does not subtract the mean, so the input gradient need "
                           "not sum to zero."))
    if s.sum_dx_xhat is None:
        return blocks
    blocks.append(equation(BatchSum(dx * z), s.sum_dx_xhat))
    consts = [c for c in used_constants(d) if c in s.sum_dx_xhat.free_symbols]
    if s.sum_dx_xhat != 0 and consts and s.sum_dx_xhat.subs({c: 0 for c in consts}) == 0:
        shown = listing([m(c) for c in consts])
        blocks.append(para("This one is not zero only because of ", *shown, ": without it, "
                           "scaling the inputs of a group does not change ", m(z),
                           ", and the gradient would be orthogonal to it. With ", *shown,
                           " the scaling changes it slightly, by the amount above."))
    return blocks


def across_processes(d: Derivation) -> list:
    """Which sums cross processes, the proved merge, and why the parameter gradients need no collective."""
    from ..math import split as distributed
    if not distributed.crosses(d.spec):
        return []
    try:
        s = distributed.split(d.model, d.compact.dx)
    except (distributed.SplitError, sp.PolynomialError):   # not a polynomial of x (|x - mu|): no merge derived
        return []
    r, ranks = sp.Symbol("r"), sp.Symbol("R")

    def shown(e):
        return e.replace(lambda t: isinstance(t, distributed.PartSum),
                         lambda t: sp.Sum(t.args[0], (r, 1, ranks)))

    blocks: list = [para("Every group spans the batch axis, so when the batch is split over ", m(ranks),
                         " processes every sum over the group crosses them: in the forward pass ",
                         *listing([m(b) for b in s.forward_sums]), ", and in the compact backward ",
                         *listing([m(b) for b in s.backward]), ". Rank ", m(r), " holds ",
                         m(distributed.COUNT), " elements of each group (possibly none) and computes the "
                         "graph's own statistics over them, ",
                         *listing([m(mg.local) for mg in s.forward]),
                         ". One all-gather of these, and the merge below, give the statistics of the "
                         "whole batch; Taylor's formula around each rank's own statistics derives it "
                         "from the graph (Chan et al.'s parallel algorithm):")]
    for mg in s.forward:
        blocks.append(equation(mg.stat, shown(mg.merged)))
    sizes = ", ".join("(" + ", ".join(map(str, z)) + ")" for z in distributed.PROOF_SIZES)
    blocks.append(para("Proved exactly equal to the statistics of the concatenated batch for parts of sizes ",
                       sizes, ", with symbolic values. The backward pass all-reduces ",
                       *listing([m(b) for b in s.backward]), " in one collective, with ", m(M),
                       " the global count, and applies the compact form locally."))
    blocks.append(para("The parameter gradients are sums of per-element terms with no statistic of other "
                       "ranks inside them, so each rank's sum is its share and their total is the "
                       "gradient of the whole batch: data-parallel training (DistributedDataParallel) "
                       "all-reduces parameter gradients anyway, so they need no collective of their own."))
    return blocks
