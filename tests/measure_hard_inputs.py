"""Measurements for issue 14 (not a test): the staged backward's peak memory and the tall-array times.

    PYTHONPATH=$PWD python3 tests/measure_hard_inputs.py [--quick]

Peak memory is what tracemalloc sees NumPy allocate during one call of each
backward form at (10**6, 2) float32 (x itself is 8 MB).  Times are the best of
three calls at (10**7, 2) float32 (--quick: 10**6), against the naive NumPy form
and, when numba is installed, the numba kernels.
"""
from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np

import generated


def peak_mb(fn, *args) -> float:
    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def best(fn, *args, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return min(times)


def naive_forward(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = x.var(axis=0)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def main(argv: list[str]) -> int:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10**6, 2)).astype(np.float32)
    g, b = np.ones(2, np.float32), np.zeros(2, np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    _, cache = generated.batchnorm_forward(x, g, b, {"mode": "train"})
    print(f"peak memory at {x.shape} float32 (x is {x.nbytes / 1e6:.0f} MB):")
    for name in ("batchnorm_backward", "batchnorm_backward_alt"):
        print(f"  {name:24s} {peak_mb(getattr(generated, name), dy, cache):7.1f} MB")
    n = 10**6 if "--quick" in argv else 10**7
    x = rng.standard_normal((n, 2)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    p = {"mode": "train"}
    _, cache = generated.batchnorm_forward(x, g, b, dict(p))
    print(f"times at {x.shape} float32 (best of 3):")
    rows = [("naive NumPy forward", naive_forward, (x, g, b)),
            ("numpy forward", generated.batchnorm_forward, (x, g, b, p)),
            ("numpy backward_alt", generated.batchnorm_backward_alt, (dy, cache))]
    try:
        import generated.numba as gn
        _, ncache = gn.batchnorm_forward(x, g, b, dict(p))
        rows += [("numba forward", gn.batchnorm_forward, (x, g, b, p)),
                 ("numba backward_alt", gn.batchnorm_backward_alt, (dy, ncache))]
    except ImportError:
        pass
    for label, fn, args in rows:
        print(f"  {label:22s} {best(fn, *args):6.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
