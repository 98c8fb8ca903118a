"""Derivation documents: generated/derivations/<name>.tex and <name>.md.

:func:`sections` lays the derivation out in the reader's order (:mod:`derive.docs.sections`,
then :mod:`derive.docs.second` and :mod:`derive.docs.checks`) and adds the answers of
``derive explain`` for the variants in :data:`QUESTIONS`.  :class:`Layout` turns the blocks
into template data for one format: it numbers the equations in reading order, so the LaTeX
and Markdown files carry the same numbers, and cuts every displayed equation into lines that
fit the page (:mod:`derive.docs.breaking`).  The templates only lay the pre-printed blocks
out (derivation.tex.jinja, derivation.md.jinja and their doc_*.jinja macros).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..learners import explain
from ..math.derivation import Derivation
from . import breaking, checks
from . import second as doc_second
from .blocks import Answer, Code, Equation, Table, para
from .latex import Math
from .sections import compact, forward, graph, jacobian, notation, parameters, staged

QUESTIONS: dict[str, tuple[str, ...]] = {
    "batchnorm": ("naive", "bias", "eps", "layout", "slips"),
    "batchnorm_eps_outside": ("eps",),
}
TEMPLATES = {".tex": "derivation.tex.jinja", ".md": "derivation.md.jinja"}

SECTIONS = (("Notation", notation), ("The forward pass", forward), ("The computation graph", graph),
            ("The staged chain rule", staged), ("The Jacobian entry", jacobian),
            ("From the stages to the compact form", compact), ("The parameter gradients", parameters),
            ("Second order", doc_second.section),
            ("What was proved, and how", checks.proved), ("Invariants", checks.invariants))


def sections(d: Derivation, answers: Sequence[Answer]) -> list[dict]:
    """[{title, blocks, subsections}] in reading order; blocks are Para, Equation or Table."""
    out = [{"title": title, "blocks": blocks, "subsections": []}
           for title, build in SECTIONS if (blocks := build(d))]
    if crossing := checks.across_processes(d):
        out.append({"title": "Across processes", "blocks": crossing, "subsections": []})
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

    def __init__(self, fmt: str, abbreviations: Mapping | None = None):
        self.fmt, self.number = fmt, 0
        self.abbreviations = abbreviations or {}  #: {definition: name}, see derive.docs.breaking

    def block(self, b) -> dict:
        if isinstance(b, Equation):
            self.number += 1
            return {"kind": "equation", "number": self.number, "lhs": b.lhs.tex,
                    "lines": breaking.lines(b, self.abbreviations)}
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
    layout = Layout(fmt, breaking.wide_lets(d.model.lets))
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
