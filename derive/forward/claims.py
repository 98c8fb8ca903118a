"""Extra claims a library entry may ask the proof engine to check (its ``EXTRAS``).

Each claim is a function of the finished symbolic derivation that returns
(claim, holds).  They are specific to some normalizations, so they live with the
entries that name them, not in the proof engine.
"""
from __future__ import annotations

import sympy as sp


def sum_vanishes(summand: str):
    """A reduction in the staged chain rule is identically zero (e.g. sum_k (x_k - mu) in dmu)."""
    def claim(context) -> tuple[str, bool]:
        target = sp.sympify(summand, locals=context.model.symbols)
        return (f"sum_k ({summand}) == 0 in the stages",
                any(sp.expand(s.args[0] - target) == 0 for s in context.vanishing))
    claim.__name__ = f"sum_vanishes({summand!r})"
    return claim


def gradient_sums_to_zero(context) -> tuple[str, bool]:
    """sum_i dx_i == 0: the output does not change when every input moves by the same amount."""
    return "sum_i dx_i == 0", context.sum_dx == 0
