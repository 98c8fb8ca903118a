"""The generated batch-norm kernels against independent oracles.

Oracles: central finite differences of the forward kernel, and the brute-force
Jacobian of the forward model, built and differentiated by SymPy and lambdified.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from _derived import derived

import generated as g
from derive.math.algebra import indexed
from derive.proofs import first as proofs

BACKWARDS = [g.batchnorm_backward, g.batchnorm_backward_alt]


def rel_error(a, b):
    return np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))


def numeric_grad(f, array, dout, h=1e-5):
    """Central differences of sum(f() * dout) with respect to ``array``, perturbed in place."""
    grad = np.zeros_like(array)
    for idx in np.ndindex(array.shape):
        old = array[idx]
        array[idx] = old + h
        plus = np.sum(f() * dout)
        array[idx] = old - h
        minus = np.sum(f() * dout)
        array[idx] = old
        grad[idx] = (plus - minus) / (2 * h)
    return grad


@pytest.fixture
def batch():
    rng = np.random.default_rng(1)
    n, d = 5, 4
    return (rng.normal(2, 3, (n, d)), rng.normal(1, 0.5, d), rng.normal(0, 1, d), rng.normal(size=(n, d)))


@pytest.mark.parametrize("backward", BACKWARDS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("mode", ["train", "test"])
def test_finite_differences(batch, backward, mode):
    x, gamma, beta, dout = batch
    rng = np.random.default_rng(2)
    param = {"mode": mode, "running_mean": rng.normal(size=4), "running_var": rng.uniform(0.5, 2, 4)}

    def f():
        return g.batchnorm_forward(x, gamma, beta, dict(param))[0]

    _, cache = g.batchnorm_forward(x, gamma, beta, dict(param))
    dx, dgamma, dbeta = backward(dout, cache)
    assert rel_error(dx, numeric_grad(f, x, dout)) < 1e-8
    assert rel_error(dgamma, numeric_grad(f, gamma, dout)) < 1e-8
    assert rel_error(dbeta, numeric_grad(f, beta, dout)) < 1e-8


@pytest.mark.parametrize("backward", BACKWARDS, ids=lambda f: f.__name__)
def test_brute_force_jacobian(backward):
    """dx of every feature equals J^T dy, J from sympy.diff of the written-out forward pass."""
    size, features, eps = 4, 3, 1e-5
    d = derived("batchnorm")
    c = proofs.concrete(d.model, size)
    jac = sp.Matrix([[sp.diff(y, x) for x in c.xs] for y in c.ys])
    gamma = d.model.gamma
    f = sp.lambdify([c.xs, gamma, d.model.sym("eps")], jac, "numpy")
    rng = np.random.default_rng(3)
    x, dout = rng.normal(size=(size, features)), rng.normal(size=(size, features))
    gam, bet = rng.normal(size=features), rng.normal(size=features)
    _, cache = g.batchnorm_forward(x, gam, bet, {"mode": "train", "eps": eps})
    dx = backward(dout, cache)[0]
    for k in range(features):
        expected = np.asarray(f(list(x[:, k]), gam[k], eps), dtype=float).T @ dout[:, k]
        assert rel_error(dx[:, k], expected) < 1e-12
    assert indexed(gamma, 0) not in jac.free_symbols  # gamma is shared by the feature


def test_staged_and_compact_agree():
    rng = np.random.default_rng(4)
    x, dout = rng.normal(5, 2, (64, 16)), rng.normal(size=(64, 16))
    _, cache = g.batchnorm_forward(x, rng.normal(size=16), rng.normal(size=16), {"mode": "train"})
    for a, b in zip(g.batchnorm_backward(dout, cache), g.batchnorm_backward_alt(dout, cache)):
        assert np.max(np.abs(a - b)) <= 1e-12 * max(1.0, np.max(np.abs(a)))


def test_train_mode_normalizes_and_updates_running_stats():
    rng = np.random.default_rng(5)
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    param = {"mode": "train", "momentum": 0.8}
    xs = [rng.normal(4, 2, (10, 3)) for _ in range(2)]
    for x in xs:
        out, _ = g.batchnorm_forward(x, gamma, beta, param)
        xhat = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
        np.testing.assert_allclose(out, gamma * xhat + beta, rtol=1e-12, atol=1e-12)
    mean = 0.8 * (0.2 * xs[0].mean(0)) + 0.2 * xs[1].mean(0)
    var = 0.8 * (0.2 * xs[0].var(0)) + 0.2 * xs[1].var(0)
    np.testing.assert_allclose(param["running_mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(param["running_var"], var, rtol=1e-12)


def test_test_mode_uses_running_stats():
    rng = np.random.default_rng(6)
    x, gamma, beta = rng.normal(size=(6, 3)), rng.normal(size=3), rng.normal(size=3)
    rm, rv = rng.normal(size=3), rng.uniform(0.5, 2, 3)
    param = {"mode": "test", "running_mean": rm.copy(), "running_var": rv.copy(), "eps": 1e-3}
    out, cache = g.batchnorm_forward(x, gamma, beta, param)
    np.testing.assert_allclose(out, gamma * (x - rm) / np.sqrt(rv + 1e-3) + beta, rtol=1e-12)
    np.testing.assert_array_equal(param["running_mean"], rm)  # test mode updates nothing
    dx = g.batchnorm_backward(np.ones_like(x), cache)[0]
    np.testing.assert_allclose(dx, np.broadcast_to(gamma / np.sqrt(rv + 1e-3), x.shape), rtol=1e-12)


def test_default_running_stats_are_zeros_then_updated():
    x = np.arange(12.0).reshape(4, 3)
    param = {"mode": "train"}
    g.batchnorm_forward(x, np.ones(3), np.zeros(3), param)
    np.testing.assert_allclose(param["running_mean"], 0.1 * x.mean(0))
    np.testing.assert_allclose(param["running_var"], 0.1 * x.var(0))
