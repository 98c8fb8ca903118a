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

from . import explain, proofs
from .algebra import BatchSum, Elem, M
from .closed_form import facts
from .derivation import Derivation
from .explain import DX, Answer, Code, Para, Table, para
from .latex import Equation, Math, Partial, equation, math
from .model import DY, EPS, MU, STD, VAR, XHAT, X, Y

QUESTIONS: dict[str, tuple[str, ...]] = {
    "batchnorm": ("naive", "bias", "eps", "layout", "slips"),
    "batchnorm_eps_outside": ("eps",),
}
TEMPLATES = {".tex": "derivation.tex.jinja", ".md": "derivation.md.jinja"}
COUNT = {1: "one", 2: "two", 3: "three", 4: "four"}


def m(expr, index: str = "i") -> Math:
    return math(expr, index)


def listing(items: Sequence) -> list:
    """a, b and c, as parts of a paragraph."""
    out: list = []
    for n, item in enumerate(items):
        if n:
            out.append(" and " if n == len(items) - 1 else ", ")
        out.append(item)
    return out


# ----------------------------------------------------------------------------- sections

def notation(d: Derivation) -> list:
    model = d.model
    stats = ([m(MU), " and ", m(VAR), " are the mean and the variance of the group, "] if d.spec.centred
             else [m(VAR), " is the mean square of the group, "])
    params = [m(model.gamma), " and ", m(model.beta), " are the learned scale and shift."] \
        if model.beta is not None else [m(model.gamma), " is the learned scale."]
    return [
        para(*group_text(d)),
        para("Per-element quantities carry an index: ", m(X), ", ", m(XHAT), ", ", m(Y),
             " belong to element ", m(proofs.I), " (or ", m(proofs.J), "), and ", m(sp.Symbol("k")),
             " is the index of every sum over the group. ", *stats, m(EPS),
             " is a small constant, and ", *params),
        para("A d in front of a quantity is the gradient of the loss ", m(explain.L),
             " with respect to it; ", m(DY), " is the upstream gradient, given. The denominator "
             "of the normalized input is"),
        equation(STD, model.std_definition),
    ]


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
    mode = "In training mode the forward pass" if d.spec.running_stats else "The forward pass"
    return [para(f"{mode} computes, in order, the ",
                 ", the ".join(labels[:-1]) + " and the " + labels[-1], ":"),
            *[equation(node.symbol, node.definition) for node in d.model.nodes]]


def graph(d: Derivation) -> list:
    feeds: list = ["Each quantity feeds the ones whose definitions use it: "]
    for n, st in enumerate(d.stages):
        feeds += [m(st.wrt), " feeds ", *listing([m(p) for p in st.paths]),
                  "." if n == len(d.stages) - 1 else "; "]
    blocks = [Para(tuple(feeds))]
    direct = d.stages[-1]
    shared = [p for p in direct.paths if not isinstance(p, Elem)]
    if shared:
        count = COUNT[len(direct.paths)]
        are, them = (" are", "them") if len(shared) > 1 else (" is", "it")
        every = "both paths." if count == "two" else f"all {count} paths."
        blocks.append(Para((
            "So ", m(X), " reaches the loss through ", count, " paths. Directly, it enters ", m(XHAT),
            ". But ", *listing([m(p) for p in shared]), are,
            " computed from every element of the group, so changing ", m(X), " also moves ", them,
            ", and through ", them, " every ", m(XHAT, "k"),
            " and every output. The chain rule must add the contributions of ", every)))
    return blocks


def staged(d: Derivation) -> list:
    blocks: list = [para(
        "Reverse mode walks the graph from the output back to the input. Each quantity collects "
        "gradient from the quantities it feeds, one term per path; when a per-group quantity "
        "such as ", m(VAR), " feeds a per-element one, its term is a sum over every element ",
        m(sp.Symbol("k")), " of the group. The stages, in order:")]
    for st in d.stages:
        blocks.append(equation(st.symbol, st.expr))
    for s in d.symbolic.vanishing:
        blocks += [para("One sum in these stages is zero for every group, because ", m(MU),
                        " is the mean:"), equation(s, 0),
                   para("so the term it multiplies drops out.")]
    return blocks


def jacobian(d: Derivation) -> list:
    column = Partial(Y, proofs.X_I)
    return [
        para("The same gradient, seen through the Jacobian: the derivative of output ", m(Y, "j"),
             " with respect to input ", m(X), ", for a symbolic batch size, is"),
        equation(column, explain.jacobian_display(d), index="j"),
        para("where the Kronecker delta is 1 when ", m(sp.Eq(proofs.I, proofs.J, evaluate=False)),
             " and 0 otherwise. Every input moves every output of its group. Contracting with the "
             "upstream gradient gives the gradient of the input:"),
        equation(DX, BatchSum(DY * column)),
    ]


def compact(d: Derivation) -> list:
    model = d.model
    rules = [para("To collapse the stages, derive writes every input through its normalized "
                  "value and the variance through ", m(STD), ":"),
             equation(X, model.x_in_xhat), equation(VAR, model.var_in_std),
             para("and uses what the normalization fixes about the sums over the group:")]
    rules += [equation(BatchSum(k), v) for k, v in sorted(facts(model).items(), key=lambda kv: sp.default_sort_key(kv[0]))]
    words = {"inline the stages": "Substituting the earlier stages into the last one gives",
             "reduce the sums": "Rewriting in the normalized variables and reducing every sum gives",
             "collect over one denominator": "Collecting over one denominator gives the compact form"}
    for label, expr in d.compact.steps:
        rules += [para(words.get(label, label), ":"), equation(DX, expr)]
    return rules


