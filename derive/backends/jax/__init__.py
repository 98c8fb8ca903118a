"""The JAX backend: generated.<package>.jax, every entry's forward with its derived VJP
(jax.custom_jvp, whose JVP is the transpose of the derived backward), a generic function per entry, and torch.nn.functional's names where the library
has them."""
from __future__ import annotations

from .. import Backend, Build
from ..tensors import generic
from .context import kernel_context

#: identifiers templates/jax_kernels.py.jinja uses itself
RESERVED = frozenset({
    "jax", "jnp", "functools", "math", "dout", "values", "grads", "reads", "buffers", "const", "layout",
    "rest", "training", "num_groups", "kw", "f", "fwd", "bwd", "saved", "return_running", "axes",
    "param_sum_axes", "outer_axes", "own", "stats", "seeds", "primals", "tangents", "tangent", "jvp", "vjp",
})


def jobs(builds: list[Build]) -> dict[str, tuple[str, dict]]:
    from ...forward.library import ENTRIES
    out = {}
    for b in builds:
        out[f"{b.spec.name}.py"] = ("jax_kernels.py.jinja", {**kernel_context(b.ir), **generic(b.ir)})
    out["_runtime.py"] = ("jax_runtime.py.jinja", {})
    present = {b.spec.name for b in builds}
    functional = {e.spec.name for e in ENTRIES if e.spec.facades.torch} <= present
    if functional:
        defaults = {b.spec.name: kernel_context(b.ir)["defaults"] for b in builds}
        out["functional.py"] = ("jax_functional.py.jinja", {"defaults": defaults})
    out["__init__.py"] = ("jax_init.py.jinja", {"functional": functional,
                                                "entries": [b.spec.name for b in builds]})
    return out


BACKEND = Backend(name="jax", order=3, package="jax", requires=("jax",), extra="jax",
                  summary="a function per entry, with the derived backward (jax.custom_jvp)",
                  reserved=RESERVED, jobs=jobs, verify="derive.backends.jax.verify")
