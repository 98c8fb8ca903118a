"""Runs the numba backend's public functions on a verification case (see derive.output.verify); the
verifier sets NUMBA_DISABLE_JIT, so the printed loops run as plain Python."""
from __future__ import annotations

import importlib

from ...ir.api import call

FACADE = False


def covers(build) -> bool:
    return True


def run(package: str, build, case) -> list:
    return call(importlib.import_module(f"{package}.numba.{build.spec.name}"), build, case)
