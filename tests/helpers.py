"""Shared pieces of the kernel tests: the variant table, input makers and a float64 oracle.

The oracle here is written from the textbook formulas, row by row, in plain
NumPy float64; it shares no code with derive/ or generated/.  Each variant's
layout is restated here (which values form one normalization group, which axis
gamma spans) instead of being read from derive.forward.layout, so that a layout mistake
in the spec cannot hide itself.

Relative error, used by every numeric test (a norm-based form of CS231n's
``rel_error``)::

    rel_error(a, b) = max|a - b| / max(max|a|, max|b|, tiny)

The elementwise CS231n form divides by |a_i| + |b_i| and so blows up on
entries that are zero up to rounding (dx entries cancel by construction); the
max-norm form measures the error against the size of the result instead.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

import generated

TINY = 1e-300


def rel_error(a, b) -> float:
    """max|a - b| / max(max|a|, max|b|, tiny), computed in float64; NaN anywhere gives inf."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.size == 0:
        return 0.0
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)), TINY)
    return float(np.max(np.abs(a - b)) / scale)


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """One generated normalization, described independently of derive.forward.layout."""

    name: str
    ndim: int | None          # None: any rank >= 1 (RMSNorm)
    param_arg: str
    shift: bool = True        # has beta
    running: bool = False     # train/test modes with running statistics (the batch norms)
    groups: bool = False      # takes G (group norm)
    eps_outside: bool = False
    centred: bool = True
    axis_option: bool = False  # bn_param['axis']
    param_4d: bool = False    # gamma/beta shaped (1, C, 1, 1)

    @property
    def forward(self):
        return getattr(generated, f"{self.name}_forward")

    @property
    def backward_names(self) -> tuple[str, ...]:
        """Every exported backward form: <name>_backward and <name>_backward_<form>."""
        prefix = f"{self.name}_backward"
        return tuple(n for n in generated.__all__ if n == prefix or n.startswith(prefix + "_"))

    def __str__(self) -> str:
        return self.name


VARIANTS = (
    Variant("batchnorm", 2, "bn_param", running=True, axis_option=True),
    Variant("batchnorm_eps_outside", 2, "bn_param", running=True, axis_option=True, eps_outside=True),
    Variant("spatial_batchnorm", 4, "bn_param", running=True),
    Variant("layernorm", 2, "ln_param"),
    Variant("spatial_groupnorm", 4, "gn_param", groups=True, param_4d=True),
    Variant("instancenorm", 4, "in_param"),
    Variant("rmsnorm", None, "rms_param", shift=False, centred=False),
)
BY_NAME = {v.name: v for v in VARIANTS}
RUNNING = tuple(v for v in VARIANTS if v.running)

#: (variant, mode, axis): every configuration worth running separately.
CONFIGS = tuple(
    [(v, "train", 0) for v in VARIANTS]
    + [(v, "test", 0) for v in RUNNING]
    + [(v, mode, 1) for v in VARIANTS if v.axis_option for mode in ("train", "test")]
)


def numba_float32_config(variant: Variant, mode: str, axis: int) -> bool:
    """Whether the numba tests run this configuration in float32 as well as in float64.

    numba compiles each kernel once per dtype and memory layout (seconds each): float32 runs
    every configuration of axis 0 (C-ordered arrays) and one of axis 1 (the kernels see the
    transposed, F-ordered, view), batch norm in training mode; float64 runs them all.
    """
    return axis == 0 or (variant.name, mode) == ("batchnorm", "train")


def config_id(config) -> str:
    v, mode, axis = config
    return f"{v.name}-{mode}" + ("-axis1" if axis else "")


#: (variant, mode, axis, backward name): every backward form of every configuration.
BACKWARD_CONFIGS = tuple((v, mode, axis, b) for v, mode, axis in CONFIGS for b in v.backward_names)


def backward_id(config) -> str:
    v, mode, axis, b = config
    return config_id((v, mode, axis)) + "-" + b[len(v.name) + 1:]


# --------------------------------------------------------------------------- inputs


_CASE = object()  # "take it from the case": None is a value the kernels must reject