def parameters(d: Derivation) -> list:
    spec = d.spec
    group = param_sum_is_group(spec)
    blocks: list = [para("The output is ", m(sp.Eq(Y, d.model.output.definition, evaluate=False)),
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
    root = proofs.ROOT
    radicand = next(p.base for p in d.model.std_definition.atoms(sp.Pow) if p.exp == sp.S.Half)
    claims: dict[str, list[str]] = {}
    for p in d.proofs:
        claims.setdefault(p.claim, []).append(p.size)
    sizes = proofs.sizes(d.model, d.max_m)
    blocks: list = [
        para("Every equation above is checked exactly, with no floating point and no random "
             "samples, in two ways."),
        para(f"For every batch size from {sizes.start} to {d.max_m}, the forward pass is written "
             "out element by element, SymPy differentiates it into the full Jacobian, and the "
             "Jacobian contracted with the upstream gradient is compared with the staged result, "
             "the compact result and the Jacobian entry above; the parameter gradients are "
             "compared with the derivatives of the loss. Each difference is zero when its "
             "numerator vanishes once the square root is named ", m(root), ", with ",
             m(sp.Eq(root**2, radicand, evaluate=False)),
             ": the numerator is reduced modulo ", m(root**2 - radicand),
             " (with the variance itself written out in the inputs) and the remainder is 0."),
        para("For a symbolic batch size, the same identities are checked in the algebra of sums "
             "over the group: the difference cancels to 0 using only linearity, the derivative "
             "of a sum, and the two facts about the normalized inputs."),
    ]
    if sizes.start > 1:
        blocks.append(para("Batch size 1 is left out: with ", m(EPS), " outside the root, ",
                           m(sp.sqrt(VAR)), " has no derivative at ", m(sp.Eq(VAR, 0, evaluate=False)),
                           ", which is every point when the group has one element."))
    blocks.append(para("The claims, as derive's proofs name them:"))
    blocks.append(Table(("claim", "checked for"),
                        tuple((Code(claim), size_text(s)) for claim, s in claims.items())))
    return blocks


def size_text(sizes: list[str]) -> str:
    numbers = [int(s[2:]) for s in sizes if s.startswith("m=")]
    if not numbers:
        return ", ".join(sizes)
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 1:
        return f"m = {numbers[0]} to {numbers[-1]}"
    return "m = " + ", ".join(map(str, numbers))


def invariants(d: Derivation) -> list:
    s = d.symbolic
    blocks: list = [para("Two sums of the input gradient over the group, derived from the compact "
                         "form:"), equation(BatchSum(DX), s.sum_dx)]
    if s.sum_dx == 0:
        blocks.append(para("The input gradient sums to zero: shifting every input of the group by "
                           "the same amount does not change the normalized inputs, so the loss "
                           "cannot change along that direction."))
    else:
        blocks.append(para("This variant does not subtract the mean, so the input gradient need "
                           "not sum to zero."))
    blocks.append(equation(BatchSum(DX * XHAT), s.sum_dx_xhat))
    if s.sum_dx_xhat != 0 and s.sum_dx_xhat.subs(EPS, 0) == 0:
        blocks.append(para("This one is not zero only because of ", m(EPS), ": without it, "
                           "scaling the inputs of a group does not change the normalized inputs, "
                           "and the gradient would be orthogonal to them. With ", m(EPS),
                           " the scaling changes them slightly, by the amount above."))
    return blocks


SECTIONS = (("Notation", notation), ("The forward pass", forward), ("The computation graph", graph),
            ("The staged chain rule", staged), ("The Jacobian entry", jacobian),
            ("From the stages to the compact form", compact), ("The parameter gradients", parameters),
            ("What was proved, and how", proved), ("Invariants", invariants))


def sections(d: Derivation, answers: Sequence[Answer]) -> list[dict]:
    """[{title, blocks, subsections}] in reading order; blocks are Para, Equation or Table."""
    out = [{"title": title, "blocks": build(d), "subsections": []} for title, build in SECTIONS]
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


def context(d: Derivation, answers: Sequence[Answer], fmt: str) -> dict:
    layout = Layout(fmt)
    body = [layout.section(s) for s in sections(d, answers)]
    title = inline(f"{d.spec.title}: the backward pass, derived", fmt)
    return {"title": title, "name": d.spec.name, "sections": body}


def answers_for(d: Derivation, by_name: Mapping[str, Derivation], cache: dict) -> list[Answer]:
    out = []
    for topic in QUESTIONS.get(d.spec.name, ()):
        if topic not in cache:
            cache[topic] = explain.answer(topic, by_name, d.max_m)
        out.append(cache[topic])
    return out


def job(d: Derivation, answers: Sequence[Answer], fmt: str) -> tuple[str, dict]:
    """(template, context) of one document; derive.render renders it."""
    return TEMPLATES[fmt], context(d, answers, fmt)


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
        for fmt in TEMPLATES:
            jobs[f"derivations/{d.spec.name}{fmt}"] = job(d, answers, fmt)
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


if __name__ == "__main__":  # python -m derive.documents: refresh docs/derivation.png
    root = Path(__file__).resolve().parent.parent
    first_page_png((root / "generated" / "derivations" / "batchnorm.tex").read_text(encoding="utf-8"),
                   root / "docs" / "derivation.png")
