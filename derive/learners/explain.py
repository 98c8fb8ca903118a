"""`derive explain TOPIC`: the seed documents' questions, answered from the derivation.

An answer is a list of blocks (:mod:`derive.docs.blocks`): prose with inline
formulas, displayed equations and tables.  Every formula is a SymPy expression
built from the proved derivation and printed by :mod:`derive.docs.latex`, and
every claim that an expression is, or is not, zero is checked exactly before it is
printed (:func:`derive.learners.pieces.require`).  The numbers come from the proved
expressions as well (:mod:`derive.learners.numbers`); the layout answer uses
float64 NumPy, as the kernels do.  The answers themselves are in
:mod:`derive.learners.answers_gradient` (naive, bias, eps) and
:mod:`derive.learners.answers_code` (layout, slips); the documents print the same
answers (:mod:`derive.docs.documents`).
"""
from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Mapping

from ..docs.blocks import Answer, Code, Equation, Para
from ..docs.latex import Math
from ..forward.library import BY_NAME
from ..math.derivation import Derivation, derive
from .answers_code import layout, slips
from .answers_gradient import bias, eps, naive

TOPICS: dict[str, tuple[Callable[[Mapping[str, Derivation]], Answer], tuple[str, ...]]] = {
    "naive": (naive, ("batchnorm",)),
    "bias": (bias, ("batchnorm",)),
    "eps": (eps, ("batchnorm", "batchnorm_eps_outside")),
    "layout": (layout, ("batchnorm",)),
    "slips": (slips, ("batchnorm",)),
}


def answer(topic: str, ds: Mapping[str, Derivation], max_m: int, progress=None) -> Answer:
    """The answer to ``topic``, deriving any variant it needs that ``ds`` lacks.

    ``progress(name)``, if given, returns the stage callback for deriving variant ``name``."""
    build, needs = TOPICS[topic]
    have = dict(ds)
    for name in needs:
        if name not in have:
            have[name] = derive(BY_NAME[name], max_m, progress and progress(name))
    if progress:
        progress(f"answering {topic}")
    return build(have)


# ----------------------------------------------------------------------------- terminal

def text_part(part) -> str:
    if isinstance(part, Math):
        return part.text
    if isinstance(part, Code):
        return f"`{part.text}`"
    return part


def to_text(a: Answer) -> str:
    from .sources import cite
    title = f"{a.title} (seed {a.seed})"
    lines = [title, "=" * len(title), f"Seed {cite(a.seed)}", ""]
    for block in a.blocks:
        if isinstance(block, Para):
            lines += textwrap.wrap("".join(text_part(p) for p in block.parts), 92,
                                   break_long_words=False, break_on_hyphens=False) + [""]
        elif isinstance(block, Equation):
            lines += [f"    {block.lhs.text} = {block.rhs.text}", ""]
        else:
            cells = [[text_part(c) for c in row] for row in (block.header, *block.rows)]
            widths = [max(len(row[k]) for row in cells) for k in range(len(cells[0]))]
            for n, row in enumerate(cells):
                lines.append("    " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
                if n == 0:
                    lines.append("    " + "  ".join("-" * w for w in widths))
            lines.append("")
    return "\n".join(lines)


def main(topic: str, max_m: int, progress=None) -> int:
    if topic not in TOPICS:
        print(f"derive explain: unknown topic {topic!r}; choose from {', '.join(TOPICS)}",
              file=sys.stderr)
        return 2
    sys.stdout.write(to_text(answer(topic, {}, max_m, progress)))
    return 0