@dataclass
class Case:
    """One set of inputs for a variant; ``param`` is never handed to a kernel (see ``fresh_param``)."""

    variant: Variant
    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray | None
    dout: np.ndarray
    param: dict
    G: int | None = None
    mode: str = "train"
    axis: int = 0

    @property
    def eps(self) -> float:
        return self.param.get("eps", 1e-5)

    def fresh_param(self) -> dict:
        return copy.deepcopy(self.param)

    def forward(self, x=_CASE, gamma=_CASE, beta=_CASE, param=_CASE, G=_CASE):
        """Call the generated forward; arguments left out come from the case (param: a fresh copy)."""
        v = self.variant
        x = self.x if x is _CASE else x
        gamma = self.gamma if gamma is _CASE else gamma
        beta = self.beta if beta is _CASE else beta
        param = self.fresh_param() if param is _CASE else param
        G = self.G if G is _CASE else G
        args = [x, gamma]
        if v.shift:
            args.append(beta)
        if v.groups:
            args.append(G)
        args.append(param)
        return v.forward(*args)

    def params(self):
        """(gamma, beta) or (gamma,): the arrays that have gradients besides x."""
        return (self.gamma, self.beta) if self.variant.shift else (self.gamma,)


def random_shape(variant: Variant, rng, G: int | None = None, axis: int = 0, min_group: int = 3):
    """A small random shape with at least ``min_group`` values in every normalization group.

    Groups of two are left out by default: two values normalize to (-1, 1) whatever
    they are, so dx is of the order of eps and only its rounding noise is left.
    """
    while True:
        if variant.ndim == 2:
            shape = (int(rng.integers(2, 9)), int(rng.integers(2, 9)))
            if axis == 1:
                shape = shape[::-1]
        elif variant.ndim == 4:
            n, h, w = (int(rng.integers(1, 4)) for _ in range(3))
            c = G * int(rng.integers(1, 3)) if variant.groups else int(rng.integers(1, 5))
            shape = (n, c, h, w)
        else:
            rank = int(rng.integers(1, 5))
            shape = tuple(int(rng.integers(1, 4)) for _ in range(rank - 1)) + (int(rng.integers(2, 7)),)
        if group_size(variant, shape, G, axis) >= min_group:
            return shape


def make_case(variant: Variant, rng, dtype=np.float64, shape=None, mode="train", axis=0,
              eps=1e-5, scale=1.0, offset=0.0, G=None, momentum=None) -> Case:
    """Random inputs: x = offset + scale * N(0, 1); gamma, beta, dout of order one."""
    if variant.groups and G is None:
        G = int(rng.integers(1, 4)) if shape is None else _some_divisor(shape[1], rng)
    if shape is None:
        shape = random_shape(variant, rng, G, axis)
    x = (offset + scale * rng.standard_normal(shape)).astype(dtype)
    pshape = param_shape(variant, shape, axis)
    gamma = (rng.choice([-1.0, 1.0], pshape) * rng.uniform(0.5, 2.0, pshape)).astype(dtype)
    beta = rng.standard_normal(pshape).astype(dtype) if variant.shift else None
    dout = rng.standard_normal(shape).astype(dtype)
    param = {"eps": eps}
    if variant.running:
        param["mode"] = mode
        if axis:
            param["axis"] = axis
        if momentum is not None:
            param["momentum"] = momentum
        nfeat = shape[1] if (variant.ndim == 4 or axis == 0) else shape[0]
        if mode == "test" or rng.random() < 0.5:
            param["running_mean"] = (offset + 0.5 * scale * rng.standard_normal(nfeat)).astype(dtype)
            param["running_var"] = (scale**2 * rng.uniform(0.5, 1.5, nfeat)).astype(dtype)
    return Case(variant, x, gamma, beta, dout, param, G=G, mode=mode, axis=axis)


def _some_divisor(c: int, rng) -> int:
    divisors = [g for g in range(1, c + 1) if c % g == 0]
    return int(rng.choice(divisors))


def param_shape(variant: Variant, x_shape, axis=0) -> tuple[int, ...]:
    if variant.param_4d:
        return (1, x_shape[1], 1, 1)
    if variant.ndim == 4:
        return (x_shape[1],)
    if variant.running:
        return (x_shape[1 - axis],)
    return (x_shape[-1],)


