"""The `derive` command: argument parsing, progress and the summary table. No math here."""
from __future__ import annotations

import argparse
import keyword
import re
import sys
import time
from pathlib import Path

import jinja2

from . import project
from .forward.graph import GraphError
from .forward.library import BY_NAME, ENTRIES, load_file
from .learners import options as learner_options
from .math import derivation
from .math.lemmas import LemmaError
from .output import importcheck, render, write
from .progress import Progress
from .proofs.first import ProofError

DEFAULT_MAX_M = 6
#: the proofs' CPU time grows as M**5 or faster (batchnorm: 2.2 s at 6, 26 s at 10; epsilon outside
#: the root: 4.3 s at 6, 92 s at 10): M = 100 would take weeks
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
    return value


def max_m(text: str) -> int:
    value = positive_int(text)
    if value > MAX_M:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_M}, got {value}: proving takes at least M**4 CPU time "
            f"(minutes at {MAX_M}, weeks at 100)")
    return value


def variant(text: str) -> str:
    if text not in BY_NAME:
        raise argparse.ArgumentTypeError(
            f"unknown variant {text!r}; choose from {', '.join(BY_NAME)}")
    return text


def parser() -> Parser:
    p = Parser(prog="derive", usage="derive [-h] [--max-m M] [--order {1,2}] [--out DIR] [--check] [--no-cache] [-q] "
                                    "[COMMAND ...]",
               formatter_class=argparse.RawDescriptionHelpFormatter, description=(
        "Derive the backward pass of each normalization layer from its forward pass, prove it\n"
        "exactly, and write NumPy and numba kernels and derivation documents into generated/.\n\n"
        "With no COMMAND, derive does exactly that: derive, prove and write (or, with --check,\n"
        "compare). Inside a normderive checkout (a folder whose pyproject.toml names normderive,\n"
        "here or above) it renders that checkout's templates/ into its generated/; elsewhere it\n"
        "renders the templates installed with it, and writes only where --out says."),
        epilog="Progress goes to stderr as the work goes; -q silences it.")
    p.add_argument("--max-m", type=max_m, default=DEFAULT_MAX_M, metavar="M",
                   help=f"prove against the brute-force Jacobian for every batch size m <= M "
                        f"(default {DEFAULT_MAX_M})")
    p.add_argument("--order", type=int, choices=(1, 2), default=2,
                   help="2 (default): derive and prove the first and the second order; 1: the first "
                        "order alone (no double backward; torch differentiates the backward itself)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="the generated package to write (default: the checkout's generated/; "
                        "required outside a checkout)")
    p.add_argument("--no-cache", action="store_true",
                   help="prove everything from scratch instead of reusing proofs of the same graphs")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 and name the missing and the stale files if DIR "
                        "differs from what derive would write now")
    p.add_argument("-q", "--quiet", action="store_true", help="print no progress on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    latex = sub.add_parser("latex", help="print the derivation of one variant in LaTeX")
    latex.add_argument("name", type=variant, help=", ".join(BY_NAME))
    explain = sub.add_parser("explain", help="answer one of the classic questions, with numbers")
    explain.add_argument("topic", help="naive, bias, eps, layout or slips")
    build = sub.add_parser("build", help="derive, prove and write kernels and documents for a "
                                          "normalization of your own (a file with LAYOUT and forward(g))")
    build.add_argument("file", type=Path, help="a Python file defining LAYOUT and forward(g)")
    build.add_argument("--out", dest="build_out", type=Path, required=True, metavar="DIR",
                       help="the package to write (its name is the folder's name)")
    build.add_argument("--order", dest="build_order", type=int, choices=(1, 2), default=None,
                       help="1: a proved first-order package without the second order (default 2)")
    check = sub.add_parser("check", help="check a learner's CS231n functions and name the slip")
    check.add_argument("file", nargs="?", type=Path, help="a Python file defining batchnorm_forward, ...")
    check.add_argument("--json", action="store_true", help="machine-readable results")
    check.add_argument("--list", action="store_true", help="print the catalogue of known slips")
    learner_options.add_timeout(check, "the file, all its functions together,")
    learner_options.add_grade(sub, positive_int)
    demo = sub.add_parser("demo", help="train a small network on digits: no norm, batch norm, naive backward")
    demo.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the README's)")
    demo.add_argument("--out", dest="demo_out", type=Path, default=None, metavar="DIR",
                      help="the folder for the two plots (default: the checkout's docs/; outside a "
                           "checkout, none are written without --out)")
    sub.add_parser("bench", help="time the kernels against the memory floor and PyTorch "
                                 "(derive bench --help lists its options)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """The command; Ctrl-C raises KeyboardInterrupt after closing the progress line (derive.__main__,
    the installed command's entry point, turns it into one line and exit status 130)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from .bench import cpu as bench  # its own parser, options and --help, passed through untouched
        return bench.main(argv[1:])
    args = parser().parse_args(argv)
    progress = Progress(args.quiet)
    try:
        return command(args, progress)
    except KeyboardInterrupt:
        progress.end()
        raise


def command(args, progress: Progress) -> int:
    """Run the parsed command (none: derive, prove and write or check); its exit status."""
    if args.command == "explain":
        from .learners import explain
        status = explain.main(args.topic, args.max_m, progress=progress.variant)
        progress.end()
        return status
    if args.command == "check":
        from .learners import check
        return check.main(args.file, args.json, args.list, args.timeout)
    if args.command == "grade":
        from .learners import grade
        return grade.main(args.folder, args.grade_out, args.jobs, args.timeout, args.functions)
    if args.command == "demo":
        from .learners import demo
        return demo.main(args.epochs, args.demo_out)
    if args.command == "build":
        return build(args, progress)
    place = project.locate(args.out)
    if args.command == "latex":
        for line in place.notes():
            progress.line(line)
        d = derivation.derive(BY_NAME[args.name], args.max_m, progress.variant(args.name),
                              use_cache=not args.no_cache)
        progress.end()
        templates = Path(place.templates or render.templates_dir())
        key = derivation.render_key([d], templates, f"latex {args.name}")
        text = derivation.load(key, "renders") if not args.no_cache else None
        if text is None:
            progress.line("rendering the document (and the answers to the seed questions)...")
            text = render.latex_document(d, templates)
            derivation.store(key, text, "renders")
        sys.stdout.write(text)
        return 0
    if place.out is None:
        print(project.no_output_line(), file=sys.stderr)
        return 2
    return generate(args, place, progress)


def derive_all(entries, args, progress: Progress) -> list | None:
    """Derive and prove every entry, or print one line and return None."""
    try:
        out = derivation.derive_many(list(entries), args.max_m, progress, use_cache=not args.no_cache,
                                     **({"order": args.order} if args.order != 2 else {}))
    except (ProofError, LemmaError, GraphError) as e:
        progress.end()
        print(f"derive: {e}. Nothing was written.", file=sys.stderr)
        return None
    progress.end()
    return out


def rendered(derivations, package: str, templates, progress: Progress, use_cache: bool = True) -> dict | None:
    """Every file, rendered, compiled and imported in a scratch copy; None (and one line) if not.
    A render is kept (beside the proofs) by a key of the derivations, the templates and derive's
    own source, so --check and an unchanged derive do not print every document again."""
    templates = Path(templates or render.templates_dir())
    key = derivation.render_key(derivations, templates, package)
    files = derivation.load(key, "renders") if use_cache else None
    if files is not None:
        progress.line("rendered before (same derivations, templates and code)")
        return files
    progress.line("rendering the kernels and the documents...")
    try:
        files = render.render_all(derivations, templates, package=package)
    except jinja2.TemplateNotFound as e:
        print(f"derive: the template {e.name} is missing from {templates}; "
              "reinstall normderive or restore it. Nothing was written.", file=sys.stderr)
        return None
    progress.line("compiling and importing the generated package in a scratch folder, and running every "
                  "backend's kernels against the proved expressions...")
    try:
        importcheck.check(files, package, derivations)
    except importcheck.ImportCheckError as e:
        print(f"derive: {e}. Nothing was written.", file=sys.stderr)
        return None
    derivation.store(key, files, "renders")
    return files


def build(args, progress: Progress) -> int:
    """derive build FILE --out DIR: a user's normalization, proved, as an importable package.
    Every failure is one line on stderr naming the file or the node, exit 1, nothing written."""
    args.order = args.build_order or args.order
    try:
        write.check_build_out(args.build_out)
    except write.WriteError as e:
        print(f"derive build: {e}", file=sys.stderr)
        return 1
    root = args.build_out
    say = lambda text: print(f"derive build: {text.rstrip('.')}. Nothing was written.", file=sys.stderr)  # noqa
    if not root.name.isidentifier() or keyword.iskeyword(root.name):
        fixed = "_".join(re.findall(r"[A-Za-z0-9]+", root.name)) or "kernels"
        return say(f"--out {root}: the folder's name {root.name!r} is the package's name, which must be a "
                   f"Python identifier (e.g. {fixed!r})") or 1
    try:
        if not args.file.is_file():
            raise GraphError(f"{args.file}: no such file")
        entry = load_file(args.file)
        entry.graph().model(True), entry.graph().model(False)
    except (GraphError, OSError) as e:
        return say(str(e)) or 1
    brief = lambda e: f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"  # noqa: E731
    try:
        derivations = derive_all([entry], args, progress)
    except Exception as e:  # noqa: BLE001 -- a graph the engine cannot handle is still one line
        progress.end()
        return say(f"{args.file}: derive stopped: {brief(e)} (derive's fault: please report it)") or 1
    try:
        files = derivations and rendered(derivations, root.name, project.locate(root).templates, progress,
                                         not args.no_cache)
    except Exception as e:  # noqa: BLE001 -- until the kernel IR prints every graph
        return say(f"{args.file}: proved, but the kernels could not be printed: {brief(e)}") or 1
    if not files:
        return 1
    summary = f"# {entry.spec.title}\n\n{write.BUILD_MARK}:\n\n```\n{table(derivations)}\n```\n"
    try:
        written = write.write_all(root, files)
        (root / "SUMMARY.md").write_text(summary, encoding="utf-8")
    except (write.WriteError, OSError) as e:
        print(f"derive build: {e}", file=sys.stderr)
        return 1
    print(table(derivations))
    print(f"wrote {len(written)} files into {root}/: import {root.name}; "
          f"the derivation is in {root}/derivations/{entry.spec.name}.md")
    from .backends import BACKENDS
    from .output.render import builds
    left = [b.name for built in builds(derivations)[:1] for b in BACKENDS if not b.covers(built)]  # IR built once
    if left:
        print(f"not printed for this graph yet (see docs/graph.md): {', '.join(left)}")
    return 0


def generate(args, place: project.Place, progress: Progress) -> int:
    started = time.perf_counter()
    for line in place.notes("checking" if args.check else "writing into"):
        progress.line(line)
    try:  # what can be checked before minutes of proving
        write.preflight(place.out, place.templates, write=not args.check)
        for path in write.remove_leftovers(place.out):
            print(f"derive: removed {path}, left by an interrupted write", file=sys.stderr)
    except (write.WriteError, OSError) as e:
        print(f"derive: {e}", file=sys.stderr)
        return 1
    derivations = derive_all(ENTRIES, args, progress)
    if derivations is None:
        return 1
    t = time.perf_counter()
    files = rendered(derivations, "generated", place.templates, progress, not args.no_cache)
    if files is None:
        return 1
    render_s = time.perf_counter() - t
    root = place.out
    if args.check:
        return check(root, files, place.command(args.max_m, DEFAULT_MAX_M))
    try:
        written = write.write_all(root, files)
    except write.WriteError as e:
        print(f"derive: {e}", file=sys.stderr)
        return 1
    print(table(derivations))
    print(f"rendered {len(files)} files in {render_s:.2f} s; "
          f"wrote {len(written)} into {root}/, {len(files) - len(written)} unchanged"
          + ("".join(f"\n  {rel}" for rel in written)))
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


def check(root: Path, files: dict[str, str], command: str) -> int:
    """Exit 1 naming the missing and the stale files, and the command that regenerates them."""
    missing = [rel for rel in files if not (root / rel).exists()]
    try:
        stale = [rel for rel in write.stale(root, files) if rel not in missing]
    except write.WriteError as e:
        print(f"derive --check: {e}", file=sys.stderr)
        return 1
    if missing or stale:
        for word, rels in (("missing", missing), ("stale", stale)):
            if rels:
                print(f"derive --check: {len(rels)} {word} file(s) in {root}: {', '.join(rels)}",
                      file=sys.stderr)
        print(f"regenerate them from the same templates with: {command}", file=sys.stderr)
        return 1
    print(f"derive --check: {root} is up to date ({len(files)} files)")
    return 0


def table(derivations) -> str:
    """What was proved, and this run's seconds: a derivation kept from an earlier run says
    "kept", one with the same graphs as a variant above names it."""
    rows = [("variant", "exact for m", "second order", "symbolic m", "test mode", "derive", "prove")]

    def span(proofs) -> str:
        sizes = [p.size for p in proofs if p.size.startswith("m=") and not p.claim.startswith(("test", "left"))]
        return f"{sizes[0][2:]}..{sizes[-1][2:]}" if sizes else "-"  # eps outside: none at M = 1

    first: dict = {}
    for d in derivations:
        second = [p for p in d.proofs if p.claim.startswith("second order")]
        symbolic = sum(1 for p in d.proofs if p.size == "symbolic m")
        test = [p for p in d.proofs if p.claim.startswith("test")]
        same = first.setdefault(d.cache_key or id(d), d.spec.name)
        if d.kept:
            times = ("kept", "kept")
        elif same != d.spec.name:
            times = ("-", f"as {same}")
        else:
            times = (f"{d.timings['derive']:.2f} s", f"{d.timings['prove']:.2f} s")
        rows.append((d.spec.name, span([p for p in d.proofs if p not in second]),
                     f"m={span(second)}, symbolic" if second else "-", f"{symbolic} identities",
                     f"m<={d.max_m}" if test else "-", *times))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if any(d.kept for d in derivations):
        lines.append(f"kept: proved by an earlier run, kept in {derivation.cache_dir()} "
                     "(derive --no-cache proves everything again)")
    return "\n".join(lines)
