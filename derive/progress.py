"""Progress on stderr while derive works: one line per variant, its stages appended as they start.

The derivation code never prints; it calls a ``progress(stage)`` callable, and
:meth:`Progress.variant` hands it one that writes here (and whose ``finish(note)`` ends the
line with a note instead of a time).  Every line ends with a newline before anything else is
written; ``quiet`` silences it all.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Stages:
    """The stage callback of one variant's line: ``stages(text)`` appends " text...";
    ``stages.finish(note)`` ends the line with ``note`` (e.g. what was kept) instead of a time."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def __call__(self, stage: str) -> None:
        self.progress._write(f" {stage}...")

    def finish(self, note: str) -> None:
        self.progress.end(note)


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

    def variant(self, name: str) -> Stages:
        """Start the line of ``name``; the callable appends each stage to it."""
        self.end()
        self.open, self.started = True, time.perf_counter()
        self._write(f"{name}:")
        return Stages(self)

    def end(self, note: str | None = None) -> None:
        """Close the open variant's line: with ``note``, or else with its time."""
        if self.open:
            self.open = False
            self._write(f" {note}\n" if note else f" {time.perf_counter() - self.started:.1f} s\n")
