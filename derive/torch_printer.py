"""SymPy printers for the tensor backends: the kernel IR as PyTorch (and JAX) tensor code.

The same notation as :class:`~derive.printers.KernelPrinter` (per-element symbols are
tensors of the working view, per-group values keep the reduced axes with length 1);
only the calls change.  Functions whose arguments may be Python numbers (a clamp of
a constant in test mode) and every rule a backend spells its own way go through the
generated runtime module ``_rt``.
"""
from __future__ import annotations

import sympy as sp

from .printers import KernelPrinter


class TorchPrinter(KernelPrinter):
    """Prints derivation expressions as differentiable torch operations (autograd can
    differentiate the printed backward again: that is the second order)."""

    def __init__(self):
        super().__init__(fast=False)

    def _sum(self, arg: sp.Expr, axes: str) -> str:
        return f"{self.parenthesize(arg, 1000, strict=True)}.sum(dim={axes}, keepdim=True)"

    def _print_BatchSum(self, expr) -> str:
        """A reduction over the group: tensor.sum over the group axes, kept for broadcasting."""
        return self._sum(expr.args[0], "axes")

    def _print_ParamSum(self, expr) -> str:
        """A parameter gradient: summed over every axis that gamma does not span."""
        return self._sum(expr.args[0], "param_sum_axes")

    def _print_OuterSum(self, expr) -> str:
        """Group sums summed again outside the group; torch reads dim=() as 'every axis', so
        the runtime returns the tensor itself when there is no outer axis."""
        return f"_rt.total({self._print(expr.args[0])}, outer_axes)"

    def _print_Mul(self, expr: sp.Mul) -> str:
        """A quotient whose denominator may vanish is 0 where it does (KernelPrinter's rule)."""
        num, den = expr.as_numer_denom()
        if den != 1 and not all(f.is_positive for f in sp.Mul.make_args(den) if not f.is_Number):
            return f"_rt.divide_or_zero({self._print(num)}, {self._print(den)})"
        return super(KernelPrinter, self)._print_Mul(expr)

    def _print_StopGrad(self, expr) -> str:
        """stop_gradient: the value of its argument, detached from autograd."""
        return f"_rt.stop_gradient({self._print(expr.args[0])})"

    def _print_ClampMin(self, expr) -> str:
        """max(a, lo) with torch's derivative at the kink (clamp_min); a may be a number."""
        return f"_rt.clamp_min({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_ClampMax(self, expr) -> str:
        """min(a, hi) with torch's derivative at the kink (clamp_max); a may be a number."""
        return f"_rt.clamp_max({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_Heaviside(self, expr) -> str:
        """The step of a clamp's derivative, with its value at 0."""
        return f"_rt.step({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        """Square roots through the runtime (the argument may be a tensor or a number)."""
        if expr.exp == sp.S.Half:
            return f"_rt.sqrt({self._print(expr.base)})"
        if expr.exp == -sp.S.Half:
            return f"1/_rt.sqrt({self._print(expr.base)})"
        return super()._print_Pow(expr, rational=rational)


class JaxPrinter(TorchPrinter):
    """The same expressions as jax.numpy: sums are jnp.sum(..., axis=axes, keepdims=True)."""

    def _sum(self, arg: sp.Expr, axes: str) -> str:
        return f"jnp.sum({self._print(arg)}, axis={axes}, keepdims=True)"


def torch_code(expr: sp.Expr) -> str:
    return TorchPrinter().doprint(expr)


def jax_code(expr: sp.Expr) -> str:
    return JaxPrinter().doprint(expr)
