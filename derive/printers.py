"""SymPy printers for our notation. Only the ``_print_X`` methods we need are overridden."""
from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import NumPyPrinter

from .algebra import BatchSum, Elem


class KernelPrinter(NumPyPrinter):
    """Prints derivation expressions as vectorized NumPy over one working view.

    Per-element symbols are full arrays, per-group scalars are arrays with the
    reduced axes kept (length 1), so broadcasting does the rest.  The kernel
    defines ``axes`` (the reduced axes) and ``param_sum_axes`` (the axes that
    gamma does not span).
    """

    def __init__(self, fused_products: bool = False):
        super().__init__({"fully_qualified_modules": True, "allow_unknown_functions": False})
        self.fused_products = fused_products

    def _print_BatchSum(self, expr: BatchSum) -> str:
        """A reduction over the group: a sum over the reduced axes, kept for broadcasting.

        With ``fused_products``, a sum of a product of two arrays is printed as a
        contraction that never builds the full-size product (``sum_of_products``).
        """
        arg = expr.args[0]
        factors = arg.as_ordered_factors() if arg.is_Mul else [arg]
        if (self.fused_products and len(factors) == 2
                and all(isinstance(f, Elem) for f in factors)):
            a, b = (self._print(f) for f in factors)
            return f"_rt.sum_of_products({a}, {b}, axes)"
        return f"numpy.sum({self._print(arg)}, axis=axes, keepdims=True)"

    def _print_ParamSum(self, expr) -> str:
        """A parameter gradient: summed over every axis that gamma does not span."""
        return f"numpy.sum({self._print(expr.args[0])}, axis=param_sum_axes, keepdims=True)"

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        """Symbols are already named as the kernel's variables."""
        return expr.name

    def _print_Rational(self, expr: sp.Rational) -> str:
        """Keep the literal a Python number: NumPy then keeps the array's float dtype."""
        return f"{expr.p}/{expr.q}"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        """Square roots print as numpy.sqrt, reciprocal roots as 1/numpy.sqrt."""
        if expr.exp == sp.S.Half:
            return f"numpy.sqrt({self._print(expr.base)})"
        if expr.exp == -sp.S.Half:
            return f"1/numpy.sqrt({self._print(expr.base)})"
        if expr.exp == -1:
            return f"1/{self.parenthesize(expr.base, sp.printing.precedence.PRECEDENCE['Pow'])}"
        return super()._print_Pow(expr, rational=rational)


def code(expr: sp.Expr, fused_products: bool = False) -> str:
    return KernelPrinter(fused_products).doprint(expr)
