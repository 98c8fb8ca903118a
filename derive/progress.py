"""Progress on stderr while derive works: one line per variant, its stages appended as they start.

The derivation code never prints; it calls a ``progress(stage)`` callable, and
:meth:`Progress.variant` hands it one that writes here.  ``quiet`` silences it all.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    def __init__(self, quiet: bool = False, stream: TextIO | None = None):
        self.quiet, self.stream = quiet, stream
        self.open, self.started = False, 0.0

    def _write(self, text: str) -> None:
        if not self.quiet:
            stream = self.stream or sys.stderr
            stream.write(text)
            stream.flush()

    def line(self, text: str) -> None:
        """A whole line of its own (ends a variant's line first)."""
        self.end()
        self._write(text + "\n")

    def variant(self, name: str) -> Callable[[str], None]:
        """Start the line of ``name``; the callable appends each stage to it."""
        self.end()
        self.open, self.started = True, time.perf_counter()
        self._write(f"{name}:")
        return lambda stage: self._write(f" {stage}...")

    def end(self) -> None:
        """Close the open variant's line with its time."""
        if self.open:
            self.open = False
            self._write(f" {time.perf_counter() - self.started:.1f} s\n")
