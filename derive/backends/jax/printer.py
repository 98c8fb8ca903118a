"""The JAX printer: the tensor printer, with jax.numpy's reductions."""
from __future__ import annotations

import sympy as sp

from ..tensors import TensorPrinter


class JaxPrinter(TensorPrinter):
    """The same expressions as jax.numpy: sums are jnp.sum(..., axis=axes, keepdims=True)."""

    def _sum(self, arg: sp.Expr, axes: str) -> str:
        return f"jnp.sum({self._print(arg)}, axis={axes}, keepdims=True)"


def jax_code(expr: sp.Expr) -> str:
    return JaxPrinter().doprint(expr)