def param_view(variant: Variant, x_ndim: int, axis=0) -> tuple[int, ...]:
    """Shape (with -1 on the parameter axis) that broadcasts gamma against x."""
    view = [1] * x_ndim
    if variant.ndim == 4:
        view[1] = -1
    elif variant.running:
        view[1 - axis] = -1
    else:
        view[-1] = -1
    return tuple(view)


def group_size(variant: Variant, shape, G=None, axis=0) -> int:
    """m: how many values one mean/variance is taken over."""
    if variant.running and variant.ndim == 2:
        return shape[axis]
    if variant.running:
        return shape[0] * shape[2] * shape[3]
    if variant.groups:
        return shape[1] // G * shape[2] * shape[3]
    if variant.ndim == 4:
        return shape[2] * shape[3]
    return shape[-1]


# --------------------------------------------------------------------------- the oracle


def to_rows(variant: Variant, a: np.ndarray, G=None, axis=0) -> np.ndarray:
    """View ``a`` (shaped like x) as (groups, m): one row per normalization group."""
    if variant.running and variant.ndim == 2:
        return a.T if axis == 0 else a
    if variant.running:
        return a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1)
    if variant.groups:
        return a.reshape(a.shape[0] * G, -1)
    if variant.ndim == 4:
        return a.reshape(a.shape[0] * a.shape[1], -1)
    return a.reshape(-1, a.shape[-1])


def from_rows(variant: Variant, rows: np.ndarray, shape, G=None, axis=0) -> np.ndarray:
    """Inverse of :func:`to_rows`."""
    if variant.running and variant.ndim == 2:
        return rows.T if axis == 0 else rows
    if variant.running:
        n, c, h, w = shape
        return rows.reshape(c, n, h, w).transpose(1, 0, 2, 3)
    return rows.reshape(shape)


