"""The wide driver of a numba kernel (see :mod:`.kernels`): few long groups whose parameters vary
along k (layer norm at (4, 2**20)).  krows gives a thread whole groups, so with few groups the
threads are idle or each chunk keeps a float64 partial of the parameters' gradients as long as a
group (16 MB each at (4, 2**20)), zeroed, updated and added up; wide splits the k range into tiles
instead.  A mixin of :class:`~derive.backends.numba.kernels.Printed`, whose state and inner loops it
reads.

Each pass with sums is a parallel loop over the KT tiles of k: a tile runs the krows inner loop of
the pass over its part of every run (each group g, each row o), adds the runs' sums into one
partial sum per (tile, group), and adds the parameters' partial gradients straight into their
float64 result along its own k (no other tile writes there).  The tiles' partial sums are added in
tile order, then the per-group phase runs over every group (the cols functions ``_g<n>``), and the
elementwise pass is one more loop over the tiles.  The order of every sum is fixed by the shape,
so the results do not depend on the thread count.
"""
from __future__ import annotations

from .columns import Emit

#: the tiles' bounds along k, printed in every loop over them
BOUNDS = "k0, k1 = t * K // KT, (t + 1) * K // KT"


class Wide:
    """The wide driver of :class:`~derive.backends.numba.kernels.Printed`."""

    def wide_inner(self) -> tuple[dict, list]:
        """The inner loops wide calls on a run's part ``[k0:k1]``: each pass's krows loop (its sums
        returned, its partial gradients added into the arrays it is given) and the elementwise loop
        over one run, under their own names."""
        inner, blocks = {}, []
        for n, ph in enumerate(self.sc.passes):
            if ph.sums or ph.partials:
                inner[n], lines = self.inner_pass(n, ph, "krows", label="wide")
                blocks.append(lines)
        inner["e"], lines = self.inner_elements("krows", label="wide")
        blocks.append(lines)
        return inner, blocks

    def wide_run(self, names) -> list[str]:
        """The arguments of an inner loop for one run's part of a tile: element arrays and varying
        parameters sliced to [k0:k1], the other operands by name (loaded per group)."""
        out = []
        for n in names:
            if n in self.elements_in:
                out.append(f"{n}[o, g, k0:k1]")
            elif n in self.varying:
                out.append(f"{self.array(n, 'p')}[p, k0:k1]")
            else:
                out.append(n)
        return out

    def wide_group(self, e: Emit, names, sources: dict) -> None:
        """The start of a group in a tile: g's parameter row p and the per-group values ``names`` read."""
        e(3, "p = g % P")
        self.group_loads(e, 3, [n for n in names if n not in self.varying and n not in self.elements_in],
                         cols_sources=sources)

    def wide_driver(self, inner: dict, groups: dict) -> list[str]:
        """wide: each pass a parallel loop over the tiles of k, its sums added up in tile order, the
        per-group phase over every group, then the elementwise pass over the same tiles."""
        r, sc = self.r, self.sc
        e = Emit()
        e(0, f"def {self.name}_wide({', '.join(self.arguments() + ['P', 'KT'])}):")
        first = (r.element_in + r.element_out)[0]
        e(1, f"O, G, K = {first}.shape")
        sources, _ = self.cols_sources(e, first, tile=False)
        for n in self.uniform_params():
            e(1, f"{self.local(n + '_all')} = _layout.per_group({self.array(n, 'p')}, 0, G, P)")
        for n, ph in enumerate(sc.passes):
            if ph.sums or ph.partials:
                self.wide_pass(e, n, ph, inner[n], sources)
            if ph.group or any(acc in dict(sc.outer).values() for acc, _ in ph.sums):
                self.group_call(e, 1, ph, groups[f"g{n}"], sources, "", "_all")
        elems, stores, ops, scal = self.element_parts()
        e(1, "for t in numba.prange(KT):")
        e(2, BOUNDS)
        e(2, "for g in range(G):")
        self.wide_group(e, ops, sources)
        e(3, "for o in range(O):")
        e(4, f"{inner['e']}({', '.join(self.wide_run(elems + stores + ops) + scal)})")
        for g in dict(sc.outer):
            e(1, "if P != G:")
            e(2, f"_layout.combine_outer({self.array(g.name, 'g')}, {self.array(g.name, 'p')})")
        return e.lines

    def wide_pass(self, e: Emit, n: int, ph, inner: str, sources: dict) -> None:
        """Pass ``n``: a parallel loop over the tiles, one partial sum per (tile, group) and the
        parameters' gradients along the tile's k; then the tiles' sums added in order."""
        elems, ops, scal = self.pass_parts(ph)
        sums = [acc.name for acc, _ in ph.sums]
        partials = [self.array(g.name, "p") for g, _ in ph.partials]
        for s in sums:
            e(1, f"{self.local(s + '_r')} = numpy.empty((KT, G))")
        e(1, "for t in numba.prange(KT):")
        e(2, BOUNDS)
        for target in partials:   # each tile owns its columns of the float64 gradients
            e(2, f"{target}[:, k0:k1] = 0.0")
        e(2, "for g in range(G):")
        self.wide_group(e, ops, sources)
        for s in sums:
            e(3, f"{s} = 0.0")
        e(3, "for o in range(O):")
        call = (f"{inner}({', '.join(self.wide_run(elems + ops) + [f'{t}[p, k0:k1]' for t in partials] + scal)})")
        if sums:
            temps = [self.local(f"{s}_run") for s in sums]
            e(4, f"{', '.join(temps)}, = {call}")
            for s, t in zip(sums, temps):
                e(4, f"{s} += {t}")
        else:
            e(4, call)
        for s in sums:
            e(3, f"{self.local(s + '_r')}[t, g] = {s}")
        for s in sums:
            e(1, f"_layout.sum_chunks({self.local(s + '_r')}, {sources[s][0]})")
        self.store_sums(e, 1, ph, sources, "")
