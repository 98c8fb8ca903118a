"""The inputs `derive check` gives a learner's functions, and the list of checks it runs.

Each family is checked over a few shapes, two seeds and two scales (at 1e-3 the variance
is below ε).  A case also carries three directions (for x, γ, β): the learner's forward is
evaluated at inputs ± ``FD_STEP`` times a direction, so that a backward can be compared with
the central difference of the learner's OWN forward, Σ dout·(f(x + t v) − f(x − t v)) / 2t,
when that forward is wrong.  No module here runs learner code.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

EPS, MOMENTUM = 1e-5, 0.9
FD_STEP = 1e-5        #: t of the central differences, relative to each input's scale
RUNNING = ("batchnorm", "spatial_batchnorm")
SHAPES = {"batchnorm": [((4, 3), None), ((9, 5), None), ((16, 6), None)],
          "layernorm": [((4, 3), None), ((9, 5), None), ((6, 16), None)],
          "spatial_batchnorm": [((2, 3, 4, 5), None), ((3, 2, 3, 3), None)],
          "spatial_groupnorm": [((2, 6, 3, 2), 3), ((3, 4, 2, 3), 2)]}
FUNCTIONS = {"batchnorm": ("forward", "backward", "backward_alt"), "layernorm": ("forward", "backward"),
             "spatial_batchnorm": ("forward", "backward"), "spatial_groupnorm": ("forward", "backward")}
ARGS = ("x", "gamma", "beta")
GRADS = {"x": "dx", "gamma": "dgamma", "beta": "dbeta"}


@dataclass(frozen=True, eq=False)
class Case:
    """One input of one family: the arrays, and where they came from."""

    index: int
    shape: tuple[int, ...]
    seed: int
    scale: float
    groups: int | None
    arrays: dict        #: x, gamma, beta, dout, running_mean, running_var, vx, vgamma, vbeta

    def __getattr__(self, name: str):
        try:
            return self.__dict__["arrays"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def running(self) -> dict:
        return {k: self.arrays[k] for k in ("running_mean", "running_var")}

    def describe(self, mode: str) -> str:
        """'case 6 (shape (9, 5), train mode, seed 0, scale 0.001)'."""
        g = "" if self.groups is None else f", G={self.groups}"
        return f"case {self.index} (shape {self.shape}{g}, {mode} mode, seed {self.seed}, scale {self.scale:g})"


@lru_cache(maxsize=None)
def cases(family: str) -> tuple[Case, ...]:
    out = []
    for (shape, groups), seed, scale in itertools.product(SHAPES[family], (0, 1), (1.0, 1e-3)):
        rng = np.random.default_rng(seed)
        c = shape[1]
        pshape = (1, c, 1, 1) if family == "spatial_groupnorm" else (c,)
        a = {"x": scale * (rng.normal(size=shape) + rng.normal(size=(1, c) + (1,) * (len(shape) - 2)))}
        # running statistics of the same scale: at 1e-3 the test mode's variance is below ε too
        a["running_mean"], a["running_var"] = scale * rng.normal(size=c), scale ** 2 * rng.uniform(0.5, 2.0, size=c)
        a["gamma"], a["beta"] = 1 + 0.5 * rng.normal(size=pshape), rng.normal(size=pshape)
        a["dout"] = rng.normal(size=shape)
        a["vx"], a["vgamma"], a["vbeta"] = (scale * rng.normal(size=shape), rng.normal(size=pshape),
                                            rng.normal(size=pshape))
        for v in a.values():
            v.flags.writeable = False
        out.append(Case(len(out), shape, seed, scale, groups, a))
    return tuple(out)


def param(family: str, mode: str, case: Case) -> dict:
    """The param dict of a call (fresh copies: a learner's forward may write into it)."""
    if family not in RUNNING:
        return {"eps": EPS}
    return {"mode": mode, "eps": EPS, "momentum": MOMENTUM, **{k: v.copy() for k, v in case.running.items()}}


def args(family: str, mode: str, case: Case) -> tuple:
    g = () if case.groups is None else (case.groups,)
    return (case.x.copy(), case.gamma.copy(), case.beta.copy(), *g, param(family, mode, case))


@dataclass(frozen=True)
class Check:
    """One line of the report: a function in one mode ('train' and 'test' are the forward's)."""

    family: str
    kind: str       #: train, test, backward, backward_alt

    @property
    def function(self) -> str:
        return f"{self.family}_forward" if self.kind in ("train", "test") else f"{self.family}_{self.kind}"

    @property
    def label(self) -> str:
        if self.kind in ("train", "test") and self.family in RUNNING:
            return f"{self.function} ({self.kind} mode)"
        return self.function

    @property
    def mode(self) -> str:
        return "test" if self.kind == "test" else "train"

    @property
    def backward(self) -> bool:
        return self.kind not in ("train", "test")


def checks(functions: frozenset[str] | None = None) -> tuple[Check, ...]:
    """Every check, in report order; ``functions``: only the checks of these functions."""
    out = []
    for family, kinds in FUNCTIONS.items():
        for kind in kinds:
            modes = (("train", "test") if family in RUNNING else ("train",)) if kind == "forward" else (kind,)
            out += [Check(family, k) for k in modes]
    return tuple(c for c in out if functions is None or c.function in functions)


def every_function() -> tuple[str, ...]:
    return tuple(f"{f}_{k}" for f, kinds in FUNCTIONS.items() for k in kinds)
