"""Issue 5, part two: kernels that never surprise.

Each test states one rule and checks it on every variant, mode and backward
form.  The oracle is the plain NumPy float64 reference in tests/helpers.py.
The hypothesis tests at the end draw shapes, scales, offsets, eps and dtypes.
"""
from __future__ import annotations

import copy
import warnings
import zlib

import numpy as np
import pytest
from helpers import (
    BACKWARD_CONFIGS,
    CONFIGS,
    KNOWN_TRAIN_BUGS,
    backward_params,
    config_id,
    from_rows,
    group_size,
    make_case,
    param_view,
    reference,
    rel_error,
    scaled_error,
    to_rows,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import generated

F16, F32, F64 = np.float16, np.float32, np.float64
LOW_TOL = {F16: 2e-2, F32: 1e-4}


def _rng(variant, mode, axis, backward, salt=0):
    return np.random.default_rng([zlib.crc32(f"{variant.name}/{mode}/{axis}/{backward}".encode()), salt])


def _run(case, backward, param=None, **inputs):
    """forward then backward: (out, grads, param, cache)."""
    param = case.fresh_param() if param is None else param
    dout = inputs.pop("dout", case.dout)
    out, cache = case.forward(param=param, **inputs)
    return out, getattr(generated, backward)(dout, cache), param, cache


def _results(case, out, grads, param):
    """name -> array for everything a call gives back (running statistics after a training step)."""
    res = {"out": out, "dx": grads[0], "dgamma": grads[1]}
    if len(grads) > 2:
        res["dbeta"] = grads[2]
    if case.variant.running and case.mode == "train":
        res["running_mean"], res["running_var"] = param["running_mean"], param["running_var"]
    return res


def _expected(case, **kw):
    out, grads, running = reference(case, **kw)
    res = {"out": out, "dx": grads[0], "dgamma": grads[1]}
    if len(grads) > 2:
        res["dbeta"] = grads[2]
    res.update(running)
    return res


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("variant, mode, axis, backward, dtype", backward_params((F16, F32, F64)))
def test_the_floating_dtype_is_preserved(variant, mode, axis, backward, dtype):
    """float16/32/64 in: the same dtype out, for outputs, gradients and running statistics."""
    case = make_case(variant, _rng(variant, mode, axis, backward), dtype=dtype, mode=mode, axis=axis)
    out, grads, param, _ = _run(case, backward)
    assert out.dtype == dtype and out.shape == case.x.shape
    assert grads[0].dtype == dtype and grads[0].shape == case.x.shape
    for g, p in zip(grads[1:], case.params()):
        assert g.dtype == dtype and g.shape == p.shape
    for key in ("running_mean", "running_var"):
        if variant.running and mode == "train":  # kept in at least float32 (docs/hard_inputs.md)
            assert param[key].dtype == np.promote_types(dtype, np.float32), key


@pytest.mark.parametrize("variant, mode, axis, backward, dtype", backward_params((F16, F32)))
def test_low_precision_results_are_close_to_float64(variant, mode, axis, backward, dtype):
    """float32 within 1e-4 and float16 within 2e-2 (rel_error) of the float64 oracle."""
    rng = _rng(variant, mode, axis, backward, 1)
    case = make_case(variant, rng, dtype=dtype, mode=mode, axis=axis, scale=float(10 ** rng.uniform(-1, 1)),
                     offset=float(rng.uniform(-3, 3)), eps=float(rng.choice([1e-5, 1e-3])))
    got = _results(case, *_run(case, backward)[:3])
    want = _expected(case)
    assert got.keys() == want.keys()
    errors = {k: rel_error(got[k], want[k]) for k in want}
    assert max(errors.values()) <= LOW_TOL[dtype], errors


#: The ordinary float32 bound holds even 1e4 away from zero (issue 6 allows 1e-3 there): the mean
#: is summed in float64 and subtracted as mu_hi + mu_lo (generated/_blocks.py::split).  Without
#: the split the rounding of mu to float32 alone costs ~5e-4; PyTorch's float32 batch_norm is
#: off by about 7e-4 on such data.
OFFSET_TOL = 1e-4
OFFSET_PARAMS = [pytest.param(v, mode, axis, id=config_id((v, mode, axis))) for v, mode, axis in CONFIGS]


@pytest.mark.parametrize("variant, mode, axis", OFFSET_PARAMS)
def test_a_large_mean_offset_still_normalizes_in_float32(variant, mode, axis):
    """x = 1e4 + N(0, 1) in float32: forward and backward within 1e-3 of float64 on the same values."""
    shape = {2: (64, 8), 4: (8, 4, 6, 6), None: (16, 32)}[variant.ndim]
    if axis == 1:
        shape = shape[::-1]
    for seed in range(3):
        case = make_case(variant, np.random.default_rng(seed), dtype=F32, shape=shape, mode=mode, axis=axis,
                         offset=1e4, G=2 if variant.groups else None)
        want = _expected(case)
        for backward in variant.backward_names:
            if mode == "train" and backward in KNOWN_TRAIN_BUGS:
                continue
            got = _results(case, *_run(case, backward)[:3])
            errors = {k: rel_error(got[k], want[k]) for k in want}
            assert max(errors.values()) <= OFFSET_TOL, (seed, backward, errors)


def _constant_params():
    return [pytest.param(v, mode, axis, b, id=config_id((v, mode, axis)) + "-" + b)
            for v, mode, axis, b in BACKWARD_CONFIGS]


@pytest.mark.parametrize("variant, mode, axis, backward", _constant_params())
def test_a_constant_group_gives_finite_results(variant, mode, axis, backward):
    """A dead-ReLU feature (all zeros) or any constant group: out = beta, finite gradients, no warning."""
    case = make_case(variant, _rng(variant, mode, axis, backward, 2), mode=mode, axis=axis)
    rows = to_rows(variant, case.x, case.G, axis).copy()
    rows[0] = 0.0
    rows[-1] = 3.25
    case.x[...] = from_rows(variant, rows, case.x.shape, case.G, axis)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _results(case, *_run(case, backward)[:3])
    want = _expected(case)
    errors = {k: rel_error(got[k], want[k]) for k in want}
    assert max(errors.values()) <= 1e-12, errors


# --------------------------------------------------------------------------- purity


def _snapshot(obj):
    return copy.deepcopy(obj)


def _same(a, b) -> bool:
    """Equal values, arrays compared entry by entry (NaN equal to NaN), dicts key by key."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("variant, mode, axis, backward, dtype", backward_params((F32, F64)))
def test_inputs_and_cache_are_never_modified(variant, mode, axis, backward, dtype):
    case = make_case(variant, _rng(variant, mode, axis, backward, 3), dtype=dtype, mode=mode, axis=axis)
    param = case.fresh_param()
    inputs = _snapshot({"x": case.x, "gamma": case.gamma, "beta": case.beta, "dout": case.dout})
    old_running = {k: v for k, v in param.items() if k.startswith("running")}
    old_running_values = _snapshot(old_running)
    param_before = _snapshot(param)

    _, cache = case.forward(param=param)
    cache_before = _snapshot(cache)
    getattr(generated, backward)(case.dout, cache)

    assert _same({"x": case.x, "gamma": case.gamma, "beta": case.beta, "dout": case.dout}, inputs)
    assert _same(cache, cache_before), "backward changed the cache"
    assert _same(old_running, old_running_values), "the caller's running arrays were written in place"
    if mode == "train" and variant.running:
        assert set(param) == set(param_before) | {"running_mean", "running_var"}
        param = {k: v for k, v in param.items() if not k.startswith("running")}
        param_before = {k: v for k, v in param_before.items() if not k.startswith("running")}
    assert _same(param, param_before), "forward changed the param dict"


@pytest.mark.parametrize("variant, mode, axis, backward", backward_params())
def test_later_changes_to_the_arguments_do_not_reach_the_cache(variant, mode, axis, backward):
    """Changing x, gamma, beta or out in place after forward (an optimizer step, an in-place ReLU)
    leaves backward as it was; so does changing the gradients it returned."""
    case = make_case(variant, _rng(variant, mode, axis, backward, 4), mode=mode, axis=axis)
    fn = getattr(generated, backward)
    x, gamma, beta = case.x.copy(), case.gamma.copy(), None if case.beta is None else case.beta.copy()
    out, cache = case.forward(x=x, gamma=gamma, beta=beta)
    first = [g.copy() for g in fn(case.dout, cache)]
    x += 1.0
    gamma *= 3.0
    if beta is not None:
        beta -= 2.0
    np.maximum(out, 0, out=out)
    for g in fn(case.dout, cache):
        g[...] = np.nan
    again = fn(case.dout, cache)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("variant, mode, axis, backward", backward_params())
def test_backward_is_repeatable_and_caches_are_independent(variant, mode, axis, backward):
    rng = _rng(variant, mode, axis, backward, 5)
    a = make_case(variant, rng, mode=mode, axis=axis)
    b = make_case(variant, rng, mode=mode, axis=axis, shape=a.x.shape, G=a.G, scale=3.0, offset=2.0)
    fn = getattr(generated, backward)
    _, cache_a = a.forward()
    first = fn(a.dout, cache_a)
    second = fn(a.dout, cache_a)
    _, cache_b = b.forward()
    fn(b.dout, cache_b)
    third = fn(a.dout, cache_a)
    for g1, g2, g3 in zip(first, second, third):
        assert np.array_equal(g1, g2) and np.array_equal(g1, g3)


def _strided(a, rng, kind):
    """Same values as a, in another memory layout."""
    a = np.asarray(a)
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "every-other":
        buf = np.full(a.shape[:-1] + (2 * a.shape[-1],), np.nan, dtype=a.dtype)
        buf[..., ::2] = a
        return buf[..., ::2]
    if kind == "reversed":
        return np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])[(slice(None, None, -1),) * a.ndim]
    if kind == "transposed":
        return np.ascontiguousarray(a.T).T
    raise AssertionError(kind)


LAYOUTS = ("fortran", "every-other", "reversed", "transposed")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant, mode, axis, backward", backward_params())
def test_memory_layout_does_not_matter(variant, mode, axis, backward, layout):
    """Non-contiguous views and Fortran order give the results of contiguous arrays."""
    rng = _rng(variant, mode, axis, backward, 6)
    case = make_case(variant, rng, mode=mode, axis=axis)
    want = _results(case, *_run(case, backward)[:3])
    param = case.fresh_param()
    for key in ("running_mean", "running_var"):
        if key in param:
            param[key] = _strided(param[key], rng, layout)
    views = {k: _strided(getattr(case, k), rng, layout) for k in ("x", "gamma", "dout")}
    if variant.shift:
        views["beta"] = _strided(case.beta, rng, layout)
    got = _results(case, *_run(case, backward, param=param, **views)[:3])
    errors = {k: rel_error(got[k], want[k]) for k in want}
    assert max(errors.values()) <= 1e-13, errors


# --------------------------------------------------------------------------- NaN


@pytest.mark.parametrize("where", ["x", "dout", "gamma"])
@pytest.mark.parametrize("variant, mode, axis, backward", backward_params())
def test_nan_stays_in_the_groups_it_touches(variant, mode, axis, backward, where):
    """One NaN spreads only over what depends on it (per the float64 oracle), with no error or warning."""
    rng = _rng(variant, mode, axis, backward, 7)
    case = make_case(variant, rng, mode=mode, axis=axis)
    target = getattr(case, where)
    target.flat[int(rng.integers(target.size))] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            got = _results(case, *_run(case, backward)[:3])
    want = _expected(case)
    for key in want:
        nan_got, nan_want = np.isnan(got[key]), np.isnan(want[key])
        assert np.array_equal(nan_got, nan_want), f"{key}: NaN at {np.argwhere(nan_got).tolist()}, " \
            f"expected at {np.argwhere(nan_want).tolist()}"
        assert rel_error(got[key][~nan_want], want[key][~nan_want]) <= 1e-12, key
    assert any(np.isnan(want[k]).any() for k in want)   # the NaN went somewhere


# --------------------------------------------------------------------------- hypothesis

#: every (config, backward form) that runs today; KNOWN_TRAIN_BUGS are xfailed in the tests above
WORKING = [c for c in BACKWARD_CONFIGS if not (c[1] == "train" and c[3] in KNOWN_TRAIN_BUGS)]
UNIT = {F64: 2.0**-53, F32: 2.0**-24, F16: 2.0**-24}   # float16 is computed in float32
BASE_TOL = {F64: 1e-10, F32: 1e-4, F16: 2e-2}


@st.composite
def shapes(draw, variant, axis):
    """A shape with at least three values per normalization group, and G for group norm."""
    d = lambda lo, hi: draw(st.integers(lo, hi))
    G = None
    if variant.ndim == 2:
        shape = (d(3, 12), d(1, 6)) if variant.running else (d(1, 6), d(3, 12))
        shape = shape[::-1] if axis == 1 else shape
    elif variant.ndim == 4:
        G = d(1, 3) if variant.groups else None
        c = G * d(1, 3) if variant.groups else d(1, 4)
        shape = (d(1, 4), c, d(1, 4), d(1, 4))
    else:
        shape = tuple(d(1, 3) for _ in range(d(0, 3))) + (d(3, 10),)
    assume(group_size(variant, shape, G, axis) >= 3)
    return shape, G


@st.composite
def problems(draw, dtypes=(F16, F32, F64)):
    variant, mode, axis, backward = draw(st.sampled_from(WORKING))
    shape, G = draw(shapes(variant, axis))
    dtype = draw(st.sampled_from(dtypes))
    scale = 10 ** draw(st.floats(-2, 2))
    offset = draw(st.sampled_from([0.0, 1.0, -1.0])) * 10 ** draw(st.floats(-2, 3))
    eps = draw(st.sampled_from([1e-5, 1e-3, 1e-1]))
    seed = draw(st.integers(0, 2**32 - 1))
    case = make_case(variant, np.random.default_rng(seed), dtype=dtype, shape=shape, mode=mode, axis=axis,
                     eps=eps, scale=scale, offset=offset, G=G)
    if variant.eps_outside and mode == "train":   # constant groups: see test_a_constant_group_...
        assume(np.all(np.var(to_rows(variant, case.x.astype(F64), G, axis), axis=1) > 0))
    return case, backward, abs(offset) / scale


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_random_problems_match_the_float64_oracle(problem):
    """Any shape, scale, offset, eps and dtype: the dtype is kept and every result is within

        BASE_TOL[dtype] + 32 * unit_roundoff * |offset| / scale

    of the oracle, measured against the size of the terms (helpers.scaled_error); the
    second term is the rounding of a mean of size |offset| in the working precision."""
    case, backward, cond = problem
    dtype = case.x.dtype.type
    out, grads, param, _ = _run(case, backward)
    got = _results(case, out, grads, param)
    *_, sizes = reference(case, scales=True)
    want = _expected(case)
    assert got.keys() == want.keys()
    assert all(got[k].dtype == (np.promote_types(dtype, np.float32) if k.startswith("running") else dtype)
               for k in got), {k: got[k].dtype for k in got}  # running stats: >= float32
    tol = BASE_TOL[dtype] + 32 * UNIT[dtype] * cond
    errors = {k: scaled_error(got[k], want[k], sizes[k]) for k in want}
    assert max(errors.values()) <= tol, (errors, tol)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(dtypes=(F64,)), st.floats(-10, 10))
def test_invariants_without_an_oracle(problem, shift):
    """In float64: the two backward forms agree; dbeta = sum(dout); for centred training steps
    adding a constant to x changes nothing and dx sums to zero over each group."""
    case, backward, cond = problem
    v = case.variant
    tol = 1e-12 + 32 * UNIT[F64] * cond
    *_, sizes = reference(case, scales=True)
    out, grads, _, _ = _run(case, backward)
    for other in v.backward_names:
        if (case.mode == "train" and other in KNOWN_TRAIN_BUGS) or other == backward:
            continue
        _, cache = case.forward()
        for name, g, h in zip(("dx", "dgamma", "dbeta"), grads, getattr(generated, other)(case.dout, cache)):
            assert scaled_error(g, h, sizes[name]) <= tol, (name, other)
    if v.shift:
        view = param_view(v, case.x.ndim, case.axis)
        dbeta = case.dout.sum(axis=tuple(i for i, n in enumerate(view) if n == 1)).reshape(case.beta.shape)
        assert scaled_error(grads[2], dbeta, sizes["dbeta"]) <= 1e-14
    if v.centred and case.mode == "train":
        scale = np.max(np.abs(case.x - np.mean(case.x)))
        moved = case.x + shift * max(scale, 1.0)
        out2, grads2, _, _ = _run(case, backward, x=moved)
        assert scaled_error(out2, out, sizes["out"]) <= 1e-9
        assert scaled_error(grads2[0], grads[0], sizes["dx"]) <= 1e-9
        dx_rows = to_rows(v, grads[0], case.G, case.axis)
        size_rows = to_rows(v, sizes["dx"], case.G, case.axis)
        assert np.all(np.abs(dx_rows.sum(axis=1)) <= tol * size_rows.sum(axis=1) + 1e-300)

