"""The printer of the tensor backends (PyTorch, JAX): the kernel IR as tensor operations.

The same notation as :class:`~derive.printers.KernelPrinter` (per-element symbols are
tensors of the working view, per-group values keep the reduced axes with length 1);
only the calls change.  Functions whose arguments may be Python numbers (a clamp of
a constant in test mode) and every rule a backend spells its own way go through the
generated runtime module ``_rt``.
"""
from __future__ import annotations

import sympy as sp

from ..ir.program import Function, KernelIR
from .arrays import KernelPrinter


class TensorPrinter(KernelPrinter):
    """Prints IR expressions as differentiable tensor operations, torch's by default (autograd can
    differentiate the printed backward again); a backend overrides ``_sum`` for its own reductions."""

    def __init__(self):
        super().__init__(fast=False)

    def _sum(self, arg: sp.Expr, axes: str) -> str:
        return f"{self.parenthesize(arg, 1000, strict=True)}.sum(dim={axes}, keepdim=True)"

    def _print_BatchSum(self, expr) -> str:
        """A reduction over the group: tensor.sum over the group axes, kept for broadcasting."""
        return self._sum(expr.args[0], self.group_axes)

    #: leaves of their own shapes: the parameter axes may be every axis, and torch reads dim=() as all of them
    param_total = False

    def _print_ParamSum(self, expr) -> str:
        """A parameter gradient: summed over every axis that gamma does not span."""
        if self.param_total:
            return f"_rt.param_total({self._print(expr.args[0])}, param_sum_axes)"
        return self._sum(expr.args[0], "param_sum_axes")

    def _print_OuterSum(self, expr) -> str:
        """Group sums summed again outside the group; torch reads dim=() as 'every axis', so
        the runtime returns the tensor itself when there is no outer axis."""
        return f"_rt.total({self._print(expr.args[0])}, outer_axes)"

    def _print_Mul(self, expr: sp.Mul) -> str:
        """A quotient whose denominator may vanish is 0 where it does (KernelPrinter's rule)."""
        num, den = expr.as_numer_denom()
        if den != 1 and not all(f.is_positive for f in sp.Mul.make_args(den) if not f.is_Number):
            return f"_rt.divide_or_zero({self._print(num)}, {self._print(den)})"
        return super(KernelPrinter, self)._print_Mul(expr)

    def _print_StopGrad(self, expr) -> str:
        """stop_gradient: the value of its argument, detached from autograd."""
        return f"_rt.stop_gradient({self._print(expr.args[0])})"

    def _print_ClampMin(self, expr) -> str:
        """max(a, lo) with torch's derivative at the kink (clamp_min); a may be a number."""
        return f"_rt.clamp_min({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_ClampMax(self, expr) -> str:
        """min(a, hi) with torch's derivative at the kink (clamp_max); a may be a number."""
        return f"_rt.clamp_max({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_Heaviside(self, expr) -> str:
        """The step of a clamp's derivative, with its value at 0."""
        return f"_rt.step({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    _print_Step = _print_Heaviside  # derive.algebra.Step: the same step

    def _runtime(self, function: str, expr) -> str:
        """The graph's functions of values (derive.forward.functions) through the runtime, which
        takes a tensor or a Python number alike and gives each torch's own derivative."""
        return f"_rt.{function}({self._print(expr.args[0])})"

    def _print_Exp(self, expr) -> str:
        return self._runtime("exp", expr)

    def _print_Log(self, expr) -> str:
        return self._runtime("log", expr)

    def _print_Tanh(self, expr) -> str:
        return self._runtime("tanh", expr)

    def _print_Sigmoid(self, expr) -> str:
        return self._runtime("sigmoid", expr)

    def _print_Softplus(self, expr) -> str:
        return self._runtime("softplus", expr)

    def _print_Sign(self, expr) -> str:
        return self._runtime("sign", expr)

    def _print_Absolute(self, expr) -> str:
        return self._runtime("abs", expr)

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        """Square roots through the runtime (the argument may be a tensor or a number)."""
        if expr.exp == sp.S.Half:
            return f"_rt.sqrt({self._print(expr.base)})"
        if expr.exp == -sp.S.Half:
            return f"1/_rt.sqrt({self._print(expr.base)})"
        return super()._print_Pow(expr, rational=rational)


# --------------------------------------------------------------------------- the shared context


def printed(f: Function | None, code) -> list[tuple[str, str]]:
    return [(a.target.name, code(a.value)) for a in f.body] if f is not None else []


def reads(f: Function | None, ir: KernelIR) -> list[str]:
    """The arrays a backward reads besides dout (forward values and inputs), sorted."""
    return [s.name for s in f.arrays if s != ir.dy] if f is not None else []


