"""The numba backend: generated.<package>.numba, the array API's functions as fused parallel loops."""
from __future__ import annotations

from ...ir.api import backward_functions, common
from ...ir.layout import loops
from .. import Backend, Build
from .context import module_context

#: identifiers templates/numba_kernels.py.jinja uses itself (besides the array API's, see the NumPy backend)
RESERVED = frozenset({
    "numba", "numpy", "math", "o", "g", "k", "i", "c", "p", "j", "t", "rc", "tc", "O", "G", "K", "I", "P",
    "o0", "o1", "g0", "g1", "j0", "j1", "RC", "TC", "GT", "chunks", "lay", "work", "values",
    "q", "ou", "c0", "c1", "t0", "t1", "tc0", "tc1", "u0", "u1", "u2", "u3",
    "dout", "cache", "dtype", "x_shape", "view_shape", "features", "allowed", "batch_axis",
    "x_param_axes", "axes", "param_axes", "param_view", "param_sum_axes", "outer_axes", "shape",
    "stat_shape", "running", "mode", "variant", "left", "every", "k0", "k1", "KT",
})


def jobs(builds: list[Build]) -> dict[str, tuple[str, dict]]:
    out = {"_layout.py": ("file:derive/backends/numba/files/_layout.py", {}),
           "_loops.py": ("file:derive/backends/numba/files/_loops.py", {}),
           "_threads.py": ("file:derive/backends/numba/files/_threads.py", {})}
    exports = []
    for b in builds:
        lay = loops(b.spec)
        backward = backward_functions(b.ir)
        context = module_context(b.ir, common(b.ir), lay, backward)
        out[f"{b.spec.name}.py"] = ("numba_kernels.py.jinja", {
            **context,
            "grad_params": [(g.name, b.ir.names.local(f"{g.name}_p"), p.name)
                            for g, p in zip(b.ir.grads[1:], b.ir.params)]})
        exports += [(b.spec.name, f"{b.spec.name}_forward")] + [(b.spec.name, name) for name, _, _ in backward]
    out["__init__.py"] = ("numba_init.py.jinja", {"exports": exports})
    return out


def prints(build: Build) -> bool:
    """Every entry but those with an input that broadcasts against x or a leaf spanning other axes than the
    layout's param_axes: not printed yet."""
    return not (build.ir.inputs or build.ir.spans)


BACKEND = Backend(name="numba", prints=prints, order=1, package="numba", requires=("numba",), extra="numba",
                  summary="the same names and signatures, fused loops compiled by numba on first call",
                  reserved=RESERVED, jobs=jobs, verify="derive.backends.numba.verify")