def reference(case: Case, x=None, dout=None, param=None, scales=False):
    """float64 forward and backward: (out, grads, running) with grads = (dx, dgamma[, dbeta]).

    running is {'running_mean', 'running_var'} after a training step of a batch
    norm, else {}.  Every input is taken to float64 first.  With ``scales=True`` a
    fourth item maps each result name to the size of the terms that make it up
    (the same formula with every term taken in absolute value), for
    :func:`scaled_error`.
    """
    v = case.variant
    x = np.asarray(case.x if x is None else x, dtype=np.float64)
    dout = np.asarray(case.dout if dout is None else dout, dtype=np.float64)
    param = case.param if param is None else param
    eps = float(param.get("eps", 1e-5))
    view = param_view(v, x.ndim, case.axis)
    gamma = np.asarray(case.gamma, dtype=np.float64)
    gfull = np.broadcast_to(gamma.reshape(view), x.shape)
    xr = to_rows(v, x, case.G, case.axis)
    gr = to_rows(v, dout * gfull, case.G, case.axis)
    ga = np.abs(gr)
    running, size = {}, {}
    if v.running and case.mode == "test":
        nfeat = xr.shape[0]
        mu = np.asarray(param.get("running_mean", np.zeros(nfeat)), dtype=np.float64).reshape(-1, 1)
        var = np.asarray(param.get("running_var", np.zeros(nfeat)), dtype=np.float64).reshape(-1, 1)
        std = np.sqrt(var) + eps if v.eps_outside else np.sqrt(var + eps)
        xhat = (xr - mu) / std
        dxr = gr / std
        dx_size = ga / std
    else:
        mu = xr.mean(axis=1, keepdims=True) if v.centred else 0.0
        c = xr - mu
        var = (c * c).mean(axis=1, keepdims=True)
        if v.eps_outside:
            s = np.sqrt(var)
            std = s + eps
            xhat = c / std
            # d sqrt(var) / dx is c / (m s): bounded, and its limit at s = 0 is zero
            term = c * (gr * c).mean(axis=1, keepdims=True)
            term_size = np.abs(c) * (ga * np.abs(c)).mean(axis=1, keepdims=True)
            where = (s > 0) | np.isnan(s)
            term = np.divide(term, std**2 * s, out=np.zeros_like(term), where=where)
            term_size = np.divide(term_size, std**2 * s, out=np.zeros_like(term), where=where)
            dxr = (gr - gr.mean(axis=1, keepdims=True)) / std - term
            dx_size = (ga + ga.mean(axis=1, keepdims=True)) / std + term_size
        else:
            std = np.sqrt(var + eps)
            xhat = c / std
            centred_g = gr - gr.mean(axis=1, keepdims=True) if v.centred else gr
            dxr = (centred_g - xhat * (gr * xhat).mean(axis=1, keepdims=True)) / std
            dx_size = (ga + (ga.mean(axis=1, keepdims=True) if v.centred else 0)
                       + np.abs(xhat) * (ga * np.abs(xhat)).mean(axis=1, keepdims=True)) / std
        if v.running:
            momentum = float(param.get("momentum", 0.9))
            nfeat = xr.shape[0]
            rm = np.asarray(param.get("running_mean", np.zeros(nfeat)), dtype=np.float64)
            rv = np.asarray(param.get("running_var", np.zeros(nfeat)), dtype=np.float64)
            running = {"running_mean": momentum * rm + (1 - momentum) * mu.ravel(),
                       "running_var": momentum * rv + (1 - momentum) * var.ravel()}
            size["running_mean"] = momentum * np.abs(rm) + (1 - momentum) * np.abs(xr).mean(axis=1)
            size["running_var"] = np.abs(running["running_var"])
    xhat = from_rows(v, xhat, x.shape, case.G, case.axis)
    dx = from_rows(v, dxr, x.shape, case.G, case.axis)
    sum_axes = tuple(i for i, n in enumerate(view) if n == 1)
    dgamma = (dout * xhat).sum(axis=sum_axes).reshape(gamma.shape)
    out = gfull * xhat
    grads = [dx, dgamma]
    size["out"] = np.abs(out)
    size["dx"] = from_rows(v, dx_size, x.shape, case.G, case.axis)
    size["dgamma"] = np.abs(dout * xhat).sum(axis=sum_axes).reshape(gamma.shape)
    if v.shift:
        beta = np.asarray(case.beta, dtype=np.float64)
        out = out + beta.reshape(view)
        size["out"] = size["out"] + np.abs(beta).reshape(view)
        grads.append(dout.sum(axis=sum_axes).reshape(beta.shape))
        size["dbeta"] = np.abs(dout).sum(axis=sum_axes).reshape(beta.shape)
    if scales:
        return out, tuple(grads), running, size
    return out, tuple(grads), running


def scaled_error(got, want, size) -> float:
    """max|got - want| / max(size): the error against the size of the terms summed.

    A result that is small only because its terms cancel (dgamma = sum(dout * xhat)
    over a few values, dx of a group of three) is measured against its terms, the
    most that a correctly rounded evaluation can promise.  NaN anywhere gives inf.
    """
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.size == 0:
        return 0.0
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
        return float("inf")
    return float(np.max(np.abs(got - want)) / max(np.max(size), TINY))


# --------------------------------------------------------------------------- known bugs

#: backward forms that fail in training mode today, with the reason; the lead removes an
#: entry after the fix (the strict xfail then turns any pass into a failure as a reminder).
KNOWN_TRAIN_BUGS: dict[str, tuple[type[BaseException], str]] = {
    # "name_backward_form": (ExpectedError, "reason"),
}


def bug_marks(mode: str, backward_name: str):
    """A strict xfail for a training-mode call of a backward form in KNOWN_TRAIN_BUGS."""
    import pytest

    if mode == "train" and backward_name in KNOWN_TRAIN_BUGS:
        raises, reason = KNOWN_TRAIN_BUGS[backward_name]
        return [pytest.mark.xfail(raises=raises, strict=True, reason=reason)]
    return []


def backward_params(dtypes=(None,)):
    """pytest.param for every (config, backward) and dtype, with the known-bug marks."""
    import pytest

    params = []
    for cfg in BACKWARD_CONFIGS:
        for dtype in dtypes:
            ident = backward_id(cfg) + ("" if dtype is None else f"-{np.dtype(dtype).name}")
            values = cfg if dtype is None else (*cfg, dtype)
            params.append(pytest.param(*values, id=ident, marks=bug_marks(cfg[1], cfg[3])))
    return params
