"""The JAX backend's template context: the kernel IR printed as jax.numpy (derive.backends.tensors),
each entry's forward and backward paired with ``jax.custom_vjp``; JAX differentiates the printed
backward again for higher orders."""
from __future__ import annotations

from ...ir.program import KernelIR
from ..arrays import domains
from ..tensors import tensor_context
from .printer import JaxPrinter, jax_code


def kernel_context(ir: KernelIR) -> dict:
    return {**tensor_context(ir, jax_code), "domains": domains(ir, JaxPrinter)}
