"""Runs the numba backend's public functions on a verification case (see derive.output.verify); the
verifier sets NUMBA_DISABLE_JIT, so the printed loops run as plain Python.

A small case lays out in one strategy (cols, mostly), so each case runs once in every strategy the
case's view can take: the layout's choice is overridden (:func:`forced`), with two or three tiles
of k in wide and row chunks in tall, so that every driver's loops and bounds meet the proved
expressions before anything is written."""
from __future__ import annotations

import contextlib
import importlib

from ...ir.api import call

FACADE = False
#: every strategy of generated/numba/_layout.py
STRATEGIES = ("rows", "krows", "wide", "cols", "tall")


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
        self.strategy = strategy
        self.KT = max(1, min(3, self.K))
        self.RC = max(1, min(3, self.O))

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
