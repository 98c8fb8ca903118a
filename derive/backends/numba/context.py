"""The numba backend's template context: the kernel IR's loop schedules, printed as scalar loops.

Each function of the IR becomes one kernel over the canonical loop space (O, G, K, I) that every
working view is laid onto (generated/numba/_layout.py): its passes (:mod:`derive.ir.schedule`)
accumulate group sums in float64, then assign per-group values; its last loop writes the
per-element results.  :mod:`.kernels` prints the inner loops and the parallel drivers of each
strategy (rows, krows, wide, cols, tall); the runtime picks one from the shape.

The module has two faces: the array API's functions (the NumPy backend's names, checks and
cache, :mod:`derive.ir.api`), and the functions of generated.torch's kernel contract
(``forward_train``, ``forward_test``, ``backward_train_fused``, ``backward_test``: the names and
keywords of the printed torch functions, on NumPy arrays of the same working view), which
generated.torch calls on CPU tensors through ``Tensor.numpy()``.  Nothing here walks the
derivation; every identifier comes from the IR's names.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sympy as sp

from ...ir.layout import Loops
from ...ir.program import Function, KernelIR, is_scalar
from ...math.algebra import BatchSum, Elem, M
from .fold import fold_elements
from .kernels import Printed
from .printer import NumbaPrinter
from .shift import shift_moments


@dataclass(frozen=True)
class Roles:
    """What each symbol of a kernel is to it: how it is passed and read (names)."""

    element_in: tuple[str, ...]
    element_out: tuple[str, ...]
    group_in: tuple[str, ...]
    group_out: tuple[str, ...]
    params: tuple[str, ...]
    varying: tuple[str, ...]       #: the params that vary inside a group
    partials: tuple[str, ...]      #: parameter gradients: (P,) or (P, K) arrays
    scalars: tuple[str, ...]


def roles(f: Function, ir: KernelIR) -> Roles:
    sc = f.schedule
    used: set = set()
    for p in sc.passes:
        for _, e in p.sums + p.partials + p.group:
            used |= e.free_symbols
    for _, e in sc.elements:
        used |= e.free_symbols
    used |= {acc for _, acc in sc.outer}
    params = set(ir.params)
    free = used - sc.assigned - params

    def names(symbols):
        return tuple(sorted(s.name for s in symbols))

    # per-group results: a forward's statistics; a backward's adjoints of an input's own statistics
    group_out = [s for s in f.results if not isinstance(s, Elem) and s not in set(ir.grads)]
    return Roles(
        element_in=names(s for s in free if isinstance(s, Elem)),
        element_out=tuple(s.name for s in sc.stores),
        group_in=names(s for s in free if not isinstance(s, Elem) and not is_scalar(s)),
        group_out=tuple(s.name for s in group_out),
        params=names(params & used),
        varying=names(p for p in params & used if isinstance(p, Elem)),
        partials=tuple(g.name for p in sc.passes for g, _ in p.partials) + tuple(g.name for g, _ in sc.outer),
        scalars=names(s for s in free if is_scalar(s)),
    )


def means(f: Function, x: Elem) -> set:
    """The means of the input itself (mu = sum_x/m): per-group values kept in float64."""
    totals = {a.target for a in f.body if a.value == BatchSum(x)}
    return {a.target for a in f.body if a.value * M in totals}


def split_means(f: Function, x: Elem, local) -> Function:
    """``f`` with each mean of x that its elementwise pass subtracts (``x - mu``) split in two per-group
    values, ``mu_hi`` (mu rounded to the working dtype) and ``mu_lo`` (the rest, mu - mu_hi), and the
    difference taken as ``(x - mu_hi) - mu_lo`` through an elementwise local: then every per-group value
    the pass reads is in the working dtype, and so is the pass (0.93 ms against 1.75 ms for batch norm's
    at (4096, 1024) float32, one thread), while float32 data far from zero keeps its spread (x - mu_hi
    is exact near the mean).  Substituting mu_hi + mu_lo for mu gives each expression back exactly
    (checked).  ``f`` itself where no mean is subtracted."""
    sc = f.schedule
    read = set().union(*(e.free_symbols for _, e in sc.elements)) if sc.elements else set()
    split = {}
    for mu in sorted(means(f, x) & read, key=lambda s: s.name):
        hi, lo = sp.Symbol(local(f"{mu.name}_hi")), sp.Symbol(local(f"{mu.name}_lo"))
        split[mu] = (hi, lo, Elem(local(f"{x.name}_{mu.name}_hi"), real=True))
    if not split:
        return f

    def rewrite(expr):
        def one(node):
            if not isinstance(node, sp.Add):
                return node
            terms = list(sp.Add.make_args(node))
            for mu, (hi, lo, xc) in split.items():
                if x in terms and -mu in terms:
                    terms.remove(x)
                    terms.remove(-mu)
                    terms += [xc, -lo]
            return sp.Add(*terms)
        return expr.replace(lambda n: isinstance(n, sp.Add), one)

    elements = [(xc, x - hi) for hi, lo, xc in split.values()]
    elements += [(s, rewrite(e)) for s, e in sc.elements]
    first = {xc: x - hi for hi, lo, xc in split.values()}
    then = {hi: mu - lo for mu, (hi, lo, xc) in split.items()}
    for (s, old), (_, new) in zip(sc.elements, elements[len(split):]):
        if sp.expand(new.xreplace(first).xreplace(then) - old) != 0 or new.has(*split):
            raise ValueError(f"{s} = {old}: splitting the mean changed it to {new}")
    passes = []
    for ph in sc.passes:
        group = list(ph.group)
        for mu, (hi, lo, xc) in split.items():
            if any(t == mu for t, _ in ph.group):
                group += [(hi, mu), (lo, mu - hi)]
        passes.append(dataclasses.replace(ph, group=tuple(group)))
    return dataclasses.replace(f, schedule=dataclasses.replace(sc, passes=tuple(passes), elements=tuple(elements)))


class Kernel:
    """One kernel: its roles, its printed inner loops and drivers (:mod:`.kernels`), and what the
    Python functions around it pass and get back."""

    def __init__(self, f: Function, ir: KernelIR, lay: Loops, printer: NumbaPrinter, name: str):
        f, self.shifts = shift_moments(f, ir.x, ir.names.local)
        split = split_means(f, ir.x, ir.names.local)
        self.split = split is not f   #: its elementwise pass takes (x - mu_hi) - mu_lo (kernels.py)
        f = fold_elements(split, ir.x, ir.names.local)
        self.f, self.ir, self.lay, self.printer = f, ir, lay, printer
        self.r = roles(f, ir)
        self.name = name

    def array(self, name: str, suffix: str) -> str:
        """The identifier of the array that holds ``name`` (``std_g``, ``gamma_p``), unique in the module."""
        return self.ir.names.local(f"{name}_{suffix}")

    def context(self) -> dict:
        r, sc = self.r, self.f.schedule
        element_reads = set().union(*(e.free_symbols for _, e in sc.elements))
        # only what the elementwise pass reads is rounded to the working dtype: var of a float32
        # x near 1e20 passes float32's range while std (and out) do not
        read = {s.name for s in sc.group_values if s in element_reads}
        # per-group values are float64 in the loops, except where the elementwise pass never
        # subtracts a mean: there they are rounded to the working dtype once per group
        narrow = not element_reads & means(self.f, self.ir.x)
        printed = Printed(self.f, self.ir, self.lay, self.printer, self.name, r, narrow, read, self.shifts,
                          self.split)
        doc = self.f.doc + " " + passes(self.f) + "".join(
            f" {s.name} is each group's first element of {x.name}: the sums of x are taken around it, one pass for the"
            " mean and the variance (derive/backends/numba/shift.py)." for s, x in self.shifts)
        return {
            "name": self.name,
            "doc": doc,
            "roles": r,
            "source": printed.source() + ["", ""] + printed.dispatch(doc),
            "element_in": list(r.element_in),
            "element_out": [(n, self.array(n, "k")) for n in r.element_out],
            # the shifts are read from x by the kernel's dispatch function, not passed in
            "group_in": [(n, self.array(n, "g")) for n in r.group_in if n not in {s.name for s, _ in self.shifts}],
            "group_out": [(n, self.array(n, "g")) for n in r.group_out],
            "params": [(n, self.array(n, "p")) for n in r.params],
            "partials": [(n, self.array(n, "p")) for n in r.partials],
            "scalars": list(r.scalars),
        }


def passes(f: Function) -> str:
    """The docstring's summary of the loops, e.g. 'Pass 1 sums sum_dout, sum_dout_xhat (float64) ...'."""
    out, n = [], 0
    for ph in f.schedule.passes:
        sums = ", ".join(s.name for s, _ in ph.sums)
        group = ", ".join(s.name for s, _ in ph.group)
        n += bool(sums or ph.partials)
        text = f"Pass {n} sums {sums} (float64) in each group" if sums else (
            f"Pass {n} sums " + ", ".join(g.name for g, _ in ph.partials) if ph.partials else "")
        if group:
            text += ("; then " if text else "Per group: ") + group
        out.append(text)
    last = ", ".join(s.name for s in f.schedule.stores)
    return ". ".join([o for o in out if o] + [f"Pass {n + 1}: {last}, elementwise."])


