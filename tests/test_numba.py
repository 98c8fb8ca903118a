"""The numba backend (generated.numba) against the same references as the NumPy kernels.

For every variant, mode, batch axis, backward form and dtype, the numba forward
and backward run on the inputs of tests/helpers.py and are compared with

* the NumPy kernels of generated/ on the same inputs, and
* PyTorch autograd in float64 (tests/test_torch_reference.py's oracle),

with rel_error(a, b) = max|a - b| / max(max|a|, max|b|) (tests/helpers.py):
float64 <= 1e-10, float32 <= 1e-4.  The first run compiles every kernel (a
minute or two); numba caches them in this run's NORMDERIVE_NUMBA_CACHE (conftest.py).
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from helpers import BY_NAME, CONFIGS, config_id, make_case, numba_float32_config, reference, rel_error

import generated
import generated.numba as gn

TOL = {np.float64: 1e-10, np.float32: 1e-4}
DTYPES = (np.float64, np.float32)
# float64: every configuration; float32: those of helpers.numba_float32_config (each dtype and
# memory layout is a compile of every kernel it reaches, seconds each)
PARAMS = [pytest.param(v, mode, axis, dtype, id=f"{config_id((v, mode, axis))}-{np.dtype(dtype).name}")
          for v, mode, axis in CONFIGS for dtype in DTYPES
          if dtype == np.float64 or numba_float32_config(v, mode, axis)]


def _case(variant, mode, axis, dtype, seed=0, **kw):
    rng = np.random.default_rng([seed, zlib.crc32(variant.name.encode()), axis, mode == "test"])
    kw.setdefault("offset", float(rng.uniform(-3, 3)))
    kw.setdefault("scale", float(10 ** rng.uniform(-1, 1)))
    return make_case(variant, rng, dtype=dtype, mode=mode, axis=axis, eps=1e-3, momentum=0.8, **kw)


def _run(module, case, backward):
    """(out, grads, param after the forward) from one backend."""
    v = case.variant
    args = [case.x, case.gamma] + ([case.beta] if v.shift else []) + ([case.G] if v.groups else [])
    param = case.fresh_param()
    out, cache = getattr(module, f"{v.name}_forward")(*args, param)
    return out, getattr(module, backward)(case.dout, cache), param


def _errors(got, want):
    out, grads, param = got
    w_out, w_grads, w_param = want
    errors = {"out": rel_error(out, w_out)}
    errors.update({f"grad{i}": rel_error(a, b) for i, (a, b) in enumerate(zip(grads, w_grads))})
    for key in ("running_mean", "running_var"):
        if key in w_param:
            errors[key] = rel_error(param[key], w_param[key])
    return errors


def test_same_public_functions_and_signatures():
    assert gn.__all__ == generated.__all__
    for name in generated.__all__:
        assert inspect.signature(getattr(gn, name)) == inspect.signature(getattr(generated, name)), name


def test_numpy_package_does_not_import_numba():
    code = "import sys, generated; assert 'numba' not in sys.modules and 'generated.numba' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(_root()))


def _kernels():
    """Every numba dispatcher of generated.numba."""
    modules = [m for name, m in sorted(sys.modules.items()) if name.startswith("generated.numba.")]
    found = [getattr(v, "kernel", v) for m in modules for v in vars(m).values()]  # under _layout.serial
    return [v for v in found if isinstance(v, numba.core.dispatcher.Dispatcher)]


def test_the_compile_cache_stays_out_of_the_package():
    """numba's own cache=True writes into generated/numba/__pycache__, which pip leaves behind and
    which then breaks `import generated`; our locator puts it in NORMDERIVE_NUMBA_CACHE (conftest)."""
    package = os.path.dirname(os.path.abspath(gn.__file__))
    kernels = _kernels()
    assert len(kernels) >= 7
    for k in kernels:
        path = k._cache._cache_path
        assert path.startswith(os.environ["NORMDERIVE_NUMBA_CACHE"]) and not path.startswith(package), path

    @numba.njit(cache=True)
    def elsewhere(a):  # another package's function: numba's own locator, beside its source
        return a

    assert os.path.dirname(elsewhere._cache._cache_path) == os.path.dirname(os.path.abspath(__file__))


def test_a_change_to_the_runtime_files_alone_recompiles_the_kernels(monkeypatch, tmp_path):
    """A kernel's cached code holds the runtime helpers it calls (_layout, _loops, _threads) compiled
    into it, so its cache stamp covers their files too: `derive` may rewrite _loops.py and leave a
    kernel file as it was, and its cached code must not keep the old helpers."""
    package = os.path.dirname(os.path.abspath(gn.__file__))
    assert sorted(os.path.basename(p) for p in gn._RUNTIME) == ["_layout.py", "_loops.py", "_threads.py"]
    assert all(os.path.dirname(p) == package for p in gn._RUNTIME)
    helper = tmp_path / "_loops.py"
    helper.write_text("# a runtime file\n")
    monkeypatch.setattr(gn, "_RUNTIME", (str(helper),))
    from generated.numba import batchnorm as kernels
    py_func = kernels._forward_train_p0_cols.py_func
    locator = gn._KernelCacheLocator.from_function(py_func, kernels.__file__)
    before = locator.get_source_stamp()
    os.utime(helper, ns=(os.stat(helper).st_atime_ns, os.stat(helper).st_mtime_ns + 10**9))
    assert locator.get_source_stamp() != before
    helper.write_text("# a runtime file, longer now\n")
    assert locator.get_source_stamp() != before


def test_the_default_cache_is_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("NORMDERIVE_NUMBA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    expected = {"win32": None, "darwin": None}.get(sys.platform, str(tmp_path / "normderive" / "numba"))
    assert expected is None or gn.cache_dir() == expected
    monkeypatch.setenv("NORMDERIVE_NUMBA_CACHE", str(tmp_path / "mine"))
    assert gn.cache_dir() == str(tmp_path / "mine")


@pytest.mark.parametrize("variant, mode, axis, dtype", PARAMS)
def test_matches_the_numpy_kernels(variant, mode, axis, dtype):
    """Same inputs, same dtype: numba and NumPy agree on every output, shape and dtype."""
    case = _case(variant, mode, axis, dtype)
    for backward in variant.backward_names:
        got, want = _run(gn, case, backward), _run(generated, case, backward)
        for a, b in zip((got[0],) + tuple(got[1]), (want[0],) + tuple(want[1])):
            assert a.shape == b.shape and a.dtype == b.dtype
        bad = {k: e for k, e in _errors(got, want).items() if not e <= TOL[dtype]}
        assert not bad, f"{backward} {case.x.shape}: {bad}"


@pytest.mark.parametrize("variant, mode, axis, dtype", PARAMS)
def test_matches_torch_autograd(variant, mode, axis, dtype):
    pytest.importorskip("torch")
    from test_torch_reference import torch_reference

    case = _case(variant, mode, axis, dtype, seed=1)
    t_out, t_grads, t_running = torch_reference(case)
    for backward in variant.backward_names:
        got = _run(gn, case, backward)
        bad = {k: e for k, e in _errors(got, (t_out, t_grads, t_running)).items() if not e <= TOL[dtype]}
        assert not bad, f"{backward} {case.x.shape}: {bad}"


@pytest.mark.parametrize("name, shape, G", [
    ("batchnorm", (3000, 7), None), ("spatial_batchnorm", (40, 3, 9, 11), None),
    ("layernorm", (5, 3001), None), ("spatial_groupnorm", (2, 6, 31, 33), 3),
    ("spatial_groupnorm", (70, 12, 1, 1), 4), ("spatial_groupnorm", (100, 15, 1, 1), 5),
    ("spatial_groupnorm", (100, 128, 1, 1), 2), ("layernorm", (37, 8), None),
    ("spatial_groupnorm", (70, 32, 1, 1), 4),
    ("instancenorm", (2, 3, 40, 41), None), ("rmsnorm", (2, 3, 2999), None),
    ("layernorm", (3, 9000), None), ("layernorm", (1, 20000), None), ("rmsnorm", (5, 40001), None),
    ("spatial_groupnorm", (2, 16386, 1, 1), 2)])
def test_larger_groups_and_ragged_blocks(name, shape, G):
    """Groups larger than a chunk, row counts that are not a multiple of the unroll, more
    groups than threads, and group norm with H = W = 1: the loop layouts' edges.  (100, 15, 1, 1)
    with 5 groups has cols tiles of 341 groups, so the second tile starts at parameter row 341 % 5;
    (100, 128, 1, 1) with 2 groups runs krows in chunks of 33 groups, whose gradient blocks go
    into their partials after 32 groups and at the chunk's end; (37, 8) and (70, 32, 1, 1) with 4
    groups run krows on runs of 8 (a group is one run).  The last four have fewer than 16 long
    groups: wide, k split into tiles (2, 4, 9 and 2 of them; group norm's parameters repeat every
    2 groups of 8193 channels), one group alone at (1, 20000)."""
    variant = BY_NAME[name]
    case = make_case(variant, np.random.default_rng(7), shape=shape, G=G, offset=2.0)
    for backward in variant.backward_names:
        got, want = _run(gn, case, backward), _run(generated, case, backward)
        bad = {k: e for k, e in _errors(got, want).items() if not e <= 1e-10}
        assert not bad, f"{backward}: {bad}"


@pytest.mark.parametrize("name, shape, R, strategy", [
    ("batchnorm", (1000, 6), 40, "cols"), ("batchnorm", (2**20, 2), 128, "tall"),
    ("batchnorm", (262147, 4), 1, "tall"), ("spatial_batchnorm", (131072, 3, 2, 2), 16, "tall"),
    ("spatial_batchnorm", (30, 3, 2, 2), 15, "cols")])
def test_short_rows_are_merged(name, shape, R, strategy):
    """cols and tall take rows shorter than _layout.SHORT_ROW R at a time as one row (R the largest
    divisor of the rows with R * row <= _layout.MERGED, 256; none past 1 for 262147 rows, a prime):
    column c of a merged row is column c % row of a row, so the sums fold and the per-group factors
    spread over R periods.  Tall (the rows split between threads too) from 2**20 elements.  Against
    the NumPy kernels at 1e-10, float64, every backward form."""
    from generated.numba import _layout
    variant = BY_NAME[name]
    view = shape if len(shape) == 2 else (shape[0], shape[1], shape[2] * shape[3])
    lay = _layout.layout(view, (0, 2) if len(shape) == 4 else (0,), (1,), False)
    assert (lay.R, lay.strategy) == (R, strategy)
    case = make_case(variant, np.random.default_rng(11), shape=shape, offset=2.0)
    for backward in variant.backward_names:
        got, want = _run(gn, case, backward), _run(generated, case, backward)
        bad = {k: e for k, e in _errors(got, want).items() if not e <= 1e-10}
        assert not bad, f"{backward}: {bad}"


@pytest.mark.parametrize("shape", [(600, 5, 2), (120000, 5, 2)], ids=["cols", "tall"])
def test_merged_rows_with_parameters_along_k_match_the_printed_torch_functions(shape):
    """A layer norm view with groups over many short rows (O rows of 5 groups of 2 along k): rows
    merged 25 at a time, with gamma laid out along the merged row's columns and its gradient folded
    over them.  generated.numba's kernel contract against the printed torch functions, float64."""
    pytest.importorskip("torch")
    from generated.numba import _layout
    lay = _layout.layout(shape, (0, 2), (2,), True)
    assert (lay.R, lay.strategy) == (25, "cols" if shape[0] == 600 else "tall")
    _layernorm_contract_matches_the_printed_torch_functions(shape, seed=4)


