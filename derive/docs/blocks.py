"""The blocks that documents and ``derive explain`` answers are made of.

A document section, like an answer, is a list of blocks: prose with inline
formulas (:class:`Para`), displayed equations (:class:`Equation`) and tables
(:class:`Table`).  Every formula in them is a :class:`~derive.docs.latex.Math`,
printed from a SymPy expression; the blocks carry no layout.  The documents lay
them out (:mod:`derive.docs.documents`, which cuts wide equations into lines for
the page), the terminal prints them as text (:func:`derive.learners.explain.to_text`).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .latex import Math, math


@dataclass(frozen=True)
class Code:
    """A name from code (the seeds', or derive's own), printed in a fixed-width font."""

    text: str


@dataclass(frozen=True)
class Para:
    parts: tuple  #: str (prose), Math (inline formula) or Code


@dataclass(frozen=True)
class Table:
    header: tuple  #: cells: str, Math or Code
    rows: tuple    #: tuples of cells


@dataclass(frozen=True)
class Equation:
    """A displayed equation ``lhs = rhs``, printed from the expressions themselves."""

    lhs: Math
    rhs: Math


@dataclass(frozen=True)
class Answer:
    """One answer of ``derive explain``; the documents print it as a subsection."""

    topic: str
    title: str
    seed: str
    blocks: tuple  #: Para, Equation or Table


def para(*parts) -> Para:
    return Para(tuple(parts))


def listing(items) -> list:
    """a, b and c, as parts of a paragraph."""
    out: list = []
    for n, item in enumerate(items):
        if n:
            out.append(" and " if n == len(items) - 1 else ", ")
        out.append(item)
    return out


def equation(lhs, rhs, index: str = "i", param_index: str | None = None) -> Equation:
    """``lhs = rhs`` with per-element symbols indexed by ``index`` (and a ParamSum's by ``param_index``)."""
    return Equation(math(lhs, index, param_index), math(sp.sympify(rhs), index, param_index))
