"""The derivation's sections of a document, in the reader's order: the notation, the forward
pass, the computation graph, the staged chain rule, the Jacobian entry, the collapse into the
compact form, and the parameter gradients.

Every formula is a :class:`~derive.docs.latex.Math` printed from the Derivation's own
(proved) expressions; a section is a list of blocks (:mod:`derive.docs.blocks`).
"""
from __future__ import annotations

import sympy as sp

from ..forward.graph import ClampMax, ClampMin, StopGrad
from ..learners.pieces import jacobian_display, words
from ..math.algebra import BatchSum, Elem, M
from ..math.derivation import Derivation
from ..proofs import first as proofs
from .blocks import Code, Para, equation, listing, para
from .latex import Math, Partial, math

COUNT = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def m(expr, index: str = "i") -> Math:
    return math(expr, index)


def dx_symbol(d: Derivation) -> Elem:
    """The gradient of the input: the symbol of the last stage."""
    return d.stages[-1].symbol


def reductions(d: Derivation) -> list:
    return [n for n in d.model.nodes if n.kind == "reduce"]


def used_constants(d: Derivation) -> list:
    """The constants that the forward pass reads (not those of the running-statistics update)."""
    seen = set().union(*(n.definition.free_symbols for n in d.model.nodes + d.model.lets))
    return [c.symbol for c in d.model.constants if c.symbol in seen]


def notation(d: Derivation) -> list:
    w = words()
    model = d.model
    per_element = [model.x, *(n.symbol for n in model.nodes if n.per_element)]
    stats: list = []
    for n, node in enumerate(reductions(d)):
        stats += [" and " if n else "", m(node.symbol), f" is the {node.label}"]
    if stats:
        stats.append(" of the group, ")
    consts = used_constants(d)
    const_text = ([*listing([m(c) for c in consts]),
                   " is a constant of the layer, " if len(consts) == 1 else " are constants of the layer, "]
                  if consts else [])
    params = (["and " if stats or const_text else "", *listing([m(p) for p in model.params]),
               " is the learned parameter." if len(model.params) == 1 else " are the learned parameters."]
              if model.params else ["the layer has no learned parameters."])
    first = ["Per-element quantities carry an index: ", *listing([m(s) for s in per_element]),
             " belong to element ", m(proofs.I), " (or ", m(proofs.J), "), and ", m(sp.Symbol("k")),
             " is the index of every sum over the group. ", *stats, *const_text, *params]
    blocks = [
        para(*group_text(d)),
        para(*first),
        para("A d in front of a quantity is the gradient of the loss ", m(w.L),
             " with respect to it; ", m(model.dy), " is the upstream gradient, given.",
             *([" The forward pass writes ", "these abbreviations" if len(model.lets) > 1
                else "this abbreviation", ":"] if model.lets else [])),
        *[equation(let.symbol, let.definition) for let in model.lets],
    ]
    blocks += functions_text(d)
    return blocks


def functions_text(d: Derivation) -> list:
    """What sg, max, min and the Iverson bracket mean, for a graph that uses them."""
    exprs = [n.definition for n in d.model.nodes + d.model.lets] + [st.expr for st in d.stages]
    has = lambda kind: any(e.has(kind) for e in exprs)  # noqa: E731
    parts: list = []
    if has(StopGrad):
        parts.append("sg(a) is the value of a with derivative 0 (a stop-gradient)")
    if has(ClampMin) or has(ClampMax):
        parts.append("max(a, lo) and min(a, hi) are clamps, differentiated as torch does: the "
                     "derivative is 1 where the clamp lets a through, at the kink included")
    if has(sp.Heaviside):
        parts.append("[a >= 0] is 1 where a >= 0 and 0 elsewhere (an Iverson bracket)")
    return [para("; ".join(parts)[0].upper() + "; ".join(parts)[1:] + ".")] if parts else []


def group_text(d: Derivation) -> list:
    """Which values of x form one normalization group, as paragraph parts."""
    spec = d.spec
    letters = spec.layout.split(",")
    shape = "(" + ", ".join(letters) + ")"
    if spec.groups:
        where = ["the C/G channels of one group and all H x W positions of one sample of ", Code("x"),
                 f", shape {shape}"]
    elif spec.any_rank:
        where = [f"the {letters[-1]} entries along the last axis of ", Code("x"), f", shape {shape}"]
    else:
        reduced = ", ".join(letters[a] for a in spec.reduce_axes)
        kept = ", ".join(letters[a] for a in range(len(letters)) if a not in spec.reduce_axes)
        where = [f"the values along ({reduced}) of ", Code("x"),
                 f", shape {shape}, for one index along ({kept})"]
    return [f"One normalization group of {spec.title.lower()} holds ", *where, "; ", m(M),
            " is their number. Everything below is about one group."]


def forward(d: Derivation) -> list:
    labels = [n.label for n in d.model.nodes]
    mode = "In training mode the forward pass" if d.test_model is not None else "The forward pass"
    order = ", the ".join(labels[:-1]) + " and the " + labels[-1] if len(labels) > 1 else labels[0]
    return [para(mode, " computes, in order, the ", order, ":"),
            *[equation(node.symbol, node.definition) for node in d.model.nodes]]


