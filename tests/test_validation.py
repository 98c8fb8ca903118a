"""Issue 5, part one: bad inputs are rejected up front, with an error that names the argument.

One test per rule.  Each rule is checked on every generated forward function,
and, for dout and the cache, on every backward form.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from helpers import BY_NAME, RUNNING, VARIANTS, make_case, reference, rel_error

import generated

NOT_RUNNING = tuple(v for v in VARIANTS if not v.running)
CENTRED = tuple(v for v in VARIANTS if v.centred)
BACKWARDS = [(v, b) for v in VARIANTS for b in v.backward_names]
BAD_KINDS = ("complex", "str", "object", "bool")


def _ids(x):
    return x.name if hasattr(x, "name") else None


def _case(variant, seed=0, **kw):
    shape = {2: (5, 4), 4: (3, 4, 2, 3), None: (2, 3, 5)}[variant.ndim]
    if variant.running and variant.ndim == 2 and kw.get("axis") == 1:
        shape = shape[::-1]
    kw.setdefault("shape", shape)
    if variant.groups:
        kw.setdefault("G", 2)
    return make_case(variant, np.random.default_rng(seed), **kw)


def _as_bad(a, kind):
    a = np.asarray(a)
    return {"complex": a + 0.5j, "str": a.astype(str), "object": a.astype(object), "bool": a > 0}[kind]


def _name(arg):
    """A pattern that matches the argument's name as a word: 'G' but not 'Groups'."""
    return rf"(?<![A-Za-z_]){arg}(?![A-Za-z_])"


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_x_of_the_wrong_rank_is_a_value_error_naming_x(variant):
    case = _case(variant)
    if variant.ndim is None:
        bad = [np.float64(1.5), np.array(2.0)]
    else:
        bad = [case.x[0], case.x[..., None], case.x.ravel()]
    for x in bad:
        with pytest.raises(ValueError, match=_name("x")):
            case.forward(x=x)


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_gamma_or_beta_not_matching_x_is_a_value_error_naming_it(variant):
    case = _case(variant)
    n = case.gamma.size
    wrong = [np.ones(n + 1), np.ones(n - 1), np.ones((n, 1)), np.float64(1.0), np.ones((n, n))]
    if variant.param_4d:
        wrong += [np.ones((1, n)), np.ones((n, 1, 1)), np.ones((1, n, 1))]
    for bad in wrong:
        with pytest.raises(ValueError, match=_name("gamma")):
            case.forward(gamma=bad)
        if variant.shift:
            with pytest.raises(ValueError, match=_name("beta")):
                case.forward(beta=bad)


@pytest.mark.parametrize("variant, backward", BACKWARDS, ids=[b for _, b in BACKWARDS])
def test_dout_not_shaped_like_x_is_a_value_error_naming_dout(variant, backward):
    case = _case(variant)
    _, cache = case.forward()
    fn = getattr(generated, backward)
    d = case.dout
    wrong = [d[:-1], d[..., :-1], d[None], d.ravel(),
             d.reshape(d.shape[::-1]),   # same size, other shape: reshape would accept it
             d.T]
    for bad in wrong:
        with pytest.raises(ValueError, match=_name("dout")):
            fn(bad, cache)


@pytest.mark.parametrize("variant, backward", BACKWARDS, ids=[b for _, b in BACKWARDS])
def test_something_else_as_cache_is_a_value_error_naming_cache(variant, backward):
    case = _case(variant)
    _, cache = case.forward()
    fn = getattr(generated, backward)
    broken = dict(cache)
    broken.pop(next(iter(broken)))
    for bad in (None, {}, (cache,), [cache], broken):
        with pytest.raises(ValueError, match=_name("cache")):
            fn(case.dout, bad)


def test_a_cache_from_another_variant_is_a_value_error():
    """layernorm_backward must not silently take batchnorm's cache: the shapes would even fit."""
    x = np.random.default_rng(0).normal(size=(4, 4))
    _, cache = generated.batchnorm_forward(x, np.ones(4), np.zeros(4), {"mode": "train"})
    with pytest.raises(ValueError, match="batchnorm_forward, not layernorm_forward"):
        generated.layernorm_backward(x, cache)


