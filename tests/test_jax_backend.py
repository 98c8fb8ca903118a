"""generated.jax: the derived custom_vjp functions against JAX's own autodiff of the forward,
and jax.test_util.check_grads up to order 2 (reverse mode: custom_vjp has no JVP)."""
from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import generated.jax as gj  # noqa: E402


def rand(*shape, seed=0, offset=0.0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) + offset)


def ref_norm(x, axes, eps):
    """JAX's own forward (the oracle): (x - mean) / sqrt(var + eps)."""
    mu = jnp.mean(x, axis=axes, keepdims=True)
    return (x - mu) / jnp.sqrt(jnp.mean((x - mu) ** 2, axis=axes, keepdims=True) + eps)


def affine(y, w, b, shape):
    return y * w.reshape(shape) + b.reshape(shape)


C = 3
W, B = rand(C, seed=1), rand(C, seed=2)
RM, RV = rand(C, seed=3), jnp.abs(rand(C, seed=4)) + 0.5

# name: (ours(x, w, b), reference(x, w, b), x shape)
CASES = {
    "batch_norm_train": (lambda x, w, b: gj.batch_norm(x, RM, RV, w, b, training=True),
                         lambda x, w, b: affine(ref_norm(x, (0, 2), 1e-5), w, b, (1, C, 1)), (5, C, 2)),
    "batch_norm_eval": (lambda x, w, b: gj.batch_norm(x, RM, RV, w, b, training=False),
                        lambda x, w, b: affine((x - RM.reshape(1, C, 1)) / jnp.sqrt(RV.reshape(1, C, 1) + 1e-5),
                                               w, b, (1, C, 1)), (5, C, 2)),
    "instance_norm": (lambda x, w, b: gj.instance_norm(x, w, b),
                      lambda x, w, b: affine(ref_norm(x, (2,), 1e-5), w, b, (1, C, 1)), (2, C, 4)),
    "group_norm": (lambda x, w, b: gj.group_norm(x, 2, jnp.tile(w, 2), jnp.tile(b, 2)),
                   lambda x, w, b: affine(ref_norm(x.reshape(2, 2, 3, 4), (2, 3), 1e-5).reshape(2, 6, 4),
                                          jnp.tile(w, 2), jnp.tile(b, 2), (1, 6, 1)), (2, 2 * C, 4)),
    "layer_norm": (lambda x, w, b: gj.layer_norm(x, (C, 2), jnp.stack([w, b], 1), jnp.stack([b, w], 1)),
                   lambda x, w, b: ref_norm(x, (1, 2), 1e-5) * jnp.stack([w, b], 1) + jnp.stack([b, w], 1),
                   (4, C, 2)),
    "rms_norm": (lambda x, w, b: gj.rms_norm(x, (C,), w, 1e-6),
                 lambda x, w, b: x / jnp.sqrt(jnp.mean(x ** 2, -1, keepdims=True) + 1e-6) * w, (4, C)),
    "normalize": (lambda x, w, b: gj.normalize(x, dim=1),
                  lambda x, w, b: x / jnp.maximum(jnp.sqrt(jnp.sum(x ** 2, 1, keepdims=True)), 1e-12), (4, C)),
    "mean_only_batch_norm": (lambda x, w, b: gj.mean_only_batch_norm(x, RM, b, training=True),
                             lambda x, w, b: x - jnp.mean(x, 0) + b, (5, C)),
    "weight_standardization": (lambda x, w, b: gj.weight_standardization(x),
                               lambda x, w, b: ref_norm(x.reshape(4, -1), (1,), 1e-5).reshape(x.shape), (4, C, 2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_against_jax_autodiff_and_check_grads(name):
    """The values, gradients and Hessians are compared under jax.jit (one XLA compile each, where
    op-by-op dispatch compiles every operation of a Hessian separately: 3x faster here); the
    custom_vjp rules are the same under jit.  check_grads runs the plain, eager function."""
    ours, ref, shape = CASES[name]
    x = rand(*shape, seed=5, offset=0.5)
    args = (x, W, B)
    np.testing.assert_allclose(jax.jit(ours)(*args), jax.jit(ref)(*args), rtol=1e-12, atol=1e-12)
    dy = rand(*shape, seed=6)
    loss = lambda f: (lambda *a: jnp.sum(f(*a) * dy))  # noqa: E731
    grads = [jax.jit(jax.grad(loss(f), (0, 1, 2)))(*args) for f in (ours, ref)]
    for g_ours, g_ref in zip(*grads):
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-10, atol=1e-12)
    hess_ours, hess_ref = (jax.jit(jax.hessian(loss(f)))(*args) for f in (ours, ref))
    np.testing.assert_allclose(hess_ours, hess_ref, rtol=1e-8, atol=1e-10)
    check_grads(ours, args, order=2, modes=("rev",))


def test_running_statistics_follow_torch():
    x = rand(6, C, seed=7)
    _, (rm, rv) = gj.batch_norm(x, RM, RV, training=True, momentum=0.1, return_running=True)
    np.testing.assert_allclose(rm, 0.9 * RM + 0.1 * x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(rv, 0.9 * RV + 0.1 * x.var(0, ddof=1), rtol=1e-12)


def test_check_grads_can_fail():
    """A wrong VJP (dx scaled by 1.01) is caught."""
    import generated.jax.layernorm as k
    saved = k.backward_train
    k.train.cache_clear()
    k.backward_train = lambda *a, **kw: (saved(*a, **kw)[0] * 1.01, *saved(*a, **kw)[1:])
    try:
        with pytest.raises(AssertionError):
            check_grads(lambda x: gj.layer_norm(x, (C,)), (rand(4, C),), order=1, modes=("rev",))
    finally:
        k.backward_train = saved
        k.train.cache_clear()
