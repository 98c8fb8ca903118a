"""A small torch printer for the synchronized batch norm (generated/sync).

Per-group quantities are tensors with the reduced axes kept (length 1), so broadcasting
against x does the rest; per-rank parts are tensors with the ranks on axis 0.  The torch
backend's printer will replace this one.
"""
from __future__ import annotations

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.pycode import PythonCodePrinter

from ...math.algebra import BatchSum, Elem


class TorchSyncPrinter(PythonCodePrinter):
    """Prints the split's expressions as torch; ``dims`` are the reduced axes of x."""

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        """Symbols are already named as the generated code's variables."""
        return expr.name

    def _print_BatchSum(self, expr: BatchSum) -> str:
        """A local reduction over the group; a plain sum of x accumulates in float64 (x at 1e4
        from zero keeps its digits)."""
        exact = ", dtype=torch.float64" if isinstance(expr.args[0], Elem) else ""
        return f"torch.sum({self._print(expr.args[0])}, dim=dims, keepdim=True{exact})"

    def _print_OuterSum(self, expr) -> str:
        """Group sums summed over the groups that share a parameter: a synchronized entry's groups
        span the batch and its parameters are one value per group, so there is nothing to add."""
        return self._print(expr.args[0])

    def _print_PartSum(self, expr) -> str:
        """A sum over the ranks' parts, which lie along axis 0."""
        return f"torch.sum({self._print(expr.args[0])}, dim=0)"

    def _print_Rational(self, expr: sp.Rational) -> str:
        """A Python number, so torch keeps the tensor's dtype."""
        return f"{expr.p}/{expr.q}"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        """Square roots as torch.sqrt, reciprocal roots as torch.rsqrt, negative powers as divisions."""
        if expr.exp == sp.S.Half:
            return f"torch.sqrt({self._print(expr.base)})"
        if expr.exp == -sp.S.Half:
            return f"torch.rsqrt({self._print(expr.base)})"
        if expr.exp.is_Integer and expr.exp < 0:
            return f"1/{self.parenthesize(expr.base ** -expr.exp, PRECEDENCE['Pow'])}"
        return super()._print_Pow(expr, rational=rational)


def code(expr: sp.Expr) -> str:
    return TorchSyncPrinter({"fully_qualified_modules": True}).doprint(expr)
