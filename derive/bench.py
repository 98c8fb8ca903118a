"""The benchmark. Placeholder until it lands."""
from __future__ import annotations


def main(argv: list[str]) -> int:
    raise SystemExit("derive bench: not implemented yet")
