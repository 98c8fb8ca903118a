"""The `derive` command: argument parsing and the summary table. No math here."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import derivation, render, write
from .proofs import ProofError
from .spec import BY_NAME, SPECS

DEFAULT_MAX_M = 6
#: the proofs' CPU time grows about as M**4 (37 s at 6, 3 min at 10): M = 100 would take weeks
MAX_M = 10


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    if value > MAX_M:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_M}, got {value}: proving takes about M**4 CPU time "
            f"(about 3 min at {MAX_M}, weeks at 100)")
    return value


def variant(text: str) -> str:
    if text not in BY_NAME:
        raise argparse.ArgumentTypeError(
            f"unknown variant {text!r}; choose from {', '.join(BY_NAME)}")
    return text


def parser() -> Parser:
    p = Parser(prog="derive", description=(
        "Derive the backward pass of each normalization layer from its forward pass, "
        "prove it exactly, and write NumPy kernels and derivation documents into generated/."))
    p.add_argument("--max-m", type=positive_int, default=DEFAULT_MAX_M, metavar="M",
                   help=f"prove against the brute-force Jacobian for every batch size m <= M "
                        f"(default {DEFAULT_MAX_M})")
    p.add_argument("--out", type=Path, default=Path("generated"), metavar="DIR",
                   help="the generated package to write (default: ./generated)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 and name the stale files if DIR differs from "
                        "what derive would write now")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    latex = sub.add_parser("latex", help="print the derivation of one variant in LaTeX")
    latex.add_argument("name", type=variant, help=", ".join(BY_NAME))
    explain = sub.add_parser("explain", help="answer one of the classic questions, with numbers")
    explain.add_argument("topic", help="naive, bias, eps, layout or slips")
    bench = sub.add_parser("bench", help="time the kernels against the memory floor and PyTorch")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="options for the benchmark")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"] and not {"-h", "--help"} & set(argv[1:2]):
        from . import bench  # its own options, passed through untouched (argparse's REMAINDER
        return bench.main(argv[1:])  # does not take leading options such as --quick)
    args = parser().parse_args(argv)
    if args.command == "latex":
        d = derivation.derive(BY_NAME[args.name], args.max_m)
        sys.stdout.write(render.latex_document(d))
        return 0
    if args.command == "explain":
        from . import explain
        return explain.main(args.topic, args.max_m)
    if args.command == "bench":
        from . import bench
        return bench.main(args.args)
    try:
        return generate(args)
    except KeyboardInterrupt:
        print("derive: interrupted; nothing half-written is left behind", file=sys.stderr)
        return 130


def generate(args) -> int:
    started = time.perf_counter()
    try:  # what can be checked before minutes of proving
        write.preflight(args.out, render.templates_dir(), write=not args.check)
        for path in write.remove_leftovers(args.out):
            print(f"derive: removed {path}, left by an interrupted write", file=sys.stderr)
    except (write.WriteError, OSError) as e:
        print(f"derive: {e}", file=sys.stderr)
        return 1
    derivations = []
    try:
        for spec in SPECS:
            derivations.append(derivation.derive(spec, args.max_m))
    except ProofError as e:
        print(f"derive: {e}. Nothing was written.", file=sys.stderr)
        return 1
    t = time.perf_counter()
    files = render.render_all(derivations)
    render_s = time.perf_counter() - t
    root = args.out
    if args.check:
        try:
            stale = write.stale(root, files)
        except write.WriteError as e:
            print(f"derive --check: {e}", file=sys.stderr)
            return 1
        if stale:
            print(f"derive --check: {len(stale)} stale file(s) in {root}: {', '.join(stale)}",
                  file=sys.stderr)
            print("regenerate them with: derive", file=sys.stderr)
            return 1
        print(f"derive --check: {root} is up to date ({len(files)} files)")
        return 0
    summary = table(derivations)
    try:
        written = write.write_all(root, files)
    except write.WriteError as e:
        print(f"derive: {e}", file=sys.stderr)
        return 1
    print(summary)
    print(f"rendered {len(files)} files in {render_s:.2f} s; "
          f"wrote {len(written)} into {root}/, {len(files) - len(written)} unchanged"
          + ("".join(f"\n  {rel}" for rel in written)))
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


def table(derivations) -> str:
    rows = [("variant", "exact for m", "symbolic m", "test mode", "derive", "prove")]
    for d in derivations:
        sizes = [p.size for p in d.proofs if p.size.startswith("m=") and not p.claim.startswith("test")]
        symbolic = sum(1 for p in d.proofs if p.size == "symbolic m")
        test = [p for p in d.proofs if p.claim.startswith("test")]
        exact = f"{sizes[0][2:]}..{sizes[-1][2:]}" if sizes else "-"  # eps outside: none at M = 1
        rows.append((d.spec.name, exact, f"{symbolic} identities",
                     f"m<={d.max_m}" if test else "-", f"{d.timings['derive']:.2f} s",
                     f"{d.timings['prove']:.2f} s"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
