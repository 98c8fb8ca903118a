"""The Triton backend's template context: the kernel IR's loop schedules, printed as Triton tiles.

Each function of the IR (the training and test forward, the compact training backward and the test
backward) becomes two kernels over the iteration space of generated/triton/_runtime.py, where the
working view is laid out as (O, G, K*I) and a group g = n*P + p (P parameter rows):

* ``rows`` (K*I > 1: layer, RMS, group and instance norm, and batch norm of images): a program
  holds a tile of BA groups of one parameter row p times BB positions q = k*I + i of a group,
  and loops over the rows o and the chunks of q;
* ``columns`` (K*I = 1: batch norm of (N, D)): a program holds BA neighbouring groups (columns)
  times BB rows o, and loops over the rows.

Every schedule pass (:mod:`derive.ir.schedule`) is a loop that accumulates its group sums in a
tile of the accumulation dtype, then the per-group assignments; the last loop writes the
per-element results.  The same kernel runs fused (every pass in one program) or staged across
programs (one launch per pass, each program summing a slice of the rows into partial sums that the
next launch adds in order): the constexprs _FIRST and _LAST choose the passes a launch runs.
Nothing here walks the derivation; every expression is printed by :class:`TritonPrinter`.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ...ir.program import Function, KernelIR, is_scalar
from ...math.algebra import Elem
from ..tensors import reads
from .printer import TritonPrinter

#: the IR functions that get kernels, and the public name of each (generated.torch's)
PUBLIC = {"forward_step": "forward_train", "forward_test_step": "forward_test",
          "backward_step": "backward_train_fused", "backward_test_step": "backward_test"}


def ptr(name: str) -> str:
    return f"_ptr_{name}"


def tensor(name: str) -> str:
    return f"_t_{name}"


@dataclass(frozen=True)
class Roles:
    """What each symbol of a kernel is to it (names)."""

    element_in: tuple[str, ...]
    element_out: tuple[str, ...]
    group_in: tuple[str, ...]
    group_out: tuple[str, ...]
    params: tuple[str, ...]
    varying: tuple[str, ...]       #: the parameters that vary inside a group
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

    group_out = [s for s in f.results if not isinstance(s, Elem)] if f.name.startswith("forward") else []
    return Roles(
        element_in=names(s for s in free if isinstance(s, Elem)),
        element_out=tuple(s.name for s in sc.stores),
        group_in=names(s for s in free if not isinstance(s, Elem) and not is_scalar(s)),
        group_out=tuple(s.name for s in group_out),
        params=names(params & used),
        varying=names(p for p in params & used if isinstance(p, Elem)),
        scalars=names(s for s in free if is_scalar(s)),
    )


class Kernel:
    """One IR function printed for one family of layouts ("rows" or "columns")."""

    def __init__(self, f: Function, ir: KernelIR, family: str, printer: TritonPrinter):
        self.f, self.ir, self.family, self.printer = f, ir, family, printer
        self.r = roles(f, ir)
        self.vectors = self._vectors()

    def _vectors(self) -> set[str]:
        """The per-group values that differ between the groups of a tile (a vector over its rows),
        as opposed to those made of the layer's constants alone (and, in the rows family, of the
        tile's one parameter row): the former broadcast as ``v[:, None]``, the latter as they are."""
        found = set(self.r.group_in)
        if self.family == "columns":
            found |= set(self.r.params) - set(self.r.varying)
        for ph in self.f.schedule.passes:
            found |= {s.name for s, _ in ph.sums}
            for s, e in ph.group:
                if {v.name for v in e.free_symbols} & found:
                    found.add(s.name)
        return found

    def tile_table(self) -> dict[str, str]:
        """How each symbol reads inside a tile [BA groups, BB elements]."""
        out = {name: f"{name}[:, None]" for name in self.vectors}
        for name in self.r.varying:
            out[name] = f"{name}[None, :]" if self.family == "rows" else f"{name}[:, None]"
        return out

    def p(self, expr: sp.Expr, table=None) -> str:
        return self.printer.print_with(expr, self.tile_table() if table is None else table)

    def group(self, expr: sp.Expr) -> str:
        return self.printer.print_with(expr, {})

    def context(self, sums: dict, partials: dict, outer: dict) -> dict:
        sc, r = self.f.schedule, self.r
        steps, loop = [], 0
        for ph in sc.passes:
            if ph.sums or ph.partials:
                summands = [e for _, e in ph.sums + ph.partials]
                steps.append({"kind": "loop", "index": loop,
                              "loads": self.elements_read(summands),
                              "varying": self.varying_read(summands),
                              "sums": [(s.name, f"_acc_{s.name}", sums[s], self.p(e)) for s, e in ph.sums],
                              "partials": [(f"_part_{g.name}", partials[g], self.p(e))
                                           for g, e in ph.partials]})
                loop += 1
            if ph.group:
                steps.append({"kind": "group", "ready": loop - 1,
                              "assigns": [(s.name, self.group(e)) for s, e in ph.group]})
        values = [e for _, e in sc.elements]
        local = {s.name for s, _ in sc.elements}
        return {
            "name": f"_{self.f.name}_{self.family}",
            "loops": loop,
            "steps": steps,
            "inputs": [(n, ptr(n)) for n in r.element_in],
            "element_loads": self.elements_read(values),
            "element_varying": self.varying_read(values),
            "elements": [(s.name, self.p(e)) for s, e in sc.elements],
            "stores": [(ptr(name), name) for name in r.element_out if name in local],
            "group_stores": [(ptr(name), name, name in self.vectors) for name in r.group_out],
            "outer_stores": [(outer[g], acc.name) for g, acc in sc.outer],
            "group_loads": [(name, ptr(name)) for name in r.group_in],
            "param_loads": [(name, ptr(name)) for name in r.params if name not in r.varying],
            "varying": [(name, ptr(name)) for name in r.varying],
            "scalars": list(enumerate(r.scalars)),
            "partials": [(f"_part_{g.name}", partials[g]) for ph in sc.passes for g, _ in ph.partials],
        }

    def elements_read(self, exprs) -> list[tuple[str, str]]:
        names = {s.name for e in exprs for s in e.free_symbols}
        return [(n, ptr(n)) for n in self.r.element_in if n in names]

    def varying_read(self, exprs) -> list[tuple[str, str]]:
        names = {s.name for e in exprs for s in e.free_symbols}
        return [(n, ptr(n)) for n in self.r.varying if n in names]


