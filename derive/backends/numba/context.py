"""The numba backend's template context: the kernel IR's loop schedules, printed as scalar loops.

Each function of the IR becomes one parallel kernel over the loop letters of its layout
(:mod:`derive.ir.layout`): its passes (:mod:`derive.ir.schedule`) accumulate group sums in float64,
then assign per-group values; its last loop writes the per-element results.  Two loop families lay
a kernel out (templates/numba_kernels.py.jinja):

* ``columns`` (pattern ``og``, batch norm): a group is a column.  Each pass runs over chunks of
  rows, four rows per accumulator update, into float64 partial sums per chunk, which are then added
  in chunk order; per-group values are arrays ``<name>_g``; the elementwise pass runs over the
  same chunks of rows.
* ``rows`` (any other pattern): a group is a contiguous run; one parallel loop over chunks of
  groups does every pass of a group while it is in cache; per-group values are locals.

Chunk counts depend on the shape only, so results do not depend on the thread count.  Nothing here
walks the derivation; every identifier comes from the IR's names.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ...ir.layout import Loops
from ...ir.program import Function, KernelIR, is_scalar
from ...math.algebra import M, BatchSum, Elem
from .printer import NumbaPrinter, Widen

#: rows of the columns family summed into an accumulator per update
UNROLL = 4


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

    group_out = [s for s in f.results if not isinstance(s, Elem)] if f.name.startswith("forward") else []
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


class Kernel:
    """One kernel's printed program: loads, passes, elements, argument list."""

    def __init__(self, f: Function, ir: KernelIR, lay: Loops, printer: NumbaPrinter, name: str):
        self.f, self.ir, self.lay, self.printer = f, ir, lay, printer
        self.r = roles(f, ir)
        self.arr = {}   #: (name, suffix) -> the array's identifier
        self.table = self.loads()
        self.name = name

    def array(self, name: str, suffix: str) -> str:
        """The identifier of the array that holds ``name`` (``std_g``, ``gamma_p``), unique in the module."""
        return self.ir.names.local(f"{name}_{suffix}")

    def loads(self) -> dict[str, str]:
        """How each symbol is read inside the loops, by name; any other symbol is a local."""
        r, sc, lay = self.r, self.f.schedule, self.lay
        locals_ = {s.name for s, _ in sc.elements} - set(r.element_out)
        out = {name: f"{name}[{lay.element_index}]" for name in r.element_in + r.element_out}
        out.update({name: f"{self.array(name, 'p')}[p, k]" for name in r.varying})
        if lay.family == "columns":
            group = [s.name for s in sc.group_values] + list(r.group_in)
            out.update({name: f"{self.array(name, 'g')}[g]" for name in group})
            out.update({name: f"{self.array(name, 'p')}[g]" for name in r.params if name not in r.varying})
        return {k: v for k, v in out.items() if k not in locals_}

    def p(self, expr: sp.Expr, table=None) -> str:
        return self.printer.print_with(expr, self.table if table is None else table)

    def lhs(self, symbol: sp.Symbol) -> str:
        return self.table.get(symbol.name, symbol.name)

    def unrolled(self, expr: sp.Expr) -> str:
        """The sum of ``expr`` over the rows o, o+1, ..., o+UNROLL-1 of the columns family, each term
        in float64: one accumulator update per UNROLL rows."""
        copies, shifted = [], dict(self.table)
        for r in range(UNROLL):
            swap = {e: sp.Symbol(f"{e.name}__{r}", real=True) for e in expr.atoms(Elem)}
            shifted.update({s.name: f"{e.name}[o{f' + {r}' if r else ''}, g]" for e, s in swap.items()})
            copies.append(Widen(expr.xreplace(swap)))
        return self.p(sp.Add(*copies), shifted)

    def context(self) -> dict:
        r, sc, lay = self.r, self.f.schedule, self.lay
        # a summand reads its operands in float64, so x**2 of a float32 x near 1e19 does not overflow
        wide = {k: f"{self.printer._module_format('numpy.float64')}({v})" for k, v in self.table.items()}
        outer = dict(sc.outer)
        phases = []
        for ph in sc.passes:
            here = [s for s, _ in ph.sums + ph.group]
            stores = [(f"{self.array(s.name, 'g')}[g]", s.name) for s in here
                      if lay.family == "rows" and s.name in r.group_out]
            stores += [(f"{self.array(g.name, 'g')}[g]", self.lhs(acc)) for g, acc in outer.items() if acc in here]
            phases.append({
                "sums": [{"acc": self.lhs(acc), "rhs": self.p(summand, wide),
                          "unrolled": self.unrolled(summand) if lay.family == "columns" else ""}
                         for acc, summand in ph.sums],
                "partials": [(g.name, self.array(g.name, "c"), self.p(e)) for g, e in ph.partials],
                "group": [(self.lhs(s), self.p(e)) for s, e in ph.group],
                "stores": stores,
            })
        element_reads = set().union(*(e.free_symbols for _, e in sc.elements))
        narrow = not element_reads & means(self.f, self.ir.x)
        # per-group arrays of the columns family: in the working dtype only where the elementwise pass reads
        # them (dvar of a float32 spread of 1e30 is below float32's range; the coefficient it enters is not)
        temporaries = [(self.array(s.name, "g"), narrow and s in element_reads) for s in sc.group_values
                       if s.name not in r.group_out]
        args = [*r.element_in, *r.element_out, *(self.array(n, "g") for n in r.group_in + r.group_out),
                *(self.array(n, "p") for n in r.params + r.partials), *r.scalars, "P", "chunks"]
        return {
            "name": self.name,
            "doc": self.f.doc + " " + passes(self.f),
            "roles": r,
            "phases": phases,
            "elements": [(self.lhs(s), self.p(e)) for s, e in sc.elements],
            "group_loads": [(n, f"{self.array(n, 'g')}[g]") for n in r.group_in]
            + [(n, f"{self.array(n, 'p')}[p]") for n in r.params if n not in r.varying],
            "temporaries": temporaries,
            "uses_p": lay.family == "rows" and bool(r.params or r.partials),
            # only what the elementwise pass reads is rounded to the working dtype: var of a float32
            # x near 1e20 passes float32's range while std (and out) do not
            "read": {self.lhs(s) for s in sc.group_values if s in element_reads},
            # per-group values are float64 in the loops, except where the elementwise pass never
            # subtracts a mean: there they are rounded to the working dtype once per group
            "narrow": narrow,
            "args": args,
            "first": (r.element_in + r.element_out)[0],
            "element_in": list(r.element_in),
            "element_out": [(n, self.array(n, "k")) for n in r.element_out],
            "group_in": [(n, self.array(n, "g")) for n in r.group_in],
            "group_out": [(n, self.array(n, "g")) for n in r.group_out],
            "params": [(n, self.array(n, "p")) for n in r.params],
            "partials": [(n, self.array(n, "p"), self.array(n, "c"), self.array(n, "g")) for n in r.partials],
            "varying": bool(r.varying),
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
    from ..arrays import code
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
        functions.append({"name": name, "description": description, "train": kernels[key],
                          "unpack": sorted(reads) + ["axes", "param_sum_axes", "outer_axes"]})
    order = ["forward_train", "forward_test", "backward_compact", "backward_staged", "backward_test"]
    return {
        **common,
        "updates": [(a.target.name, code(a.value)) for a in ir.updates],
        "letters": lay.letters,
        "family": lay.family,
        "dims": lay.dims,
        "reduced": list(lay.reduced),
        "unroll": UNROLL,
        "kernels": kernels,
        "kernel_list": [kernels[key] for key in order if key in kernels],
        "backward_functions": functions,
        "imports": sorted(set(printer.module_imports) | {"numba", "numpy"}),
    }