def test_rmsnorm_takes_one_value_per_row():
    """RMSNorm of one value is well defined (x/sqrt(x^2 + eps)), as in torch's rms_norm."""
    x = np.array([[3.0], [-2.0]])
    out, cache = generated.rmsnorm_forward(x, np.ones(1), {"eps": 1e-5})
    np.testing.assert_allclose(out, x / np.sqrt(x**2 + 1e-5), rtol=1e-14)
    dx, _ = generated.rmsnorm_backward(np.ones_like(x), cache)
    # dx = (1 - xhat^2)/sigma_eps cancels to eps/sigma_eps^3: a relative error of ~1e-10 is rounding
    np.testing.assert_allclose(dx, 1e-5 / (x**2 + 1e-5) ** 1.5, rtol=1e-8)


# --------------------------------------------------------------------------- mode and params


@pytest.mark.parametrize("variant", RUNNING, ids=_ids)
def test_batchnorm_mode_is_required_and_must_be_train_or_test(variant):
    case = _case(variant)
    for mode in (None, "eval", "Train", "training", "", 0, ["train"]):
        param = case.fresh_param()
        param["mode"] = mode
        with pytest.raises(ValueError, match="mode"):
            case.forward(param=param)
    param = case.fresh_param()
    del param["mode"]
    with pytest.raises(ValueError, match="mode"):
        case.forward(param=param)


@pytest.mark.parametrize("variant", NOT_RUNNING, ids=_ids)
def test_norms_without_modes_ignore_other_keys(variant):
    """ln_param & co. hold eps; CS231n's 'mode' passes silently, other keys with a UserWarning
    that names them (a misspelt 'epsilon' would otherwise be lost without a word)."""
    case = _case(variant)
    plain, _ = case.forward(param={"eps": case.eps})
    busy = {"eps": case.eps, "mode": "bogus", "momentum": "junk", "running_mean": "junk", "axis": 7}
    with pytest.warns(UserWarning, match="key\\(s\\) 'axis', 'momentum', 'running_mean' that are not used"):
        noisy, _ = case.forward(param=busy)
    assert np.array_equal(plain, noisy)


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_bad_hyperparameters_are_rejected_naming_the_key(variant):
    case = _case(variant)
    bad = [("eps", -1e-5, ValueError), ("eps", 0.0, ValueError), ("eps", float("nan"), ValueError),
           ("eps", float("inf"), ValueError), ("eps", "1e-5", TypeError), ("eps", None, TypeError)]
    if variant.running:
        d = case.gamma.size
        bad += [("momentum", 1.5, ValueError), ("momentum", -0.1, ValueError),
                ("momentum", float("nan"), ValueError), ("momentum", "0.9", TypeError),
                ("running_mean", np.zeros(d + 1), ValueError), ("running_var", np.zeros((d, 2)), ValueError),
                ("running_mean", np.zeros(d) + 0j, TypeError), ("running_var", np.zeros(d).astype(str), TypeError)]
    if variant.running and variant.ndim == 2:
        bad += [("axis", 2, ValueError), ("axis", 1.0, ValueError), ("axis", "0", ValueError),
                ("axis", -3, ValueError)]
    for key, value, error in bad:
        param = case.fresh_param()
        param[key] = value
        with pytest.raises(error, match=key):
            case.forward(param=param)
    for param in (None, [("eps", 1e-5)], "train"):
        with pytest.raises(TypeError, match=variant.param_arg):
            case.forward(param=param)


@pytest.mark.parametrize("variant", RUNNING, ids=_ids)
def test_a_rejected_call_leaves_the_param_dict_alone(variant):
    """Validation happens before the running statistics are touched."""
    case = _case(variant)
    one_per_group = case.x[:1] if variant.ndim == 2 else case.x[:1, :, :1, :1]
    for bad in ({"gamma": np.ones(case.gamma.size + 1)}, {"x": one_per_group}, {"beta": case.beta + 0j},
                {"x": case.x[..., None]}):
        param = case.fresh_param()
        before = copy.deepcopy(param)
        with pytest.raises((ValueError, TypeError)):
            case.forward(param=param, **bad)
        assert param.keys() == before.keys()
        for key in param:
            assert np.array_equal(param[key], before[key]) if key.startswith("running") else param[key] == before[key]


# --------------------------------------------------------------------------- groups


def test_G_must_divide_C_and_be_a_positive_integer():
    case = _case(BY_NAME["spatial_groupnorm"], shape=(2, 6, 3, 3), G=3)
    for G in (4, 5, 7, 12):
        with pytest.raises(ValueError, match=_name("G")):
            case.forward(G=G)
    for G in (0, -2, 2.0, 1.5, True, "3", None):
        with pytest.raises(ValueError, match=_name("G")):
            case.forward(G=G)
    for G in (1, 2, 3, 6, np.int64(3)):   # every divisor works
        out, _ = case.forward(G=G)
        assert out.shape == case.x.shape