def function_context(key: str, f: Function, ir: KernelIR, printer: TritonPrinter) -> dict:
    """Both kernels of one IR function, and the Python function that lays out and launches them."""
    sc, r = f.schedule, roles(f, ir)
    sums = {s: k for k, s in enumerate(s for ph in sc.passes for s, _ in ph.sums)}
    partials = {g: k for k, g in enumerate(g for ph in sc.passes for g, _ in ph.partials)}
    outer = {g: k for k, (g, _) in enumerate(sc.outer)}
    kernels = [Kernel(f, ir, family, printer) for family in ("rows", "columns")]
    arrays = ([tensor(n) for n in r.element_in + r.element_out + r.group_in + r.group_out]
              + [tensor(n) for n in r.params])
    pointers = [ptr(n) for n in r.element_in + r.element_out + r.group_in + r.group_out + r.params]
    grads = []
    if not key.startswith("forward"):
        for g in ir.grads[1:]:
            if g in partials:
                grads.append(("partial", partials[g]))
            elif g in outer:
                grads.append(("outer", outer[g]))
            else:
                raise ValueError(f"{ir.spec.name}: {key} has no parameter sum for {g}")
    return {
        "key": key,
        "public": PUBLIC[key],
        "doc": f.doc,
        "roles": r,
        "kernels": [k.context(sums, partials, outer) for k in kernels],
        "arrays": arrays,
        "pointers": pointers,
        "sums": len(sums),
        "npartials": len(partials),
        "nouter": len(outer),
        "grads": grads,
        "dx": ir.grads[0].name if not key.startswith("forward") else None,
    }


def module_context(ir: KernelIR) -> dict:
    """The context of templates/triton_kernels.py.jinja."""
    printer = TritonPrinter()
    functions = {key: function_context(key, ir[key], ir, printer)
                 for key in PUBLIC if ir.get(key) is not None}
    params = [p.name for p in ir.params]
    train, test = ir["backward_step"], ir.get("backward_test_step")
    signature = {
        "forward_step": [ir.x.name, *params, *(s.name for s in ir.reads_running)],
        "forward_test_step": [ir.x.name, *params, *(s.name for s in ir.stats)],
        "backward_step": ["dout", *reads(train, ir)],
        "backward_test_step": ["dout", *reads(test, ir)] if test is not None else [],
    }
    for key, fn in functions.items():
        fn["signature"] = signature[key]
        r = fn["roles"]
        missing = set(r.element_in + r.group_in + r.params) - set(signature[key])
        if key.startswith("backward"):
            missing -= {ir.dy.name}
        if missing:
            raise ValueError(f"{ir.spec.name}: the Triton {key} reads {sorted(missing)}, "
                             "which its caller does not pass")
        fn["forward"] = key.startswith("forward")
        fn["like"] = ir.x.name if fn["forward"] else "dout"
        fn["results"] = [s.name for s in ir[key].results]
        fn["param_args"] = [n for n in signature[key] if n in params]
    return {
        "spec": ir.spec,
        "x": ir.x.name,
        "output": ir.output.name,
        "constants": [c.symbol.name for c in ir.constants],
        "functions": [functions[k] for k in PUBLIC if k in functions],
        "params": params,
    }
