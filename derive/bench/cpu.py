"""`derive bench`: time the generated kernels against the memory floor and PyTorch. No math here.

Contenders, timed side by side in one process:

    floor    numpy.add(dy, x, out=dx): read two arrays, write one (preallocated)
    alloc    numpy.add(dy, x): the same into a new array, as every kernel returns new arrays
    staged   the staged chain rule in NumPy (generated.batchnorm_backward, <name>_backward_staged)
    numpy    the compact form in NumPy (generated.batchnorm_backward_alt, <name>_backward)
    numba    the same derivation through generated.numba
    torch1   PyTorch CPU, torch.ops.aten.native_*_norm[_backward], torch.set_num_threads(1)
    torch2   the same with torch.set_num_threads(2)

Each case (norm, shape, dtype, pass) warms every contender up, then runs
rounds in which every contender runs once, starting each round at a different
contender so that all of them share the machine's drift; the median of the
rounds is reported.  Usage: ``derive bench [--quick] [--out DIR] [--dtype D] [--repeats N]
[--norm NORM] [--shape AxB]``.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .report import NORMS, Result, busy, goals, machine, plot, table

SHAPES = ((64, 256), (256, 1024), (4096, 1024), (1024, 8192), (32, 64, 56, 56),
          (2**20, 2), (4, 2**20))  # tall (short rows) and wide (a short batch)
QUICK_SHAPES = ((64, 256), (4, 8, 6, 6))
GROUPS = 32      #: group norm's G (at most the channel count)
EPS = 1e-5
BUDGET_S = 5.0   #: seconds of timed rounds per case, within [MIN_ROUNDS, --repeats] rounds
MIN_ROUNDS = 5

#: what each norm runs on each shape, for the table's footnotes
EQUIVALENTS = {
    "batchnorm": "(N, D): batchnorm over N; NCHW: spatial_batchnorm over (N, H, W)",
    "layernorm": "(N, D): layernorm over D; NCHW: layernorm of x.reshape(N, C*H*W), "
                 "i.e. torch's LayerNorm((C, H, W))",
    "groupnorm": f"NCHW: spatial_groupnorm, G={GROUPS}; (N, D): spatial_groupnorm of "
                 f"x.reshape(N, D, 1, 1), G={GROUPS} (groups of D/{GROUPS} features)",
}


@dataclass(frozen=True)
class Contender:
    name: str
    run: Callable[[], object]
    prepare: Callable[[], None] = lambda: None   #: untimed, before each run (torch's thread count)


# --------------------------------------------------------------------------- cases


def variant(norm: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], dict]:
    """(generated variant, the shape it sees, extra arguments) for a norm on a benchmark shape."""
    if norm == "batchnorm":
        return ("batchnorm" if len(shape) == 2 else "spatial_batchnorm"), shape, {"mode": "train"}
    if norm == "layernorm":
        return "layernorm", (shape[0], int(np.prod(shape[1:]))), {}
    if len(shape) == 2:
        shape = shape + (1, 1)
    return "spatial_groupnorm", shape, {"G": min(GROUPS, shape[1])}


def backward_names(module, name: str) -> tuple[str, str]:
    """(staged, compact) public names: batch norm's textbook pair is _backward/_backward_alt."""
    if hasattr(module, f"{name}_backward_alt"):
        return f"{name}_backward", f"{name}_backward_alt"
    return f"{name}_backward_staged", f"{name}_backward"


def generated_contenders(module, label: str, name: str, x, gamma, beta, dout, extra, staged: bool):
    """(forward contender, backward contenders) of one generated backend."""
    G = extra.get("G")
    mode = extra.get("mode")

    def forward():
        param = {"eps": EPS} if mode is None else {"eps": EPS, "mode": mode}
        args = (x, gamma, beta) + ((G,) if G is not None else ())
        return getattr(module, f"{name}_forward")(*args, param)

    _, cache = forward()
    staged_name, compact_name = backward_names(module, name)
    backward = [Contender(label, lambda: getattr(module, compact_name)(dout, cache))]
    if staged:
        backward.insert(0, Contender("staged", lambda: getattr(module, staged_name)(dout, cache)))
    return Contender(label, forward), backward


