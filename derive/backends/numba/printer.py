"""A SymPy printer for the scalar code inside numba loops. Only the ``_print_X`` we need."""
from __future__ import annotations

from collections.abc import Mapping

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter


class Widen(sp.Function):
    """One term of an unrolled float64 sum, taken to float64 before it is added."""

    nargs = 1


class NumbaPrinter(PythonCodePrinter):
    """Prints one scalar of a kernel loop: every symbol is a load or a local name.

    ``loads`` maps a symbol's name to the text that reads it at the current element
    or group, e.g. ``x -> x[o, g]`` or ``std -> std_g[g]``; any other symbol is
    a local variable or a kernel argument of that name.  Reductions never reach
    this printer: the backend has already turned each BatchSum into an
    accumulator.  One printer serves a whole module, so ``module_imports``
    (``math`` for square roots) collects what the module must import.
    """

    def __init__(self):
        super().__init__({"fully_qualified_modules": True, "allow_unknown_functions": False})
        self.loads: Mapping[str, str] = {}

    def print_with(self, expr: sp.Expr, loads: Mapping[str, str]) -> str:
        self.loads = loads
        try:
            return self.doprint(expr)
        finally:
            self.loads = {}

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        """A load from an array at the loop's indices, or a local of the same name."""
        return self.loads.get(expr.name, expr.name)

    def _print_Mul(self, expr: sp.Mul) -> str:
        """A quotient whose denominator may vanish is 0 where it does (as in the NumPy
        printer, derive/backends/arrays.py): epsilon outside the root at a constant group."""
        num, den = expr.as_numer_denom()
        if den != 1 and not all(f.is_positive for f in sp.Mul.make_args(den) if not f.is_Number):
            d = self._print(den)
            return f"(({self._print(num)})/({d}) if ({d}) != 0 else 0.0)"
        return super()._print_Mul(expr)

    def _print_StopGrad(self, expr) -> str:
        """stop_gradient only changes derivatives: its value is its argument."""
        return self._print(expr.args[0])

    def _print_ClampMin(self, expr) -> str:
        """max(a, lo) of two scalars."""
        return f"max({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_ClampMax(self, expr) -> str:
        """min(a, hi) of two scalars."""
        return f"min({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_Heaviside(self, expr) -> str:
        """The step of a clamp's derivative as a scalar: 1 above 0, 0 below, h0 at 0 (torch's
        rule at the kink)."""
        z = self._print(expr.args[0])
        h0 = self._print(expr.args[1]) if len(expr.args) > 1 else "0.5"
        return f"(1.0 if ({z}) > 0 else (float({h0}) if ({z}) == 0 else 0.0))"

    _print_Step = _print_Heaviside  # derive.algebra.Step: the same step

    def _math(self, function: str, expr) -> str:
        return f"{self._module_format('math.' + function)}({self._print(expr.args[0])})"

    def _print_Exp(self, expr) -> str:
        """The graph's functions of one scalar (derive.forward.functions), with math's."""
        return self._math("exp", expr)

    def _print_Log(self, expr) -> str:
        return self._math("log", expr)

    def _print_Tanh(self, expr) -> str:
        return self._math("tanh", expr)

    def _print_Absolute(self, expr) -> str:
        return f"abs({self._print(expr.args[0])})"

    def _print_Sign(self, expr) -> str:
        u = self._print(expr.args[0])
        return f"(1.0 if ({u}) > 0 else (-1.0 if ({u}) < 0 else 0.0))"

    def _print_Sigmoid(self, expr) -> str:
        """1/(1 + exp(-u)) as (1 + tanh(u/2))/2: no overflow of exp(-u) for a large negative u."""
        return f"(0.5 + 0.5*{self._module_format('math.tanh')}(0.5*({self._print(expr.args[0])})))"

    def _print_Softplus(self, expr) -> str:
        """log(1 + exp(u)) as max(u, 0) + log1p(exp(-|u|)): no overflow for a large u."""
        u = self._print(expr.args[0])
        return (f"(max({u}, 0.0) + {self._module_format('math.log1p')}({self._module_format('math.exp')}"
                f"(-abs({u}))))")

    def _print_BatchSum(self, expr) -> str:
        """A reduction is a loop, not an expression: it must be an accumulator by now."""
        raise TypeError(f"unscheduled reduction {expr}: the numba backend must name it first")

    _print_ParamSum = _print_BatchSum

    def _print_Widen(self, expr: Widen) -> str:
        """numpy.float64(...), so that four float32 terms add without rounding (numba's
        float() of a float32 stays a float32)."""
        return f"{self._module_format('numpy.float64')}({self._print(expr.args[0])})"
