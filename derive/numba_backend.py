"""The numba backend. Placeholder until it lands."""
from __future__ import annotations


def render_numba(env, derivations) -> dict[str, str]:
    return {}
