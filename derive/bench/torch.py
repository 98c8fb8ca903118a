"""Time generated.torch beside torch's native kernels, in one process.

Issue 20's CPU cases, float32, training: batch norm at (4096, 1024) and (32, 64, 56, 56), layer
norm at (8192, 1024) (over its last axis), group norm at (32, 64, 56, 56) (32 groups).  Each call
is one forward with autograd recording and ``torch.autograd.grad`` of its output (x and the
affine parameters): forward + backward, as one training step runs them.  ``generated.torch``
sends large float32 CPU tensors to generated.numba's kernels when numba imports (its column
says which ran: numba or the printed torch operations).

Two orders, since on a machine whose last-level cache holds a 16 MiB tensor (this one's 32 MiB)
what ran just before moves either side's time by 10-30%:

- in a row: each round runs each side BLOCK times in a row and keeps all but the first call (a
  side's own steady state, as a loop timing one operation sees it);
- in turn: one call of each side per round (each call finds the other side's tensors in the cache,
  as a layer between other layers does).

The sides take their turns in an order shuffled every round (a fixed seed), so that a load that
comes and goes on a shared machine falls on both alike; the median of ``repeats`` rounds is
reported, with the load average before and after.

Two regimes of memory, since a full-size tensor's fresh pages can cost either side more than its
kernels: this process (glibc's defaults: a tensor of 16 MiB or more is a fresh mapping each time,
until glibc raises its threshold after the first frees, so a run may fall on either side of it),
and a second process that keeps glibc's memory (``KEPT``: no fresh pages after warm-up, as a long
training loop settles into for tensors under glibc's 32 MiB ceiling).  Native's own time moved 2x
or more between runs of the first; the second is the kernels' and the Python's cost.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: (label, function name in torch.nn.functional and generated.torch, shape, extra arguments)
CASES = (("batch norm", "batch_norm", (4096, 1024), {}),
         ("batch norm", "batch_norm", (32, 64, 56, 56), {}),
         ("layer norm", "layer_norm", (8192, 1024), {}),
         ("group norm", "group_norm", (32, 64, 56, 56), {"num_groups": 32}))
QUICK_CASES = (("batch norm", "batch_norm", (256, 64), {}),
               ("group norm", "group_norm", (4, 8, 8, 8), {"num_groups": 4}))
#: the environment of the second process: glibc serves every tensor from memory it keeps
KEPT = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 34)}


#: in a row: each side runs BLOCK times a round, its first call not counted
BLOCK = 4


def _medians(fns, repeats: int, block: int = 1) -> list[float]:
    """The median seconds of each function: ``repeats`` rounds, each running every function ``block``
    times in a row (the first of them not counted when block > 1), the functions in an order shuffled
    every round."""
    for fn in fns:
        fn()  # warm-up (the numba kernels compile or load from their cache here)
    runs = [[] for _ in fns]
    order = list(range(len(fns)))
    shuffle = random.Random(0).shuffle
    for _ in range(repeats):
        shuffle(order)
        for k in order:
            for call in range(block):
                t = time.perf_counter()
                fns[k]()
                if call or block == 1:
                    runs[k].append(time.perf_counter() - t)
    return [statistics.median(times) for times in runs]


def step(torch, module, name: str, shape, extra: dict):
    """A call that runs one forward (recorded) of ``module.<name>`` (training, affine) and its
    backward to x and the parameters."""
    g = torch.Generator().manual_seed(0)
    c = shape[-1] if name == "layer_norm" else shape[1]
    x = torch.randn(*shape, generator=g).requires_grad_()
    w, b = torch.randn(c, generator=g).requires_grad_(), torch.randn(c, generator=g).requires_grad_()
    dy = torch.randn(*shape, generator=g)
    fn = getattr(module, name)
    if name == "batch_norm":
        forward = lambda: fn(x, None, None, w, b, training=True)  # noqa: E731
    elif name == "layer_norm":
        forward = lambda: fn(x, (c,), w, b)  # noqa: E731
    else:
        forward = lambda: fn(x, extra["num_groups"], w, b)  # noqa: E731
    return lambda: torch.autograd.grad(forward(), (x, w, b), dy)


def ran(rt, name: str) -> str:
    """Which kernels generated.torch ran for the last case: numba, or the printed operations."""
    return "numba" if any(backend == "numba" and module is not None
                          for (backend, _), module in rt._LOADED.items()) else "printed"


def rows(quick: bool = False, repeats: int | None = None, threads: int = 2) -> list[tuple]:
    """(label, shape, kernels, generated ms, native ms, ratio, ratio in turn) for every case, at
    ``threads`` threads: the times and the first ratio in a row, the last ratio in turn."""
    import torch
    import torch.nn.functional as F

    import generated.torch as gt
    from generated.torch import _runtime as rt
    repeats = repeats or (3 if quick else 15)
    before = torch.get_num_threads()
    out = []
    try:
        torch.set_num_threads(threads)
        for label, name, shape, extra in QUICK_CASES if quick else CASES:
            rt._LOADED.clear()
            fns = [step(torch, gt, name, shape, extra), step(torch, F, name, shape, extra)]
            ours, native = _medians(fns, repeats, BLOCK)
            ours_turn, native_turn = _medians(fns, repeats)
            out.append((label, shape, ran(rt, name), ours * 1e3, native * 1e3, ours / native,
                        ours_turn / native_turn))
    finally:
        torch.set_num_threads(before)
    return out


def direction(ratio: float) -> str:
    """generated over native, in words: "2.00x slower" (it takes twice as long) or "1.30x faster"."""
    return f"{ratio:.2f}x slower" if ratio >= 1 else f"{1 / ratio:.2f}x faster"


def table(results: list[tuple], kept: list[tuple] | None = None) -> str:
    """One row per case: in a row, generated.torch's and native's ms and their ratio, in numbers and in
    words; then the ratio in turn.  With ``kept`` (the same cases timed keeping glibc's memory), four
    more columns: generated.torch's and native's ms there in a row, and both ratios in words."""
    more = kept is not None
    lines = ["| forward + backward, float32, training | shape | generated.torch ran | in a row: generated.torch ms "
             "| torch native ms | generated / native | generated.torch is | in turn: generated.torch is |"
             + (" memory kept, in a row: generated ms | native ms | generated.torch is "
                "| in turn: generated.torch is |" if more else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|---|---|" if more else "")]
    for k, (label, shape, kernels, ours, native, ratio, turn) in enumerate(results):
        row = (f"| {label} | {shape} | {kernels} | {ours:.2f} | {native:.2f} | {ratio:.2f} "
               f"| {direction(ratio)} | {direction(turn)} |")
        if more:
            same = kept[k] if k < len(kept) else None
            row += (f" {same[3]:.2f} | {same[4]:.2f} | {direction(same[5])} | {direction(same[6])} |"
                    if same else " - | - | - | - |")
        lines.append(row)
    return "\n".join(lines)


def kept_rows(quick: bool) -> tuple[list[tuple] | None, str]:
    """rows() in a second process that keeps glibc's memory (``KEPT``), and a note on failure."""
    import generated
    roots = {str(Path(generated.__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])}
    env = {**os.environ, **KEPT, "PYTHONPATH": os.pathsep.join([*sorted(roots), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "derive.bench.torch", "--rows"] + (["--quick"] if quick else [])
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=True)
        return [tuple(r[:1]) + (tuple(r[1]),) + tuple(r[2:]) for r in json.loads(done.stdout)], ""
    except (subprocess.SubprocessError, ValueError, OSError) as e:
        return None, f"\n(the second process, keeping glibc's memory, did not run: {type(e).__name__})"


def main(quick: bool = False) -> str:
    """The table, with its title and the load average around it; the caller prints it."""
    load = os.getloadavg()[0]
    results = rows(quick)
    print("derive bench: timing generated.torch again in a process that keeps glibc's memory ...",
          file=sys.stderr, flush=True)
    kept, note = kept_rows(quick)
    return (f"generated.torch against torch's native kernels (2 threads; load average {load:.2f} before, "
            f"{os.getloadavg()[0]:.2f} after; in a row: each side's calls one after another, in turn: the "
            f"sides alternating; the last four columns from a second process that keeps glibc's memory, so "
            f"that neither side pays for fresh pages):\n" + table(results, kept or []) + note)


if __name__ == "__main__":
    if "--rows" in sys.argv:   # the second process of main(): its rows as JSON
        print(json.dumps(rows("--quick" in sys.argv)))
    else:
        print(main("--quick" in sys.argv))