@pytest.mark.parametrize("name, shape, strategy", [("batchnorm", (2**20, 2), "tall"), ("layernorm", (2, 2**20), "wide"),
                                                   ("layernorm", (64, 2**16), "krows"),
                                                   ("spatial_batchnorm", (2, 2, 1024, 1024), "rows")])
def test_float32_sums_accumulate_in_float64(name, shape, strategy):
    """dout = 1000 + U(0, 1) in float32, gamma = 1, 2**16 to 2**21 values per group.  A float32
    running sum of them loses the fractions (its spacing grows past 1), which puts the group
    means, and so dx, off by O(1) relative; float64 accumulators keep dx to float32 rounding.  In
    rows and krows a run is summed in float32 blocks of _layout.SUM_BLOCK elements, each block's sum
    added in float64: the error is bounded by the block, not by the group."""
    from generated.numba import _layout
    variant = BY_NAME[name]
    view = shape if variant.ndim == 2 else (shape[0], shape[1], shape[2] * shape[3])
    axes, params = {"batchnorm": ((0,), (1,)), "layernorm": ((1,), (1,)),
                    "spatial_batchnorm": ((0, 2), (1,))}[name]
    assert _layout.layout(view, axes, params, name == "layernorm").strategy == strategy
    case = make_case(variant, np.random.default_rng(3), dtype=np.float32, shape=shape)
    case.dout = (1000 + np.random.default_rng(4).uniform(0, 1, shape)).astype(np.float32)
    case.gamma = np.ones_like(case.gamma)   # so that dout*gamma keeps its fractions' bias
    backward = {"batchnorm": "batchnorm_backward_alt"}.get(name, f"{name}_backward")
    _, grads, _ = _run(gn, case, backward)
    _, want, _ = reference(case)
    assert rel_error(grads[0], want[0]) <= 1e-3
    assert rel_error(grads[-1], want[-1]) <= 1e-6


