"""sympy.factor, simplify, limit and solve, taking the same random draws on every run.

SymPy factors a multivariate polynomial by Wang's algorithm, and a univariate one over a finite
field by Cantor-Zassenhaus.  Both draw numbers from SymPy's random number generator
(``sympy.core.random.rng``), which is seeded from the system when SymPy is imported.  Most draws
are good, but an unlucky one can make a factorization hundreds of times slower.  For example, one
coefficient of the double backward of tests/test_examples.py's ``linf_like`` factors in 0.1 s
from most seeds, but took 50-65 s from seed 71.  So derive's time changed from run to run, and a
test run once stopped in one factorization for over 20 minutes.  The result does not depend on the
draws: a factorization is unique.

Every call here seeds that generator with :data:`SEED` first.  So an expression takes the same
draws, and the same time, on every run, whatever ran before it.  The generator's state is given
back afterwards, so a user's own use of it is not disturbed.  derive calls these instead of
sympy's own; its worker processes are forked, and a lock keeps threads apart.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import sympy as sp
from sympy.core import random as sympy_random

#: the seed of every call (any fixed value makes the times repeatable; 0 factors every expression of
#: the library, the examples and the tests' graphs in the usual time)
SEED = 0
_LOCK = threading.RLock()


@contextmanager
def same_draws():
    """SymPy's random number generator seeded with SEED for the block, and its state given back after."""
    with _LOCK:
        state = sympy_random.rng.getstate()
        sympy_random.rng.seed(SEED)
        try:
            yield
        finally:
            sympy_random.rng.setstate(state)


def factor(expr, *args, **kwargs):
    """sympy.factor, with the same draws on every run."""
    with same_draws():
        return sp.factor(expr, *args, **kwargs)


def simplify(expr, *args, **kwargs):
    """sympy.simplify (which may factor), with the same draws on every run."""
    with same_draws():
        return sp.simplify(expr, *args, **kwargs)


def limit(expr, *args, **kwargs):
    """sympy.limit (which may factor), with the same draws on every run."""
    with same_draws():
        return sp.limit(expr, *args, **kwargs)


def solve(*args, **kwargs):
    """sympy.solve (which may factor), with the same draws on every run."""
    with same_draws():
        return sp.solve(*args, **kwargs)
