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
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHAPES = ((64, 256), (256, 1024), (4096, 1024), (1024, 8192), (32, 64, 56, 56),
          (2**20, 2), (4, 2**20))  # tall (short rows) and wide (a short batch)
QUICK_SHAPES = ((64, 256), (4, 8, 6, 6))
NORMS = ("batchnorm", "layernorm", "groupnorm")
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


@dataclass(frozen=True)
class Result:
    norm: str
    shape: tuple[int, ...]
    dtype: str
    direction: str
    seconds: dict[str, float]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def ratio(self, a: str, b: str) -> float | None:
        if a in self.seconds and b in self.seconds:
            return self.seconds[a] / self.seconds[b]
        return None


# --------------------------------------------------------------------------- report

COLUMNS = ("floor", "alloc", "staged", "numpy", "numba", "torch1", "torch2")
RATIOS = (("numpy", "floor"), ("numba", "floor"), ("numpy", "torch1"), ("numba", "torch2"),
          ("staged", "numpy"))


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[Result]) -> str:
    """A Markdown table: milliseconds per call, then ratios (x floor, x torch, staged / numpy)."""
    head = (["norm", "shape", "dtype", "pass"] + [f"{c} ms" for c in COLUMNS]
            + [f"{a}/{b}" for a, b in RATIOS])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.norm, "x".join(map(str, r.shape)), r.dtype, r.direction]
        cells += [fmt(r.seconds[c] * 1e3 if c in r.seconds else None, 3) for c in COLUMNS]
        cells += [fmt(r.ratio(a, b)) for a, b in RATIOS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(results: list[Result]) -> str:
    """The issue's targets: how many cases miss, the worst ratio, and the worst ratio on the
    shapes of a million elements or more (below that, per-call overhead dominates)."""
    back = [r for r in results if r.direction == "backward"]
    big32 = [r for r in back if r.shape in ((4096, 1024), (1024, 8192)) and r.dtype == "float32"]
    at = [r for r in back if r.shape == (4096, 1024) and r.norm == "batchnorm"]
    checks = [
        ("numba backward <= 1.5x floor, every shape", back, "numba", "floor", 1.5),
        ("numba backward faster than torch2, every shape", back, "numba", "torch2", 1.0),
        ("numpy backward <= 3x floor, (4096,1024) and (1024,8192) float32", big32, "numpy", "floor", 3.0),
        ("numpy backward no slower than torch1 there", big32, "numpy", "torch1", 1.0),
        ("batchnorm staged / numpy (alt) >= 5 at (4096,1024)", at, "staged", "numpy", -5.0),
    ]
    lines = []
    for text, rows, a, b, limit in checks:
        pairs = [(r.ratio(a, b), r) for r in rows if r.ratio(a, b) is not None]
        if not pairs:
            lines.append(f"- {text}: not measured")
            continue
        # a negative limit is a lower bound: the ratio must be at least -limit
        bad = [(v, r) for v, r in pairs if (v > limit if limit > 0 else v < -limit)]
        pick = max if limit > 0 else min
        value, r = pick(pairs, key=lambda p: p[0])
        line = (f"- {text}: {'met' if not bad else 'MISSED'} ({len(bad)} of {len(pairs)} cases miss); "
                f"worst {a}/{b} = {value:.2f} ({r.norm} {'x'.join(map(str, r.shape))} {r.dtype})")
        large = [(v, r) for v, r in pairs if r.size >= 10**6]
        if large and len(large) < len(pairs):
            v, r = pick(large, key=lambda p: p[0])
            line += f"; on >= 1M elements {v:.2f} ({r.norm} {'x'.join(map(str, r.shape))} {r.dtype})"
        lines.append(line)
    return "\n".join(lines)


def busy(load: float, cores: int) -> str | None:
    """A warning when other work shares the machine: a load average above the core count."""
    if load <= cores:
        return None
    return (f"warning: the machine is busy (load average {load:.1f} on {cores} cores): other processes "
            "share the cores, so these times can be far off; run derive bench again when it is idle")


def machine(backends: dict) -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = [f"numpy {np.__version__}"] + [f"{k} {getattr(m, '__version__', '')}".strip()
                                               for k, m in (("torch", backends.get("torch")),
                                                            ("numba", sys.modules.get("numba")))
                                               if m is not None]
    return (f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, " + ", ".join(versions))


def plot(results: list[Result], out: Path) -> list[Path]:
    """Throughput (elements per ns) against size, one figure per dtype; skipped without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("derive bench: matplotlib is not installed; no plot written", file=sys.stderr)
        return []
    written = []
    for dtype in sorted({r.dtype for r in results}):
        rows = [r for r in results if r.dtype == dtype]
        norms = [n for n in NORMS if any(r.norm == n for r in rows)]
        fig, axes = plt.subplots(2, len(norms), figsize=(4.5 * len(norms), 7), squeeze=False)
        for j, norm in enumerate(norms):
            for i, direction in enumerate(("forward", "backward")):
                ax = axes[i][j]
                sel = sorted((r for r in rows if r.norm == norm and r.direction == direction),
                             key=lambda r: r.size)
                for n, c in enumerate(COLUMNS):
                    pts = [(r.size, r.size / r.seconds[c] / 1e9) for r in sel if c in r.seconds]
                    if pts:
                        ax.plot(*zip(*pts), marker="o", color=f"C{n}", label=c)
                ax.set_xscale("log")
                ax.set_title(f"{norm} {direction}, {dtype}")
                ax.set_xlabel("elements")
                ax.set_ylabel("elements per ns")
                ax.grid(True, alpha=0.3)
        handles, labels = axes[-1][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        path = out / f"bench_{dtype}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


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
