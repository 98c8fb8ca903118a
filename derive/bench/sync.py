"""Time generated.sync: a training step (forward + backward) on 2 processes vs 1, side by side.

``python -m derive.bench.sync`` spawns 2 gloo ranks on localhost, each with half of the batch,
and times the same step on the whole batch in 1 process; it also counts the collectives and
their bytes (by wrapping torch.distributed) and times the two ways of merging the forward's
statistics: one all_gather of (mean, M2) vs two all_reduces (sum, then centred sum of squares).
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SIZES = ((32, 16, 8, 8), (64, 32, 16, 16), (128, 64, 16, 16))
STEPS, WARMUP = 10, 2


def layer(c: int) -> list:
    """weight, bias (with gradients), running_mean, running_var."""
    weight, bias = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
    return [weight, bias, torch.zeros(c), torch.ones(c)]


def step_time(x, weight, bias, rm, rv, fn) -> float:
    for k in range(WARMUP + STEPS):
        if k == WARMUP:
            start = time.perf_counter()
        xr = x.detach().requires_grad_(True)
        out = fn(xr, rm, rv, weight, bias, training=True)
        out.backward(torch.ones_like(out))
    return (time.perf_counter() - start) / STEPS


def counted():
    """Wrap all_gather / all_reduce to count calls and bytes sent per rank."""
    log = []
    for name in ("all_gather", "all_reduce"):
        real = getattr(dist, name)

        def wrap(*a, _real=real, _name=name, **k):
            t = a[1] if _name == "all_gather" else a[0]
            log.append((_name, t.numel() * t.element_size()))
            return _real(*a, **k)
        setattr(sys.modules["generated.sync"].dist, name, wrap)
    return log


def rank_main(rank, world, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    from generated import sync
    rows = []
    log = counted()
    for n, c, h, w in SIZES:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n // world, c, h, w, generator=g)
        p = layer(c)
        log.clear()
        xr = x.detach().requires_grad_(True)
        sync.sync_batch_norm(xr, p[2], p[3], p[0], p[1], training=True).sum().backward()
        protocol = list(log)
        t = step_time(x, *p, sync.sync_batch_norm)
        merge = {}
        for way in ("one all_gather", "two all_reduces"):
            v = torch.zeros(2 * c, dtype=torch.float64)
            start = time.perf_counter()
            for _ in range(50):
                if way == "one all_gather":
                    parts = [torch.empty_like(v) for _ in range(world)]
                    dist.all_gather(parts, v)
                else:
                    dist.all_reduce(v[:c])
                    dist.all_reduce(v[c:])
            merge[way] = (time.perf_counter() - start) / 50
        rows.append({"size": (n, c, h, w), "time": t, "protocol": protocol, "merge": merge})
    torch.save(rows, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def main() -> int:
    torch.set_num_threads(1)
    from generated import sync
    single = []
    for n, c, h, w in SIZES:
        x = torch.randn(n, c, h, w)
        p = layer(c)
        single.append((step_time(x, *p, sync.sync_batch_norm),
                       step_time(x, *p, torch.nn.functional.batch_norm)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.start_processes(rank_main, args=(2, port, tmp), nprocs=2, join=False, start_method="spawn")
        deadline = time.monotonic() + 300
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                for proc in ctx.processes:
                    proc.kill()
                raise TimeoutError("the ranks did not finish in 300 s")
        rows = torch.load(os.path.join(tmp, "0.pt"))
    print("| (N, C, H, W) | 1 process: sync_batch_norm | 1 process: F.batch_norm | 2 processes, N/2 each: "
          "sync_batch_norm | merge: one all_gather | merge: two all_reduces |")
    print("|---|---|---|---|---|---|")
    for row, (ours, torch_bn) in zip(rows, single):
        merge = row["merge"]
        times = f"{ours * 1e3:.2f} ms | {torch_bn * 1e3:.2f} ms | {row['time'] * 1e3:.2f} ms"
        print(f"| {row['size']} | {times} | "
              f"{merge['one all_gather'] * 1e6:.0f} µs | {merge['two all_reduces'] * 1e6:.0f} µs |")
    print()
    for row in rows:
        print(row["size"], "collectives of one training step (name, bytes sent per rank):", row["protocol"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
