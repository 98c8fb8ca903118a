"""How the kernels' parallel loops run on threads. No derivation math here.

Each parallel loop of a numba driver is printed as a serial kernel over a block of its items
(derive/backends/numba/outline.py); :func:`parallel` runs the blocks on threads: libgomp's where
the process has loaded it (torch has), else a pool of this package.  The kernels release the GIL.
"""
import concurrent.futures
import ctypes
import os
import sys
import threading

import numba

#: a call's parallel loops run on threads when its first array holds at least this many elements: each
#: parallel loop costs about 30 us to hand out (2 cores), and below 2**20 elements one thread was as fast
#: or faster over a training step (batch norm at (512, 1024): 1.03 ms on one thread, 1.28 ms on two)
PARALLEL = 1 << 20
_LOCK = threading.Lock()
_POOL: list = []          #: the thread pool, made on first use: [executor, its workers]
_THREADS = [0]            #: the number of threads set by set_num_threads (0: numba's NUMBA_NUM_THREADS)
_OPENMP: list = []        #: libgomp, once found loaded
#: len(sys.modules) when libgomp was last found not loaded: it is looked for again only after an import
#: (each look is a dlopen, about 0.1 ms a parallel loop)
_ABSENT = [-1]
_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def get_num_threads() -> int:
    """The threads a parallel loop runs on: set_num_threads's, else numba.config.NUMBA_NUM_THREADS
    (the machine's CPUs, or the NUMBA_NUM_THREADS environment variable)."""
    return _THREADS[0] or numba.config.NUMBA_NUM_THREADS


def set_num_threads(n: int) -> None:
    """Run the parallel loops on ``n`` threads (1: in the calling thread only)."""
    if int(n) < 1:
        raise ValueError(f"set_num_threads: n must be at least 1, got {n!r}")
    _THREADS[0] = int(n)


def _pool(workers):
    with _LOCK:
        if not _POOL or _POOL[1] < workers:
            if _POOL:
                _POOL[0].shutdown(wait=False)
            _POOL[:] = [concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="normderive"), workers]
        return _POOL[0]


def _openmp():
    """libgomp, when this process has loaded it already (torch has: its CPU operations run on
    libgomp's threads), else None.  Those threads spin for a while after each torch operation, and a
    thread of our own pool would share a core with one of them: a parallel loop run on libgomp's team
    instead took 2.5 ms where our pool took 4.6 ms right after a torch operation (batch norm's
    forward at (4096, 1024) float32, 2 cores)."""
    if not _OPENMP:
        if _ABSENT[0] == len(sys.modules):
            return None
        try:
            lib = ctypes.CDLL("libgomp.so.1", mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
        except OSError:
            _ABSENT[0] = len(sys.modules)
            return None
        lib.GOMP_parallel.argtypes = [_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        lib.GOMP_parallel.restype = None
        _OPENMP.append(lib)
    return _OPENMP[0]


def _on_openmp(lib, kernel, args, bounds):
    """The blocks on libgomp's team (the calling thread is its thread 0); each thread of the team
    takes every nt-th block, so a smaller team than asked for (a nested call) still runs them all."""
    errors = []
    workers = len(bounds) - 1

    def body(_):
        t, nt = lib.omp_get_thread_num(), lib.omp_get_num_threads()
        try:
            for w in range(t, workers, nt):
                kernel(*args, bounds[w], bounds[w + 1])
        except BaseException as error:   # raised again in the calling thread
            errors.append(error)

    callback = _BODY(body)
    lib.GOMP_parallel(callback, None, workers, 0)
    if errors:
        raise errors[0]


def parallel(kernel, n, args, size):
    """``kernel(*args, a, b)`` for consecutive blocks [a, b) of the items range(n): on up to
    get_num_threads() threads when ``size`` (the elements of the call's first array) reaches
    PARALLEL, else in the calling thread.  The threads are libgomp's when the process has loaded it
    (torch's), else a pool of this package's (the calling thread takes the first block).  The
    kernels are serial numba functions that release the GIL; each item writes its own part of the
    outputs, so the split never changes a result."""
    workers = min(n, get_num_threads()) if size >= PARALLEL else 1
    if workers <= 1:
        kernel(*args, 0, n)
        return
    bounds = [n * w // workers for w in range(workers + 1)]
    lib = _openmp()
    if lib is not None:
        _on_openmp(lib, kernel, args, bounds)
        return
    pool = _pool(workers - 1)
    futures = [pool.submit(kernel, *args, bounds[w], bounds[w + 1]) for w in range(1, workers)]
    try:
        kernel(*args, bounds[0], bounds[1])
    finally:
        for future in futures:
            future.result()
