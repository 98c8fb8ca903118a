"""generated.sync against single-process batch norm, with real gloo process groups on localhost.

Each multi-process test spawns its ranks once (torch.multiprocessing, gloo, a free port) and runs
several cases in them; every wait has a timeout and leftover processes are killed.
"""
import os
import socket
import tempfile
import time
from datetime import timedelta

import pytest
import sympy as sp

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from derive.forward.library import BY_NAME  # noqa: E402
from derive.math import split as D  # noqa: E402
from generated import sync  # noqa: E402

TIMEOUT = 120   # spawning and importing torch takes tens of seconds on a loaded machine
C = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(fn, world: int, *args) -> list[dict]:
    """Run fn(rank, world, port, out_dir, *args) on ``world`` processes; each returns a dict."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.start_processes(_entry, args=(fn, world, port, tmp, args), nprocs=world, join=False,
                                 start_method="spawn")
        deadline = time.monotonic() + TIMEOUT
        try:
            while not ctx.join(timeout=max(deadline - time.monotonic(), 0.1)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ranks did not finish within {TIMEOUT} s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
        return [torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(world)]


def _entry(rank, fn, world, port, out_dir, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=TIMEOUT // 2))
    try:
        torch.save(fn(rank, world, *args), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- data and reference

def batch(sizes, dtype=torch.float64, offset=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    x = torch.randn(n, C, 2, 3, generator=g, dtype=torch.float64) * 2 + 0.5 + offset
    dy = torch.randn(n, C, 2, 3, generator=g, dtype=torch.float64)
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    b = torch.randn(C, generator=g, dtype=torch.float64)
    rm = torch.randn(C, generator=g, dtype=torch.float64)
    rv = torch.rand(C, generator=g, dtype=torch.float64) + 1
    return [t.to(dtype) for t in (x, dy, w, b, rm, rv)]


def one_step(fn, x, dy, w, b, rm, rv):
    """out, dx, dw, db, running_mean, running_var after one training step of fn."""
    x, w, b, rm, rv = (t.clone() for t in (x, w, b, rm, rv))
    for t in (x, w, b):
        t.requires_grad_(True)
    out = fn(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
    out.backward(dy)
    return {"out": out.detach(), "dx": x.grad, "dw": w.grad, "db": b.grad, "rm": rm, "rv": rv}


def pieces(sizes, rank):
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


# ----------------------------------------------------------------------------- rank programs

def uneven_cases(rank, world, cases):
    out = {}
    for name, sizes in cases:
        x, dy, w, b, rm, rv = batch(sizes)
        part = pieces(sizes, rank)
        out[name] = one_step(sync.sync_batch_norm, x[part], dy[part], w, b, rm, rv)
    for name, bad in (("channels", lambda x: x[:, :2] if rank == world - 1 else x),
                      ("dtype", lambda x: x.float() if rank == 0 else x)):
        x, _, _, _, rm, rv = batch((2,) * world)
        try:
            xr = bad(x[pieces((2,) * world, rank)])
            sync.sync_batch_norm(xr, None, None, training=True)
            out[name] = None
        except (ValueError, TypeError) as e:
            out[name] = str(e)
    out["mode"] = mode_case(rank, world)   # last: a timed-out collective leaves the group unusable
    return out


def mode_case(rank, world, timeout=3.0):
    """The last rank evaluates (no collective, as in torch) while the others train: each training
    rank raises the same error within its own timeout, not the process group's."""
    x = batch((2,) * world)[0][pieces((2,) * world, rank)]
    start = time.monotonic()
    if rank == world - 1:
        sync.sync_batch_norm(x, torch.zeros(C, dtype=x.dtype), torch.ones(C, dtype=x.dtype), training=False,
                             timeout=timeout)
        time.sleep(timeout + 3)   # alive while the others wait (a rank that exits fails them at once)
        return None
    try:
        sync.sync_batch_norm(x, None, None, training=True, timeout=timeout)
    except RuntimeError as e:
        return str(e), time.monotonic() - start
    return "no error", time.monotonic() - start


def float32_case(rank, world, sizes):
    x, dy, w, b, rm, rv = batch(sizes, torch.float32, offset=1e4)
    return one_step(sync.sync_batch_norm, x[pieces(sizes, rank)], dy[pieces(sizes, rank)], w, b, rm, rv)


def small_cnn():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, 3)).double()


def cnn_data():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 8, 2, 6, 6, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (3, 8), generator=g)


