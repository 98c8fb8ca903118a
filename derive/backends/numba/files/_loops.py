"""The helpers a numba driver calls between its parallel loops: each group's shift, per-group values
and parameters laid over a tile's columns, column sums folded per group, and the partial sums of
chunks added in order.  No derivation math here.  The kernels reach them as ``_layout.<name>``
(generated/numba/_layout.py imports them)."""
import numba
import numpy

from ._threads import parallel

#: krows: a thread adds the parameters' gradients of up to BLOCK rows into a block in the working
#: dtype, then the block into its float64 partial (a float64 partial updated by every row took 4.0
#: of 6.2 ms in layer norm's backward sums at (8192, 1024), one thread)
BLOCK = 16
#: rows and krows sum a long run in blocks of SUM_BLOCK elements in the working dtype, each block's sum
#: added in float64 (derive/backends/numba/blocks.py): layer norm's backward at (8192, 1024) float32 took
#: 5.05-6.96 ms summed whole in float64, 4.74-6.13 ms in blocks of 256 (no gain in blocks of 64)
SUM_BLOCK = 256
#: ... from runs of BLOCKS_FROM elements where the kernel sums a run in its own loop (krows): layer norm's
#: backward at (262144, 8) float32 took 7.6 ms in whole float64 sums and 9.2 ms in blocks, at (65536, 64)
#: 4.2 against 3.7 ms
BLOCKS_FROM = 64
#: ... and from runs of BLOCKS_CALL_FROM elements where a run is a call of its own (rows): a call of the
#: blocked loop, which LLVM does not inline, costs a call and a reference count a run (spatial batch
#: norm's backward at (512, 64, 8, 4): 1.66 ms whole, 2.34 ms in blocks; at (64, 64, 32, 32) the same;
#: at (32, 64, 56, 56) 4.49 against 4.19)
BLOCKS_CALL_FROM = 2048


@numba.njit(cache=True, nogil=True)
def _first(x, out, g0, g1):
    if x.shape[0] and x.shape[2] and x.shape[3]:
        for g in range(g0, g1):
            out[g] = x[0, g, 0, 0]
    else:
        out[g0:g1] = 0.0


@numba.njit(cache=True)
def first_cols(x, out, g0, g1, run):
    """first() for the groups g0..g1 of a cols view x (rows, G * run columns, or R rows merged into
    one: the merged row's first period is the first row)."""
    if x.shape[0] and run:
        for g in range(g0, g1):
            out[g] = x[0, g * run]
    else:
        out[g0:g1] = 0.0


#: first() runs on the threads from this many groups: with a million groups, layer norm at (2**20, 2) or
#: batch norm at (4, 2**20), one thread took 1.15 ms, a fifth of the forward; with 1024 (batch norm at
#: (4096, 1024)) the handover of a parallel loop (about 80 us) cost more than the 10 us of work
FIRST_PARALLEL = 1 << 17


def first(x):
    """Each group's first element of a kernel view x (O, G, K, I), in float64 (zeros where a group
    is empty): the shift its statistics are summed around (derive/backends/numba/shift.py)."""
    out = numpy.empty(x.shape[1])
    parallel(_first, x.shape[1], (x, out), x.size if x.shape[1] >= FIRST_PARALLEL else 0)
    return out


#: spread_into and fold sweep runs of 2 in a loop compiled for that run, whose stride LLVM then knows
#: and vectorizes (2048 tiles of 512 groups of 2 columns: three spreads a tile 1.79 -> 0.34 ms, two folds
#: 1.72 -> 0.36 ms).  Runs of 3 to 8 compiled in too (3 and 4: spreads 1.80 -> 0.35 and 0.50 ms, folds
#: 3.26 -> 0.47 and 2.97 -> 0.67) took the first compile of batch and layer norm's kernels from 12.2 to
#: 17.7 s: numba links each helper into every kernel that calls it and optimizes it again there.
#: spread_into sweeps the other runs of up to SHORT_SPREAD one position of the run at a time (layer
#: norm at (524288, 4) in cols: 11.6x the floor forward and backward element by element, 9.6x and 9.4x so)
CONST_RUN = 2
SHORT_SPREAD = 8


