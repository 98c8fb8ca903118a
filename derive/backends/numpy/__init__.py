"""The NumPy backend: the generated package's top level, CS231n's functions in vectorized NumPy."""
from __future__ import annotations

from .. import Backend, Build
from ...ir.api import backward_functions, common
from .context import context

#: identifiers templates/numpy_kernels.py.jinja and kernel_arguments.jinja use themselves
RESERVED = frozenset({
    "numpy", "dout", "cache", "dtype", "x_shape", "view_shape", "features", "allowed", "batch_axis",
    "x_param_axes", "axes", "param_axes", "param_view", "param_sum_axes", "outer_axes", "shape", "work",
    "stat_shape", "running", "mode", "variant", "G", "warnings",
})


def jobs(builds: list[Build]) -> dict[str, tuple[str, dict]]:
    out = {}
    for b in builds:
        shared = common(b.ir)
        out[f"{b.spec.name}.py"] = ("numpy_kernels.py.jinja", context(b.ir, shared))
    out["_runtime.py"] = ("file:derive/backends/numpy/files/_runtime.py", {})
    out["_blocks.py"] = ("file:derive/backends/numpy/files/_blocks.py", {})
    return out


def exports(b: Build) -> list[str]:
    """The public functions of one entry's module."""
    return [f"{b.spec.name}_forward"] + [name for name, _, _ in backward_functions(b.ir)]


BACKEND = Backend(name="numpy", order=0, package="", summary="CS231n's functions in vectorized NumPy",
                  reserved=RESERVED, jobs=jobs, verify="derive.backends.numpy.verify",
                  options={"exports": exports})
