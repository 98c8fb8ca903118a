"""derive.math.seeded: sympy.factor takes the same random draws on every run, whatever ran before it,
and leaves SymPy's random number generator as it found it."""
from __future__ import annotations

import sympy as sp
from sympy.core import random as sympy_random
from sympy.polys import factortools

from derive.math import seeded


def _draws(monkeypatch, factor, expr, before):
    """The numbers Wang's algorithm draws while ``factor(expr)`` runs, SymPy's generator seeded with
    ``before`` first (as if other work had run)."""
    drawn = []
    original = sympy_random._randint   # sympy's own, not a recorder of an earlier call

    def recording(seed=None):
        draw = original(seed)

        def randint(a, b):
            drawn.append(draw(a, b))
            return drawn[-1]
        return randint

    monkeypatch.setattr(factortools, "_randint", recording)
    sympy_random.rng.seed(before)
    result = factor(expr)
    return result, drawn


def _product():
    x, y, z = sp.symbols("x y z")
    return sp.expand((x * y + z**2 + 3) * (x**2 - y * z + 2) * (x + y + z + 1)), (x, y, z)


def test_factor_takes_the_same_draws_whatever_ran_before(monkeypatch):
    expr, _ = _product()
    first, drawn_a = _draws(monkeypatch, seeded.factor, expr, 71)
    second, drawn_b = _draws(monkeypatch, seeded.factor, expr, 5)
    assert drawn_a, "the expression should need Wang's algorithm (random evaluation points)"
    assert drawn_a == drawn_b
    assert first == second == sp.factor(expr)
    assert len(sp.Mul.make_args(first)) == 3


def test_sympys_own_factor_draws_differently_so_the_test_above_can_fail(monkeypatch):
    expr, _ = _product()
    _, drawn_a = _draws(monkeypatch, sp.factor, expr, 71)
    _, drawn_b = _draws(monkeypatch, sp.factor, expr, 5)
    assert drawn_a != drawn_b


def test_the_generator_is_given_back_its_state():
    expr, (x, y, _) = _product()
    sympy_random.rng.seed(123)
    state = sympy_random.rng.getstate()
    seeded.factor(expr)
    seeded.simplify((x**2 - y**2) / (x - y))
    seeded.limit(sp.sin(x) / x, x, 0)
    seeded.solve(x**2 - 4 * x + 3, x)
    assert sympy_random.rng.getstate() == state


def test_derive_calls_sympys_factor_simplify_limit_and_solve_through_seeded_only():
    import re
    from pathlib import Path

    import derive

    bare = re.compile(r"\b(?:sp|sympy)\.(?:factor|simplify|limit|solve)\(|\.(?:factor|simplify)\(\)|"
                      r"from sympy(?:\.\w+)* import[^\n]*\b(?:factor|simplify|limit|solve)\b")
    found = [f"{path.name}:{n}" for path in Path(derive.__file__).parent.rglob("*.py") if path.name != "seeded.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if bare.search(line)]
    assert not found, f"call derive.math.seeded's factor/simplify/limit/solve instead: {found}"
