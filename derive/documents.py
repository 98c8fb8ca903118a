"""Derivation documents (LaTeX and Markdown). Placeholder until the documents land."""
from __future__ import annotations


def latex_body(d) -> str:
    raise NotImplementedError


def render_documents(env, derivations) -> dict[str, str]:
    return {}
