"""A SymPy printer for the scalar and tile expressions inside Triton kernels (triton.language).

Every value in a kernel is a tensor of the accumulation dtype (float32, or float64 for float64
inputs), so the printer only names what it reads and spells each operation the way Triton
computes it as torch does: a quotient and a square root rounded to nearest (``_div``, ``_sqrt``,
helpers of the generated module that pick ``tl.div_rn``/``tl.sqrt_rn`` in float32, where plain
``/`` and ``tl.sqrt`` are approximate).
"""
from __future__ import annotations

from collections.abc import Mapping

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter
from sympy.printing.precedence import PRECEDENCE, precedence

#: SymPy functions and the triton.language function that computes each
FUNCTIONS = {"exp": "tl.exp", "log": "tl.log", "sin": "tl.sin", "cos": "tl.cos", "Abs": "tl.abs",
             "erf": "tl.erf"}


class TritonPrinter(PythonCodePrinter):
    """Prints one expression of a kernel: every symbol is a load, a tile or a local.

    ``loads`` maps a symbol's name to the text that reads it where the expression is evaluated,
    e.g. ``mu -> mu[:, None]`` inside a tile or ``gamma -> gamma[None, :]`` for a parameter that
    varies along the tile's columns; any other symbol is a local of its own name.  Reductions never
    reach this printer: the backend has made each group sum an accumulator.
    """

    def __init__(self):
        super().__init__({"fully_qualified_modules": False, "allow_unknown_functions": False})
        self.loads: Mapping[str, str] = {}

    def print_with(self, expr: sp.Expr, loads: Mapping[str, str]) -> str:
        self.loads = loads
        try:
            return self.doprint(expr)
        finally:
            self.loads = {}

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        return self.loads.get(expr.name, expr.name)

    def _print_Integer(self, expr) -> str:
        """A float literal: an integer literal would make an integer tensor of ``x*0`` or ``0 - a``."""
        return f"{int(expr)}.0"

    def _print_Rational(self, expr) -> str:
        return f"({expr.p}.0/{expr.q}.0)"

    def _print_Float(self, expr) -> str:
        return repr(float(expr))

    def _print_Mul(self, expr: sp.Mul) -> str:
        """A quotient through ``_div`` (rounded to nearest); a denominator that may vanish gives 0
        where it does, as in the other printers (epsilon outside the root at a constant group)."""
        num, den = expr.as_numer_denom()
        if den.free_symbols:
            n, d = self._print(num), self._print(den)
            if all(f.is_positive for f in sp.Mul.make_args(den) if not f.is_Number):
                return f"_div({n}, {d})"
            return f"tl.where(({d}) != 0, _div({n}, tl.where(({d}) != 0, {d}, 1.0)), 0.0)"
        return super()._print_Mul(expr)

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        """Integer powers as products, half-integer powers through ``_sqrt``; others are refused."""
        base, exp = expr.base, expr.exp
        b = self.parenthesize(base, precedence(expr), strict=False)
        if exp.is_Integer and exp > 0:
            return "(" + "*".join([b] * int(exp)) + ")"
        if exp.is_Integer and exp < 0:
            return f"_div(1.0, {self._print(base ** -exp)})"
        if exp.is_Rational and exp.q == 2:
            root = f"_sqrt({self._print(base)})"
            whole = (exp.p - 1) // 2          # base**(p/2) = sqrt(base) * base**((p - 1)/2)
            if whole == 0:
                return root
            if whole > 0:
                return f"({root}*{self.parenthesize(base ** whole, PRECEDENCE['Mul'])})"
            return f"_div(1.0, {self._print(base ** -sp.Rational(exp.p, 2))})"
        raise TypeError(f"the Triton printer cannot print the power {expr} "
                        "(integer and half-integer exponents only)")

    def _print_Function(self, expr) -> str:
        name = type(expr).__name__
        if name in FUNCTIONS:
            return f"{FUNCTIONS[name]}({', '.join(self._print(a) for a in expr.args)})"
        raise TypeError(f"the Triton printer cannot print {name} (it prints {', '.join(sorted(FUNCTIONS))})")

    _print_exp = _print_log = _print_sin = _print_cos = _print_Abs = _print_erf = _print_Function

    def _print_StopGrad(self, expr) -> str:
        """stop_gradient only changes derivatives: its value is its argument."""
        return self._print(expr.args[0])

    def _print_ClampMin(self, expr) -> str:
        return f"tl.maximum({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_ClampMax(self, expr) -> str:
        return f"tl.minimum({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_Heaviside(self, expr) -> str:
        """The step of a clamp's derivative: 1 above 0, 0 below, its second argument at 0."""
        z = self._print(expr.args[0])
        h0 = self._print(expr.args[1]) if len(expr.args) > 1 else "0.5"
        return f"tl.where(({z}) > 0, 1.0, tl.where(({z}) == 0, {h0}, 0.0))"

    _print_Step = _print_Heaviside

    def _print_Exp(self, expr) -> str:
        """The graph's functions of one value (derive.forward.functions), with triton.language's."""
        return f"tl.exp({self._print(expr.args[0])})"

    def _print_Log(self, expr) -> str:
        return f"tl.log({self._print(expr.args[0])})"

    def _print_Sigmoid(self, expr) -> str:
        return f"tl.sigmoid({self._print(expr.args[0])})"

    def _print_Tanh(self, expr) -> str:
        """tanh(u) as 2*sigmoid(2u) - 1: triton.language has a sigmoid and no tanh."""
        return f"(2.0*tl.sigmoid(2.0*({self._print(expr.args[0])})) - 1.0)"

    def _print_Softplus(self, expr) -> str:
        """log(1 + exp(u)) as max(u, 0) + log(1 + exp(-|u|)): no overflow for a large u."""
        u = self._print(expr.args[0])
        return f"(tl.maximum({u}, 0.0) + tl.log(1.0 + tl.exp(-tl.abs({u}))))"

    def _print_Absolute(self, expr) -> str:
        return f"tl.abs({self._print(expr.args[0])})"

    def _print_Sign(self, expr) -> str:
        u = self._print(expr.args[0])
        return f"tl.where(({u}) > 0, 1.0, tl.where(({u}) < 0, -1.0, 0.0))"

    def _print_BatchSum(self, expr) -> str:
        raise TypeError(f"unscheduled reduction {expr}: the Triton backend must name it first")

    _print_ParamSum = _print_OuterSum = _print_BatchSum
