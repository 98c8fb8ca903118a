"""Derivation documents: generated/derivations/<name>.tex and <name>.md.

:func:`sections` lays the derivation out in the reader's order -- the forward
pass, the computation graph, the staged chain rule, the Jacobian entry, the
collapse into the compact form, dgamma and dbeta, what was proved and how, the
invariants -- and adds the answers of ``derive explain`` for the variants in
:data:`QUESTIONS`.  Every formula is a :class:`~derive.latex.Math` printed
from the Derivation's own (proved) expressions; equations are numbered here, in
reading order, so the LaTeX and Markdown files carry the same numbers.  The
templates only lay the pre-printed blocks out (derivation.tex.jinja,
derivation.md.jinja and their doc_*.jinja macros).
"""
from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import sympy as sp

from ..forward.graph import ClampMax, ClampMin, StopGrad
from ..learners import explain
from ..learners.explain import Answer, Code, Para, Table, listing, para
from ..math.algebra import BatchSum, Elem, M
from ..math.derivation import Derivation
from ..proofs import first as proofs
from . import second as doc_second
from .latex import Equation, Math, Partial, equation, math

QUESTIONS: dict[str, tuple[str, ...]] = {
    "batchnorm": ("naive", "bias", "eps", "layout", "slips"),
    "batchnorm_eps_outside": ("eps",),
}
TEMPLATES = {".tex": "derivation.tex.jinja", ".md": "derivation.md.jinja"}
COUNT = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
LEFT_OUT = "left out: "


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


# ----------------------------------------------------------------------------- sections

def notation(d: Derivation) -> list:
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
        para("A d in front of a quantity is the gradient of the loss ", m(explain.L),
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
        equation(column, explain.jacobian_display(d), index="j"),
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
    words = {"inline the stages": "Substituting the earlier stages into the last one gives",
             "reduce the sums": "Rewriting in the normalized variables and reducing every sum gives",
             "collect over one denominator": "Collecting over one denominator gives the compact form"}
    dx = dx_symbol(d)
    for label, expr in d.compact.steps:
        rules += [para(words.get(label, label), ":"), equation(dx, expr)]
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


SECTIONS = (("Notation", notation), ("The forward pass", forward), ("The computation graph", graph),
            ("The staged chain rule", staged), ("The Jacobian entry", jacobian),
            ("From the stages to the compact form", compact), ("The parameter gradients", parameters),
            ("Second order", doc_second.section),
            ("What was proved, and how", proved), ("Invariants", invariants))


def sections(d: Derivation, answers: Sequence[Answer]) -> list[dict]:
    """[{title, blocks, subsections}] in reading order; blocks are Para, Equation or Table."""
    out = [{"title": title, "blocks": blocks, "subsections": []}
           for title, build in SECTIONS if (blocks := build(d))]
    if across_processes(d):
        out.append({"title": "Across processes", "blocks": across_processes(d), "subsections": []})
    if answers:
        out.append({"title": "Questions from the seed documents",
                    "blocks": [para("The questions that started this project, answered from the "
                                    "derivation above. ", Code("derive explain TOPIC"),
                                    " prints each answer.")],
                    "subsections": [{"title": f"{a.title} (seed {a.seed}; topic {a.topic})",
                                     "blocks": list(a.blocks)} for a in answers]})
    return out


# ----------------------------------------------------------------------------- formats

TEX_ESCAPES = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
               "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}"}
MD_ESCAPES = {c: "\\" + c for c in "\\`*_[]<>|#"}


def escape(text: str, table: Mapping[str, str]) -> str:
    return "".join(table.get(c, c) for c in text)


def inline(part, fmt: str) -> str:
    if isinstance(part, Math):
        return f"${part.tex}$"
    if isinstance(part, Code):
        return (r"\texttt{" + escape(part.text, TEX_ESCAPES) + "}" if fmt == ".tex"
                else f"`{part.text}`")
    return escape(part, TEX_ESCAPES if fmt == ".tex" else MD_ESCAPES)


