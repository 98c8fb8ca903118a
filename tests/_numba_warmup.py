"""Compile generated.numba's kernels into this test run's numba cache, from a second process.

conftest.py starts this script when the session holds numba tests, and runs those tests last:
meanwhile, this process compiles (on the machine's other core) the kernels that they call, in
the reverse of the order in which they first call them, into $NORMDERIVE_NUMBA_CACHE.  A test
that reaches a kernel compiled here loads it from that cache; one that gets there first compiles
it and caches it, and then this process loads it.  Nothing is checked here: every result is
checked by the tests, which call every kernel themselves.  Without this process the tests
compile everything themselves, one kernel after the other.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import CONFIGS, make_case, numba_float32_config  # noqa: E402


def _args(case):
    v = case.variant
    return [case.x, case.gamma] + ([case.beta] if v.shift else []) + ([case.G] if v.groups else [])


def calls():
    """(label, call) for every dtype and memory layout that the numba tests give each kernel,
    roughly in the order of the tests' first calls."""
    out = []
    for dtype in (np.float64, np.float32):
        for v, mode, axis in CONFIGS:
            if dtype == np.float64 or numba_float32_config(v, mode, axis):
                case = make_case(v, np.random.default_rng(0), dtype=dtype, mode=mode, axis=axis, eps=1e-3)
                out.append((f"{v.name}-{mode}-{axis}-{np.dtype(dtype).name}", _case_call(case)))
    others = [("batch_renorm", lambda gn, x, mode: gn.batch_renorm_forward(
                  x, np.ones(5), np.zeros(5), {"mode": mode, "running_mean": np.zeros(5),
                                               "running_var": np.ones(5)})),
              ("meanonly_batchnorm", lambda gn, x, mode: gn.meanonly_batchnorm_forward(
                  x, np.zeros(5), {"mode": mode, "running_mean": np.zeros(5)})),
              ("l2_normalize", lambda gn, x, mode: gn.l2_normalize_forward(x, {})),
              ("weight_standardization", lambda gn, x, mode: gn.weight_standardization_forward(
                  x.reshape(5, 3, 1, 2), {}))]
    for name, forward in others:
        for mode in ("train", "test") if "batch" in name else ("train",):
            out.append((f"{name}-{mode}", _other_call(name, forward, mode)))
    x = np.asfortranarray(np.random.default_rng(0).standard_normal((9, 12)))[:, ::2]   # neither C nor F
    out.append(("batchnorm-strided", lambda gn: gn.batchnorm_backward_alt(
        x, gn.batchnorm_forward(x, np.ones(6), np.zeros(6), {"mode": "train"})[1])))
    return out


def _case_call(case):
    def call(gn):
        _, cache = getattr(gn, f"{case.variant.name}_forward")(*_args(case), case.fresh_param())
        for backward in case.variant.backward_names:
            getattr(gn, backward)(case.dout, cache)
    return call


def _other_call(name, forward, mode):
    def call(gn):
        x = np.random.default_rng(1).standard_normal((6, 5))
        out, cache = forward(gn, x, mode)
        for backward in (f"{name}_backward", f"{name}_backward_staged"):
            getattr(gn, backward)(np.ones_like(out), cache)
    return call


def main() -> int:
    import generated.numba as gn

    for _, call in reversed(calls()):
        try:
            call(gn)
        except Exception:  # noqa: BLE001 - the tests call the same kernels and report any error
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
