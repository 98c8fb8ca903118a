"""The PyTorch backend: generated/torch/, printed from the same Derivation as the NumPy kernels.

Like numba_backend, a backend is the kernel IR (:mod:`derive.tensor_ir`), a printer
(:class:`derive.torch_printer.TorchPrinter`) and templates (templates/torch_*.jinja):

* ``generated/torch/<name>.py``: one per library entry: the printed forward, backward and
  running update, the same training backward written into place (``backward_train_fused``,
  :class:`derive.torch_printer.FusedEmitter`, for a backward autograd does not record), and
  the torch.autograd.Functions ``Train`` (and ``Test``) around them;
* ``functional.py``: torch.nn.functional's names and signatures, mapping each call to a
  working view of the input (argument handling only);
* ``modules.py``: torch.nn's normalization modules, and ``replace_norm_layers``.
"""
from __future__ import annotations

from ...ir import tensor as tensor_ir
from ...ir import tensor_second as tensor_ir_second
from ...math.derivation import Derivation
from .printer import torch_code, torch_fused_lines

PACKAGE = "torch"


def printed(assignments, code) -> list[tuple[str, str]]:
    return [(s.name, code(e)) for s, e in assignments]


def kernel_context(d: Derivation, code=torch_code) -> dict:
    """The printed kernels of one entry, for templates/torch_kernels.py.jinja (and JAX's)."""
    k = tensor_ir.build(d)
    model = d.model
    params = [p.name for p in model.params]
    inputs = {model.x.name, *params, *(s.name for s in model.reads_running)}

    def arguments(reads):
        saved = [n for n in reads if n not in inputs]
        return saved, [(n, n if n in inputs else f'values["{n}"]') for n in reads]

    saved_train, args_train = arguments(k.reads_train)
    saved_test, args_test = arguments(k.reads_test)
    return {
        "spec": d.spec,
        "param_names": params,
        "constants": [c.symbol.name for c in model.constants],
        "defaults": {c.symbol.name: repr(c.default) for c in model.constants},
        "reads_running": [s.name for s in model.reads_running],
        "running": [(r.buffer, r.stat.name) for r in model.running],
        "has_running": bool(model.running),
        "forward_train": printed(k.forward_train, code),
        "forward_test": printed(k.forward_test, code),
        "running_update": printed(k.running, code),
        "backward_train": printed(k.backward_train, code),
        "backward_train_fused": torch_fused_lines(k.backward_train, params) if code is torch_code else [],
        "backward_test": printed(k.backward_test, code),
        "grads": [g.name for g in k.grads],
        "reads_train": list(k.reads_train),
        "reads_test": list(k.reads_test),
        "saved_train": saved_train,
        "args_train": args_train,
        "saved_test": saved_test,
        "args_test": args_test,
        "output": model.output.symbol.name,
        **second_context(d, code, inputs),
    }


def second_context(d: Derivation, code, inputs: set) -> dict:
    """The printed double backward (derive.second_order) and what it reads."""
    k = tensor_ir_second.build(d)
    if k is None:
        return {"second": None}
    return {"second": printed(k.assignments, code), "upstream": list(k.upstream),
            "results2": [r for _, r in k.results],
            "args2": [(n, n if n in inputs or n == d.model.dy.name else f'values["{n}"]') for n in k.reads]}


#: the library entries that torch.nn.functional's names (batch_norm, normalize, ...) stand for
FUNCTIONAL_ENTRIES = frozenset({"batchnorm", "layernorm", "spatial_groupnorm", "instancenorm", "rmsnorm",
                                "l2_normalize", "meanonly_batchnorm", "batch_renorm", "weight_standardization"})


def covers(names) -> bool:
    """True when every entry the functional API names is rendered (not so for `derive build`)."""
    return FUNCTIONAL_ENTRIES <= set(names)


def torch_jobs(derivations: list[Derivation]) -> dict[str, tuple[str, dict]]:
    """{path under generated/: (template, context)} for generated/torch/."""
    contexts = {d.spec.name: kernel_context(d) for d in derivations}
    jobs = {f"{PACKAGE}/{name}.py": ("torch_kernels.py.jinja", c) for name, c in contexts.items()}
    defaults = {name: c["defaults"] for name, c in contexts.items()}
    jobs[f"{PACKAGE}/_runtime.py"] = ("torch_runtime.py.jinja", {})
    jobs[f"{PACKAGE}/functional.py"] = ("torch_functional.py.jinja", {"defaults": defaults})
    jobs[f"{PACKAGE}/modules.py"] = ("torch_modules.py.jinja", {})
    jobs[f"{PACKAGE}/__init__.py"] = ("torch_init.py.jinja", {})
    return jobs
