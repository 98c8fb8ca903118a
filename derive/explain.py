"""`derive explain TOPIC`. Placeholder until it lands."""
from __future__ import annotations


def main(topic: str, max_m: int) -> int:
    raise SystemExit("derive explain: not implemented yet")
