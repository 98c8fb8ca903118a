"""generated.jax: the derived functions (jax.custom_jvp whose JVP is the transpose of the derived
backward) against JAX's own autodiff of the forward, and jax.test_util.check_grads up to order 2 in
forward and reverse mode."""
from __future__ import annotations

import re

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
    custom_jvp rules are the same under jit.  check_grads runs the plain, eager function."""
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
    tangents = (rand(*shape, seed=8), rand(C, seed=9), rand(C, seed=10))
    jvp_ours, jvp_ref = (jax.jit(lambda *a, f=f: jax.jvp(f, a, tangents)[1])(*args) for f in (ours, ref))
    np.testing.assert_allclose(jvp_ours, jvp_ref, rtol=1e-10, atol=1e-12)   # jax.jvp failed on every function
    check_grads(ours, args, order=2, modes=("fwd", "rev"))


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


# ------------------------------------------------------------------ issue 22: against torch on the same input

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402
from _torch_cases import HALF_INPUTS, REFUSED, ZERO_SIZE  # noqa: E402


def to_jax(a):
    """A torch tensor as the JAX array of the same values and dtype (anything else as it is)."""
    if not isinstance(a, torch.Tensor):
        return a
    if a.dtype == torch.bfloat16:
        return jnp.asarray(a.float().numpy()).astype(jnp.bfloat16)
    return jnp.asarray(a.numpy())


@pytest.mark.parametrize("label,fn,x,args,kwargs", HALF_INPUTS, ids=[h[0] for h in HALF_INPUTS])
def test_half_inputs_are_normalized_as_torch_does(label, fn, x, args, kwargs):
    """Output and dx within two units of the half dtype's rounding of torch's float64 result."""
    dy = torch.linspace(-1, 1, x.numel()).reshape(x.shape)
    xx = x.double().requires_grad_()
    want = getattr(TF, fn)(xx, *args, **kwargs)
    want.backward(dy.double())
    f = lambda a: getattr(gj, fn)(a, *args, **kwargs)  # noqa: E731
    out, dx = jax.jit(lambda a, d: (f(a), jax.vjp(f, a)[1](d)[0]))(to_jax(x), to_jax(dy.to(x.dtype)))
    ulp = torch.finfo(x.dtype).eps
    for ours, theirs in ((out, want.detach()), (dx, xx.grad)):
        assert ours.dtype == to_jax(x).dtype
        ours, theirs = np.asarray(ours.astype(jnp.float64)), theirs.numpy()
        assert np.all(np.isfinite(ours))
        error = np.abs(ours - theirs).max()
        assert error <= 2 * ulp * max(np.abs(theirs).max(), 1.0), error


JAX_REFUSED = [r for r in REFUSED if r[5]]


@pytest.mark.parametrize("label,fn,args,kwargs,arg,_", JAX_REFUSED, ids=[r[0] for r in JAX_REFUSED])
def test_refused_with_torchs_exception_naming_the_argument(label, fn, args, kwargs, arg, _):
    with pytest.raises(Exception) as ours:
        getattr(gj, fn)(*map(to_jax, args), **{k: to_jax(v) for k, v in kwargs.items()})
    with pytest.raises(Exception) as theirs:
        getattr(TF, fn)(*args, **kwargs)
    assert type(ours.value) is type(theirs.value), repr(ours.value)
    assert re.match(rf"{fn}: .*\b{arg}\b", str(ours.value)), str(ours.value)


JAX_ZERO_SIZE = [z for z in ZERO_SIZE if z[0] != "instance_norm-N=0"]  # JAX's instance_norm has no buffers


@pytest.mark.parametrize("label,fn,shape,make", JAX_ZERO_SIZE, ids=[z[0] for z in JAX_ZERO_SIZE])
def test_zero_size_batch_returns_what_torch_returns(label, fn, shape, make):
    args, kwargs = make(shape[1] if len(shape) > 1 else 0)
    x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    targs = tuple(a.double() if isinstance(a, torch.Tensor) else a for a in args)
    want = getattr(TF, fn)(x, *targs, **kwargs)
    want.sum().backward()
    f = lambda a: getattr(gj, fn)(a, *map(to_jax, targs), **kwargs)  # noqa: E731
    out, dx = jax.jit(lambda a: (f(a), jax.grad(lambda b: jnp.sum(f(b)))(a)))(to_jax(x.detach()))
    assert out.shape == tuple(want.shape) and out.dtype == jnp.float64
    np.testing.assert_array_equal(dx, x.grad.numpy())


def test_batch_of_one_in_training_is_refused_as_in_torch():
    """It returned zeros; torch raises ValueError."""
    with pytest.raises(ValueError, match="^batch_norm: expected more than 1 value per channel when training"):
        gj.batch_norm(jnp.ones((1, 3, 1)), None, None, training=True)


def test_running_statistics_are_returned_as_torch_updates_its_buffers():
    """Issue 22/23: float16 buffers beside data of std 300 (torch: about 1e4, no inf), the
    buffers passed are not modified, an empty batch leaves them as they are; the README and
    the docstring say how the running statistics come back."""
    x = torch.linspace(-1, 1, 4 * 8 * 25).reshape(4, 8, 25).half() * 520
    rm, rv = torch.zeros(8, dtype=torch.float16), torch.ones(8, dtype=torch.float16)
    TF.batch_norm(x, rm, rv, training=True)
    jrm, jrv = jnp.zeros(8, jnp.float16), jnp.ones(8, jnp.float16)
    _, (new_rm, new_rv) = gj.batch_norm(to_jax(x), jrm, jrv, training=True, return_running=True)
    assert new_rv.dtype == jnp.float16 and bool(jnp.all(jnp.isfinite(new_rv)))
    np.testing.assert_allclose(np.asarray(new_rv, np.float64), rv.double().numpy(), rtol=2e-3)
    np.testing.assert_allclose(np.asarray(new_rm, np.float64), rm.double().numpy(), atol=1e-2)
    assert float(jrv[0]) == 1.0
    _, same = gj.batch_norm(jnp.ones((0, 8), jnp.float16), jrm, jrv, training=True, return_running=True)
    assert same[0] is jrm and same[1] is jrv
    assert "return_running=True" in gj.batch_norm.__doc__
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "return_running=True" in readme


def test_batch_renorm_with_closed_clips_is_batch_norm():
    """Issue 22: r_max = 1 and d_max = 0 on every backend (here: JAX's own batch norm)."""
    x = rand(6, C, seed=8, offset=5.0)
    np.testing.assert_allclose(gj.batch_renorm(x, RM, RV, training=True, r_max=1.0, d_max=0.0),
                               ref_norm(x, (0,), 1e-5), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="^batch_renorm: d_max must be at least 0"):
        gj.batch_renorm(x, RM, RV, training=True, d_max=-1.0)
