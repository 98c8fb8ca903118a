"""The NumPy backend's template context: the kernel IR printed as vectorized NumPy.

Every function of the IR is printed in the fast layout: a per-element assignment is a block
function swept over blocks of rows (``_blocks.elementwise``), a group sum never builds a
full-size temporary (``_blocks.total``, ``sum_of_products``, ``reduce``), and a mean of the input
is summed in float64 and split into ``mu_hi + mu_lo`` before any element subtracts it, so that
float32 data far from zero keeps its spread.  In a backward function the per-group values the
elementwise pass reads are rounded once to the working dtype (``_blocks.narrow``), so the pass runs
in that dtype.  Nothing here walks the derivation: it reads :class:`~derive.ir.program.KernelIR`.
"""
from __future__ import annotations

import sympy as sp

from ...ir.api import backward_functions
from ...ir.program import Function, KernelIR
from ...math.algebra import M, BatchSum, Elem, OuterSum, ParamSum
from .blocks import BlockCollector
from ..arrays import code, domains, elementwise

Pairs = list[tuple[str, str]]


def means(f: Function, x: Elem) -> set:
    """The means of the input itself (mu = sum_x/m, sum_x = sum of x): summed in float64, split."""
    totals = {a.target for a in f.body if a.value == BatchSum(x)}
    return {a.target for a in f.body if a.value * M in totals}


def printed(f: Function, ir: KernelIR, blocks: BlockCollector, narrow: bool) -> Pairs:
    """The body of ``f`` as (lhs, rhs) pairs of the fast layout."""
    exact_totals = {a.target for a in f.body if a.value == BatchSum(ir.x)}
    split_of: dict = {}
    split: dict = {}
    for mu in sorted(means(f, ir.x), key=lambda s: s.name):
        hi, lo = ir.names.local(f"{mu.name}_hi"), ir.names.local(f"{mu.name}_lo")
        split_of[mu] = (hi, lo)
    read_by_elements = set().union(*(a.value.free_symbols for a in f.body if a.per_element))
    out: Pairs = []
    for a in f.body:
        value = a.value.xreplace(split)
        used = sorted(value.free_symbols & set(split_of), key=lambda s: s.name)
        if used and a.per_element or used and value.has(BatchSum):
            for mu in used:
                hi, lo = split_of[mu]
                out.append((f"{hi}, {lo}", f"_blocks.split({mu.name}, work)"))
                split[mu] = sp.Symbol(hi, real=True) + sp.Symbol(lo, real=True)
                del split_of[mu]
            value = a.value.xreplace(split)
        name = a.target.name
        if a.per_element:
            rhs = elementwise(value, blocks, name)
        elif isinstance(value, OuterSum):
            rhs = f"numpy.sum({value.args[0]}, axis=outer_axes, keepdims=True)"
        else:
            rhs = code(value, fast=True, blocks=blocks, exact_sums=a.target in exact_totals)
            if narrow and a.target in read_by_elements and not isinstance(value, (BatchSum, ParamSum)):
                rhs = f"_blocks.narrow({rhs}, work)"
        out.append((name, rhs))
    return out


def context(ir: KernelIR, common: dict) -> dict:
    """The context of templates/numpy_kernels.py.jinja for one entry."""
    blocks = BlockCollector()
    forward_train = printed(ir["forward_train"], ir, blocks, narrow=False)
    forward_test = printed(ir["forward_test"], ir, blocks, narrow=False) if ir.get("forward_test") else []
    functions, test = [], None
    for name, key, description in backward_functions(ir):
        reads = set(ir.cached[key]) | (set(ir.cached["backward_test"]) if ir.get("backward_test") else set())
        train = printed(ir[key], ir, blocks, narrow=True)
        if test is None:   # printed once, after the first training backward (block functions in order of use)
            test = printed(ir["backward_test"], ir, blocks, narrow=True) if ir.get("backward_test") else []
        functions.append({"name": name, "description": description, "train": train, "test": test,
                          "unpack": sorted(s.name for s in reads) + [k for dm in ir.domains for k in (dm.axes, dm.m.name)]
                          + ["axes", "param_sum_axes", "outer_axes"]})
    return {
        **common,
        "forward_train": forward_train,
        "forward_test": forward_test,
        "updates": [(a.target.name, code(a.value)) for a in ir.updates],
        "backward_functions": functions,
        "blocks": blocks.all(),
        "domains": domains(ir),
    }
