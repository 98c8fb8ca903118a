"""How a working view is laid onto the loops of a numba kernel. No derivation math here.

Every axis of the working view gets a loop letter, and the kernels see the view as the
canonical four axes (O, G, K, I), a letter the view lacks having length 1:

    o  reduced axes before the group axes (the batch axis of batch norm)
    g  the group axes: one mean and one variance for each g
    k  reduced axes that gamma spans (layer norm's features, group norm's channels)
    i  the other reduced axes (H and W)

so every view of an entry (its own layout, and the views torch.nn.functional takes: batch
norm's (N, C, L), group norm's (N, G, C/G, L)) runs through the same kernels.  The layout also
chooses, from the shape alone, how the kernels sweep memory (see derive/backends/numba/kernels.py):

    rows   a thread takes a chunk of groups; the inner loops run along I (at least RUN long)
    krows  the same along K, for parameters that vary inside a group (I = 1: layer norm; runs of
           KRUN or more when a group is one run)
    wide   krows with few groups a parameter row: each pass is split into KT tiles of k instead
           (the threads each own a part of the parameters' gradients)
    cols   short runs: a thread takes a tile of columns (GT groups) through every pass; rows shorter
           than SHORT_ROW are merged R at a time into longer ones (merged_rows)
    tall   cols with few tiles and many rows: each pass splits the rows into RC chunks too, where the
           loops run on threads (PARALLEL elements or more: on one thread cols took 10-20% less
           time, batch norm at (256, 1024) to (8192, 32) float32, forward and backward)

Chunk counts, tiles and strategy depend on the shape only, so results never depend on the
thread count.
"""
import functools

import numpy

# the kernels call these as _layout.<name>
from ._loops import (  # noqa: F401
    BLOCK,
    BLOCKS_CALL_FROM,
    BLOCKS_FROM,
    SUM_BLOCK,
    block_floor,
    block_groups,
    combine_chunks,
    combine_outer,
    expand_varying,
    first,
    first_cols,
    flush,
    fold,
    fold_varying,
    ordinary,
    per_group,
    per_group_into,
    spread_into,
    sum_block,
    sum_chunks,
)
from ._threads import PARALLEL, get_num_threads, parallel, set_num_threads  # noqa: F401

#: runs shorter than RUN elements are swept as columns
RUN = 32
#: krows takes runs along k from KRUN elements where a group is one run (O = 1): it costs about 20 ns
#: a group whatever the run, and cols with one row about 7 ns an element (layer norm at (262144, 8)
#: float32, one thread: forward 5.4 ms in krows against 12.7 ms in cols, backward 10.0 against 17.1;
#: at (524288, 4) the backward takes 18.8 ms against 17.7)
KRUN = 8
#: rows: at most CHUNKS chunks of groups (at least GROUPS_PER_PARTIAL groups per chunk for each
#: parameter row when the parameters vary inside a group: each chunk keeps a float64 partial of
#: their gradients)
CHUNKS = 16
GROUPS_PER_PARTIAL = 16
#: wide: krows with fewer than WIDE_GROUPS groups a parameter row (G < WIDE_GROUPS * P) splits k into KT
#: tiles (at most WIDE_TILES, of at least WIDE_RUN elements each).  A function without the parameters'
#: gradients (a forward) runs krows there unless there is one group: krows reads a group's second pass
#: from the cache, and wide's tiles read x twice (group norm at (4, 2**20, 1, 1), 32 groups, forward:
#: 2.27 ms in krows, 2.83 ms in wide; backward 8.44 and 5.05 ms)
WIDE_GROUPS = 16
WIDE_TILES = 16
WIDE_RUN = 4096
#: cols: tiles of about TILE columns; with fewer than ITEMS tiles, the rows are split too (tall)
#: into at most ROW_CHUNKS chunks of at least ROWS_PER_CHUNK rows
TILE = 1024
#: ... unless a tile's columns over all the rows (O * TILE) pass CACHED_TILE elements: its second pass
#: then reads from memory all the same, and a thread reading 4 KiB of each row at the row's stride
#: streams slower than one reading rows LONG_TILE long (batch norm, float32, 2 threads, backward /
#: the floor: (1024, 8192) 2.33x -> 1.85x, (4096, 2048) 2.83x -> 1.90x, (1024, 4096) 1.84x -> 1.59x;
#: (512, 16384) and (256, 65536), whose tiles stay in the cache, keep TILE: 1.94x and 1.46x, against
#: 2.08x and 1.83x with LONG_TILE)
CACHED_TILE = 1 << 19
LONG_TILE = 8192
ROW_CHUNKS = 8
#: cols and tall merge rows shorter than SHORT_ROW into rows of up to MERGED columns (see merged_rows).
#: Batch norm at 2**21 elements, float32, 2 threads, forward / backward against the floor, rows unmerged
#: and merged into 128, 256, 1024 columns: rows of 2 7.52x / 7.52x -> 2.02 1.94 2.00 / 1.80 1.81 1.72;
#: of 8 2.25 / 2.43 -> 1.64 1.80 1.97 / 1.60 1.70 1.66; of 32 1.54 / 1.37 -> 1.38 1.48 1.82 / 1.21 1.30
#: 1.28; of 64 1.26 / 1.23 -> 1.25 1.30 1.43 / 1.20 1.25 1.25 (a merged row's float64 column sums and
#: shifts stay in the L1 cache at 256 columns).  From 16 columns the runs of this shared machine
#: disagreed (rows of 16, forward: 1.84x unmerged against 2.23x merged in one run, 2.43x against 1.79x
#: in the next), so only shorter rows are merged
SHORT_ROW = 16
MERGED = 256
ROWS_PER_CHUNK = 64
ITEMS = 8
LETTERS = "ogki"


