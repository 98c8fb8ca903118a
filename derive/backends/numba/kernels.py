"""The numba kernels of one IR function, printed as source lines: inner loops and drivers (the rows
and krows drivers in :mod:`.rows`, the cols and tall ones in :mod:`.columns`, wide in :mod:`.wide`; their parallel loops
:mod:`.outline` turns into serial kernels run by a thread pool).

Every working view is laid onto the canonical loop space (O, G, K, I) (generated/numba/_layout.py):
``o`` reduced axes before the groups, ``g`` the groups, ``k`` reduced axes the parameters span,
``i`` the other reduced axes.  A function of the IR runs in one of four strategies, chosen by
the runtime from the shape alone (so results never depend on the thread count):

* ``rows``: a thread takes a chunk of groups and does every pass of a group while it is in
  cache; each pass runs an inner loop over a contiguous run of ``i`` for each (o, k), the
  parameters and per-group values being scalars there;
* ``krows`` (parameters that vary inside a group, I = 1: layer norm): the same with the run
  over ``k``, the parameters read as arrays along it.  rows and krows print their elementwise
  pass in the kernel itself (a call per run cost more than a short run's work);
* ``wide`` (krows with few long groups: layer norm at (4, 2**20)): each pass a loop over tiles of
  ``k`` instead, every group's part of a tile in the krows inner loops, so that each tile owns its
  part of the parameters' gradients (:mod:`.wide`);
* ``cols`` (short runs: batch norm's (N, C), tall layer norm): the groups' elements are
  columns; a thread takes a tile of columns and a chunk of rows, the inner loop runs along the
  rows of the tile with one float64 accumulator per column, folded into per-group partial sums
  afterwards (one partial per row chunk, added in chunk order); per-group values and
  parameters are spread over the tile's columns first.

The other inner loops are separate numba functions (over one run, or over a block of rows of a
tile: :meth:`Printed.loops`), so that LLVM vectorizes them under their own fast-math flags; sums
accumulate in float64 (on long runs in rows, and in krows's sums inside the kernel, each block of a
run in the working dtype first: :mod:`.blocks`).  Nothing here walks the derivation: the summands,
group assignments and per-element assignments come from the IR's schedule, printed by
:class:`~derive.backends.numba.printer.NumbaPrinter`.
"""
from __future__ import annotations

import sympy as sp

from ...ir.layout import Loops
from ...ir.program import Function, KernelIR, is_scalar
from ...math.algebra import Elem
from .blocks import Blocks
from .columns import ELEMENTS, INNER, Columns, Emit
from .outline import DEF, outline
from .rows import Rows
from .wide import Wide

#: the arguments of a cols inner function that say which block of the tile it runs: rows o0..o1, columns j0..j1
BLOCK = ("o0", "o1", "j0", "j1")


