"""Elementwise functions in the reduction algebra and in the exact zero test (issue 19)."""
from __future__ import annotations

import pytest
import sympy as sp

from derive.forward.functions import Absolute, ClampMin, Exp, Sigmoid, Sign, Tanh, from_sympy
from derive.math.algebra import BatchSum, Elem, M, Step, expand_sums, split_by_elements
from derive.proofs.exact import symbolic_zero, zero_modulo_roots
from derive.proofs.rules import holds
from derive.forward.functions import SMOOTH


def test_a_function_of_an_element_is_one_factor_of_a_monomial():
    """The PolynomialError of the issue: Step(z - tau) contains an element of the generators."""
    x, z = Elem("x", real=True), Elem("z", real=True)
    tau, c = sp.symbols("tau c", real=True)
    step = Step(z - tau, 1)
    out = expand_sums(BatchSum(x * (c * step + Sigmoid(c * x) / (1 + x ** 2))), {})
    assert out == c * BatchSum(x * step) + BatchSum(x * Sigmoid(c * x) / (1 + x ** 2))
    pairs = split_by_elements(c * x * step + Exp(c) * x)
    assert sorted(pairs, key=str) == sorted([(c, x * step), (Exp(c), x)], key=str)


def test_sums_of_per_group_functions_pull_out():
    x = Elem("x", real=True)
    c = sp.Symbol("c", real=True)
    assert sp.expand(expand_sums(BatchSum(Tanh(c) * x + Tanh(c)), {}) - Tanh(c) * BatchSum(x) - M * Tanh(c)) == 0


def test_a_root_of_a_function_is_one_algebraic_number():
    """sqrt(1 + tanh(y)**2) squared is 1 + tanh(y)**2, with tanh(y) written two ways."""
    y, a = sp.symbols("y a", real=True)
    root = sp.sqrt(1 + Tanh(a * y - a) ** 2)
    assert zero_modulo_roots(root ** 3 - root * (1 + Tanh(a * (y - 1)) ** 2))
    assert not zero_modulo_roots(root ** 3 - root * (2 + Tanh(a * (y - 1)) ** 2))


def test_abs_and_sign_are_split_on_each_side():
    u = sp.Symbol("u", real=True)
    assert zero_modulo_roots(Absolute(u) * Sign(u) - u * Sign(u) ** 2)
    assert not zero_modulo_roots(Absolute(u) - u)
    assert symbolic_zero(Absolute(u) ** 2 - u ** 2 * Sign(u) ** 2)


def test_a_step_is_0_or_1_at_symbolic_m():
    u = sp.Symbol("u", real=True)
    s = Step(u, 1)
    assert symbolic_zero(s * (s - 1))
    assert symbolic_zero(s + Step(-u, 0) - 1)          # [u >= 0] + [-u > 0] = 1
    assert not symbolic_zero(s * (s - 2))


@pytest.mark.parametrize("kind", SMOOTH + (Absolute,), ids=lambda k: k.__name__)
def test_each_rule_holds(kind):
    assert holds(kind)


def test_sympys_functions_are_read_as_the_graphs():
    x = sp.Symbol("x", real=True)
    assert from_sympy(sp.exp(x) + sp.Abs(x) + sp.Max(x, 1) + sp.tanh(x)) == Exp(x) + Absolute(x) + ClampMin(x, 1) + Tanh(x) \
        or from_sympy(sp.Max(x, 1)) == ClampMin(1, x)