@pytest.mark.parametrize("shape, x_scale, eps", [((4, 3, 64, 64), 1e20, 1e-5),    # squares past float32's range
                                                 ((2, 3, 64, 32), 5e-23, 1e-45)])  # squares below its normal numbers
def test_a_block_out_of_float32s_range_is_summed_again_in_float64(shape, x_scale, eps):
    """A block whose float32 sum overflows (inf or nan), or comes nearer zero than _layout.block_floor
    (its terms may have underflowed), is summed again in float64.  Spatial batch norm (rows): the
    forward's squares of x at a spread of 1e20 overflow float32, at 5e-23 (an eps below the variance)
    they are subnormal, with a digit or none; runs of _layout.BLOCKS_CALL_FROM elements or more, which
    rows sums in blocks; every output and gradient of the float32 kernels is still within 1e-4 of the
    same kernels in float64 on the same values (without the second sum: nan, or off by 1e-3 and more)."""
    from generated.numba import _layout
    variant = BY_NAME["spatial_batchnorm"]
    assert _layout.layout((shape[0], 3, shape[2] * shape[3]), (0, 2), (1,), False).strategy == "rows"
    assert shape[2] * shape[3] >= _layout.BLOCKS_CALL_FROM
    with np.errstate(over="ignore"):   # a running variance of 1e40 given in float32 is inf, as it should be
        case = make_case(variant, np.random.default_rng(6), dtype=np.float32, shape=shape, scale=x_scale, eps=eps)
    wide = make_case(variant, np.random.default_rng(6), dtype=np.float64, shape=shape, eps=eps)
    for k in ("x", "dout", "gamma", "beta"):
        setattr(wide, k, getattr(case, k).astype(np.float64))
    for backward in variant.backward_names:
        with np.errstate(all="ignore"):
            got, want = _run(gn, case, backward), _run(gn, wide, backward)
        # the running variance (1e40, 1e-45) is out of float32's range itself, as it should be
        bad = {k: e for k, e in _errors(got, want).items() if not e <= 1e-4 and not k.startswith("running")}
        assert not bad, (backward, bad)


