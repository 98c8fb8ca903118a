"""The command-line options of `derive check` and `derive grade` (argparse only; no learner code runs)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .cases import every_function
from .sandbox import DEFAULT_TIMEOUT


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def function_list(text: str) -> frozenset[str]:
    """'batchnorm_forward,layernorm_backward' -> the names, each one `derive check` knows."""
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - set(every_function()))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown function {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(every_function())}")
    return names


def add_timeout(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT, metavar="S",
                        help=f"seconds {what} may run (default {DEFAULT_TIMEOUT:g})")


def add_grade(sub, count) -> None:
    """The `grade` subcommand, on the subparsers ``sub`` of the derive command; ``count``: the
    command's type for a positive integer."""
    grade = sub.add_parser("grade", help="check every *.py in a folder of submissions; write Gradescope's "
                                         "results.json for each, summary.json and slips.png")
    grade.add_argument("folder", type=Path, help="a folder of submissions, one *.py each")
    grade.add_argument("--out", dest="grade_out", type=Path, required=True, metavar="OUT",
                       help="where OUT/<name>/results.json, OUT/summary.json and OUT/slips.png go")
    grade.add_argument("--jobs", type=count, default=2, metavar="N",
                       help="submissions run at a time (default 2)")
    add_timeout(grade, "one submission")
    grade.add_argument("--functions", type=function_list, default=None, metavar="F,G",
                       help="grade only these functions (default: every one derive check knows)")
