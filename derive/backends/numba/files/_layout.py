"""How a working view is laid onto the loops of a numba kernel. No derivation math here.

Each axis of the working view gets a loop letter, and the kernel sees one axis
per letter, in this order:

    o  reduced axes before the group axes (the batch axis of batch norm)
    g  the group axes: one mean and one variance for each g
    k  reduced axes that gamma spans (layer norm's features, group norm's channels)
    i  reduced axes after the group axes (H and W)
"""
import functools
import threading

import numba
import numpy

#: the rows layouts hand groups to the threads in at most CHUNKS chunks (of at least
#: GROUPS_PER_PARTIAL groups for each gamma when gamma varies inside a group); the columns
#: layout ("og") hands them rows, in at most ROW_CHUNKS chunks of at least ROWS_PER_CHUNK
#: rows, whose partial sums are added in chunk order.  Counts fixed by the shape keep every
#: result independent of the thread count.
CHUNKS = 16
ROW_CHUNKS = 8
ROWS_PER_CHUNK = 64
GROUPS_PER_PARTIAL = 16


_LOCK = threading.Lock()
_threadsafe = False  #: set once numba has chosen a threading layer other than workqueue


def serial(kernel):
    """``kernel`` (a parallel numba function), called under a lock until numba's threading
    layer is known to be threadsafe.

    numba's workqueue layer aborts the process ("Concurrent access has been detected")
    when two Python threads launch parallel kernels at once; it is what numba uses when
    NUMBA_THREADING_LAYER=workqueue, or when neither TBB nor OpenMP is available.  Under
    it every kernel call is serialized; under tbb or omp the lock is dropped after the
    first call.
    """
    @functools.wraps(kernel, updated=())
    def call(*args):
        global _threadsafe
        if _threadsafe:
            return kernel(*args)
        with _LOCK:
            result = kernel(*args)
            try:
                _threadsafe = numba.threading_layer() != "workqueue"
            except ValueError:   # no parallel kernel ran yet (NUMBA_DISABLE_JIT): keep the lock
                pass
        return result

    call.kernel = kernel
    return call


def _product(sizes):
    out = 1
    for n in sizes:
        out *= n
    return out


@functools.lru_cache(maxsize=256)
def layout(view_shape, axes, param_axes, pattern):
    """The :class:`Layout` of a view, built once per shape."""
    return Layout(view_shape, axes, param_axes, pattern)


class Layout:
    """The kernel view of a working view of shape ``view_shape``, for the loop letters ``pattern``."""

    def __init__(self, view_shape, axes, param_axes, pattern):
        ndim = len(view_shape)
        reduced, params = set(axes), set(param_axes)
        groups = [a for a in range(ndim) if a not in reduced]
        first = groups[0] if groups else ndim
        letters = []
        for a in range(ndim):
            if a not in reduced:
                letter = "g"
            elif a in params:
                letter = "k"
            elif "o" in pattern and ("i" not in pattern or a < first):
                letter = "o"
            else:
                letter = "i"
            if letter not in pattern:
                raise ValueError(f"axis {a} of the view {tuple(view_shape)} has no loop in {pattern!r}")
            letters.append(letter)
        shared = [a for a in groups if a in params]
        if shared != groups[len(groups) - len(shared):]:
            raise ValueError(f"gamma must span the last group axes of the view {tuple(view_shape)}")
        self.perm = tuple(sorted(range(ndim), key=lambda a: pattern.index(letters[a])))
        self.inverse = tuple(int(a) for a in numpy.argsort(self.perm))
        self.moved = self.perm != tuple(range(ndim))
        self.view_shape = tuple(view_shape)
        self.shape = tuple(_product(n for n, l in zip(view_shape, letters) if l == letter)
                           for letter in pattern)
        self.groups = self.shape[pattern.index("g")]
        self.stat_shape = tuple(1 if a in reduced else n for a, n in enumerate(view_shape))
        shared_size = _product(view_shape[a] for a in shared)
        if "k" in pattern:
            self.param_shape = (shared_size, self.shape[pattern.index("k")])
        else:
            self.param_shape = (shared_size,)
        if pattern == "og":
            self.chunks = min(ROW_CHUNKS, max(1, self.shape[0] // ROWS_PER_CHUNK))
        elif "k" in pattern:
            # each chunk keeps a float64 row of partial dgamma/dbeta of the size of gamma:
            # at least GROUPS_PER_PARTIAL groups per chunk keep that traffic small
            per_param = self.groups // (GROUPS_PER_PARTIAL * shared_size or 1)
            self.chunks = min(self.groups, CHUNKS, max(2, per_param))
        else:
            self.chunks = min(self.groups, CHUNKS)

    def to_kernel(self, a):
        """``a`` (shaped like the view) as the kernel sees it: a view, not a copy, for every layout here."""
        return (a.transpose(self.perm) if self.moved else a).reshape(self.shape)

    def empty(self, dtype):
        return numpy.empty(self.shape, dtype)

    def from_kernel(self, a):
        """Inverse of :meth:`to_kernel`."""
        if not self.moved:
            return a.reshape(self.view_shape)
        return a.reshape([self.view_shape[p] for p in self.perm]).transpose(self.inverse)