def test_a_krows_block_whose_float32_sum_overflows_is_summed_again_in_float64():
    """The same for the sums printed in a krows kernel (layer norm's backward through generated.torch's
    kernel contract, whose per-group values are float32): x at a spread of 1e30 and dout of 1e10 make
    terms of 1e40; dx and the parameters' gradients are within 1e-4 of the float64 kernels."""
    import generated.numba.layernorm as nl
    from generated.numba import _layout
    assert _layout.layout((64, 512), (1,), (1,), True).strategy == "krows" and 512 >= _layout.BLOCKS_FROM
    rng = np.random.default_rng(7)
    x, dout = (rng.standard_normal((64, 512)) * 1e30).astype(np.float32), (rng.standard_normal((64, 512)) * 1e10).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, 512).astype(np.float32), rng.standard_normal(512).astype(np.float32)
    kw = dict(eps=1e-5, m=512, axes=(1,), param_sum_axes=(0,))

    def grads(dtype):
        a = [v.astype(dtype) for v in (x, dout, gamma, beta)]
        f = nl.forward_train(a[0], a[2], a[3], **kw)
        return nl.backward_train_fused(a[1], a[2], f["mu"], f["std"], a[0], **kw)

    with np.errstate(all="ignore"):
        got, want = grads(np.float32), grads(np.float64)
    assert got[0].dtype == np.float32
    errors = [rel_error(a, b) for a, b in zip(got, want)]
    assert max(errors) <= 1e-4, errors


@pytest.mark.parametrize("variant, mode, axis", [pytest.param(v, mode, axis, id=config_id((v, mode, axis)))
                                                for v, mode, axis in CONFIGS
                                                if numba_float32_config(v, mode, axis)])