class Printed(Blocks, Columns, Rows, Wide):
    """One IR function as numba source: the symbols each part reads, sorted into roles, and the
    printed inner loops and drivers of every strategy its entry can take."""

    def __init__(self, f: Function, ir: KernelIR, lay: Loops, printer, name: str, roles, narrow: bool,
                 read: set, shifts=(), split: bool = True):
        self.f, self.ir, self.lay, self.printer, self.name, self.r = f, ir, lay, printer, name, roles
        self.narrow, self.read = narrow, read          #: elementwise-read group values rounded to work
        self.sc = f.schedule
        self.group_values = [s for s, _ in (a for ph in self.sc.passes for a in ph.group)]
        self.varying = set(roles.varying)
        self.params = set(roles.params)
        self.elements_in = set(roles.element_in) | set(roles.element_out)
        self.local = ir.names.local
        self.shifts = tuple(shifts)                    #: (per-group shift, the input whose first element it is)
        #: the elementwise pass subtracts a split mean, (x - mu_hi) - mu_lo, which reassociation would undo:
        #: then the rows and krows kernels, which hold that pass, take its fast-math flags
        self.split = split

    # ------------------------------------------------------------------ what each part reads

    def operands(self, exprs) -> list[str]:
        """The per-group values and parameters ``exprs`` read (no element arrays, no scalars), sorted."""
        free = set().union(*(e.free_symbols for e in exprs)) if exprs else set()
        locals_ = {s for s, _ in self.sc.elements}
        return sorted(s.name for s in free - locals_
                      if not is_scalar(s) and (s.name in self.params or not isinstance(s, Elem)))

    def element_reads(self, exprs) -> list[str]:
        free = set().union(*(e.free_symbols for e in exprs)) if exprs else set()
        return sorted(s.name for s in free if isinstance(s, Elem) and s.name in self.r.element_in)

    def scalars(self, exprs) -> list[str]:
        free = set().union(*(e.free_symbols for e in exprs)) if exprs else set()
        return sorted(s.name for s in free if is_scalar(s))

    # ------------------------------------------------------------------ printing

    def table(self, mode: str, names) -> dict[str, str]:
        """How each name is read in an inner loop of ``mode``: element arrays at j; in cols every
        operand is an array; in krows the varying parameters are; elsewhere operands are scalars."""
        out = {}
        for n in names:
            if n in self.elements_in and mode == "cols":
                out[n] = f"{n}[ou, j]"     # a block of the tile, column q of it: see loops
            elif mode == "cols":
                out[n] = f"{n}[q]"
            elif n in self.elements_in or (mode == "krows" and n in self.varying):
                out[n] = f"{n}[j]"
        return out

    def p(self, expr: sp.Expr, table: dict) -> str:
        return self.printer.print_with(expr, table)

    def wide(self, table: dict, names) -> dict[str, str]:
        """The same loads taken to float64 first (a summand of float32 x near 1e19 squares in float64)."""
        f64 = self.printer._module_format("numpy.float64")
        return {n: f"{f64}({table.get(n, n)})" for n in names}

    # ------------------------------------------------------------------ inner loops

    def pass_parts(self, ph):
        exprs = [e for _, e in ph.sums] + [e for _, e in ph.partials]
        return self.element_reads(exprs), self.operands(exprs), self.scalars(exprs)

    @staticmethod
    def loops(e: Emit, mode: str, first: str) -> int:
        """The loops of an inner function; returns the depth of their body.  rows and krows: one run
        ``j`` of one-dimensional arrays.  cols: rows o0..o1 and columns j0..j1 of the whole 2-D
        arrays (element (ou, j); column q of the tile's per-column arrays), one call per block of
        rows, with unsigned indices: numba checks a signed index for being negative, which kept LLVM
        from vectorizing the loop (9.0 ms against 2.6 ms for an elementwise pass at (4096, 1024))."""
        if mode != "cols":
            e(1, f"for j in range({first}.shape[0]):")
            return 2
        e(1, "for o in range(o0, o1):")
        e(2, "ou = numba.uint64(o)")
        e(2, "for q in range(j1 - j0):")
        e(3, "j = numba.uint64(j0 + q)")
        return 3

    def inner_pass(self, n: int, ph, mode: str, label: str = "", blocked: bool = False) -> tuple[str, list[str]]:
        """The inner loop of pass ``n`` in ``mode`` (named after ``label``, by default the mode): its
        name and source lines.  ``blocked``: a rows run summed in blocks (:mod:`.blocks`)."""
        elems, ops, scal = self.pass_parts(ph)
        name = f"{self.name}_p{n}_{label or mode}"
        sums = [acc.name for acc, _ in ph.sums]
        partials = [g.name for g, _ in ph.partials]
        if mode == "cols":
            args = elems + ops + sums + partials + scal + list(BLOCK)
        elif mode == "krows":
            args = elems + ops + partials + scal
        else:
            args = elems + ops + scal
        table = self.table(mode, elems + ops)
        wide = self.wide(table, elems + ops)
        e = Emit()
        e(0, INNER)
        e(0, f"def {name}({', '.join(args)}):")
        if mode == "krows":
            for s in sums:
                e(1, f"{s} = 0.0")
        if mode == "cols":
            self.cols_accumulate(e, ph, table, wide)
        elif mode == "rows":
            self.rows_accumulate(e, ph, wide, blocked)
        else:   # krows (a forward's statistics, wide's tiles): whole float64 sums (see .blocks)
            depth = self.loops(e, mode, elems[0])
            for acc, summand in ph.sums:
                e(depth, f"{acc.name} += {self.p(summand, wide)}")
            for g, summand in ph.partials:
                e(depth, f"{g.name}[j] += {self.p(summand, table)}")
        if mode == "krows" and sums:
            e(1, f"return ({', '.join(sums)},)")
        return name, e.lines

    def element_parts(self):
        exprs = [e for _, e in self.sc.elements]
        stores = [s.name for s in self.sc.stores]
        return self.element_reads(exprs), stores, self.operands(exprs), self.scalars(exprs)

    def inner_elements(self, mode: str, label: str = "") -> tuple[str, list[str]]:
        elems, stores, ops, scal = self.element_parts()
        name = f"{self.name}_e_{label or mode}"
        table = self.table(mode, elems + stores + ops)
        e = Emit()
        e(0, ELEMENTS)
        bounds = list(BLOCK) if mode == "cols" else []
        at = "[ou, j]" if mode == "cols" else "[j]"
        e(0, f"def {name}({', '.join(elems + stores + ops + scal + bounds)}):")
        depth = self.loops(e, mode, (elems + stores)[0])
        for s, value in self.sc.elements:
            lhs = f"{s.name}{at}" if s.name in stores else s.name
            e(depth, f"{lhs} = {self.p(value, table)}")
        return name, e.lines

    # ------------------------------------------------------------------ drivers

    def arguments(self, shifts: bool = True) -> list[str]:
        """The driver's arguments, shared by every strategy (then the strategy's own sizes); without the
        shifts' arrays where ``shifts`` is False (rows and krows read each group's first element)."""
        r = self.r
        skip = set() if shifts else {s.name for s, _ in self.shifts}
        return [*r.element_in, *r.element_out,
                *(self.array(n, "g") for n in r.group_in + r.group_out if n not in skip),
                *(self.array(n, "p") for n in r.params + r.partials), *r.scalars]

    def array(self, name: str, suffix: str) -> str:
        return self.local(f"{name}_{suffix}")

    def group_line(self, s, value, table) -> str:
        rhs = self.p(value, table)
        if self.narrow and s.name in self.read:
            rhs = f"work({rhs})"
        return f"{s.name} = {rhs}"

    def needs_work(self) -> bool:
        return self.narrow and any(s.name in self.read for s in self.group_values)

    def combine(self, e: Emit, cols: bool) -> None:
        outer = dict(self.sc.outer)
        for g, _ in (a for ph in self.sc.passes for a in ph.partials):
            e(1, f"_layout.combine_chunks({self.array(g.name, 'c')}, {self.array(g.name, 'p')})")
        for g in outer:
            e(1, "if P != G:")
            e(2, f"_layout.combine_outer({self.array(g.name, 'g')}, {self.array(g.name, 'p')})")

    def group_loads(self, e: Emit, depth: int, names, cols_sources=None) -> None:
        """Loads at the start of a group: its per-group inputs and the parameters that are one value
        per group; in cols also the per-group values of earlier phases."""
        for n in names:
            if n in self.r.group_in:
                e(depth, f"{n} = {self.array(n, 'g')}[g]")
            elif n in self.params and n not in self.varying:
                e(depth, f"{n} = {self.array(n, 'p')}[p]")
            elif cols_sources is not None and n in cols_sources:
                e(depth, f"{n} = {cols_sources[n][0]}[g]")

    # ------------------------------------------------------------------ everything

    def dispatch(self, doc: str) -> list[str]:
        """The Python function that runs this kernel in the strategy the layout ``lay`` chose."""
        r = self.r
        args = self.arguments()
        elements = set(r.element_in) | set(r.element_out)
        shifts = {self.array(s.name, "g"): x.name for s, x in self.shifts}
        e = Emit()
        e(0, f"def {self.name}(lay, {', '.join(a for a in args if a not in shifts)}):")
        e(1, f'"""{doc}"""')
        # a function without the parameters' gradients runs wide only where there is one group
        # (see generated/numba/_layout.py's WIDE_GROUPS)
        partials = any(ph.partials for ph in self.sc.passes)
        strategies = [("cols", "lay.cols({a})", ["lay.P", "lay.K", "lay.I", "lay.groups", "lay.GT", "lay.R"]),
                      ("tall", "lay.cols({a})", ["lay.P", "lay.K", "lay.I", "lay.groups", "lay.RC", "lay.GT", "lay.R"]),
                      ("wide", "lay.krows({a})", ["lay.P", "lay.KT"]),
                      ("krows", "lay.krows({a})", ["lay.P", "lay.chunks"]),
                      ("rows", "{a}", ["lay.P", "lay.chunks"])]
        when = {"wide": 'lay.strategy == "wide"' if partials else 'lay.strategy == "wide" and lay.groups == 1',
                "krows": 'lay.strategy == "krows"' if partials else 'lay.strategy in ("krows", "wide")'}
        if not r.varying:
            strategies = [s for s in strategies if s[0] not in ("krows", "wide")]
        for k, (mode, view, sizes) in enumerate(strategies):
            last = k == len(strategies) - 1
            test = when.get(mode, f'lay.strategy == "{mode}"')
            e(1, "else:" if last else f"{'if' if k == 0 else 'elif'} {test}:")
            # each group's first element of x (see derive/backends/numba/shift.py): rows and krows read
            # it in the kernel, as a group starts (a pass of its own cost layer norm's forward at
            # (8192, 1024) 0.1 ms, a cache miss a row)
            whole = mode in ("rows", "krows")
            if not whole:
                for array, x in shifts.items():   # cols reads them tile by tile (Columns.cols_driver)
                    e(2, f"{array} = numpy.empty(lay.groups)" if mode == "cols" else f"{array} = _layout.first({x})")
            call = [view.format(a=a) if a in elements else a for a in self.arguments(shifts=not whole)] + sizes
            e(2, f"{self.name}_{mode}({', '.join(call)})")
        return e.lines

    def sums_inline(self, mode: str) -> bool:
        """krows prints its passes' sums in the kernel too, where the kernel may reassociate (no split
        mean): a call per group cost about 14 ns of layer norm's backward at (65536, 64)."""
        return mode == "krows" and not self.split

    def modes(self) -> list[str]:
        return ["rows", "krows", "cols"] if self.r.varying else ["rows", "cols"]

    def source(self) -> list[str]:
        """Every inner loop and driver of this function, separated by blank lines."""
        blocks = []
        groups = {}   # the per-group phases as loops over groups (cols, tall and wide call them)
        for mode in self.modes():
            inner = {}
            for n, ph in enumerate(self.sc.passes):
                if (ph.sums or ph.partials) and not self.sums_inline(mode):
                    inner[n], lines = self.inner_pass(n, ph, mode)
                    blocks.append(lines)
                    if mode == "rows":   # long runs call the run in blocks (.blocks, _layout.BLOCKS_CALL_FROM)
                        inner[f"b{n}"], lines = self.inner_pass(n, ph, mode, "rows_blocks", blocked=True)
                        blocks.append(lines)
            if mode == "cols":   # rows and krows print their elementwise pass in the kernel (rows.py)
                inner["e"], lines = self.inner_elements(mode)
                blocks.append(lines)
                sources, _ = self.cols_sources(Emit(), "x", tile=False)
                for n, ph in enumerate(self.sc.passes):
                    group = self.inner_group(n, ph, sources)
                    inner[f"g{n}"] = groups[f"g{n}"] = group
                    if ph.group or any(acc in dict(self.sc.outer).values() for acc, _ in ph.sums):
                        blocks.append(group[1])
                drivers = [self.cols_driver(inner), self.tall_driver(inner)]
            else:
                drivers = [self.rows_driver(mode, inner)]
            functions = {m.group(1) for b in blocks for m in map(DEF.match, b) if m}
            # the rows and krows kernels hold the elementwise pass: its fast-math flags where it keeps
            # (x - mu_hi) - mu_lo in that order
            flags = "_FASTMATH_ELEMENTS" if mode != "cols" and self.split else "_FASTMATH"
            for lines in drivers:
                blocks += outline(lines, functions, flags)
        if self.r.varying:   # after cols, whose per-group phases it calls
            inner, lines = self.wide_inner()
            blocks += lines
            functions = {m.group(1) for b in blocks for m in map(DEF.match, b) if m}
            blocks += outline(self.wide_driver(inner, groups), functions)
        out = []
        for b in blocks:
            out += ["", ""] + b
        return out