# --------------------------------------------------------------------------- one value per group

#: (variant, x shape, group count) with exactly one value per normalization group; as in torch,
#: layer norm and group norm accept such groups (out = beta, dx = 0: tests/test_hard_inputs.py)
SINGLE = [
    ("batchnorm", (1, 4), None),
    ("batchnorm_eps_outside", (1, 4), None),
    ("spatial_batchnorm", (1, 3, 1, 1), None),
    ("instancenorm", (2, 3, 1, 1), None),
]
ACCEPTED_SINGLE = [("layernorm", (5, 1), None), ("spatial_groupnorm", (2, 4, 1, 1), 4)]


@pytest.mark.parametrize("name, shape, G", SINGLE, ids=[s[0] for s in SINGLE])
def test_training_with_one_value_per_group_is_a_value_error(name, shape, G):
    """Like PyTorch's 'Expected more than 1 value per channel when training'."""
    variant = BY_NAME[name]
    case = make_case(variant, np.random.default_rng(0), shape=shape, G=G, mode="train")
    with pytest.raises(ValueError, match="more than 1 value"):
        case.forward()


@pytest.mark.parametrize("name, shape, G", ACCEPTED_SINGLE, ids=[s[0] for s in ACCEPTED_SINGLE])
def test_layer_and_group_norm_take_one_value_per_group_as_torch_does(name, shape, G):
    case = make_case(BY_NAME[name], np.random.default_rng(0), shape=shape, G=G, mode="train")
    out, _ = case.forward()
    assert np.array_equal(out, np.broadcast_to(case.beta, out.shape))


@pytest.mark.parametrize("variant", RUNNING, ids=_ids)
def test_test_mode_takes_a_batch_of_one(variant):
    """The rule above is about batch statistics: test mode uses the running ones."""
    shape = (1, 3) if variant.ndim == 2 else (1, 3, 1, 1)
    case = make_case(variant, np.random.default_rng(1), shape=shape, mode="test")
    out, _ = case.forward()
    assert rel_error(out, reference(case)[0]) <= 1e-14


# --------------------------------------------------------------------------- types


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_non_real_arrays_are_a_type_error_naming_the_argument(variant, kind):
    case = _case(variant)
    names = ("x", "gamma", "beta") if variant.shift else ("x", "gamma")
    for name in names:
        with pytest.raises(TypeError, match=_name(name)):
            case.forward(**{name: _as_bad(getattr(case, name), kind)})


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("variant, backward", BACKWARDS, ids=[b for _, b in BACKWARDS])
def test_non_real_dout_is_a_type_error_naming_dout(variant, backward, kind):
    case = _case(variant)
    _, cache = case.forward()
    with pytest.raises(TypeError, match=_name("dout")):
        getattr(generated, backward)(_as_bad(case.dout, kind), cache)


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_integer_inputs_are_promoted_to_float64(variant):
    """CS231n passes integer gamma and beta; integer x and dout work the same way."""
    case = _case(variant, mode="test" if variant.running else "train")
    rng = np.random.default_rng(3)
    ints = {"x": rng.integers(-5, 6, case.x.shape), "gamma": rng.integers(1, 4, case.gamma.shape),
            "dout": rng.integers(-3, 4, case.dout.shape)}
    if variant.shift:
        ints["beta"] = rng.integers(-2, 3, case.beta.shape)
    ints["x"].flat[:2] = (-7, 9)  # no constant group
    param = case.fresh_param()
    for key in ("running_mean", "running_var"):
        if key in param:
            param[key] = np.rint(param[key]).astype(np.int32) + (key == "running_var")
    for itype in (np.int64, np.int32, np.uint8):
        if itype == np.uint8:
            ints = {k: v - v.min() for k, v in ints.items()}
        args = {k: v.astype(itype) for k, v in ints.items() if k != "dout"}
        out, cache = case.forward(param=copy.deepcopy(param), **args)
        flo = {k: v.astype(np.float64) for k, v in ints.items() if k != "dout"}
        out_f, cache_f = case.forward(param=copy.deepcopy(param), **flo)
        assert out.dtype == np.float64 and np.array_equal(out, out_f)
        for backward in variant.backward_names:
            fn = getattr(generated, backward)
            grads = fn(ints["dout"].astype(itype), cache)
            grads_f = fn(ints["dout"].astype(np.float64), cache_f)
            for g, gf in zip(grads, grads_f):
                assert g.dtype == np.float64 and np.array_equal(g, gf), backward
