"""The JAX backend: generated/jax/, printed from the same Derivation and kernel IR as the torch
backend (:mod:`derive.tensor_ir`), with :class:`~derive.torch_printer.JaxPrinter`.

Each entry's forward and backward are paired with ``jax.custom_vjp``; the printed backward
is plain jax.numpy, so JAX differentiates it again for second and higher orders.
"""
from __future__ import annotations

from ...math.derivation import Derivation
from ..torch.context import kernel_context
from ..torch.printer import jax_code

PACKAGE = "jax"


def jax_jobs(derivations: list[Derivation]) -> dict[str, tuple[str, dict]]:
    """{path under generated/: (template, context)} for generated/jax/."""
    contexts = {d.spec.name: kernel_context(d, jax_code) for d in derivations}
    jobs = {f"{PACKAGE}/{name}.py": ("jax_kernels.py.jinja", c) for name, c in contexts.items()}
    defaults = {name: c["defaults"] for name, c in contexts.items()}
    jobs[f"{PACKAGE}/_runtime.py"] = ("jax_runtime.py.jinja", {})
    jobs[f"{PACKAGE}/functional.py"] = ("jax_functional.py.jinja", {"defaults": defaults})
    jobs[f"{PACKAGE}/__init__.py"] = ("jax_init.py.jinja", {})
    return jobs