class Layout:
    """Turns blocks into template data for one format, numbering equations in reading order."""

    def __init__(self, fmt: str):
        self.fmt, self.number = fmt, 0

    def block(self, b) -> dict:
        if isinstance(b, Equation):
            self.number += 1
            return {"kind": "equation", "number": self.number, "lhs": b.lhs.tex, "lines": list(b.lines)}
        if isinstance(b, Table):
            return {"kind": "table", "header": [inline(c, self.fmt) for c in b.header],
                    "rows": [[inline(c, self.fmt) for c in row] for row in b.rows],
                    "columns": "l" * len(b.header)}
        return {"kind": "para", "text": "".join(inline(p, self.fmt) for p in b.parts)}

    def section(self, s: dict) -> dict:
        return {"title": inline(s["title"], self.fmt), "blocks": [self.block(b) for b in s["blocks"]],
                "subsections": [self.section(sub) for sub in s.get("subsections", [])]}


def context(d: Derivation, answers: Sequence[Answer], fmt: str, built: list | None = None) -> dict:
    """The template context of one format; ``built``: the sections, when already built for
    the other format (they are the same blocks, laid out anew)."""
    layout = Layout(fmt)
    body = [layout.section(s) for s in (built if built is not None else sections(d, answers))]
    title = inline(f"{d.spec.title}: the backward pass, derived", fmt)
    return {"title": title, "name": d.spec.name, "sections": body}


def answers_for(d: Derivation, by_name: Mapping[str, Derivation], cache: dict) -> list[Answer]:
    out = []
    for topic in QUESTIONS.get(d.spec.name, ()):
        if topic not in cache:
            cache[topic] = explain.answer(topic, by_name, d.max_m)
        out.append(cache[topic])
    return out


def job(d: Derivation, answers: Sequence[Answer], fmt: str, built: list | None = None) -> tuple[str, dict]:
    """(template, context) of one document; derive.render renders it."""
    return TEMPLATES[fmt], context(d, answers, fmt, built)


def single_latex_job(d: Derivation) -> tuple[str, dict]:
    """The LaTeX document of ``d`` alone, exactly as derive writes it to generated/derivations/."""
    return job(d, answers_for(d, {d.spec.name: d}, {}), ".tex")


def document_jobs(derivations) -> dict[str, tuple[str, dict]]:
    """{path under generated/: (template, context)} for every derivation document."""
    by_name = {d.spec.name: d for d in derivations}
    cache: dict = {}
    jobs = {}
    for d in derivations:
        answers = answers_for(d, by_name, cache)
        built = sections(d, answers)   # printed once, laid out for both formats
        for fmt in TEMPLATES:
            jobs[f"derivations/{d.spec.name}{fmt}"] = job(d, answers, fmt, built)
    return jobs


# ----------------------------------------------------------------------------- picture

def first_page_png(tex: str, png: Path, dpi: int = 110) -> None:
    """Compile ``tex`` with pdflatex and render its first page to ``png`` with pdftoppm."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "doc.tex"
        src.write_text(tex, encoding="utf-8")
        subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                       cwd=tmp, check=True, capture_output=True, timeout=120)
        subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-f", "1", "-l", "1", "-singlefile",
                        "doc.pdf", "page"], cwd=tmp, check=True, capture_output=True, timeout=120)
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes((Path(tmp) / "page.png").read_bytes())


if __name__ == "__main__":  # python -m derive.docs.documents: refresh docs/derivation.png
    root = Path(__file__).resolve().parents[2]
    first_page_png((root / "generated" / "derivations" / "batchnorm.tex").read_text(encoding="utf-8"),
                   root / "docs" / "derivation.png")


def across_processes(d: Derivation) -> list:
    """Which sums cross processes, the proved merge, and why the parameter gradients need no collective."""
    from ..math import split as distributed
    if not distributed.crosses(d.spec):
        return []
    s = distributed.split(d.model, d.compact.dx)
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
