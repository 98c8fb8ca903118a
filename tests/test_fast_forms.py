"""The fast layout (block functions, fused reductions) against the staged textbook form.

Shapes are chosen so the arrays span several row blocks with a ragged last block
(generated/_blocks.py sweeps about 512 KiB per operand), so a slicing mistake shows.
"""
from __future__ import annotations

import numpy as np
import pytest

import generated as g

# (name, forward args builder, fast backward, staged backward)
CASES = {
    "batchnorm": ((1000, 70), lambda x, p: (x, p[0], p[1], {"mode": "train"}),
                  g.batchnorm_forward, g.batchnorm_backward_alt, g.batchnorm_backward, (70,)),
    "batchnorm_columns": ((70, 1000), lambda x, p: (x, p[0], p[1], {"mode": "train", "axis": 1}),
                          g.batchnorm_forward, g.batchnorm_backward_alt, g.batchnorm_backward, (70,)),
    "batchnorm_eps_outside": ((1000, 70), lambda x, p: (x, p[0], p[1], {"mode": "train"}),
                              g.batchnorm_eps_outside_forward, g.batchnorm_eps_outside_backward_alt,
                              g.batchnorm_eps_outside_backward, (70,)),
    "spatial_batchnorm": ((9, 6, 50, 50), lambda x, p: (x, p[0], p[1], {"mode": "train"}),
                          g.spatial_batchnorm_forward, g.spatial_batchnorm_backward,
                          g.spatial_batchnorm_backward_staged, (6,)),
    "layernorm": ((1000, 70), lambda x, p: (x, p[0], p[1], {}),
                  g.layernorm_forward, g.layernorm_backward, g.layernorm_backward_staged, (70,)),
    "spatial_groupnorm": ((9, 6, 50, 50), lambda x, p: (x, p[0], p[1], 3, {}),
                          g.spatial_groupnorm_forward, g.spatial_groupnorm_backward,
                          g.spatial_groupnorm_backward_staged, (1, 6, 1, 1)),
    "instancenorm": ((9, 6, 50, 50), lambda x, p: (x, p[0], p[1], {}),
                     g.instancenorm_forward, g.instancenorm_backward, g.instancenorm_backward_staged, (6,)),
    "rmsnorm": ((3, 400, 70), lambda x, p: (x, p[0], {}),
                g.rmsnorm_forward, g.rmsnorm_backward, g.rmsnorm_backward_staged, (70,)),
}


def inputs(name, dtype, offset=0.0, seed=0):
    shape, build, forward, fast, staged, pshape = CASES[name]
    rng = np.random.default_rng(seed)
    x = (rng.normal(offset, 3.0, shape)).astype(dtype)
    params = [rng.normal(1, 0.5, pshape).astype(dtype), rng.normal(0, 1, pshape).astype(dtype)]
    dout = rng.normal(size=shape).astype(dtype)
    return build(x, params), dout, forward, fast, staged


def max_rel(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_equals_staged_in_float64(name):
    args, dout, forward, fast, staged = inputs(name, np.float64)
    _, cache = forward(*args)
    for a, b in zip(fast(dout, cache), staged(dout, cache)):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert max_rel(a, b) < 1e-10


@pytest.mark.parametrize("offset,tolerance", [(0.0, 1e-4), (1e4, 1e-3)])
@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_float32_is_close_to_float64(name, offset, tolerance):
    args64, dout64, forward, fast, staged = inputs(name, np.float64, offset)
    args32 = [a.astype(np.float32) if isinstance(a, np.ndarray) else a for a in args64]
    out64, cache64 = forward(*args64)
    out32, cache32 = forward(*args32)
    assert out32.dtype == np.float32
    assert max_rel(out32, out64) < tolerance
    for a, b in zip(fast(dout64.astype(np.float32), cache32), staged(dout64, cache64)):
        assert a.dtype == np.float32
        assert max_rel(a, b) < tolerance


# (factor shapes, axes): the operands the kernels hand generated/_blocks.py::sum_of_products -- per-feature,
# per-group and per-element factors, two to four of them, summed within rows and along them
PRODUCTS = [
    ([(50, 7), (1, 7)], (1,)), ([(50, 7), (1, 7)], (0,)),
    ([(50, 7), (1, 7), (50, 7)], (1,)), ([(50, 7), (1, 7), (50, 7)], (0,)),
    ([(50, 1), (50, 7), (1, 7), (50, 7)], (1,)), ([(1, 7), (50, 7), (50, 1), (50, 7)], (0,)),
    ([(1, 7), (50, 7)], (0, 1)), ([(1, 7), (1, 7)], (1,)),
    ([(5, 3, 4, 6), (1, 3, 1, 1), (5, 3, 4, 6)], (2, 3)), ([(5, 3, 4, 6), (1, 3, 1, 1), (5, 3, 4, 6)], (0, 2, 3)),
    ([(4, 2, 3, 5, 5), (1, 2, 3, 1, 1), (4, 2, 3, 5, 5)], (2, 3, 4)), ([(4, 2, 3, 5, 5), (4, 2, 3, 5, 5)], (0, 3, 4)),
    ([(1, 7), (1, 7), (1, 7)], (1,)), ([(0, 7), (1, 7), (0, 7)], (1,)), ([(0, 7), (0, 7)], (0,)),
]


@pytest.mark.parametrize("blocks", ["default", "tiny"])
@pytest.mark.parametrize("shapes,axes", PRODUCTS, ids=[f"{len(s)}x{s[0]}-{a}" for s, a in PRODUCTS])
def test_sum_of_products_is_the_sum_of_the_product(shapes, axes, blocks, monkeypatch):
    """Every factor layout, in one block and (tiny) in ragged blocks of a few rows, long rows and short."""
    from generated import _blocks
    if blocks == "tiny":
        monkeypatch.setattr(_blocks, "BLOCK_BYTES", 200)
        monkeypatch.setattr(_blocks, "LONG_ROW_BYTES", 64)
        monkeypatch.setattr(_blocks, "SUM_ROWS", 3)
    rng = np.random.default_rng(1)
    factors = [rng.normal(size=s) for s in shapes]
    want = np.sum(np.prod(np.broadcast_arrays(*factors), axis=0), axis=axes, keepdims=True)
    got = _blocks.sum_of_products(tuple(factors), axes)
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    got32 = _blocks.sum_of_products(tuple(f.astype(np.float32) for f in factors), axes)
    np.testing.assert_allclose(got32, want, rtol=1e-5, atol=1e-5 * np.max(np.abs(want), initial=0))
