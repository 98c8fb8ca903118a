"""Time generated.torch's printed backward beside torch's native kernels, in one process.

For batch norm (training) at (4096, 1024) and (32, 64, 56, 56) float32, with 1 and 2
threads: the backward of ``generated.torch.batch_norm`` (the printed compact form) and of
``torch.nn.functional.batch_norm`` (aten's native kernel), each timed as
``torch.autograd.grad`` of one recorded forward; the median of ``repeats`` runs, the two
taken in turn (one of each per round), so that a load that comes and goes on a shared
machine falls on both alike.
"""
from __future__ import annotations

import statistics
import time

SHAPES = ((4096, 1024), (32, 64, 56, 56))
QUICK_SHAPES = ((256, 64), (4, 8, 8, 8))


def _medians(fns, repeats: int) -> list[float]:
    """The median seconds of each function, run in turn: one call of each per round."""
    for fn in fns:
        fn()  # warm-up
    runs = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, runs):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return [statistics.median(times) for times in runs]


def backward(torch, batch_norm, shape):
    """One recorded forward of ``batch_norm`` (training, affine) and a call that runs its backward."""
    g = torch.Generator().manual_seed(0)
    c = shape[1]
    x = torch.randn(*shape, generator=g).requires_grad_()
    w, b = torch.randn(c, generator=g).requires_grad_(), torch.randn(c, generator=g).requires_grad_()
    dy = torch.randn(*shape, generator=g)
    y = batch_norm(x, None, None, w, b, training=True)
    return lambda: torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)


def rows(quick: bool = False, repeats: int | None = None) -> list[tuple]:
    """(shape, threads, generated ms, native ms, ratio) for every shape and thread count."""
    import torch
    import torch.nn.functional as F

    import generated.torch as gt
    repeats = repeats or (3 if quick else 20)
    before = torch.get_num_threads()
    out = []
    try:
        for shape in QUICK_SHAPES if quick else SHAPES:
            fns = [backward(torch, gt.batch_norm, shape), backward(torch, F.batch_norm, shape)]
            for threads in (1, 2):
                torch.set_num_threads(threads)
                ours, native = _medians(fns, repeats)
                out.append((shape, threads, ours * 1e3, native * 1e3, ours / native))
    finally:
        torch.set_num_threads(before)
    return out


def direction(ratio: float) -> str:
    """generated over native, in words: "2.00x slower" (it takes twice as long) or "1.30x faster"."""
    return f"{ratio:.2f}x slower" if ratio >= 1 else f"{1 / ratio:.2f}x faster"


def table(results: list[tuple]) -> str:
    lines = ["| batch norm backward, float32 | threads | generated.torch ms | torch native ms | generated.torch is |",
             "|---|---|---|---|---|"]
    for shape, threads, ours, native, ratio in results:
        lines.append(f"| {shape} | {threads} | {ours:.2f} | {native:.2f} | {direction(ratio)} |")
    return "\n".join(lines)


def main(quick: bool = False) -> str:
    """The table, with its title; the caller prints it."""
    return "generated.torch against torch's native kernels:\n" + table(rows(quick))


if __name__ == "__main__":
    import sys
    print(main("--quick" in sys.argv))
