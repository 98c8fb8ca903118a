"""The Triton backend: generated.<package>.triton, every entry's forward and backward as fused Triton
kernels, with the names and signatures of generated.torch's printed functions (so that
generated.torch can run them on CUDA tensors)."""
from __future__ import annotations

from .. import Backend, Build
from .context import module_context

#: identifiers templates/triton_kernels.py.jinja uses itself (its own locals start with "_")
RESERVED = frozenset({"tl", "triton", "torch", "dout", "axes", "param_sum_axes", "outer_axes"})


def jobs(builds: list[Build]) -> dict[str, tuple[str, dict]]:
    out = {"_runtime.py": ("file:derive/backends/triton/files/_runtime.py", {})}
    for b in builds:
        out[f"{b.spec.name}.py"] = ("triton_kernels.py.jinja", module_context(b.ir))
    out["__init__.py"] = ("triton_init.py.jinja", {"entries": [b.spec.name for b in builds]})
    return out


def prints(build: Build) -> bool:
    """Every entry but those with an input with its own groups (AdaIN's style features), an input that
    broadcasts against x, or a leaf spanning other axes than the layout's param_axes: not printed yet."""
    return not (build.ir.domains or build.ir.inputs or build.ir.spans)


BACKEND = Backend(name="triton", prints=prints, order=5, package="triton", requires=("triton", "torch"), extra="triton",
                  summary="generated.torch's printed functions as fused Triton kernels "
                          "(CUDA, or TRITON_INTERPRET=1)",
                  reserved=RESERVED, jobs=jobs, verify="derive.backends.triton.verify",
                  # Triton decides at import whether its own helpers (tl.zeros, tl.sum) are interpreted
                  options={"environment": {"TRITON_INTERPRET": "1"}})