@numba.njit(inline="always", cache=True)
def _spread_run(values, out, R):
    for g in range(values.shape[0]):
        v = values[g]
        for r in range(R):
            out[R * g + r] = v


@numba.njit(cache=True)
def spread_into(values, run, out):
    """values[g] repeated ``run`` times for each g, written into ``out`` (values itself when run is 1);
    where ``out`` is longer (rows merged: see _layout.Layout.R), that period repeated over it."""
    period = run * values.shape[0]
    if run == 1 and out.shape[0] == period:
        return values
    if run == CONST_RUN:
        _spread_run(values, out, CONST_RUN)
    elif run <= SHORT_SPREAD:
        step = numba.uint64(run)
        for r in range(run):
            for g in range(values.shape[0]):
                out[numba.uint64(g) * step + numba.uint64(r)] = values[numba.uint64(g)]
    else:
        q = 0
        for g in range(values.shape[0]):
            v = values[g]
            for _ in range(run):
                out[q] = v
                q += 1
    for q in range(period, out.shape[0]):
        out[q] = out[q - period]
    return out


@numba.njit(cache=True)
def per_group(param, g0, g1, P):
    """A parameter that is one value per group, param[g % P], for the groups g0..g1."""
    return per_group_into(param, g0, g1, P, numpy.empty(g1 - g0, param.dtype))


@numba.njit(cache=True)
def per_group_into(param, g0, g1, P, out):
    """per_group, written into ``out``."""
    p = g0 % P if P else 0
    for g in range(g1 - g0):
        out[g] = param[p]
        p += 1
        if p == P:
            p = 0
    return out


@numba.njit(cache=True)
def expand_varying(param, g0, g1, K, I, P):
    """A parameter that varies along k (param[g % P, k]) for each column of the groups g0..g1: one
    period of P groups laid out once, then repeated from group g0 % P (a loop over g, k and i for
    every column took 3.1 ms for 2048 tiles of 512 groups of 2 columns, this 1.3 ms)."""
    KI = K * I
    period = numpy.empty(max(P, 1) * KI, param.dtype)
    q = 0
    for p in range(max(P, 1)):
        for k in range(K):
            v = param[p if P else 0, k]
            for _ in range(I):
                period[q] = v
                q += 1
    n = (g1 - g0) * KI
    out = numpy.empty(n, param.dtype)
    s = (g0 % P if P else 0) * KI
    for q in range(n):
        out[q] = period[s]
        s += 1
        if s == period.shape[0]:
            s = 0
    return out


@numba.njit(inline="always", cache=True)
def _fold_run(acc, out, R):
    for g in range(out.shape[0]):
        s = acc[R * g]
        for r in range(1, R):
            s += acc[R * g + r]
        out[g] = s


@numba.njit(cache=True)
def fold(acc, run, out):
    """out[g] = the sum of the ``run`` column accumulators of group g, in column order; where ``acc``
    is longer (rows merged: see _layout.Layout.R), its periods are first added into the first, in
    order (``acc`` is a scratch array, changed)."""
    period = run * out.shape[0]
    if acc.shape[0] > period > 0:
        for q in range(period, acc.shape[0] - acc.shape[0] % period, period):
            for c in range(period):
                acc[c] += acc[q + c]
    if run == 1:
        out[:] = acc[:period]
    elif run == CONST_RUN:
        _fold_run(acc, out, CONST_RUN)
    else:
        q = 0
        for g in range(out.shape[0]):
            s = acc[q]
            for r in range(1, run):
                s += acc[q + r]
            q += run
            out[g] = s


#: fold_varying adds a tile's columns into a row of about LANES float64 accumulators (whole periods
#: of P*K*I columns), independent sums that vectorize, then folds the row per column of a period
LANES = 64