def train(model, xs, ys, rank=0, world=1):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    n = xs.shape[1] // world
    for x, y in zip(xs, ys):
        opt.zero_grad()
        F.cross_entropy(model(x[rank * n:(rank + 1) * n]), y[rank * n:(rank + 1) * n]).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def float32_and_ddp(rank, world, sizes):
    model = torch.nn.parallel.DistributedDataParallel(sync.convert_sync_batchnorm(small_cnn()))
    state = train(model, *cnn_data(), rank, world)
    return {"float32": float32_case(rank, world, sizes),
            "ddp": {k.removeprefix("module."): v for k, v in state.items()}}


# ----------------------------------------------------------------------------- tests

def reference(sizes, dtype=torch.float64, offset=0.0):
    """F.batch_norm in float64 on the concatenated batch (rounded to ``dtype`` first)."""
    return one_step(F.batch_norm, *(t.double() for t in batch(sizes, dtype, offset)))


def assert_matches(ranks, sizes, ref, tol):
    got = {"out": torch.cat([r["out"] for r in ranks]), "dx": torch.cat([r["dx"] for r in ranks]),
           "dw": sum(r["dw"] for r in ranks), "db": sum(r["db"] for r in ranks)}
    for k, v in got.items():
        assert (v.double() - ref[k].double()).abs().max() <= tol, k
    for r in ranks:
        for k in ("rm", "rv"):
            assert (r[k].double() - ref[k].double()).abs().max() <= tol, k


CASES3 = (("uneven", (5, 1, 7)), ("empty_rank", (4, 0, 3)), ("one_each", (1, 1, 1)))


def test_three_ranks_uneven_and_bad_input():
    ranks = run_ranks(uneven_cases, 3, CASES3)
    for name, sizes in CASES3:
        assert_matches([r[name] for r in ranks], sizes, reference(sizes), 1e-12)
    assert all("channel count" in r["channels"] for r in ranks)
    assert all("dtype" in r["dtype"] for r in ranks)
    assert ranks[-1]["mode"] is None
    errors = {r["mode"][0] for r in ranks[:-1]}
    assert len(errors) == 1 and "evaluation mode" in errors.pop()
    assert all(r["mode"][1] < 20 for r in ranks[:-1])   # the process group's timeout here is 60 s


def test_two_ranks_float32_at_offset_and_ddp_training():
    sizes = (6, 3)
    ranks = run_ranks(float32_and_ddp, 2, sizes)
    assert_matches([r["float32"] for r in ranks], sizes, reference(sizes, torch.float32, 1e4), 1e-4)
    single = train(small_cnn(), *cnn_data())
    for r in (r["ddp"] for r in ranks):
        for k, v in single.items():
            assert torch.allclose(r[k].double(), v.double(), rtol=0, atol=1e-10), k


def test_single_process_is_plain_batch_norm():
    sizes = (7,)
    got = one_step(sync.sync_batch_norm, *batch(sizes))
    assert_matches([got], sizes, reference(sizes), 1e-12)
    m = sync.SyncBatchNorm(C)
    assert list(m.state_dict()) == list(torch.nn.SyncBatchNorm(C).state_dict())
    m.eval()
    x = batch((4,))[0].float()
    assert torch.equal(m(x), F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False))


def test_merge_is_proved_and_a_wrong_merge_fails():
    model = BY_NAME["batchnorm"].model()
    s = D.split(model, sp.Integer(0))
    assert all(D.prove_merge(model, s, sizes) for sizes in D.PROOF_SIZES)
    var = s.forward[1]
    naive = D.Merge(var.stat, var.local, var.definition,     # forgets the spread of the rank means
                    D.PartSum(D.COUNT * var.local) / D.PartSum(D.COUNT))
    broken = D.Split((s.forward[0], naive), s.backward, s.forward_sums)
    assert not D.prove_merge(model, broken, (2, 3))


def test_crossing_graphs_are_marked():
    from derive.forward.library import ENTRIES
    crossing = sorted(e.spec.name for e in ENTRIES if D.crosses(e.spec))
    assert crossing == ["batch_renorm", "batchnorm", "batchnorm_eps_outside", "meanonly_batchnorm",
                        "spatial_batchnorm"]


def test_import_generated_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, generated; sys.exit('torch' in sys.modules)"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60,
                          env={**os.environ, "PYTHONPATH": root}).returncode == 0