# --------------------------------------------------------------------------- the module


def module_context(ir: KernelIR, common: dict, lay: Loops, backward: list) -> dict:
    """The context of templates/numba_kernels.py.jinja: the array API's names, checks and cache
    (:mod:`derive.ir.api`), with one numba kernel per IR function."""
    from ..arrays import code, domains
    printer = NumbaPrinter()
    kernels = {key: Kernel(f, ir, lay, printer, f"_{key}").context()
               for key, f in ir.functions.items() if key != "backward2"}
    functions = []
    for name, key, description in backward:
        used = [kernels[key]] + ([kernels["backward_test"]] if "backward_test" in kernels else [])
        reads = {n for k in used for n in k["roles"].element_in + k["roles"].group_in + k["roles"].params
                 + k["roles"].scalars} - {ir.dy.name}
        keys = set(common["cache_keys"])
        if reads - keys:
            raise ValueError(f"{name}: the numba kernels read {sorted(reads - keys)}, which the cache does not keep")
        # an input with its own groups: its backward (NumPy, after the kernel) reads it and its statistics
        own = {n for dm in ir.domains for n in (dm.input.name, *(s.name for s in dm.stats), dm.axes, dm.m.name)}
        functions.append({"name": name, "description": description, "train": kernels[key],
                          "unpack": sorted(reads | own) + ["axes", "param_sum_axes", "outer_axes"]})
    order = ["forward_train", "forward_test", "backward_compact", "backward_staged", "backward_test", "forward_step",
             "backward_step", "forward_test_step", "backward_test_step"]
    return {
        **common,
        "updates": [(a.target.name, code(a.value)) for a in ir.updates],
        "letters": lay.letters,
        "varying": lay.varies,
        "kernels": kernels,
        "kernel_list": [kernels[key] for key in order if key in kernels],
        "backward_functions": functions,
        "torch_functions": torch_functions(ir, kernels),
        "imports": sorted(set(printer.module_imports) | {"numba", "numpy"}),
        "domains": domains(ir),
    }