@numba.njit(cache=True)
def fold_varying(acc, g0, g1, K, I, P, out):
    """out[p, k] += the column accumulators of (g, k), g % P == p, for g in g0..g1.  Where the tile
    is whole periods of P groups, the columns are first added into a row of whole periods (LANES
    accumulators or more: layer norm at (2**20, 2), two folds a tile of 512 groups, 2048 tiles:
    3.3 ms group by group, 0.64 ms so), then each column of a period over the row; else group by
    group."""
    Pn = max(P, 1)
    KI = K * I
    period = Pn * KI
    if g0 % Pn or (g1 - g0) % Pn or period == 0:
        p = g0 % P if P else 0
        q = 0
        for g in range(g1 - g0):
            for k in range(K):
                s = 0.0
                for _ in range(I):
                    s += acc[q]
                    q += 1
                out[p, k] += s
            p += 1
            if p == P:
                p = 0
        return
    m = max(1, LANES // period)
    width = m * period
    lanes = numpy.zeros(width)
    n = acc.shape[0]
    full = n - n % width
    for b in range(n // width):   # (a range with a step: 3x slower)
        q = b * width
        for c in range(width):
            lanes[c] += acc[q + c]
    for c in range(n - full):
        lanes[c] += acc[full + c]
    q = 0
    for p in range(Pn):
        for k in range(K):
            s = 0.0
            for _ in range(I):
                for r in range(m):
                    s += lanes[r * period + q]
                q += 1
            out[p, k] += s


@numba.njit(cache=True)
def block_groups(P, O):
    """krows: after how many groups a block goes into its partial (P groups a row of blocks, O rows a group)."""
    return max(1, BLOCK // max(O, 1)) * P


@numba.njit(cache=True)
def sum_block(like):
    """How many elements of a run a block sums in the dtype of the array ``like``: SUM_BLOCK in float32,
    the whole run in float64 (whose blocks would gain nothing and cost their bookkeeping: 3-4% of
    spatial batch norm's step at (32, 64, 56, 56))."""
    return SUM_BLOCK if like.itemsize == 4 else 1 << 62


@numba.njit(cache=True)
def block_floor(like):
    """The smallest magnitude at which a block's float32 sum is kept: 2**26 times float32's smallest
    normal number (2**-100, 7.9e-31), so that a term lost to underflow is far below the sum's
    rounding; 0 in float64, whose sums are kept unless they are nan or inf.  (numpy.finfo here cost
    an allocation a call.)"""
    return 2.0 ** -100 if like.itemsize == 4 else 0.0


@numba.njit(cache=True)
def ordinary(total, floor):
    """A block's sum (in float64) is kept: finite, and exactly zero or at least ``floor`` from zero.
    Otherwise the block is summed again in float64: inf or nan from an overflow, or a sum below
    ``floor`` whose terms may have lost digits to underflow.  An exact zero is kept, so that a block of
    exact zeros (a channel that a ReLU zeroed, x equal to its group's first element throughout) is not
    summed twice: terms that vanish whole are below 2**-150 each, under any eps float32 accepts."""
    size = abs(total)
    return size < numpy.inf and (size >= floor or size == 0.0)


@numba.njit(cache=True)
def flush(block, partial):
    """partial += block (a float64 partial, a block in the working dtype); then the block is zero."""
    for p in range(block.shape[0]):
        for k in range(block.shape[1]):
            partial[p, k] += block[p, k]
            block[p, k] = 0


@numba.njit(cache=True)
def sum_chunks(parts, out):
    """out = parts[0] + parts[1] + ..., in that order (each row chunk's partial group sums)."""
    out[:] = 0.0
    for c in range(parts.shape[0]):
        out += parts[c]


@numba.njit(cache=True)
def combine_chunks(parts, out):
    """out = the sum of parts[0], parts[1], ... in that order (per-chunk partial gradients)."""
    out[:] = 0.0
    for c in range(parts.shape[0]):
        out += parts[c]


@numba.njit(cache=True)
def combine_outer(values, out):
    """out[p] = the sum of values[g] over the groups g with g % P == p (P = len(out)), in order of g."""
    P = out.shape[0]
    out[:] = 0.0
    if P == 0:
        return
    for g0 in range(0, values.shape[0], P):
        out += values[g0:g0 + P]