def graph(d: Derivation) -> list:
    feeds: list = ["Each quantity feeds the ones whose definitions use it: "]
    for n, st in enumerate(d.stages):
        feeds += [m(st.wrt), " feeds ", *listing([m(p) for p in st.paths]),
                  "." if n == len(d.stages) - 1 else "; "]
    blocks = [Para(tuple(feeds))]
    direct = d.stages[-1]
    shared = [p for p in direct.paths if not isinstance(p, Elem)]
    elementwise = [p for p in direct.paths if isinstance(p, Elem)]
    if shared and elementwise:
        count = COUNT.get(len(direct.paths), str(len(direct.paths)))
        are, them = (" are", "them") if len(shared) > 1 else (" is", "it")
        every = "both paths." if count == "two" else f"all {count} paths."
        x = d.model.x
        blocks.append(Para((
            "So ", m(x), " reaches the loss through ", count, " paths. Directly, it enters ",
            *listing([m(p) for p in elementwise]), ". But ", *listing([m(p) for p in shared]), are,
            " computed from every element of the group, so changing ", m(x), " also moves ", them,
            ", and through ", them, " every ", *listing([m(p, "k") for p in elementwise]),
            " and every output. The chain rule must add the contributions of ", every)))
    return blocks


def staged(d: Derivation) -> list:
    shared = [st.wrt for st in d.stages if not isinstance(st.wrt, Elem)]
    example = ["such as ", m(shared[0]), " "] if shared else []
    blocks: list = [para(
        "Reverse mode walks the graph from the output back to the input. Each quantity collects "
        "gradient from the quantities it feeds, one term per path; when a per-group quantity ",
        *example, "feeds a per-element one, its term is a sum over every element ",
        m(sp.Symbol("k")), " of the group. The stages, in order:")]
    for st in d.stages:
        blocks.append(equation(st.symbol, st.expr))
    means = [n.symbol for n in reductions(d)]
    for s in d.symbolic.vanishing:
        why = [r for r in means if r in s.args[0].free_symbols]
        reason = [", because ", *listing([m(r) for r in why]),
                  " is the " if len(why) == 1 else " are the ",
                  " and the ".join(d.model.node(r).label for r in why)] if why else []
        blocks += [para("One sum in these stages is zero for every group", *reason, ":"),
                   equation(s, 0), para("so the term it multiplies drops out.")]
    return blocks


def jacobian(d: Derivation) -> list:
    y, x = d.model.output.symbol, d.model.x
    x_i = proofs.column_copies(d.model)[x]
    column = Partial(y, x_i)
    return [
        para("The same gradient, seen through the Jacobian: the derivative of output ", m(y, "j"),
             " with respect to input ", m(x), ", for a symbolic batch size, is"),
        equation(column, jacobian_display(d), index="j"),
        para("where the Kronecker delta is 1 when ", m(sp.Eq(proofs.I, proofs.J, evaluate=False)),
             " and 0 otherwise. Every input moves every output of its group. Contracting with the "
             "upstream gradient gives the gradient of the input:"),
        equation(dx_symbol(d), BatchSum(d.model.dy * column)),
    ]


def compact(d: Derivation) -> list:
    lem = d.lemmas
    rules: list = []
    if lem.x_rule or lem.inverses:
        inverted = listing([m(v) for v in lem.inverses])
        through = [" and ", *inverted, " through the abbreviation",
                   "s" if len(lem.inverses) > 1 else ""] if lem.inverses else []
        rules += [para("To collapse the stages, derive writes ",
                       *(["every input through ", m(lem.variable)] if lem.x_rule else ["the statistics"]),
                       *through, ":")]
        rules += [equation(x, v) for x, v in lem.x_rule.items()]
        rules += [equation(sp.sqrt(v), lem.roots[v]) if v in lem.roots else equation(v, value)
                  for v, value in lem.inverses.items()]
    if lem.sums:
        rules.append(para("and uses what the normalization fixes about the sums over the group:"
                          if rules else "To collapse the stages, derive uses what the normalization "
                          "fixes about the sums over the group:"))
        rules += [equation(BatchSum(k), v)
                  for k, v in sorted(lem.sums.items(), key=lambda kv: sp.default_sort_key(kv[0]))]
    if rules:
        rules.append(para("Each of these is proved before it is used (see the proofs below)."))
    lead_ins = {"inline the stages": "Substituting the earlier stages into the last one gives",
             "reduce the sums": "Rewriting in the normalized variables and reducing every sum gives",
             "collect over one denominator": "Collecting over one denominator gives the compact form"}
    dx = dx_symbol(d)
    for label, expr in d.compact.steps:
        rules += [para(lead_ins.get(label, label), ":"), equation(dx, expr)]
    return rules


def parameters(d: Derivation) -> list:
    spec, y = d.spec, d.model.output.symbol
    if not d.params:
        return [para("The output is ", m(sp.Eq(y, d.model.output.definition, evaluate=False)),
                     "; the layer has no learned parameters, so the input gradient is the only one.")]
    group = param_sum_is_group(spec)
    blocks: list = [para("The output is ", m(sp.Eq(y, d.model.output.definition, evaluate=False)),
                         ", so the parameter gradients need no chain through the normalization:")]
    for p in d.params:
        lhs = Elem(p.symbol.name, real=True) if spec.gamma_varies else p.symbol
        blocks.append(equation(lhs, p.expr, param_index=None if group else "n"))
    if group:
        blocks.append(para("The parameters are shared by exactly the elements of one group, so "
                           "these are sums over the same ", m(sp.Symbol("k")), "."))
    else:
        letters = spec.layout.split(",")
        along = ", ".join(letters[a] for a in range(len(letters)) if a not in spec.param_axes) \
            if not spec.any_rank else "every axis but the last"
        blocks.append(para("Here ", m(sp.Symbol("n")), " runs over every position that shares the "
                           f"parameter: the axes ({along}) of x."))
    return blocks


def param_sum_is_group(spec) -> bool:
    """True when gamma is shared by exactly the elements of one group (batch norm)."""
    if spec.gamma_varies or spec.any_rank or spec.groups:
        return False
    return set(spec.reduce_axes) | set(spec.param_axes) == set(range(spec.ndim))
