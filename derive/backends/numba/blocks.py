"""The sums of a run, printed in blocks: each block of SUM_BLOCK elements summed in the working dtype,
each block's sum added into the float64 accumulator (float32; a float64 run is one block:
``_layout.sum_block``).  A mixin of
:class:`~derive.backends.numba.kernels.Printed`, whose printer and names it reads.  No derivation
math here: the summands come from the IR's schedule.

Why: summed whole in float64, each float32 load is converted first and the arithmetic runs at half
the vector width.  Layer norm's backward at (8192, 1024) float32 (generated.torch's kernel contract,
2 threads, both side by side in one process) took 5.05, 6.72 and 6.96 ms so in three runs, and 4.74,
5.94 and 6.13 ms in blocks of 256; spatial batch norm's at (32, 64, 56, 56) 4.19-4.49 against
4.01-4.19 ms.  The error stays bounded by the block, not by the run:
a block's float32 sum is off by about 13 units of float32 rounding of the sum of its terms'
magnitudes (LLVM sums a block in 32 lanes of 8 terms, then the lanes in a tree), as NumPy's
pairwise float32 sums are; the blocks add without rounding that matters in float64.

A block whose sum is not finite, or in float32 nearer zero than ``_layout.block_floor`` (2**-100,
2**26 times float32's smallest normal number) but not exactly zero, is summed again in float64: its
terms may have overflowed (a float32 spread of 1e20 squares past float32's range) or lost digits to
underflow (a spread of 5e-23 squares to subnormal numbers).  Parameter partials, which go into blocks of rows in the working
dtype already (generated/numba/_loops.py's BLOCK), are added once, in the first loop.

Where: the krows kernels' sums printed inside the kernel (a backward's) from runs of
``_layout.BLOCKS_FROM`` (64) elements, and the rows kernels' run loops from runs of
``_layout.BLOCKS_CALL_FROM`` (2048): a rows run is a call of its own, and the blocked loop, which LLVM
does not inline, costs a call and a reference count a run (spatial batch norm's backward at (512, 64,
8, 4) took 1.66 ms in whole sums and 2.34 ms in blocks).  Shorter runs keep the whole float64 loop, as
do krows's separate inner loops (a forward's statistics, wide's tiles): there layer norm's forward at
(8192, 1024) took the same time either way (1.78-2.03 ms, 2 threads) and lost its inlining in blocks.
"""
from __future__ import annotations

from .columns import Emit


class Blocks:
    """Blocked run sums for :class:`~derive.backends.numba.kernels.Printed`."""

    def block_sums(self, e: Emit, depth: int, length: str, arrays: list[tuple[str, str]], sums: list,
                   partials: list, scalars: dict[str, str]) -> None:
        """Print, at ``depth``, the loop over blocks of a run of ``length`` elements.

        ``arrays``: (name, how element j of the run is read), e.g. ("x", "x[0, g, j]"); j is unsigned
        (numba checks a signed index for being negative, which keeps LLVM from vectorizing) and no
        array is sliced (a slice not optimized away costs a reference count).  ``sums``: (the float64
        accumulator's name, the summand); ``partials``: (one of ``arrays``, which the summand is added
        into: a block of the parameters' partial gradients).  ``scalars``: the names printed otherwise
        in the working-dtype loop (a shift, which is an element of x, as ``work(shift)``)."""
        local = self.local
        narrow = dict(arrays)
        narrow.update(scalars)
        read = sorted({s.name for _, summand in sums for s in summand.free_symbols})
        wide = self.wide(dict(arrays), read)
        blocks = [local(f"{acc}_block") for acc, _ in sums]
        keeps = [local(f"{acc}_kept") for acc, _ in sums]
        first = arrays[0][0]
        e(depth, f"work = {first}.dtype.type")
        for name, value in scalars.items():
            e(depth, f"{value} = work({name})")
        span = local("span")
        e(depth, f"{span} = _layout.sum_block({first})")
        if sums:
            e(depth, f"{local('floor')} = _layout.block_floor({first})")
        e(depth, f"for j0 in range(0, {length}, {span}):")
        e(depth + 1, f"j1 = min(j0 + {span}, {length})")
        for b in blocks:
            e(depth + 1, f"{b} = work(0)")

        def loop(at: int) -> None:
            e(at, "for q in range(j1 - j0):")
            e(at + 1, "j = numba.uint64(j0 + q)")

        loop(depth + 1)
        for b, (_, summand) in zip(blocks, sums):
            e(depth + 2, f"{b} += {self.p(summand, narrow)}")
        for target, summand in partials:
            e(depth + 2, f"{narrow[target]} += {self.p(summand, narrow)}")
        if not sums:
            return
        for k, b in zip(keeps, blocks):
            e(depth + 1, f"{k} = numpy.float64({b})")
        kept = " and ".join(f"_layout.ordinary({k}, {local('floor')})" for k in keeps)
        e(depth + 1, f"if not ({kept}):   # out of range: again in float64")
        for k in keeps:
            e(depth + 2, f"{k} = 0.0")
        loop(depth + 2)
        for k, (_, summand) in zip(keeps, sums):
            e(depth + 3, f"{k} += {self.p(summand, wide)}")
        for k, (acc, _) in zip(keeps, sums):
            e(depth + 1, f"{acc} += {k}")

    def narrow_shifts(self, ph) -> dict[str, str]:
        """The shifts a pass's summands read (each group's first element of an input, a float64 argument),
        each with the name of its value in the working dtype, which holds it exactly."""
        read = {s.name for _, summand in ph.sums + ph.partials for s in summand.free_symbols}
        return {s.name: self.local(f"{s.name}_w") for s, _ in self.shifts if s.name in read}
