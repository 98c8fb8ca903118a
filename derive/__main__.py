"""``python -m derive`` and the ``derive`` command.

Ctrl-C at any moment, start-up included (importing SymPy and the rest takes the first half
second), ends it with one line on stderr and exit status 130: no traceback, and nothing
half-written (atomic writes and the proof cache remove their temporary files, and worker
processes are stopped)."""
import sys

INTERRUPTED = "derive: interrupted; nothing half-written is left behind"


def main(argv: list[str] | None = None) -> int:
    try:
        from .cli import main as run  # the slow part of start-up
        return run(argv)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