def tensor_context(ir: KernelIR, code, backward: str = "backward_compact", test_backward: str = "backward_test") -> dict:
    """The printed kernels of one entry, for templates/torch_kernels.py.jinja and jax_kernels.py.jinja:
    each IR function printed by ``code``, what each backward reads, and what the forward must save;
    ``backward``, ``test_backward``: the IR functions printed as the training and test-mode backward
    (torch's: ``backward_step`` and ``backward_test_step``, which recompute x̂ from x)."""
    params = [p.name for p in ir.params]
    inputs = {ir.x.name, *params, *(s.name for s in ir.inputs), *(s.name for s in ir.reads_running),
              *(s.name for dm in ir.domains for s in dm.stats)}

    def arguments(names, known):
        saved = [n for n in names if n not in known]
        return saved, [(n, n if n in known else f'values["{n}"]') for n in names]

    train, test = ir[backward], ir.get(test_backward)
    saved_train, args_train = arguments(reads(train, ir), inputs)
    # test mode's statistics are inputs of its functions (the running values), not values it computes
    saved_test, args_test = arguments(reads(test, ir), inputs | {s.name for s in ir.stats})
    names = ir.names
    return {
        "spec": ir.spec,
        "x": ir.x.name,
        "param_names": params,
        "constants": [c.symbol.name for c in ir.constants],
        "constant_keys": [(names.original(c.symbol).name, c.symbol.name) for c in ir.constants],
        "defaults": {names.original(c.symbol).name: repr(c.default) for c in ir.constants},
        "reads_running": [s.name for s in ir.reads_running],
        "running": [(r.buffer, r.stat.name) for r in ir.running],
        "has_running": ir.has_running,
        "forward_train": printed(ir["forward_train"], code),
        "forward_test": printed(ir.get("forward_test"), code),
        "running_update": [(a.target.name, code(a.value)) for a in ir.facade_updates],
        "backward_train": printed(train, code),
        "backward_test": printed(test, code),
        "grads": [g.name for g in ir.grads],
        "reads_train": reads(train, ir),
        "reads_test": reads(test, ir),
        "saved_train": saved_train,
        "args_train": args_train,
        "saved_test": saved_test,
        "args_test": args_test,
        "output": ir.output.name,
        "imports": [s.name for dm in ir.domains for s in dm.stats],
        "input_names": [s.name for s in ir.inputs],
        "leaf_spans": {name: repr(spans) for name, spans in ir.spans},
        "results_train": [r.name for r in train.results],
        "results_test": [r.name for r in test.results] if test is not None else [],
        **second_context(ir, code, inputs),
    }


def second_context(ir: KernelIR, code, inputs: set) -> dict:
    """The printed double backward and what it reads."""
    f = ir.get("backward2")
    if f is None or ir.second is None:
        return {"second": None}
    upstream = {u.name for u in ir.second.upstream}
    read = [s.name for s in f.arrays if s.name not in upstream]
    return {"second": printed(f, code), "upstream": [u.name for u in ir.second.upstream],
            "results2": [r.name if r is not None else None for _, r in ir.second.results],
            "args2": [(n, n if n in inputs or n == ir.dy.name else f'values["{n}"]') for n in read]}


# --------------------------------------------------------------------------- the generic API


def class_name(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def generic(ir: KernelIR) -> dict:
    """The generic API's context: its constants with the defaults of the entry's convention, the
    parameters' and buffers' starting values (read off the IR, see :func:`derive.ir.program.build`)."""
    spec, names = ir.spec, ir.names
    torch_rule = spec.facades.running == "torch"
    constants = []
    for c in ir.constants:
        default = c.default
        if torch_rule and c.fraction and any(a.value.has(c.symbol) for a in ir.updates):
            default = float(sp.Float(1 - c.default, 15))   # torch's momentum weights the batch
        constants.append((names.original(c.symbol).name, c.symbol.name, repr(default)))
    features = ", ".join(spec.layout.split(",")[a] for a in spec.param_axes if not spec.groups) or "C"
    positional = [ir.x.name, *(dm.input.name for dm in ir.domains), *(s.name for s in ir.inputs),
                  *(f"{p.name}=None" for p in ir.params),
                  *(f"{r.buffer}=None" for r in ir.running)]
    keywords = (["num_groups"] if spec.groups else []) + (["training=True"] if ir.has_running else []) + [
        f"{name}={default}" for _, name, default in constants]
    return {
        "class_name": class_name(spec.name),
        "generic_constants": constants,
        "param_init": list(ir.param_init),
        "buffer_init": list(ir.buffer_init),
        "param_features": f"({features},)",
        "layout_text": "(" + ", ".join(spec.layout.split(",")) + ")",
        "running_rule": "torch's: momentum weights the batch" if torch_rule else "the graph's own rule",
        "check_group": spec.min_group > 1,
        "signature": ", ".join(positional + (["*", *keywords] if keywords else [])),
        "jax_signature": ", ".join(positional + ["*", *keywords, *(["return_running=False"] if ir.has_running else [])]
                                   if keywords or ir.has_running else positional),
    }
