"""The PyTorch backend: generated.<package>.torch, every entry as torch.autograd.Functions, a generic
functional API and module per entry, and torch.nn.functional's names where the library has them."""
from __future__ import annotations

from .. import Backend, Build
from ..tensors import class_name, generic
from .context import kernel_context

#: identifiers templates/torch_kernels.py.jinja uses itself
RESERVED = frozenset({
    "torch", "math", "ctx", "dout", "values", "grads", "reads", "stats", "buffers", "const", "layout",
    "rest", "training", "num_groups", "num_features", "device", "dtype", "axes", "param_sum_axes",
    "outer_axes", "self", "m",
})


def jobs(builds: list[Build]) -> dict[str, tuple[str, dict]]:
    from ...forward.library import ENTRIES
    out = {}
    for b in builds:
        out[f"{b.spec.name}.py"] = ("torch_kernels.py.jinja", {**kernel_context(b.ir), **generic(b.ir)})
    out["_runtime.py"] = ("torch_runtime.py.jinja", {})
    present = {b.spec.name for b in builds}
    facades = {e.spec.name for e in ENTRIES if e.spec.facades.torch}
    functional = facades <= present   # torch.nn.functional's names, when every entry they use is here
    if functional:
        defaults = {b.spec.name: kernel_context(b.ir)["defaults"] for b in builds}
        out["functional.py"] = ("torch_functional.py.jinja", {"defaults": defaults})
        out["modules.py"] = ("file:derive/backends/torch/files/modules.py", {})
    out["__init__.py"] = ("torch_init.py.jinja", {
        "functional": functional, "entries": [(b.spec.name, class_name(b.spec.name)) for b in builds]})
    return out


BACKEND = Backend(name="torch", order=2, package="torch", requires=("torch",),
                  summary="torch.autograd.Functions: a function and a module per entry, with the derived double backward",
                  reserved=RESERVED, jobs=jobs, verify="derive.backends.torch.verify")
