"""Time generated.torch's printed backward beside torch's native kernels, in one process.

For batch norm (training) at (4096, 1024) and (32, 64, 56, 56) float32, with 1 and 2
threads: the backward of ``generated.torch.batch_norm`` (the printed compact form) and of
``torch.nn.functional.batch_norm`` (aten's native kernel), each timed as
``torch.autograd.grad`` of one recorded forward; the median of ``repeats`` runs.
"""
from __future__ import annotations

import statistics
import time

SHAPES = ((4096, 1024), (32, 64, 56, 56))
QUICK_SHAPES = ((256, 64), (4, 8, 8, 8))


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def backward_seconds(torch, batch_norm, shape, threads: int, repeats: int) -> float:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    c = shape[1]
    x = torch.randn(*shape, generator=g).requires_grad_()
    w, b = torch.randn(c, generator=g).requires_grad_(), torch.randn(c, generator=g).requires_grad_()
    dy = torch.randn(*shape, generator=g)
    y = batch_norm(x, None, None, w, b, training=True)
    return _time(lambda: torch.autograd.grad(y, (x, w, b), dy, retain_graph=True), repeats)


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
            for threads in (1, 2):
                ours = backward_seconds(torch, gt.batch_norm, shape, threads, repeats)
                native = backward_seconds(torch, F.batch_norm, shape, threads, repeats)
                out.append((shape, threads, ours * 1e3, native * 1e3, ours / native))
    finally:
        torch.set_num_threads(before)
    return out


def table(results: list[tuple]) -> str:
    lines = ["| batch norm backward, float32 | threads | generated.torch ms | torch native ms | ratio |",
             "|---|---|---|---|---|"]
    for shape, threads, ours, native, ratio in results:
        lines.append(f"| {shape} | {threads} | {ours:.2f} | {native:.2f} | {ratio:.2f}x |")
    return "\n".join(lines)


def main(quick: bool = False) -> str:
    text = table(rows(quick))
    print("\ngenerated.torch against torch's native kernels:\n" + text)
    return text


if __name__ == "__main__":
    import sys
    main("--quick" in sys.argv)