#: generated.torch's kernel contract: (function, the IR function it runs, what it does)
CONTRACT = (("forward_train", "forward_step", "the training forward pass"),
            ("forward_test", "forward_test_step", "the test-mode forward pass (running statistics)"),
            ("backward_train_fused", "backward_step", "the compact training backward pass (x̂ recomputed from x)"),
            ("backward_test", "backward_test_step", "the test-mode backward pass (x̂ recomputed from x)"))


def torch_functions(ir: KernelIR, kernels: dict) -> list[dict]:
    """The functions of generated.torch's kernel contract: each with the positional arguments and
    keywords of the printed torch function of that name (derive.backends.tensors), the kernel it runs,
    and what it returns (a dict of the forward's values, or the gradients in order)."""
    from ..tensors import reads
    params = [p.name for p in ir.params]
    constants = [c.symbol.name for c in ir.constants]
    out = []
    for name, key, what in CONTRACT:
        if key not in kernels:
            continue
        f = ir[key]
        if key == "forward_step":
            imports = [s.name for dm in ir.domains for s in dm.stats]   # after the parameters, as torch's
            positional = [ir.x.name, *params, *imports, *(s.name for s in ir.reads_running)]
        elif name == "forward_test":
            positional = [ir.x.name, *params, *(r.stat.name for r in ir.running)]
        else:
            positional = [ir.dy.name, *reads(f, ir)]
        out.append({"name": name, "kernel": kernels[key], "what": what, "positional": positional,
                    "keywords": constants + ["m", "axes", "param_sum_axes"],
                    "forward": name.startswith("forward"), "first": positional[0],
                    "grads": [g.name for g in ir.grads],
                    "seeds": [s.name for dm in ir.domains for s in dm.seeds],
                    "grad_params": [(g.name, ir.names.local(f"{g.name}_p"), p.name)
                                    for g, p in zip(ir.grads[1:], ir.params)]})
    return out
