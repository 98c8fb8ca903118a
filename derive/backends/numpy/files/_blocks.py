"""How the fast kernels sweep memory: reductions without full-size temporaries,
and elementwise passes over blocks of rows that stay in cache.

The expressions evaluated here are printed by SymPy and passed in as
functions; this module only decides the order in which memory is visited.
Every operand is broadcast-compatible with the full array, so along axis 0 it
has either the full length (and is sliced with the block) or length 1.
"""
import numpy

BLOCK_BYTES = 1 << 19   #: about 512 KiB of each operand per block
WIDE = numpy.float64    #: every block of a reduction is summed in float64
SUM_ROWS = 64           #: rows of a long-row block summed in the working dtype before float64
LONG_ROW_BYTES = 1 << 18   #: rows are long when SUM_ROWS of them hold this many bytes
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _rows(shape, itemsize):
    """Rows per block: about BLOCK_BYTES of one operand, so that short rows come many at a time."""
    row = itemsize
    for n in shape[1:]:
        row *= n
    return max(1, BLOCK_BYTES // max(row, 1))


def _blocks(n, rows):
    for start in range(0, n, rows):
        yield slice(start, min(start + rows, n))


def _take(args, n, rows):
    return [a[rows] if numpy.ndim(a) and a.shape[0] == n and n > 1 else a for a in args]


def _narrow(a, out):
    """A per-group operand (smaller than out) in out's dtype, so that the block loops run in
    the working dtype: the float64 statistics (mu is split first, see split) are rounded once."""
    a = numpy.asarray(a)
    if a.dtype != out.dtype and a.size < out.size and a.dtype.kind == "f":
        return a.astype(out.dtype)
    return a


def elementwise(fn, shape, dtype, *args):
    """An array of ``shape`` filled block by block: fn(out_block, *arg_blocks)."""
    out = numpy.empty(shape, dtype=dtype)
    n = shape[0]
    args = [_narrow(a, out) for a in args]
    for rows in _blocks(n, _rows(shape, out.itemsize)):
        fn(out[rows], *_take(args, n, rows))
    return out


def _long_rows(shape, dtype) -> bool:
    """Rows so long that SUM_ROWS of them hold LONG_ROW_BYTES: such blocks are summed in the
    working dtype (SIMD, no conversion) and only the block sums in float64; a working-dtype sum
    over at most SUM_ROWS rows does not drift."""
    row = numpy.dtype(dtype).itemsize
    for n in shape[1:]:
        row *= n
    return row * SUM_ROWS >= LONG_ROW_BYTES


def _accumulate(part_of, axes, shape, step):
    """Sum over ``axes`` (kept), in float64, of the parts part_of(rows) of blocks of ``step`` rows.

    Each part is already a float64 sum, so a block may hold many rows (a tall
    array with short rows is summed in few, large blocks) and a float32 sum over
    many rows of offset data does not drift.
    """
    n = shape[0]
    total = numpy.zeros(_group_shape(shape, axes), dtype=WIDE)
    for rows in _blocks(n, step):
        part = part_of(rows)
        if 0 in axes:
            total += part
        else:
            total[rows] = part
    return total


def _sum_step(shape, long_rows, itemsize=numpy.dtype(WIDE).itemsize):
    """Rows per block of a sum: SUM_ROWS for long rows (however many bytes), else about BLOCK_BYTES."""
    return SUM_ROWS if long_rows else _rows(shape, itemsize)


def total(a, axes, dtype=None):
    """sum of ``a`` over ``axes`` (kept), summed in float64 and returned in ``dtype`` (default: a's)."""
    n = a.shape[0]
    wide = numpy.promote_types(a.dtype, dtype or a.dtype)
    long_rows = 0 in axes and _long_rows(a.shape, a.dtype)
    within = wide if long_rows else WIDE

    def part(rows):
        return numpy.sum(a[rows] if n > 1 else a, axis=axes, keepdims=True, dtype=within)

    return _accumulate(part, axes, a.shape, _sum_step(a.shape, long_rows)).astype(wide, copy=False)


def divide_or_zero(numerator, denominator):
    """numerator / denominator, and 0 where the denominator is 0 (see derive/printers.py)."""
    numerator, denominator = numpy.broadcast_arrays(numerator, denominator)
    out = numpy.zeros(numerator.shape, dtype=numpy.result_type(numerator, denominator))
    return numpy.divide(numerator, denominator, out=out, where=denominator != 0)


def narrow(value, dtype):
    """A per-group factor of an elementwise pass, rounded once to the working ``dtype``: the pass
    then runs in that dtype (a float64 factor would make NumPy compute every element in float64)."""
    return numpy.asarray(value).astype(dtype, copy=False)


def split(value, dtype):
    """``value`` as hi + lo, both in ``dtype``: hi is value rounded, lo what rounding lost.

    x - hi - lo, evaluated left to right, is then x - value to within one rounding
    even when value is large: x - hi is exact for x near hi.  This is how a float32
    mean of data far from zero is subtracted without losing the data's spread.
    """
    hi = numpy.asarray(value).astype(dtype)
    lo = (numpy.asarray(value) - hi).astype(dtype)
    return hi, lo


def reduce(fn, axes, shape, dtype, *args):
    """sum over ``axes`` (kept) of the array fn would fill, one block at a time, in float64.

    fn fills a float64 block from float64 copies of its operands' blocks, so a summand
    such as (x - mu)**2 or x**2 is squared in float64:
    a float32 spread of 1e19 squares to 1e38 and more, past float32's range, while
    the variance it sums to (and the normalized output) is representable.  The
    result stays float64, as the mean does.
    """
    n = shape[0]
    buffer = numpy.empty((min(_rows(shape, numpy.dtype(WIDE).itemsize), n),) + tuple(shape[1:]),
                         dtype=WIDE)  # as many rows as the largest block _accumulate asks for

    def part(rows):
        block = buffer[: rows.stop - rows.start]
        fn(block, *(numpy.asarray(a, dtype=WIDE) for a in _take(args, n, rows)))
        return numpy.sum(block, axis=axes, keepdims=True)

    return _accumulate(part, axes, shape, _rows(shape, numpy.dtype(WIDE).itemsize))


def _einsum_operand(shape, ndim):
    """The axes of an operand of ``shape`` that einsum sees (those of length other than 1; axis 0
    too when it spans the rows) and their letters: a per-feature gamma of shape (1, D) is the
    vector 'b', so that einsum runs its fast two-operand loop."""
    shape = (1,) * (ndim - len(shape)) + tuple(shape)
    keep = tuple(k for k in range(ndim) if shape[k] != 1)
    return keep, "".join(LETTERS[k] for k in keep)


def _squeeze(a, ndim, keep, rows):
    """``a`` (a block of ``rows`` rows when it spans them) as the operand einsum sees: its ``keep`` axes."""
    a = a.reshape((1,) * (ndim - a.ndim) + a.shape)
    return a.reshape(tuple(rows if k == 0 else a.shape[k] for k in keep))


def sum_of_products(factors, axes):
    """sum over ``axes`` (kept) of the product of ``factors``, with no full-size temporary, in float64.

    One einsum per block of rows: einsum is fast for two operands only, so the smallest
    factor is kept for it (squeezed: a gamma of shape (1, D) is the vector 'b') and the
    others are multiplied first into one scratch block.  (One einsum over a whole array
    of more than two axes was three times slower than row blocks at (32, 64, 56, 56).)
    Within rows (axis 0 not reduced) each row's sum is taken in the working dtype.
    Along rows each block's sum is taken in float64 (short rows: the block's product is
    formed in float64) or, for long rows (see _long_rows), in the working dtype over at
    most SUM_ROWS rows; the block sums are added in float64, so a sum over many rows
    does not drift.
    """
    factors = sorted((numpy.asarray(f) for f in factors), key=numpy.size)
    if len(factors) == 1:
        factors.insert(0, numpy.ones((), factors[0].dtype))
    shape = numpy.broadcast_shapes(*(f.shape for f in factors))
    ndim, n = len(shape), shape[0]
    work = numpy.result_type(*factors)
    spans = [f.ndim == ndim and f.shape[0] == n and n > 1 for f in factors]
    small, rest = factors[0], factors[1:]
    head_shape = numpy.broadcast_shapes(*(f.shape for f in rest))
    small_keep, small_sub = _einsum_operand(small.shape, ndim)
    head_keep, head_sub = _einsum_operand(head_shape, ndim)
    kept = "".join(LETTERS[k] for k in range(ndim) if k not in axes and shape[k] != 1)
    spec = f"{small_sub},{head_sub}->{kept}"
    long_rows = 0 in axes and _long_rows(shape, work)
    wide_products = 0 in axes and not long_rows
    step = max(1, min(_sum_step(shape, long_rows, numpy.dtype(WIDE if wide_products else work).itemsize), n))
    if wide_products:
        buffer = numpy.empty((step,) + tuple(shape[1:]), dtype=WIDE)
    elif len(rest) > 1:
        buffer = numpy.empty((step if head_shape[0] == n else 1,) + tuple(head_shape[1:]), dtype=work)

    def part(rows):
        count = rows.stop - rows.start
        block = [f[rows] if span else f for f, span in zip(factors, spans)]
        if wide_products:   # short rows: the product formed in float64, then summed
            head = buffer[:count]
            numpy.multiply(block[0], block[1], out=head, dtype=WIDE)
            for f in block[2:]:
                numpy.multiply(head, f, out=head)
            return numpy.sum(head, axis=axes, keepdims=True)
        head = block[1]
        if len(block) > 2:
            head = buffer[: count if head_shape[0] == n else 1]
            numpy.multiply(block[1], block[2], out=head)
            for f in block[3:]:
                numpy.multiply(head, f, out=head)
        out = numpy.einsum(spec, _squeeze(block[0], ndim, small_keep, count),
                           _squeeze(head, ndim, head_keep, count), optimize=False)
        return out.reshape(_group_shape((count,) + tuple(shape[1:]), axes))

    return _accumulate(part, axes, shape, step)


def _group_shape(shape, axes):
    return tuple(1 if k in axes else size for k, size in enumerate(shape))
