"""Derivations shared by the tests (computed once per test session)."""
from __future__ import annotations

import functools

from derive.cli import DEFAULT_MAX_M
from derive.derivation import Derivation, derive
from derive.library import BY_NAME, ENTRIES


@functools.lru_cache(maxsize=None)
def derived(name: str, max_m: int = 3) -> Derivation:
    return derive(BY_NAME[name], max_m)


@functools.lru_cache(maxsize=None)
def all_default() -> tuple[Derivation, ...]:
    """Every library entry at the default M: exactly what `derive` renders."""
    return tuple(derive(entry, DEFAULT_MAX_M) for entry in ENTRIES)
