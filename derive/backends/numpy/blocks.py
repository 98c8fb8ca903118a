"""Three-address NumPy code for one block: an expression as a sequence of ufunc calls
that write into preallocated buffers (``out=``), so no temporary is allocated per operation.

    dx = dout*coef_dout + xhat*coef_xhat + coef_1
becomes
    numpy.multiply(coef_dout, dout, out=out)
    numpy.multiply(coef_xhat, xhat, out=t0)
    numpy.add(out, t0, out=out)
    numpy.add(out, coef_1, out=out)

Which ufunc runs is read off the SymPy expression tree; nothing is typed by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ...math.algebra import Elem
from ..arrays import array_arguments, code


def _per_element(e: sp.Expr) -> bool:
    return bool(e.atoms(Elem))


@dataclass
class _Emitter:
    """Per-element work becomes ufunc calls into ``out`` or scratch buffers; per-group
    subexpressions (small arrays) are printed inline and broadcast by the ufunc."""

    lines: list[str] = field(default_factory=list)
    temps: int = 0

    def temp(self) -> str:
        name = f"t{self.temps}"
        self.temps += 1
        return name

    def small(self, e: sp.Expr) -> str | None:
        """A symbol, a number or a per-group expression, printed inline; else None."""
        if e.is_Symbol or e.is_Number:
            return code(e)
        if not _per_element(e):
            return f"({code(e)})"
        return None

    def operand(self, e: sp.Expr) -> str:
        name = self.small(e)
        if name is None:
            name = self.temp()
            self.emit(e, name)
        return name

    def emit(self, e: sp.Expr, target: str) -> None:
        if self.small(e) is not None:
            self.lines.append(f"numpy.copyto({target}, {self.small(e)})")
        elif e.is_Add:
            self.add(e, target)
        elif e.is_Mul:
            self.mul(e, target)
        elif e.is_Pow and e.exp == 2:
            self.unary("square", e.base, target)
        elif e.is_Pow and e.exp == sp.S.Half:
            self.unary("sqrt", e.base, target)
        elif e.is_Pow and e.exp == -1:
            self.lines.append(f"numpy.divide(1, {self.operand(e.base)}, out={target})")
        else:
            self.lines.append(f"{target}[...] = {code(e)}")

    def unary(self, ufunc: str, base: sp.Expr, target: str) -> None:
        src = self.small(base)
        if src is None:
            self.emit(base, target)
            src = target
        self.lines.append(f"numpy.{ufunc}({src}, out={target})")

    def add(self, e: sp.Expr, target: str) -> None:
        """Per-element terms one by one (the first one into target), then the per-group rest."""
        terms = sorted((t for t in e.args if _per_element(t)),
                       key=lambda t: (t.could_extract_minus_sign(), sp.default_sort_key(t)))
        # Per-group terms are applied one at a time, in name order (mu_hi before mu_lo):
        # combining them first would round away what the split into hi + lo kept.
        rest = sorted((t for t in e.args if not _per_element(t)),
                      key=lambda t: str(-t if t.could_extract_minus_sign() else t))
        first, terms = terms[0], terms[1:]
        pending = []
        if self.small(first) is None:
            self.emit(first, target)
            current = target
        else:
            current = self.small(first)
        for t in terms + rest:
            op, t = ("subtract", -t) if t.could_extract_minus_sign() else ("add", t)
            pending.append((op, t))
        if not pending:
            self.lines.append(f"numpy.copyto({target}, {current})")
        for op, t in pending:
            self.lines.append(f"numpy.{op}({current}, {self.operand(t)}, out={target})")
            current = target

    def mul(self, e: sp.Expr, target: str) -> None:
        """Per-element factors one by one, then one multiplication by the per-group rest."""
        factors = sorted((f for f in e.args if _per_element(f)),
                         key=lambda f: (self.small(f) is None, sp.default_sort_key(f)))
        rest = sp.Mul(*[f for f in e.args if not _per_element(f)])
        ops = []
        for f in factors:
            if f.is_Pow and f.exp.is_negative:
                ops.append(("divide", f.base ** -f.exp))
            else:
                ops.append(("multiply", f))
        if rest != 1:
            ops.append(("multiply", rest))
        op, first = ops[0]
        if op == "divide" or self.small(first) is None:
            self.emit(first if op == "multiply" else sp.Integer(1), target)
            current, ops = target, (ops[1:] if op == "multiply" else ops)
        else:
            current, ops = self.small(first), ops[1:]
        if not ops:
            self.lines.append(f"numpy.copyto({target}, {current})")
        for op, f in ops:
            self.lines.append(f"numpy.{op}({current}, {self.operand(f)}, out={target})")
            current = target


@dataclass(frozen=True)
class BlockFunction:
    name: str
    params: tuple[str, ...]   #: the arrays it reads, sorted
    temps: tuple[str, ...]    #: scratch buffers shaped like ``out``
    body: tuple[str, ...]
    math: str                 #: the expression, printed plainly, for the docstring


class BlockCollector:
    """The block functions one generated module needs, named once, in order of first use."""

    def __init__(self):
        self.functions: dict[sp.Expr, BlockFunction] = {}

    def name_for(self, expr: sp.Expr, hint: str) -> str:
        if expr not in self.functions:
            taken = {f.name for f in self.functions.values()}
            name, k = f"_{hint}", 2
            while name in taken:
                name, k = f"_{hint}_{k}", k + 1
            self.functions[expr] = block_function(name, expr)
        return self.functions[expr].name

    def all(self) -> list[BlockFunction]:
        return list(self.functions.values())


def block_function(name: str, expr: sp.Expr) -> BlockFunction:
    em = _Emitter()
    em.emit(expr, "_out")
    return BlockFunction(name, tuple(array_arguments(expr)),
                         tuple(f"t{k}" for k in range(em.temps)), tuple(em.lines), code(expr))