def test_a_large_mean_offset_still_normalizes_in_float32(variant, mode, axis):
    """x = 1e4 + N(0, 1) in float32: the mean is summed in float64 (four rows at a time, each
    widened first) and per-group values stay float64 in the loops, so every output is within
    1e-4 of float64 on the same values; a float32 mean alone would cost ~5e-4."""
    shape = {2: (64, 8), 4: (8, 4, 6, 6), None: (16, 32)}[variant.ndim]
    shape = shape[::-1] if axis == 1 else shape
    for seed in range(3):
        case = make_case(variant, np.random.default_rng(seed), dtype=np.float32, shape=shape, mode=mode,
                         axis=axis, offset=1e4, G=2 if variant.groups else None)
        out, grads, running = reference(case)
        for backward in variant.backward_names:
            bad = {k: e for k, e in _errors(_run(gn, case, backward), (out, grads, running)).items()
                   if not e <= 1e-4}
            assert not bad, (seed, backward, bad)


@pytest.mark.parametrize("threads", ["pool", "libgomp"])
@pytest.mark.parametrize("name, shape", [("layernorm", (600, 70)), ("batchnorm", (65536, 16)),
                                         ("spatial_groupnorm", (8, 8, 24, 24)), ("layernorm", (3, 20000)),
                                         ("batchnorm", (2**20, 2))])
def test_results_do_not_depend_on_the_thread_count(name, shape, threads, monkeypatch):
    """Chunks and tiles are fixed by the shape, and each is summed on its own before the chunks are
    added in order, so any number of threads gives the same bits (with _threads.PARALLEL lowered below
    these shapes, so that their loops do run on threads: krows, tall, rows, wide and tall with rows merged), on generated.numba's own
    pool and on libgomp's threads (which the kernels use once torch has loaded libgomp)."""
    from generated.numba import _layout, _threads

    monkeypatch.setattr(_threads, "PARALLEL", 1 << 12)
    assert int(np.prod(shape)) >= _threads.PARALLEL
    if threads == "pool":
        monkeypatch.setattr(_threads, "_openmp", lambda: None)
    else:
        torch = pytest.importorskip("torch")
        torch.add(torch.ones(4), 1)
        if _threads._openmp() is None:
            pytest.skip("this torch does not run on libgomp")
    case = make_case(BY_NAME[name], np.random.default_rng(5), shape=shape)
    backward = BY_NAME[name].backward_names[0]
    monkeypatch.setattr(_threads, "_THREADS", [0])   # set_num_threads's choice, undone afterwards
    results = []
    for threads in (1, 2, 3):
        _layout.set_num_threads(threads)
        results.append(_run(gn, case, backward))
    out, grads, _ = results[0]
    for other_out, other_grads, _ in results[1:]:
        assert np.array_equal(out, other_out)
        assert len(grads) == len(other_grads) and all(np.array_equal(a, b) for a, b in zip(grads, other_grads))


def test_non_contiguous_input():
    case = make_case(BY_NAME["batchnorm"], np.random.default_rng(9), shape=(9, 12))
    x = np.asfortranarray(case.x)[:, ::2]
    param = {"mode": "train"}
    out, cache = gn.batchnorm_forward(x, case.gamma[:6], case.beta[:6], dict(param))
    want, wcache = generated.batchnorm_forward(x, case.gamma[:6], case.beta[:6], dict(param))
    assert rel_error(out, want) <= 1e-12
    dout = case.dout[:, ::2]
    for a, b in zip(gn.batchnorm_backward_alt(dout, cache), generated.batchnorm_backward_alt(dout, wcache)):
        assert rel_error(a, b) <= 1e-12


BAD_CALLS = [
    ("x of the wrong rank", lambda m: m.batchnorm_forward(np.ones(3), np.ones(3), np.ones(3), {"mode": "train"})),
    ("missing mode", lambda m: m.batchnorm_forward(np.ones((3, 2)), np.ones(2), np.ones(2), {})),
    ("negative eps", lambda m: m.layernorm_forward(np.ones((3, 2)), np.ones(2), np.ones(2), {"eps": -1.0})),
    ("gamma of the wrong shape", lambda m: m.layernorm_forward(np.ones((3, 2)), np.ones(3), np.ones(2), {})),
    ("G not dividing C", lambda m: m.spatial_groupnorm_forward(np.ones((2, 4, 3, 3)), np.ones(4), np.ones(4),
                                                             3, {})),
    ("one value per group", lambda m: m.instancenorm_forward(np.ones((2, 3, 1, 1)), np.ones(3), np.ones(3), {})),
    ("complex x", lambda m: m.rmsnorm_forward(np.ones((2, 3)) + 1j, np.ones(3), {})),
    ("not a cache", lambda m: m.layernorm_backward(np.ones((3, 2)), {"x": 1})),
    ("dout of the wrong shape", lambda m: m.layernorm_backward(
        np.ones((3, 3)), m.layernorm_forward(np.arange(6.0).reshape(3, 2), np.ones(2), np.ones(2), {})[1])),
]


