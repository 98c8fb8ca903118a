"""How the fast kernels sweep memory: reductions without full-size temporaries,
and elementwise passes over blocks of rows that stay in cache.

The expressions evaluated here are printed by SymPy and passed in as
functions; this module only decides the order in which memory is visited.
Every operand is broadcast-compatible with the full array, so along axis 0 it
has either the full length (and is sliced with the block) or length 1.
"""
import numpy

BLOCK_BYTES = 1 << 18   #: about 256 KiB of each operand per block
WIDE = numpy.float64    #: every block of a reduction is summed in float64
SUM_ROWS = 64           #: rows of a long-row block summed in the working dtype before float64


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
    """Rows so long that SUM_ROWS of them already fill a block: such blocks are summed in the
    working dtype (SIMD, no conversion) and only the block sums in float64; a working-dtype sum
    over at most SUM_ROWS rows does not drift."""
    row = numpy.dtype(dtype).itemsize
    for n in shape[1:]:
        row *= n
    return row * SUM_ROWS >= BLOCK_BYTES


def _accumulate(part_of, axes, shape, rows_cap=None):
    """Sum over ``axes`` (kept), in float64, of the parts part_of(rows) of consecutive row blocks.

    Each part is already a float64 sum, so a block may hold many rows (a tall
    array with short rows is summed in few, large blocks) and a float32 sum over
    many rows of offset data does not drift.
    """
    n = shape[0]
    kept = tuple(1 if k in axes else size for k, size in enumerate(shape))
    total = numpy.zeros(kept, dtype=WIDE)
    step = _rows(shape, numpy.dtype(WIDE).itemsize)
    for rows in _blocks(n, min(step, rows_cap) if rows_cap else step):
        part = part_of(rows)
        if 0 in axes:
            total += part
        else:
            total[rows] = part
    return total


def total(a, axes, dtype=None):
    """sum of ``a`` over ``axes`` (kept), summed in float64 and returned in ``dtype`` (default: a's)."""
    n = a.shape[0]
    wide = numpy.promote_types(a.dtype, dtype or a.dtype)
    long_rows = 0 in axes and _long_rows(a.shape, a.dtype)
    within = wide if long_rows else WIDE

    def part(rows):
        return numpy.sum(a[rows] if n > 1 else a, axis=axes, keepdims=True, dtype=within)

    return _accumulate(part, axes, a.shape, SUM_ROWS if long_rows else None).astype(wide, copy=False)


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

    return _accumulate(part, axes, shape)


def sum_of_products(factors, axes):
    """sum over ``axes`` (kept) of the product of ``factors``, with no full-size temporary, in float64.

    Along rows (axis 0 reduced) each block's product is formed in float64 and summed
    there, so blocks of many short rows add up without drift; within rows einsum
    sums each block's contiguous axes in the working dtype, as before.
    """
    factors = numpy.broadcast_arrays(*factors)
    shape, n = factors[0].shape, factors[0].shape[0]
    letters = "abcdefghijklmnopqrstuvwxyz"[: len(shape)]

    kept = "".join(letters[k] for k in range(len(shape)) if k not in axes)
    pair = f"{letters},{letters}->{kept}"

    long_rows = 0 in axes and _long_rows(shape, factors[0].dtype)

    def part(rows):
        block = [f[rows] if n > 1 else f for f in factors]
        if 0 in axes and not long_rows:
            head = numpy.multiply(block[0], block[1], dtype=WIDE)
            for f in block[2:]:
                numpy.multiply(head, f, out=head)
            return numpy.sum(head, axis=axes, keepdims=True)
        if len(block) > 2:  # einsum has no fast loop for three operands: multiply all but one first
            head = numpy.multiply(block[0], block[1])
            for f in block[2:-1]:
                numpy.multiply(head, f, out=head)
            block = [head, block[-1]]
        out = numpy.einsum(pair, *block, optimize=False)
        return out.reshape([1 if k in axes else size for k, size in enumerate(block[0].shape)])

    return _accumulate(part, axes, shape, SUM_ROWS if long_rows else None)
