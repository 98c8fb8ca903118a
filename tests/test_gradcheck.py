"""CS231n-style numerical gradient check of every backward form, in float64.

``eval_numerical_gradient_array`` below is the assignment's central difference:
each entry of x, gamma and beta is nudged IN PLACE by +-h (h = 1e-5), the
forward pass is called again, and the change of ``sum(out * dout)`` is divided
by 2h.  Because gamma and beta are changed in place, the test also checks that
the kernels read gamma and beta when they are called (nothing is captured
earlier).  The analytic gradients come from a separate forward pass.

Error measure (tests/helpers.py): max|a - b| / max(max|a|, max|b|, tiny).
Bounds: 1e-8 for the (N, D) layers, 1e-6 for the 4-D layers.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from helpers import backward_params, make_case, rel_error

import generated

H = 1e-5
SEEDS = (0, 1)


def eval_numerical_gradient_array(f, x, df, h=H):
    """Numerical gradient of sum(f() * df) with respect to the array x, changed in place."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        pos = f().copy()
        x[ix] = oldval - h
        neg = f().copy()
        x[ix] = oldval
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def _bound(variant):
    return 1e-6 if variant.ndim == 4 else 1e-8


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("variant, mode, axis, backward", backward_params())
def test_numerical_gradient(variant, mode, axis, backward, seed):
    rng = np.random.default_rng([seed, zlib.crc32(backward.encode()), axis, mode == "test"])
    case = make_case(variant, rng, mode=mode, axis=axis, eps=float(rng.choice([1e-5, 1e-2])),
                     scale=float(rng.uniform(0.5, 2.0)), offset=float(rng.uniform(-1, 1)))
    params = case.params()
    x_before = case.x.copy()
    param_before = [p.copy() for p in params]

    def f():
        return case.forward(param=case.fresh_param())[0]

    numeric = [eval_numerical_gradient_array(f, a, case.dout) for a in (case.x, *params)]
    # the in-place nudges were undone exactly
    assert np.array_equal(case.x, x_before)
    assert all(np.array_equal(a, b) for a, b in zip(params, param_before))

    _, cache = case.forward()
    analytic = getattr(generated, backward)(case.dout, cache)
    assert len(analytic) == len(numeric)
    bound = _bound(variant)
    names = ("dx", "dgamma", "dbeta")
    errors = {n: rel_error(a, b) for n, a, b in zip(names, analytic, numeric)}
    assert all(e <= bound for e in errors.values()), f"{case.x.shape}: {errors} (bound {bound:g})"