def torch_contenders(torch, norm: str, name: str, x, gamma, beta, dout, extra):
    """(forward, backward) contenders of PyTorch's native CPU kernels, at 1 and 2 threads."""
    aten = torch.ops.aten
    tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, gamma, beta, dout))
    mask = [True, True, True]
    if name == "layernorm":
        shape = list(x.shape[1:])
        fwd = lambda: aten.native_layer_norm(tx, shape, tw, tb, EPS)
        _, mean, rstd = fwd()
        bwd = lambda: aten.native_layer_norm_backward(tdy, tx, shape, mean, rstd, tw, tb, mask)
    elif name == "spatial_groupnorm":
        n, c = x.shape[:2]
        hw, g = int(np.prod(x.shape[2:])), extra["G"]
        fwd = lambda: aten.native_group_norm(tx, tw, tb, n, c, hw, g, EPS)
        _, mean, rstd = fwd()
        bwd = lambda: aten.native_group_norm_backward(tdy, tx, mean, rstd, tw, n, c, hw, g, mask)
    else:
        fwd = lambda: aten.native_batch_norm(tx, tw, tb, None, None, True, 0.1, EPS)
        _, mean, invstd = fwd()
        bwd = lambda: aten.native_batch_norm_backward(
            tdy, tx, tw, None, None, mean, invstd, True, EPS, mask)
    out = ([], [])
    for threads in (1, 2):
        prepare = functools.partial(torch.set_num_threads, threads)
        out[0].append(Contender(f"torch{threads}", fwd, prepare))
        out[1].append(Contender(f"torch{threads}", bwd, prepare))
    return out


def contenders(norm: str, shape, dtype, backends: dict) -> dict[str, list[Contender]]:
    """{'forward': [...], 'backward': [...]} for one norm, shape and dtype; inputs drawn once."""
    name, vshape, extra = variant(norm, shape)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(vshape).astype(dtype)
    dout = rng.standard_normal(vshape).astype(dtype)
    pshape = (vshape[1],)
    gamma = rng.uniform(0.5, 2.0, pshape).astype(dtype)
    beta = rng.standard_normal(pshape).astype(dtype)
    dx = np.empty_like(x)
    floor = Contender("floor", lambda: np.add(dout, x, out=dx))
    alloc = Contender("alloc", lambda: np.add(dout, x))
    cases = {"forward": [floor, alloc], "backward": [floor, alloc]}
    for label, module in backends.items():
        if label == "torch":
            fwd, bwd = torch_contenders(module, norm, name, x, gamma, beta, dout, extra)
        else:
            one, bwd = generated_contenders(module, label, name, x, gamma, beta, dout, extra,
                                            staged=label == "numpy")
            fwd = [one]
        cases["forward"] += fwd
        cases["backward"] += bwd
    return cases


# --------------------------------------------------------------------------- timing