@pytest.mark.parametrize("what, call", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_rejects_bad_input_like_the_numpy_kernels(what, call):
    with pytest.raises(Exception) as numpy_error:
        call(generated)
    with pytest.raises(type(numpy_error.value)) as numba_error:
        call(gn)
    assert str(numba_error.value) == str(numpy_error.value)


def _root():
    from pathlib import Path
    return Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("backward", ["batchnorm_eps_outside_backward", "batchnorm_eps_outside_backward_alt"])
def test_a_constant_group_with_eps_outside_gets_the_limit(backward):
    """var = 0 makes sqrt(var) and eps - sigma_eps vanish; the gradient is the limit (g - mean g)/eps."""
    rng = np.random.default_rng(0)
    x, dout = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    x[:, 0] = 2.0
    _, cache = gn.batchnorm_eps_outside_forward(x, np.ones(3), np.zeros(3), {"mode": "train", "eps": 1e-5})
    dx = getattr(gn, backward)(dout, cache)[0]
    limit = (dout[:, 0] - dout[:, 0].mean()) / 1e-5
    assert np.max(np.abs(dx[:, 0] - limit)) <= 1e-12 * np.max(np.abs(limit))


def _to_inputs(expr, group: dict, elements: dict):
    """``expr`` with every per-element local and per-group value replaced by its definition, down to
    the function's inputs and group sums."""
    for _ in range(50):
        new = expr.xreplace(elements).xreplace(group)
        if new == expr:
            return new
        expr = new
    raise AssertionError(f"no fixed point: {expr}")


def test_the_elementwise_pass_reads_each_per_group_factor_once():
    """numba's rewrites of a schedule (derive/backends/numba/context.py, fold.py): each stored
    per-element result, with every definition substituted back, is the function's own; and where a
    result is affine in its per-element values, its per-group factors are multiplied out once per
    group: batch norm's training forward reads mu_hi and two coefficients per element (it read
    beta, gamma, inv_std, mu_hi and mu_lo) and its backward four (it read five)."""
    import sympy as sp
    from _derived import all_default

    from derive.backends.numba.context import split_means
    from derive.backends.numba.fold import fold_elements
    from derive.math.algebra import Elem
    from derive.output import render

    def reads(f):
        got = set()
        for _, v in f.schedule.elements:
            got |= {s for s in v.free_symbols if not isinstance(s, Elem)}
        return {s.name for s in got} - {"m"}

    counts, checked = {}, 0
    for build in render.builds(list(all_default())):
        ir = build.ir
        for key, f in ir.functions.items():
            if key == "backward2":
                continue
            split = split_means(f, ir.x, ir.names.local)
            folded = fold_elements(split, ir.x, ir.names.local)
            old = {s: v for s, v in f.schedule.elements}
            group = {s: v for p in folded.schedule.passes for s, v in p.group}
            new = {s: v for s, v in folded.schedule.elements}
            for s in f.schedule.stores:
                want = _to_inputs(old[s], group, old)
                got = _to_inputs(new[s], group, new)
                assert sp.expand(got - want) == 0, (build.spec.name, key, s)
                checked += 1
            counts[build.spec.name, key] = (len(reads(split)), len(reads(folded)))
    assert checked > 50
    assert counts["batchnorm", "forward_step"] == (5, 3)
    assert counts["batchnorm", "backward_step"] == (5, 4)
    assert counts["layernorm", "forward_step"][1] == counts["layernorm", "forward_step"][0]   # gamma varies


def test_the_statistics_take_one_pass_around_each_groups_first_element():
    """numba's forward kernels sum x and the variance in one pass, around a shift s (each group's
    first element; derive/backends/numba/shift.py): every sum of the pass they replace, written
    with the new sums as the sums they are (sum(x - s), sum((x - s)**2)), is exactly the old one;
    batch, layer and group norm's training forwards have one pass of sums where they had two, and
    RMS norm (no mean) keeps its one."""
    import sympy as sp
    from _derived import all_default

    from derive.backends.numba.shift import shift_moments
    from derive.math.algebra import BatchSum, expand_sums
    from derive.output import render

    merged, checked = {}, 0
    for build in render.builds(list(all_default())):
        ir = build.ir
        for key, f in ir.functions.items():
            shifted, shifts = shift_moments(f, ir.x, ir.names.local)
            sums = lambda sc: sum(1 for p in sc.passes if p.sums)
            merged[build.spec.name, key] = (sums(f.schedule), sums(shifted.schedule))
            if not shifts:
                assert shifted is f
                continue
            old = {acc: BatchSum(v) for p in f.schedule.passes for acc, v in p.sums}
            new = {acc: BatchSum(v) for p in shifted.schedule.passes for acc, v in p.sums}
            values = {s: v for p in shifted.schedule.passes for s, v in p.group}
            for target, want in old.items():
                got = new[target] if target in new else values[target].xreplace(new)
                assert sp.expand(expand_sums(got, {}) - expand_sums(want, {})) == 0, (build.spec.name, key, target)
                checked += 1
    assert checked > 20
    for name in ("batchnorm", "layernorm", "spatial_groupnorm"):
        assert merged[name, "forward_step"] == (2, 1), name
    assert merged["rmsnorm", "forward_step"] == (1, 1)


@pytest.mark.parametrize("view, axes, params", [((1000, 6), (0,), (1,)), ((7, 5, 3, 2), (0, 2, 3), (1,)),
                                                 ((1, 9, 4), (2,), (2,)), ((12, 5, 2), (0, 2), (2,)),
                                                 ((0, 6), (0,), (1,)), ((4, 3, 0), (2,), (2,))])
def test_cols_reads_each_groups_first_element_as_its_tile_starts(view, axes, params):
    """cols takes each group's shift (its first element, x[0, g, 0, 0] of the kernel view) as a
    tile starts, from the tile's own columns (_layout.first_cols): the same values as the pass over
    every group that tall and wide run (_layout.first), with rows merged (R > 1) or not, and zero
    for empty groups."""
    from generated.numba import _layout
    lay = _layout.layout(view, axes, params, any(a in axes for a in params))
    x = lay.to_kernel(np.random.default_rng(2).normal(size=view))
    want = _layout.first(x)
    got = np.full(lay.groups, np.nan)
    for g0 in range(0, lay.groups, 4):
        _layout.first_cols(lay.cols(x), got, g0, min(lay.groups, g0 + 4), lay.K * lay.I)
    assert np.array_equal(got, want)


def test_a_first_element_far_from_its_group_still_gives_the_variance():
    """The one-pass statistics sum around each group's first element (shift.py); here that element
    is 1e5 away from the rest (x = 3e4 + N(0, 1), the first row + 1e5), the worst place for the
    shift: the two sides of the variance's formula cancel by about m = 4096, and float64 sums keep
    the variance to 1e-11 relative (float32 sums would lose it to about 2e-4)."""
    rng = np.random.default_rng(0)
    x = (3e4 + rng.standard_normal((4096, 64))).astype(np.float32)
    x[0] += 1e5
    out, cache = gn.batchnorm_forward(x, np.ones(64, np.float32), np.zeros(64, np.float32),
                                      {"eps": 1e-5, "mode": "train"})
    x64 = x.astype(np.float64)
    var = x64.var(0)
    assert np.abs(cache["std"].reshape(-1) ** 2 - 1e-5 - var).max() / var.min() <= 1e-9
    assert np.abs(out - (x64 - x64.mean(0)) / np.sqrt(var + 1e-5)).max() <= 1e-4


def test_short_runs_take_krows_only_where_a_group_is_one_run():
    """The layout's choice for parameters that vary inside a group (layer norm): runs of 8 or more
    along k go to krows when a group is one run (O = 1); shorter ones, or groups spread over rows,
    stay in cols.  The test above checks the results of both."""
    from generated.numba import _layout
    assert _layout.layout((1000, 8), (1,), (1,), True).strategy == "krows"
    assert _layout.layout((1000, 4), (1,), (1,), True).strategy == "cols"
    assert _layout.layout((6, 1000, 8), (0, 2), (2,), True).strategy == "cols"


def test_few_long_groups_split_k_into_tiles():
    """krows with fewer than 16 groups a parameter row, each long enough for two tiles of 4096 along
    k, goes wide: the threads split k instead of taking whole groups (layer norm at (4, 2**20):
    backward 8.45 ms in krows, 3.59 ms in wide).  The tests above check the results of wide."""
    from generated.numba import _layout
    assert _layout.layout((4, 2**20), (1,), (1,), True).strategy == "wide"
    assert _layout.layout((4, 2**20), (1,), (1,), True).KT == 16
    assert _layout.layout((3, 9000), (1,), (1,), True).KT == 2
    assert _layout.layout((15, 8192), (1,), (1,), True).strategy == "wide"
    assert _layout.layout((16, 2**20), (1,), (1,), True).strategy == "krows"    # enough groups
    assert _layout.layout((4, 8191), (1,), (1,), True).strategy == "krows"      # one tile
    assert _layout.layout((1, 4, 2**20), (2,), (1,), False).strategy == "rows"  # one value a group
    # group norm's view (N, G, C/G, 1), gamma along (G, C/G): N groups share a parameter row
    assert _layout.layout((4, 32, 2**15, 1), (2, 3), (1, 2), True).strategy == "wide"
    assert _layout.layout((16, 32, 2**13, 1), (2, 3), (1, 2), True).strategy == "krows"


def test_a_zero_variance_group_with_eps_zero_gives_torchs_nan():
    """generated.torch runs numba's kernels on a large CPU tensor, and layer norm takes torch's
    eps = 0: a constant row divides 0 by 0.  Like torch, that row is nan (the kernels use NumPy's
    error model: no ZeroDivisionError raised from inside a loop) and the others are normalized as usual."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    import generated.torch as gt
    x = torch.randn(64, 1024, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[0] = 2.0
    got, want = gt.layer_norm(x, (1024,), eps=0.0), F.layer_norm(x, (1024,), eps=0.0)
    assert torch.isnan(want[0]).all() and torch.isnan(got[0]).all()
    assert torch.allclose(got[1:], want[1:], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 50, 64), (3, 4, 9000), (3, 1, 9000)], ids=["krows", "wide", "wide-one-group"])
def test_krows_with_groups_over_several_rows_matches_the_printed_torch_functions(shape):
    """A layer norm view whose groups span a reduced axis before them too (O = 3 rows of 64 along k):
    krows' loop over o, which the library's own views (O = 1) never take; and wide's, with 4 groups
    of 3 rows of 9000 (the forward in krows) and with one (the forward in wide too).  generated.numba's kernel contract against the printed torch functions on the
    same view, float64."""
    pytest.importorskip("torch")
    from generated.numba import _layout
    assert _layout.layout(shape, (0, 2), (2,), True).strategy == ("krows" if shape[2] == 64 else "wide")
    _layernorm_contract_matches_the_printed_torch_functions(shape, seed=3)


def _layernorm_contract_matches_the_printed_torch_functions(shape, seed):
    """Layer norm's kernel contract (generated.numba) against the printed torch functions on a view
    (O, G, K) whose groups span axes 0 and 2, float64, to 1e-12: out, then dx, dgamma and dbeta."""
    import torch

    from generated.numba import layernorm as nl
    from generated.torch import layernorm as tl
    rng = np.random.default_rng(seed)
    x, dout = rng.normal(size=shape) + 2.0, rng.normal(size=shape)
    gamma, beta = rng.normal(size=(1, 1, shape[2])), rng.normal(size=(1, 1, shape[2]))
    kw = {"eps": 1e-5, "m": shape[0] * shape[2], "axes": (0, 2), "param_sum_axes": (0, 1)}
    got = nl.forward_train(x, gamma, beta, **kw)
    want = tl.forward_train(*map(torch.from_numpy, (x, gamma, beta)), **kw)
    assert rel_error(got["out"], want["out"].numpy()) <= 1e-12
    grads = nl.backward_train_fused(dout, gamma, got["mu"], got["std"], x, **kw)
    t = {k: torch.from_numpy(np.asarray(v)) for k, v in (("mu", got["mu"]), ("std", got["std"]))}
    wants = tl.backward_train_fused(torch.from_numpy(dout), torch.from_numpy(gamma), t["mu"], t["std"],
                                    torch.from_numpy(x), outer_axes=(0, 1), **kw)
    for a, b in zip(grads, wants):
        assert rel_error(np.asarray(a), b.numpy()) <= 1e-12
