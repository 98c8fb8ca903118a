"""The cols and tall drivers of a numba kernel (see :mod:`.kernels`): short runs, where the groups'
elements are columns; a thread takes a tile of columns (and, in tall, a chunk of rows too), and every
per-group step is a loop over the groups of the tile (vectorized too).  A mixin of
:class:`~derive.backends.numba.kernels.Printed`, whose state and inner loops it reads."""
from __future__ import annotations

from ...ir.program import is_scalar
from .outline import ONCE

#: the numba decorator of the inner loops (the drivers are outlined: see :mod:`.outline`)
INNER = '@numba.njit(fastmath=_FASTMATH, error_model="numpy", cache=True)'
#: the rows a cols pass adds up before it updates a column's accumulator (a power of two)
UNROLL = 4
#: the numba decorator of the elementwise loops: the same without reassociation ((x - mu_hi) - mu_lo
#: must not become x - (mu_hi + mu_lo), which rounds mu_lo away)
ELEMENTS = '@numba.njit(fastmath=_FASTMATH_ELEMENTS, error_model="numpy", cache=True)'


class Emit:
    """Indented source lines."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)


class Columns:
    """The cols and tall drivers of :class:`~derive.backends.numba.kernels.Printed`."""

    def uniform_params(self) -> list[str]:
        """The parameters that are one value per group, read anywhere in this kernel."""
        return [n for n in self.r.params if n not in self.varying]

    def spread(self, e: Emit, depth: int, names, sources: dict, per_group: str) -> dict[str, str]:
        """Each operand over the tile's columns: per-group values (``sources``, sliced by
        ``per_group``) and one-value-per-group parameters repeated K*I times (the same array when
        K*I = 1), varying parameters laid out along k; returns name -> array.  A parameter is laid
        out once a tile: a later phase of the same tile reads the same array.  Each is written into
        a scratch array of the block (see :meth:`scratch`); a varying parameter is laid out once a
        block where every tile starts a period of P groups (GT % P == 0), and sliced."""
        out = {}
        for n in names:
            local = self.local(f"{n}_e")
            out[n] = local
            if n in self.params and n in self.tile_spread:
                continue
            if n in self.params:
                self.tile_spread.add(n)
            if n in self.varying:
                param, block = self.array(n, "p"), self.local(f"{n}_all")
                e(depth, f"{block} = _layout.expand_varying({param}, 0, GT * R, K, I, P){ONCE}")
                e(depth, f"{local} = {block}[:j1 - j0] if P == 0 or GT % P == 0 else "
                         f"_layout.expand_varying({param}, g0, g1, K, I, P)")
                continue
            if n in self.params:
                values, dtype = self.local(n + "_t"), f"{self.array(n, 'p')}.dtype"
            else:
                array, _ = sources[n]
                values = self.view(sources, n, per_group)
                dtype = f"{self.blocks.get(array, array)}.dtype"
            buffer = self.scratch(e, depth, f"{n}_e", "GT * K * I * R", dtype)
            e(depth, f"{local} = _layout.spread_into({values}, K * I, {buffer}[:j1 - j0])")
        return out

    def scratch(self, e: Emit, depth: int, base: str, size: str, dtype: str = "") -> str:
        """A scratch array of ``size`` (the largest tile's), allocated once a block of tiles (the
        line ends in ONCE: see :mod:`.outline`), not once a tile: a tile of 512 groups of two
        columns allocated twelve arrays, and layer norm's forward at (2**20, 2) took 6.9 ms
        against 5.3 ms with them allocated once a block."""
        name = self.local(f"{base}_b")
        e(depth, f"{name} = numpy.empty({size}{', ' + dtype if dtype else ''}){ONCE}")
        return name

    def read_later(self) -> set[str]:
        """The per-group values (and sums) some later phase reads: a later pass's summands, a later
        phase's group assignments, or the elementwise pass (cols keeps these in arrays over G)."""
        out: set[str] = set()
        for n, ph in enumerate(self.sc.passes):
            out |= {s.name for _, v in ph.sums + ph.partials for s in v.free_symbols}
            if n:
                out |= {s.name for _, v in ph.group for s in v.free_symbols}
        out |= {s.name for _, v in self.sc.elements for s in v.free_symbols}
        return out

    def tile(self, e: Emit, depth: int, rows: bool) -> None:
        self.tile_spread = set()   # the parameters this tile has laid out over its columns (see spread)
        if rows:
            e(depth, "rc, tc = t // TC, t % TC")
            e(depth, "o0, o1 = rc * O // RC, (rc + 1) * O // RC")
        e(depth, "g0, g1 = tc * GT, min(G, (tc + 1) * GT)")
        e(depth, "j0, j1 = g0 * K * I * R, g1 * K * I * R")
        for n in self.uniform_params():
            param = self.array(n, "p")
            buffer = self.scratch(e, depth, f"{n}_t", "GT", f"{param}.dtype")
            e(depth, f"{self.local(n + '_t')} = _layout.per_group_into({param}, g0, g1, P, {buffer}[:g1 - g0])")

    def cols_sources(self, e: Emit, first: str, tile: bool) -> tuple[dict, list[str]]:
        """Where each per-group value lives between the phases of the cols strategies (they meet only
        through memory): name -> (array, tile-local).  Inputs and results are arrays over G; with
        ``tile`` the group sums and the values a later phase reads are arrays over the tile's
        groups (returned as lines to run at the start of each tile), else arrays over G.  The outer
        gradients' per-group values are the gradient itself when every group has its own
        parameter (P = G)."""
        r, sc = self.r, self.sc
        sources = {n: (self.array(n, "g"), False) for n in r.group_in}
        later = self.read_later()
        size = "GT" if tile else "G"
        allocate = []
        self.blocks = {}   # a tile's array -> the block's scratch array it slices

        def allocated(name: str, kind: str) -> None:
            if not tile:
                allocate.append(f"{name} = numpy.empty({size}{kind})")
                return
            self.blocks[name] = self.local(f"{name}_b")
            allocate.append(f"{self.blocks[name]} = numpy.empty({size}{kind}){ONCE}")
            allocate.append(f"{name} = {self.blocks[name]}[:g1 - g0]")

        for ph in sc.passes:
            for acc, _ in ph.sums:
                sources[acc.name] = (self.local(acc.name + "_s"), tile)
                allocated(sources[acc.name][0], "")
        for s in self.group_values:
            if s.name in r.group_out:
                sources[s.name] = (self.array(s.name, "g"), False)
            elif s.name in later:
                sources[s.name] = (self.local(f"{s.name}_a"), tile)
                allocated(sources[s.name][0], f", {first}.dtype" if self.narrow and s.name in self.read else "")
        if not tile:
            for line in allocate:
                e(1, line)
            allocate = []
        for g, _ in sc.outer:
            e(1, f"{self.array(g.name, 'g')} = {self.array(g.name, 'p')} if P == G else numpy.empty(G)")
        if self.needs_work():
            e(1, f"like = numpy.empty(0, {first}.dtype)")
        return sources, allocate

    def cols_accumulate(self, e: Emit, ph, table: dict, wide: dict) -> None:
        """The accumulation of a cols pass: UNROLL rows at a time, their summands added in float64
        before each column's accumulator is (read, added to and written back once per UNROLL
        elements instead of once per element: 1.25 ms against 1.88 ms for two sums over (4096, 1024)
        float32, one thread), then the rows left one at a time.  The order is fixed by the block's
        bounds, so the bits still do not depend on the thread count."""
        def accumulate(rows: int) -> None:   # the accumulators' updates, the rows' summands added in pairs
            def added(summand, tab):
                if rows == 1:
                    return self.p(summand, tab)
                terms = [self.p(summand, {n: v.replace("[ou, j]", f"[u{k}, j]") for n, v in tab.items()})
                         for k in range(rows)]
                while len(terms) > 1:
                    terms = [f"({a} + {b})" for a, b in zip(terms[::2], terms[1::2])]
                return terms[0]

            e(2, "for q in range(j1 - j0):")
            e(3, "j = numba.uint64(j0 + q)")
            for acc, summand in ph.sums:
                e(3, f"{acc.name}[q] += {added(summand, wide)}")
            for g, summand in ph.partials:
                e(3, f"{g.name}[q] += {added(summand, table)}")

        e(1, "o = o0")
        e(1, f"while o + {UNROLL} <= o1:")
        for k in range(UNROLL):
            e(2, f"u{k} = numba.uint64(o + {k})")
        accumulate(UNROLL)
        e(2, f"o += {UNROLL}")
        e(1, "for o in range(o, o1):")
        e(2, "ou = numba.uint64(o)")
        accumulate(1)

    def store_sums(self, e: Emit, depth: int, ph, sources: dict, per_group: str) -> None:
        """The group sums of ``ph`` that are results too (a user's graph may save a sum for its
        backward): copied from the float64 sums the phases read into their result arrays."""
        for acc, _ in ph.sums:
            if acc.name in self.r.group_out:
                target = self.array(acc.name, "g") + (per_group or "[:]")
                e(depth, f"{target} = {self.view(sources, acc.name, per_group)}")

    @staticmethod
    def view(sources: dict, name: str, per_group: str) -> str:
        array, local = sources[name]
        return array if local else array + per_group

    def inner_group(self, n: int, ph, sources: dict) -> tuple[str, list[str], list[str]]:
        """The per-group phase ``n`` as a loop over an array of groups: its name, source lines and
        the arrays it takes (sums, per-group values and parameters read; values stored; outer
        gradients), by name; the caller passes each sliced to the groups."""
        sums = [acc.name for acc, _ in ph.sums]
        assigned = [s.name for s, _ in ph.group]
        reads = set().union(*(v.free_symbols for _, v in ph.group)) if ph.group else set()
        loaded = sorted({s.name for s in reads if not is_scalar(s)} - set(assigned) - set(sums))
        scal = sorted({s.name for s in reads if is_scalar(s)})
        here = sums + assigned
        stores = [s for s in assigned if s in sources]
        outer = [(g.name, acc.name) for g, acc in self.sc.outer if acc.name in here]
        table = {v: f"{v}[g]" for v in sums + loaded}
        written = {s: self.local(s + "_w") for s in stores}
        args = sums + loaded + [written[s] for s in stores] + [g for g, _ in outer] + scal
        takes = sums + loaded + stores + [g for g, _ in outer]
        if self.needs_work():
            args.append("like")
        name = f"{self.name}_g{n}"
        e = Emit()
        e(0, INNER)
        e(0, f"def {name}({', '.join(args)}):")
        if self.needs_work():
            e(1, "work = like.dtype.type")
        if not takes:
            raise ValueError(f"{self.name}: a per-group phase that reads no per-group value")
        e(1, f"for g in range({takes[0]}.shape[0]):")
        for s, value in ph.group:
            e(2, self.group_line(s, value, table))
        for s in stores:
            e(2, f"{written[s]}[g] = {s}")
        for g, acc in outer:
            e(2, f"{g}[g] = {table.get(acc, acc)}")
        return name, e.lines, takes

    def group_call(self, e: Emit, depth: int, ph, group: tuple, sources: dict, per_group: str,
                   params: str = "_t") -> None:
        name, _, takes = group
        args = []
        for t in takes:
            if t in sources:
                args.append(self.view(sources, t, per_group))
            elif t in self.params:
                args.append(self.local(t + params))
            else:   # an outer gradient's per-group array
                g = next(g for g, _ in self.sc.outer if g.name == t)
                args.append(f"{self.array(g.name, 'g')}{per_group}")
        reads = set().union(*(v.free_symbols for _, v in ph.group)) if ph.group else set()
        args += sorted({s.name for s in reads if is_scalar(s)})
        if self.needs_work():
            args.append("like")
        e(depth, f"{name}({', '.join(args)})")

    def cols_pass(self, e: Emit, depth: int, n: int, ph, inner: dict, sources: dict, rows: str,
                  fold, part: str) -> None:
        """Pass ``n`` over one tile: the column accumulators, the inner loop over ``rows``, then each
        sum folded per group into ``fold(name)`` and each parameter partial into its chunk ``part``."""
        elems, ops, scal = self.pass_parts(ph)
        sums = [acc.name for acc, _ in ph.sums]
        partials = [g.name for g, _ in ph.partials]
        spread = self.spread(e, depth, ops, sources, "[g0:g1]")
        accs = {s: self.local(s + "_t") for s in sums + partials}
        for s in sums + partials:
            e(depth, f"{accs[s]} = {self.scratch(e, depth, s + '_t', 'GT * K * I * R')}[:j1 - j0]")
            e(depth, f"{accs[s]}[:] = 0.0")
        args = (elems + [spread[v] for v in ops] + [accs[s] for s in sums + partials] + scal
                + [rows, "j0", "j1"])
        e(depth, f"{inner[n]}({', '.join(args)})")
        for s in sums:
            e(depth, f"_layout.fold({accs[s]}, K * I, {fold(s)})")
        for g in partials:
            e(depth, f"_layout.fold_varying({accs[g]}, g0, g1, K, I, P, {self.array(g, 'c')}[{part}])")

    def cols_elements(self, e: Emit, depth: int, inner: dict, sources: dict, rows: str) -> None:
        elems, stores, ops, scal = self.element_parts()
        spread = self.spread(e, depth, ops, sources, "[g0:g1]")
        args = elems + stores + [spread[v] for v in ops] + scal + [rows, "j0", "j1"]
        e(depth, f"{inner['e']}({', '.join(args)})")

    def cols_driver(self, inner: dict) -> list[str]:
        """cols: one parallel loop over tiles of GT groups; each tile runs every phase itself, from its
        groups' shifts (their first elements, read as the tile starts: a pass of its own over every
        group: layer norm's forward at (2**20, 2) took 3.83 ms with it, 3.28 ms without)."""
        r, sc = self.r, self.sc
        e = Emit()
        e(0, f"def {self.name}_cols({', '.join(self.arguments() + ['P', 'K', 'I', 'G', 'GT', 'R'])}):")
        first = (r.element_in + r.element_out)[0]
        e(1, f"O = {first}.shape[0]")
        e(1, "TC = (G + GT - 1) // GT")
        sources, allocate = self.cols_sources(e, first, tile=True)
        for g, _ in (a for ph in sc.passes for a in ph.partials):
            e(1, f"{self.array(g.name, 'c')} = numpy.zeros((TC, P, K))")
        e(1, "for tc in numba.prange(TC):")
        self.tile(e, 2, rows=False)
        for s, x in self.shifts:   # each group's first element, from the tile's own columns
            e(2, f"_layout.first_cols({x}, {self.array(s.name, 'g')}, g0, g1, K * I)")
        for line in allocate:
            e(2, line)
        for n, ph in enumerate(sc.passes):
            if ph.sums or ph.partials:
                self.cols_pass(e, 2, n, ph, inner, sources, "0, O", lambda s: self.view(sources, s, "[g0:g1]"),
                               "tc")
                self.store_sums(e, 2, ph, sources, "[g0:g1]")
            if ph.group or any(acc in dict(sc.outer).values() for acc, _ in ph.sums):
                self.group_call(e, 2, ph, inner[f"g{n}"], sources, "[g0:g1]")
        self.cols_elements(e, 2, inner, sources, "0, O")
        self.combine(e, cols=True)
        return e.lines

    def tall_driver(self, inner: dict) -> list[str]:
        """tall (cols with few tiles and many rows): each pass is a parallel loop over (row chunk,
        tile) items into one partial sum per row chunk, added in chunk order before the per-group
        phase (a loop over every group); then the elementwise pass over the same items."""
        r, sc = self.r, self.sc
        e = Emit()
        e(0, f"def {self.name}_tall({', '.join(self.arguments() + ['P', 'K', 'I', 'G', 'RC', 'GT', 'R'])}):")
        first = (r.element_in + r.element_out)[0]
        e(1, f"O = {first}.shape[0]")
        e(1, "TC = (G + GT - 1) // GT")
        sources, _ = self.cols_sources(e, first, tile=False)
        for g, _ in (a for ph in sc.passes for a in ph.partials):
            e(1, f"{self.array(g.name, 'c')} = numpy.zeros((RC * TC, P, K))")
        for n in self.uniform_params():
            e(1, f"{self.local(n + '_all')} = _layout.per_group({self.array(n, 'p')}, 0, G, P)")
        for n, ph in enumerate(sc.passes):
            if ph.sums or ph.partials:
                for acc, _ in ph.sums:
                    e(1, f"{self.local(acc.name + '_r')} = numpy.empty((RC, G))")
                e(1, "for t in numba.prange(RC * TC):")
                self.tile(e, 2, rows=True)
                self.cols_pass(e, 2, n, ph, inner, sources, "o0, o1",
                               lambda s: f"{self.local(s + '_r')}[rc, g0:g1]", "t")
                for acc, _ in ph.sums:
                    e(1, f"_layout.sum_chunks({self.local(acc.name + '_r')}, {sources[acc.name][0]})")
                self.store_sums(e, 1, ph, sources, "")
            if ph.group or any(acc in dict(sc.outer).values() for acc, _ in ph.sums):
                self.group_call(e, 1, ph, inner[f"g{n}"], sources, "", "_all")
        e(1, "for t in numba.prange(RC * TC):")
        self.tile(e, 2, rows=True)
        self.cols_elements(e, 2, inner, sources, "o0, o1")
        self.combine(e, cols=True)
        return e.lines
