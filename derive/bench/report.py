"""The report of `derive bench` (derive/bench/cpu.py): the results, the Markdown table, the issue's
goals, the machine and the plots.  No timing here."""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NORMS = ("batchnorm", "layernorm", "groupnorm")


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
