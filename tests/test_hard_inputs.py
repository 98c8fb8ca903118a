"""Issue 14: hard inputs.  Each test here failed on the kernels before the fix it covers.

Both backends (generated and generated.numba) are held to the same answer or the
same error; torch float64 autograd is the reference for the numbers.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import generated

try:
    import generated.numba as gn
except ImportError:  # pragma: no cover
    gn = None

BACKENDS = [pytest.param(generated, id="numpy"),
            pytest.param(gn, id="numba", marks=pytest.mark.skipif(gn is None, reason="no numba"))]


def _torch(name, x, dy, eps=1e-5):
    """dx and out of one variant in float64 autograd, x of shape (N, D)."""
    xt = torch.tensor(np.ascontiguousarray(x, dtype=np.float64)).requires_grad_(True)
    if name in ("batchnorm", "batchnorm_eps_outside"):
        mean, var = xt.mean(0), xt.var(0, correction=0)
        std = torch.sqrt(var) + eps if name.endswith("outside") else torch.sqrt(var + eps)
        out = (xt - mean) / std
    elif name == "layernorm":
        out = F.layer_norm(xt, (xt.shape[-1],), eps=eps)
    else:
        out = xt / torch.sqrt((xt * xt).mean(-1, keepdim=True) + eps)
    out.backward(torch.tensor(np.asarray(dy, dtype=np.float64)))
    return out.detach().numpy(), xt.grad.numpy()


def _call(mod, name, x, param=None):
    d = x.shape[1]
    g, b = np.ones(d, x.dtype), np.zeros(d, x.dtype)
    if name == "rmsnorm":
        return mod.rmsnorm_forward(x, g, dict(param or {}))
    extra = {"mode": "train"} if name.startswith("batchnorm") else {}
    return getattr(mod, f"{name}_forward")(x, g, b, {**extra, **(param or {})})


def _backwards(mod, name):
    prefix = f"{name}_backward"
    return [getattr(mod, n) for n in dir(mod) if n == prefix or n.startswith(prefix + "_")]


# ------------------------------------------------------------------ item 5: a float32 spread of 1e19 and more


@pytest.mark.parametrize("mod", BACKENDS)
@pytest.mark.parametrize("name", ["batchnorm", "batchnorm_eps_outside", "layernorm", "rmsnorm"])
@pytest.mark.parametrize("scale", [3e19, 1e20])
def test_float32_spread_past_the_square_root_of_its_range(mod, name, scale):
    """Squares of 3e19 pass float32's 3.4e38; out and dx are O(1) and O(1/scale), representable."""
    x = np.array([[0.0], [0.0], [scale], [1.0]], np.float32)
    dy = np.array([[1.0], [2.0], [3.0], [-1.0]], np.float32)
    if name in ("layernorm", "rmsnorm"):
        x, dy = x.T.copy(), dy.T.copy()
    want_out, want_dx = _torch(name, x, dy)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out, cache = _call(mod, name, x)
        np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
        for backward in _backwards(mod, name):
            dx = backward(dy, cache)[0]
            assert dx.dtype == np.float32
            np.testing.assert_allclose(dx * scale, want_dx * scale, rtol=1e-4, atol=1e-5,
                                       err_msg=backward.__name__)
