"""The PyTorch backend's template context: the kernel IR printed as torch operations.

One module per entry (templates/torch_kernels.py.jinja): the printed forward (training and test),
the running update in the convention of the entry's torch names (:class:`derive.forward.Facades`),
the compact backward as differentiable torch operations and again written into place
(``backward_train_fused``, for a backward that autograd does not record), the test-mode backward,
the derived double backward, the custom operators that run them (or the compiled kernels of the
tensor's device, see templates/torch_runtime.py.jinja), the ``torch.autograd.Function`` classes
around those, and the entry's generic functional API and module.  Nothing here walks the derivation.
"""
from __future__ import annotations

from ...ir.program import KernelIR
from ...math.algebra import Elem
from ..arrays import domains
from ..tensors import tensor_context
from .printer import TorchPrinter, torch_code, torch_fused_lines


def unique(names) -> list[str]:
    out = []
    for n in names:
        if n not in out:
            out.append(n)
    return out


def operators(ir: KernelIR, ctx: dict) -> list[dict]:
    """The custom operators of one entry: (name, the printed function it falls back to, its tensor
    arguments, its outputs with the shape each has: "element" (the view's), "group" (a statistic's)
    or "param" (a parameter's))."""
    kinds = {}
    for f in ir.functions.values():
        for a in f.body:
            kinds[a.target.name] = "element" if isinstance(a.target, Elem) else "group"
    stats = [r.stat.name for r in ir.running]
    train_values = unique([ir.output.name, *ctx["saved_train"], *stats])
    ops = [{"name": "forward_train", "printed": "forward_train",
            "tensors": [ir.x.name, *ctx["param_names"], *ctx["reads_running"]],
            "outputs": [(n, kinds[n]) for n in train_values]}]
    if ctx["has_running"]:
        test_values = unique([ir.output.name, *ctx["saved_test"]])
        ops.append({"name": "forward_test", "printed": "forward_test",
                    "tensors": [ir.x.name, *ctx["param_names"], *stats],
                    "outputs": [(n, kinds[n]) for n in test_values]})
    seeds = {s.name for dm in ir.domains for s in dm.seeds}   # the adjoints of an input's own statistics
    grads = [(ctx["grads"][0], "element")] + [(g, "group" if g in seeds else "param") for g in ctx["grads"][1:]]
    ops.append({"name": "backward_train", "printed": "backward_train_fused",
                "tensors": ["dout", *ctx["reads_train"]], "outputs": grads})
    if ctx["has_running"]:
        ops.append({"name": "backward_test", "printed": "backward_test",
                    "tensors": ["dout", *ctx["reads_test"]], "outputs": grads})
    return ops


def kernel_context(ir: KernelIR) -> dict:
    train = ir["backward_step"]   # the compact backward recomputing x̂ from x: the forward keeps no x̂
    narrow = [p.name for p in ir.params] + [s.name for s in ir.inputs if dict(ir.spans).get(s.name) is not None]
    leaves = bool(ir.spans)
    fused = torch_fused_lines([(a.target, a.value) for a in train.body], narrow, leaves)
    ctx = {**tensor_context(ir, lambda e: torch_code(e, leaves), "backward_step", "backward_test_step"),
           "backward_train_fused": fused}
    # the autograd.Functions and operators take every leaf that gets a gradient: the parameters, the inputs that
    # broadcast, the statistics of the inputs with their own groups; the module holds the parameters alone
    ctx.update({"module_params": ctx["param_names"], "param_names": ctx["param_names"] + ctx["input_names"] + ctx["imports"],
                "grads": ctx["results_train"], "domains": domains(ir, TorchPrinter),
                "domain_inputs": [dm.input.name for dm in ir.domains]})
    ops = operators(ir, ctx)
    by_name = {op["name"]: op for op in ops}
    ctx.update({
        "operators": ops,
        "train_values": [n for n, _ in by_name["forward_train"]["outputs"]],
        "test_values": [n for n, _ in by_name["forward_test"]["outputs"]] if "forward_test" in by_name else [],
        "stat_names": [r.stat.name for r in ir.running],
    })
    return ctx