def _product(sizes):
    out = 1
    for n in sizes:
        out *= n
    return out


def merged_rows(O, row):
    """cols and tall take rows of fewer than SHORT_ROW elements R at a time, as one row of R * row
    columns (R the largest divisor of O with R * row <= MERGED): column c of a merged row is column
    c % row of a row, so the loops over columns run long, and the per-group steps fold and spread
    their column arrays over the R periods."""
    if row <= 0 or row >= SHORT_ROW or O < 2:
        return 1
    for r in range(min(O, MERGED // row), 1, -1):
        if O % r == 0:
            return r
    return 1


@functools.lru_cache(maxsize=256)
def layout(view_shape, axes, param_axes, varying):
    """The :class:`Layout` of a view, built once per shape."""
    return Layout(tuple(view_shape), tuple(axes), tuple(param_axes), varying)


def param_axes(ndim, param_sum_axes):
    """The axes a parameter spans: every axis it is not summed over."""
    summed = {a % ndim for a in param_sum_axes}
    return tuple(a for a in range(ndim) if a not in summed)


def param_view(view_shape, param_sum_axes):
    """The shape of a parameter of the view: length 1 along the axes it is summed over."""
    summed = {a % len(view_shape) for a in param_sum_axes}
    return tuple(1 if a in summed else n for a, n in enumerate(view_shape))


class Layout:
    """The canonical (O, G, K, I) view of a working view of shape ``view_shape`` and the strategy
    its kernels run in; ``varying``: the entry's parameters vary inside a group."""

    def __init__(self, view_shape, axes, param_axes, varying):
        ndim = len(view_shape)
        reduced = {a % ndim for a in axes}
        params = {a % ndim for a in param_axes}
        groups = [a for a in range(ndim) if a not in reduced]
        first_group = groups[0] if groups else ndim
        letters = ["g" if a not in reduced else "k" if a in params else "o" if a < first_group else "i"
                   for a in range(ndim)]
        if "k" in letters and not varying:
            raise ValueError(f"the parameters span a reduced axis of the view {view_shape}: this entry's "
                             "parameters are one value per group")
        shared = [a for a in groups if a in params]
        if shared != groups[len(groups) - len(shared):]:
            raise ValueError(f"gamma must span the last group axes of the view {view_shape}")
        self.perm = tuple(sorted(range(ndim), key=lambda a: LETTERS.index(letters[a])))
        self.inverse = tuple(int(a) for a in numpy.argsort(self.perm))
        self.moved = self.perm != tuple(range(ndim))
        self.view_shape = tuple(view_shape)
        self.O, self.G, self.K, self.I = (_product(n for n, l in zip(view_shape, letters) if l == letter)
                                          for letter in LETTERS)
        self.shape = (self.O, self.G, self.K, self.I)
        self.groups = self.G
        self.P = _product(view_shape[a] for a in shared)
        self.param_shape = (self.P, self.K) if varying else (self.P,)
        self.stat_shape = tuple(1 if a in reduced else n for a, n in enumerate(view_shape))
        self.varying = varying
        run = self.K * self.I
        if self.I >= RUN:
            self.strategy = "rows"
        elif varying and self.I == 1 and (self.K >= RUN or (self.O == 1 and self.K >= KRUN)):
            self.strategy = "krows"
        else:
            self.strategy = "cols"
        if varying:
            per_param = self.G // (GROUPS_PER_PARTIAL * self.P or 1)
            self.chunks = max(1, min(self.G, CHUNKS, max(2, per_param)))
        else:
            self.chunks = max(1, min(self.G, CHUNKS))
        self.KT = max(1, min(WIDE_TILES, self.K // WIDE_RUN))
        if self.strategy == "krows" and self.G < WIDE_GROUPS * max(self.P, 1) and self.KT > 1:
            self.strategy = "wide"
        tile = LONG_TILE if self.O * TILE > CACHED_TILE else TILE
        self.GT = max(1, min(self.G, tile // max(run, 1)))   # no tile wider than the groups (its scratch)
        tiles = -(-self.G // self.GT)
        self.R = merged_rows(self.O, self.G * run) if self.strategy == "cols" else 1
        if self.R > 1:
            self.GT, tiles = self.G, 1
        rows = self.O // self.R
        self.RC = max(1, min(ROW_CHUNKS, rows // ROWS_PER_CHUNK, 2 * ITEMS // max(tiles, 1)))
        if self.strategy == "cols" and tiles < ITEMS and self.RC > 1 and self.O * self.G * run >= PARALLEL:
            self.strategy = "tall"

    def to_kernel(self, a):
        """``a`` (shaped like the view) as the kernels see it: (O, G, K, I), C-contiguous (a view
        whenever the axes are already in that order and contiguous)."""
        a = a.transpose(self.perm) if self.moved else a
        return numpy.ascontiguousarray(a).reshape(self.shape)

    def empty(self, dtype):
        return numpy.empty(self.shape, dtype)

    def from_kernel(self, a):
        """Inverse of :meth:`to_kernel`."""
        if not self.moved:
            return a.reshape(self.view_shape)
        return a.reshape([self.view_shape[p] for p in self.perm]).transpose(self.inverse)

    def cols(self, a):
        """The view cols and tall sweep: a row of O, or R rows merged into one (see merged_rows)."""
        return a.reshape(self.O // self.R, self.R * self.G * self.K * self.I)

    def krows(self, a):
        return a.reshape(self.O, self.G, self.K)

    def param(self, a):
        """A parameter (shaped like the view's parameters) as the kernels read it: (P, K) or (P,)."""
        a = numpy.asarray(a)
        a = a.transpose(self.perm) if self.moved and a.ndim == len(self.perm) else a
        return numpy.ascontiguousarray(a).reshape(self.param_shape)

    def param_out(self, a, shape):
        """A parameter's gradient (P, K) or (P,) back in the parameter's shape ``shape``."""
        if not self.moved or len(shape) != len(self.perm):
            return a.reshape(shape)
        return a.reshape([shape[p] for p in self.perm]).transpose(self.inverse)

    def stat(self, a, dtype=numpy.float64):
        """A per-group statistic (shaped like the view's statistics, or flat) as an array over G: float64
        (from the array API's cache, which keeps them so), or the working dtype they come in from
        generated.torch (then the elementwise passes run in it: 0.93 ms against 1.75 ms for batch
        norm's at (4096, 1024) float32, one thread)."""
        return numpy.ascontiguousarray(a, dtype=dtype).reshape(-1)
