"""The rows and krows drivers of a numba kernel (see :mod:`.kernels`): a thread takes a chunk of groups
and does every pass of a group while it is in cache.  A mixin of
:class:`~derive.backends.numba.kernels.Printed`, whose state and inner loops it reads."""
from __future__ import annotations

import sympy as sp

from ...math.algebra import Elem
from .columns import Emit
from ...math import seeded


class Rows:
    """The rows and krows drivers of :class:`~derive.backends.numba.kernels.Printed`."""

    def rows_driver(self, mode: str, inner: dict) -> list[str]:
        """The rows (4-D arrays, runs over i) or krows (3-D arrays, runs over k) driver."""
        r, sc = self.r, self.sc
        e = Emit()
        e(0, f"def {self.name}_{mode}({', '.join(self.arguments(shifts=False) + ['P', 'chunks'])}):")
        first = (r.element_in + r.element_out)[0]
        e(1, f"{'O, G, K, I' if mode == 'rows' else 'O, G, K'} = {first}.shape")
        for g, _ in (a for ph in sc.passes for a in ph.partials):
            e(1, f"{self.array(g.name, 'c')} = numpy.zeros((chunks, P, K))")
        for g, _ in sc.outer:
            e(1, f"{self.array(g.name, 'g')} = {self.array(g.name, 'p')} if P == G else numpy.empty(G)")
        blocked = [g.name for g, _ in (a for ph in sc.passes for a in ph.partials)] if mode == "krows" else []
        e(1, "for c in numba.prange(chunks):")
        if self.needs_work():
            e(2, f"work = {first}.dtype.type")
        if blocked:   # a row adds into a block in the working dtype; BLOCK rows a block go into the float64 partial
            for g in blocked:
                e(2, f"{self.array(g, 'b')} = numpy.zeros((P, K), {first}.dtype)")
            e(2, "g0, every = c * G // chunks, _layout.block_groups(P, O)")
            e(2, "left = every")
        e(2, f"for g in range({'g0' if blocked else 'c * G // chunks'}, (c + 1) * G // chunks):")
        e(3, "p = g % P")
        shifts = {s.name: x.name for s, x in self.shifts}
        uniform = [n for n in r.group_in if n not in shifts] + [n for n in r.params if n not in self.varying]
        self.group_loads(e, 3, uniform)
        sizes, index = ("O * K * I", "0, g, 0, 0") if mode == "rows" else ("O * K", "0, g, 0")
        for n, x in shifts.items():   # the group's first element (_layout.first's value; 0 for an empty group)
            e(3, f"{n} = numpy.float64({x}[{index}]) if {sizes} else 0.0")
        outer = dict(sc.outer)
        for n, ph in enumerate(sc.passes):
            if (ph.sums or ph.partials) and self.sums_inline(mode):
                self.krows_sums_inline(e, ph)
            elif ph.sums or ph.partials:
                self.rows_pass(e, mode, inner[n], ph, inner.get(f"b{n}"))
            for s, value in ph.group:
                e(3, self.group_line(s, value, {}))
            here = {s for s, _ in ph.sums + ph.group}
            for s, _ in ph.sums + ph.group:
                if s.name in r.group_out:
                    e(3, f"{self.array(s.name, 'g')}[g] = {s.name}")
            for g, acc in outer.items():
                if acc in here:
                    e(3, f"{self.array(g.name, 'g')}[g] = {acc.name}")
        if blocked:   # a count down, not (g - g0 + 1) % every: 26 ns a group in layer norm's backward at (2**18, 8)
            e(3, "left -= 1")
            e(3, "if left == 0:")
            e(4, "left = every")
            for g in blocked:
                e(4, f"_layout.flush({self.array(g, 'b')}, {self.array(g, 'c')}[c])")
        self.elements_inline(e, mode)
        for g in blocked:
            e(2, f"_layout.flush({self.array(g, 'b')}, {self.array(g, 'c')}[c])")
        self.combine(e, cols=False)
        return e.lines

    def run_factors(self, ph) -> tuple[list, list]:
        """The sums and partial gradients of a rows pass as run-constant factors times sums over the
        run: each summand split into the product of its factors that read no element (per-group
        values, parameters, constants: one value over a run of i) and of those that do, each
        distinct element part summed once.  Returns ([(accumulator, element part)], [(factor,
        accumulator)] for each sum, then each partial).  Group norm's backward sums dout*gamma,
        dout*gamma*(x - mu), dout*inv_std*(x - mu) and dout: two sums over the run, not four."""
        raws: dict = {}
        uses = []

        def varies(f) -> bool:   # reads an element (the parameters are one value a run in rows)
            return any(s.name not in self.params for s in f.atoms(Elem))

        split = []
        for target, summand in ph.sums + ph.partials:
            factors = sp.Mul.make_args(summand)
            element = sp.Mul(*(f for f in factors if varies(f)))
            factor = sp.Mul(*(f for f in factors if not varies(f)))
            if seeded.simplify(factor * element - summand) != 0:   # a guard: Mul.make_args splits exactly
                raise ValueError(f"{self.name}: {summand} is not {factor} times {element}")
            split.append((target.name, factor, element))
        for name, factor, element in split:   # the document's name where a sum is its element part alone
            if factor == 1 and element not in raws:
                raws[element] = name
        for _, factor, element in split:
            if element not in raws:
                raws[element] = self.local(f"run{len(raws)}")
            uses.append((factor, raws[element]))
        return [(name, element) for element, name in raws.items()], uses

    def rows_accumulate(self, e: Emit, ph, wide: dict, blocked: bool) -> None:
        """A rows pass over one run: each distinct element part summed in float64 (``blocked``: in
        blocks, :mod:`.blocks`), then every sum and partial returned as its factor times its sum (see
        :meth:`run_factors`)."""
        raws, uses = self.run_factors(ph)
        elems = self.pass_parts(ph)[0]
        for name, _ in raws:
            e(1, f"{name} = 0.0")
        if blocked:
            self.block_sums(e, 1, f"{elems[0]}.shape[0]", [(n, f"{n}[j]") for n in elems], raws, [],
                            self.narrow_shifts(ph))
        else:
            e(1, f"for j in range({elems[0]}.shape[0]):")
            for name, element in raws:
                e(2, f"{name} += {self.p(element, wide)}")
        values = [name if factor == 1 else f"{self.p(factor, wide)}*{name}" for factor, name in uses]
        e(1, f"return ({', '.join(values)},)")

    def rows_pass(self, e: Emit, mode: str, inner: str, ph, blocked: str | None = None) -> None:
        """A pass over one group: its inner loop called for each run, the runs' sums added up (in
        rows, each run's parameter partials too; in krows the inner loop adds them into the blocks).
        krows calls the inner loop once, outside a loop over o, when a group is one run (O = 1)."""
        elems, ops, scal = self.pass_parts(ph)
        sums = [acc.name for acc, _ in ph.sums]
        partials = [g.name for g, _ in ph.partials]
        for s in sums:
            e(3, f"{s} = 0.0")
        if mode == "rows":
            call_args = [f"{a}[o, g, k]" for a in elems] + ops + scal
            got = sums + partials
        else:
            call_args = ([f"{a}[o, g]" for a in elems]
                         + [f"{self.array(v, 'p')}[p]" if v in self.varying else v for v in ops]
                         + [f"{self.array(g, 'b')}[p]" for g in partials] + scal)
            got = sums
        call = f"{inner}({', '.join(call_args)})"

        def run(depth: int, call: str) -> None:
            if not got:
                e(depth, call)
                return
            temps = [self.local(f"{s}_run") for s in got]
            e(depth, f"{', '.join(temps)}, = {call}")
            for s, t in zip(sums, temps):
                e(depth, f"{s} += {t}")
            for g, t in zip(partials if mode == "rows" else [], temps[len(sums):]):
                e(depth, f"{self.array(g, 'c')}[c, p, k] += {t}")

        def runs(depth: int, call: str) -> None:
            e(depth, "for o in range(O):")
            e(depth + 1, "for k in range(K):")
            for v in ops:
                if v in self.varying:
                    e(depth + 2, f"{v} = {self.array(v, 'p')}[p, k]")
            run(depth + 2, call)

        if mode == "rows" and blocked:   # the run in blocks where it is long (.blocks)
            e(3, "if I >= _layout.BLOCKS_CALL_FROM:")
            runs(4, call.replace(f"{inner}(", f"{blocked}(", 1))
            e(3, "else:")
            runs(4, call)
            return
        if mode == "rows":
            runs(3, call)
            return
        self.over_o(e, lambda depth, o: run(depth, call.replace("[o, g]", f"[{o}, g]")))

    def krows_sums_inline(self, e: Emit, ph) -> None:
        """A krows pass over one group printed in the kernel (see Printed.sums_inline): its sums (in
        blocks from runs of _layout.BLOCKS_FROM, :mod:`.blocks`; shorter runs whole in float64) and its
        parameter partials into the group's row of the blocks."""
        elems, ops, _ = self.pass_parts(ph)
        for acc, _ in ph.sums:
            e(3, f"{acc.name} = 0.0")

        def body(depth: int, o: str) -> None:
            runs = ([(n, f"{n}[{o}, g, j]") for n in elems]
                    + [(v, f"{self.array(v, 'p')}[p, j]") for v in ops if v in self.varying]
                    + [(g.name, f"{self.array(g.name, 'b')}[p, j]") for g, _ in ph.partials])
            e(depth, "if K >= _layout.BLOCKS_FROM:")
            self.block_sums(e, depth + 1, "K", runs, [(acc.name, summand) for acc, summand in ph.sums],
                            [(g.name, summand) for g, summand in ph.partials], self.narrow_shifts(ph))
            e(depth, "else:")   # a short run: whole float64 sums, without a block's bookkeeping
            e(depth + 1, "for j in range(K):")
            table = {n: f"{n}[{o}, g, j]" for n in elems}
            table.update({v: f"{self.array(v, 'p')}[p, j]" for v in ops if v in self.varying})
            wide = self.wide(table, elems + ops)
            for acc, summand in ph.sums:
                e(depth + 2, f"{acc.name} += {self.p(summand, wide)}")
            for g, summand in ph.partials:
                e(depth + 2, f"{self.array(g.name, 'b')}[p, j] += {self.p(summand, table)}")

        self.over_o(e, body)

    def elements_inline(self, e: Emit, mode: str) -> None:
        """The elementwise pass over one group, printed in the kernel itself: a call of an inner loop
        per run cost about 13 ns (of krows' 26 ns a group for layer norm's forward at (2**20, 2)
        float32; rows calls one per (o, k)).  The kernel takes the elementwise loops' fast-math flags
        (see kernels.py).  A group that is one row of runs (O = 1) skips the loop over o."""
        elems, stores, ops, _ = self.element_parts()
        at = "g, j" if mode == "krows" else "g, k, j"

        def body(depth: int, o: str) -> None:
            if mode == "rows":
                e(depth, "for k in range(K):")
                depth += 1
                for v in ops:
                    if v in self.varying:
                        e(depth, f"{v} = {self.array(v, 'p')}[p, k]")
            e(depth, f"for j in range({'K' if mode == 'krows' else 'I'}):")
            table = {n: f"{n}[{o}, {at}]" for n in elems + stores}
            if mode == "krows":
                table.update({v: f"{self.array(v, 'p')}[p, j]" for v in ops if v in self.varying})
            for s, value in self.sc.elements:
                lhs = f"{s.name}[{o}, {at}]" if s.name in stores else s.name
                e(depth + 1, f"{lhs} = {self.p(value, table)}")

        self.over_o(e, body)

    @staticmethod
    def over_o(e: Emit, body) -> None:
        """``body(depth, o)`` printed twice in a group's loop: once with o = 0 for a group that is one
        row of runs (O = 1, every library view: no loop over o), once inside ``for o in range(O)``."""
        e(3, "if O == 1:")
        body(4, "0")
        e(3, "else:")
        e(4, "for o in range(O):")
        body(5, "o")