def measure(runners: list[Contender], max_rounds: int, budget_s: float) -> dict[str, float]:
    """Median seconds per run of each contender, from interleaved rounds after a warm-up."""
    warm = {}
    for c in runners:
        for _ in range(2):
            c.prepare()
            t = time.perf_counter()
            c.run()
            warm[c.name] = time.perf_counter() - t
    rounds = max(MIN_ROUNDS, min(max_rounds, int(budget_s / max(sum(warm.values()), 1e-9))))
    times: dict[str, list[float]] = {c.name: [] for c in runners}
    for r in range(rounds):
        for c in runners[r % len(runners):] + runners[:r % len(runners)]:
            c.prepare()
            t = time.perf_counter()
            c.run()
            times[c.name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


# --------------------------------------------------------------------------- command line


def shape_arg(text: str) -> tuple[int, ...]:
    """A shape as 'AxB' or 'NxCxHxW' (two or four positive sizes)."""
    try:
        shape = tuple(int(n) for n in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 4) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--shape {text!r}: expected two or four positive sizes, e.g. 4096x1024")
    return shape


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="derive bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="two small shapes, float32, few rounds (smoke test)")
    p.add_argument("--out", type=Path, metavar="DIR", help="write bench_table.md and bench_<dtype>.png here")
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default=None,
                   help="default: both (float32 with --quick)")
    p.add_argument("--repeats", type=int, default=None, metavar="N",
                   help="at most N timed rounds per case (default 200; 5 with --quick)")
    p.add_argument("--norm", choices=NORMS, action="append", help="only this norm (repeatable)")
    p.add_argument("--shape", type=shape_arg, action="append", metavar="AxB[xCxD]",
                   help="only this shape (repeatable; e.g. 1048576x2, 32x64x56x56)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even where installed")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: generated.triton against torch on a GPU instead (derive/bench/gpu.py; "
                        "`derive bench --device cuda --help` lists its options)")
    return p


def backends(no_torch: bool) -> dict:
    import generated
    out = {"numpy": generated}
    try:
        import generated.numba
        out["numba"] = generated.numba
    except ImportError as e:
        print(f"derive bench: no numba backend ({e})", file=sys.stderr)
    if not no_torch:
        try:
            import torch
            out["torch"] = torch
        except ImportError:
            print("derive bench: PyTorch is not installed; no torch columns", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `derive bench -- --quick`: argparse hands the separator on
        argv = argv[1:]
    from . import gpu
    if gpu.requested(argv) is not None:
        return gpu.main(gpu.requested(argv))
    args = parser().parse_args(argv)
    dtype = args.dtype or ("float32" if args.quick else "both")
    dtypes = ("float32", "float64") if dtype == "both" else (dtype,)
    shapes = args.shape or (QUICK_SHAPES if args.quick else SHAPES)
    max_rounds = args.repeats or (5 if args.quick else 200)
    budget = 0.0 if args.quick else BUDGET_S
    found = backends(args.no_torch)
    print(f"Machine: {machine(found)}\n")
    warnings = [w for w in [busy(os.getloadavg()[0], os.cpu_count() or 1)] if w]
    for w in warnings:
        print(w + "\n", file=sys.stderr)
    print(table([]), flush=True)   # the header; each row follows as soon as it is timed
    results = []
    started = time.perf_counter()
    for norm in args.norm or NORMS:
        for shape in shapes:
            for dt in dtypes:
                for direction, runners in contenders(norm, shape, np.dtype(dt), found).items():
                    seconds = measure(runners, max_rounds, budget)
                    results.append(Result(norm, shape, dt, direction, seconds))
                    print(table(results[-1:]).splitlines()[-1], flush=True)
    verdicts = ([("Goals: not judged with --quick (its tiny shapes measure per-call overhead, "
                  "not the kernels); run derive bench without --quick for them.")] if args.quick
                else ["Goals (ratios measured in this run):", goals(results)])
    tail = [*verdicts, "Equivalents:\n" + "\n".join(f"- {k}: {v}" for k, v in EQUIVALENTS.items())]
    print("\n" + "\n\n".join(tail))
    if "torch" in found:  # generated.torch beside torch's native kernels (derive/bench/torch.py)
        from . import torch as bench_torch
        tail.append(bench_torch.main(args.quick))
        print("\n" + tail[-1])
    late = busy(os.getloadavg()[0] - 1, os.cpu_count() or 1)  # less this process's own load
    if late and not warnings:
        warnings.append(late)
        print("\n" + late, file=sys.stderr)
    tail += warnings
    print(f"\n{len(results)} cases in {time.perf_counter() - started:.1f} s")
    text = "\n\n".join([f"Machine: {machine(found)}", table(results), *tail])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_table.md").write_text(text + "\n")
        for path in plot(results, args.out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
