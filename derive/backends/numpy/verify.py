"""Runs the NumPy backend's public functions on a verification case (see derive.output.verify)."""
from __future__ import annotations

import importlib

from ...ir.api import call

FACADE = False   #: the array API applies the graph's own running-statistics rule


def covers(build) -> bool:
    return True


def run(package: str, build, case) -> list:
    return call(importlib.import_module(f"{package}.{build.spec.name}"), build, case)
