"""Runs the numba backend's public functions on a verification case (see derive.output.verify); the
verifier sets NUMBA_DISABLE_JIT, so the printed loops run as plain Python.

A small case lays out in one strategy (cols, mostly), so each case runs once in every strategy the
case's view can take: the layout's choice is overridden (:func:`forced`), with two or three tiles
of k in wide and row chunks in tall (and in tall with rows merged), so that every driver's loops and
bounds meet the proved expressions before anything is written."""
from __future__ import annotations

import contextlib
import importlib

from ...ir.api import call

FACADE = False
#: every strategy of generated/numba/_layout.py; "merged" is tall with R rows merged into one
#: (_layout.merged_rows), the others run with rows unmerged
STRATEGIES = ("rows", "krows", "wide", "cols", "tall", "merged")


def covers(build) -> bool:
    return True


@contextlib.contextmanager
def forced(layout, strategy: str):
    """Every layout made inside takes ``strategy`` where its view can (krows and wide: parameters
    that vary inside a group and I = 1), with KT and RC set so that wide and tall split the work."""
    made = layout.Layout.__init__

    def init(self, *args, **kwargs):
        made(self, *args, **kwargs)
        if strategy in ("krows", "wide") and not (self.varying and self.I == 1):
            return
        self.strategy = "tall" if strategy == "merged" else strategy
        self.KT = max(1, min(3, self.K))
        self.R = 1
        if strategy == "merged":   # the smallest merge, so that a case's few rows still make row chunks
            self.R = next((r for r in range(2, self.O + 1) if self.O % r == 0), 1)
            self.GT = self.G
        self.RC = max(1, min(3, self.O // self.R))

    layout.layout.cache_clear()
    layout.Layout.__init__ = init
    try:
        yield
    finally:
        layout.Layout.__init__ = made
        layout.layout.cache_clear()


def run(package: str, build, case) -> list:
    module = importlib.import_module(f"{package}.numba.{build.spec.name}")
    layout = importlib.import_module(f"{package}.numba._layout")
    out = []
    for strategy in STRATEGIES:
        with forced(layout, strategy):
            out += [(f"{function} ({strategy})", key, value) for function, key, value in call(module, build, case)]
    return out
