"""Derivations, rendered files and answers shared by the tests: each computed once per session.

Every test that needs a derivation takes it from here, so each variant is derived and
proved once; :func:`use_cache` (the ``cached`` fixture of conftest.py) points the CLI's
calls at these, for tests that run the command in-process.
"""
from __future__ import annotations

import functools

from derive.cli import DEFAULT_MAX_M
from derive.forward.library import BY_NAME, ENTRIES
from derive.learners import explain
from derive.math import derivation
from derive.math.derivation import Derivation
from derive.output import render

_derive, _render_all = derivation.derive, render.render_all   # the real ones, before any patch
_derive_many = derivation.derive_many


def derived(name: str, max_m: int = DEFAULT_MAX_M) -> Derivation:
    return _derived(name, max_m)   # one cache key for derived(n) and derived(n, DEFAULT_MAX_M)


@functools.lru_cache(maxsize=None)
def _derived(name: str, max_m: int) -> Derivation:
    return _derive(BY_NAME[name], max_m)


def all_default() -> tuple[Derivation, ...]:
    """Every library entry at the default M: exactly what `derive` renders (what is not in the
    proof cache is proved in parallel first)."""
    _derive_many(list(ENTRIES), DEFAULT_MAX_M)
    return tuple(derived(entry.spec.name) for entry in ENTRIES)


def cached_derive(entry, max_m, progress=None, use_cache=True) -> Derivation:
    """derive.math.derivation.derive, answered from this session's derivations."""
    if progress:
        progress("(derived once per test session)")
    if entry.spec.name not in BY_NAME or BY_NAME[entry.spec.name] is not entry:
        return _derive(entry, max_m, progress, use_cache)  # a user's entry
    return derived(entry.spec.name, max_m)


def cached_derive_many(entries, max_m, progress=None, use_cache=True, workers=None) -> list:
    """derive.math.derivation.derive_many, answered from this session's derivations."""
    return [cached_derive(e, max_m, progress.variant(e.spec.name) if progress else None, use_cache)
            for e in entries]


_renders: dict = {}


def rendered_files(derivations, templates=None, package="generated") -> dict[str, str]:
    """derive.output.render.render_all, computed once per set of derivations, templates folder and package."""
    key = (tuple(id(d) for d in derivations), str(templates or render.templates_dir()), package)
    if key not in _renders:
        _renders[key] = (list(derivations), _render_all(list(derivations), templates, package=package))
    return dict(_renders[key][1])


@functools.lru_cache(maxsize=None)
def answers() -> dict:
    """Every `derive explain` answer, from the default derivations."""
    ds = {d.spec.name: d for d in all_default()}
    return {topic: explain.answer(topic, ds, DEFAULT_MAX_M) for topic in explain.TOPICS}


def use_cache(monkeypatch) -> None:
    """Point derive's CLI (and explain) at the session's derivations and renders."""
    monkeypatch.setattr(derivation, "derive", cached_derive)
    monkeypatch.setattr(derivation, "derive_many", cached_derive_many)
    monkeypatch.setattr(explain, "derive", cached_derive)
    monkeypatch.setattr(render, "render_all", rendered_files)
