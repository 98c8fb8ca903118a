"""Run a learner's file in a child process and collect the arrays its functions return.

The child (:mod:`derive.learners.runner`, started with ``sys.executable -I``) works in a fresh
scratch folder (its working folder and TMPDIR), with the learner's folder on ``sys.path``, a
memory limit (RLIMIT_AS) and a wall-clock limit: past it, its whole process group is killed.
What comes back is a list of records (see the runner); a hang, an exit, a crash or a channel
closed early leaves the records it sent so far, and :class:`Outcome` says what happened in one
line.  Every verdict is computed by the caller from the arrays, never by the child.
"""
from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import cases as cases_mod
from .runner import MAGIC

DEFAULT_TIMEOUT = 10.0    #: seconds for one file, all its functions together
MEMORY_MB = 2048          #: the child's address-space limit
MAX_OUTPUT = 2 ** 26      #: bytes of records read at most
RUNNER = Path(__file__).with_name("runner.py")
_LIVE: set = set()           #: the children running now (derive grade runs several)
_LOCK = threading.Lock()


class Usage(Exception):
    """A bad command line or file name: exit code 2, one line."""


@dataclass
class Outcome:
    """What one run of a learner's file sent back, and how it ended."""

    imported: bool = False
    import_error: str | None = None       #: 'exited during import: called sys.exit(0)', ...
    defined: tuple[str, ...] = ()
    done: dict = field(default_factory=dict)   #: task index -> (fault or None, {key: array})
    running: int | None = None              #: the task in progress when the child stopped
    ended: bool = False                     #: the child sent every result
    how: str | None = None                  #: 'timed out after 10 s', 'exited (exit code 0)', ...


def tasks(checks: tuple[cases_mod.Check, ...]) -> tuple[dict, dict]:
    """The runner's meta data and input arrays for these checks."""
    meta = {"functions": list(cases_mod.every_function()), "fd_step": cases_mod.FD_STEP, "groups": {},
            "tasks": []}
    arrays = {}
    for family in cases_mod.FUNCTIONS:
        cs = cases_mod.cases(family)
        meta["groups"][family] = [c.groups for c in cs]
        for c in cs:
            arrays.update({f"{family}.{c.index}.{k}": v for k, v in c.arrays.items()})
    for ch in checks:
        p = cases_mod.param(ch.family, ch.mode, cases_mod.cases(ch.family)[0])
        meta["tasks"].append({"family": ch.family, "kind": ch.kind, "function": ch.function,
                              "forward": f"{ch.family}_forward", "running": ch.family in cases_mod.RUNNING,
                              "param": {k: v for k, v in p.items() if not isinstance(v, np.ndarray)}})
    return meta, arrays


def learner_file(path: Path) -> Path:
    if not path.is_file():
        raise Usage(f"no such file: {path}")
    if path.suffix != ".py":
        raise Usage(f"not a Python file (.py): {path}")
    return path.resolve()


def run(path: Path, checks: tuple[cases_mod.Check, ...], timeout: float = DEFAULT_TIMEOUT,
        memory_mb: int = MEMORY_MB) -> Outcome:
    """Run the learner's file at ``path`` for ``checks``; never raises for what the file does."""
    path = learner_file(path)
    with tempfile.TemporaryDirectory(prefix="derive-check-") as scratch:
        meta, arrays = tasks(checks)
        inputs = Path(scratch) / "inputs.npz"
        np.savez(inputs, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k not in ("PWD", "OLDPWD")}
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TMPDIR=scratch)
        proc = subprocess.Popen([sys.executable, "-I", str(RUNNER), str(inputs), str(path), str(memory_mb)],
                                cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        with _LOCK:
            _LIVE.add(proc)
        try:
            data, timed_out = _read(proc, timeout)
        finally:
            _kill(proc)
    out = parse(data, meta)
    if out.ended:
        return out
    if timed_out:
        out.how = f"timed out after {timeout:g} s"
    elif proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() \
            else f"signal {-proc.returncode}"
        out.how = f"was killed by {sig}" + (" (out of memory?)" if sig == "SIGKILL" else "")
    elif len(data) >= MAX_OUTPUT:
        out.how = "sent more than 64 MB back"
    else:
        out.how = f"exited (exit code {proc.returncode})"
    if not out.imported and out.import_error is None:
        out.import_error = f"{out.how} during import"
    return out


def _read(proc: subprocess.Popen, timeout: float) -> tuple[bytes, bool]:
    """Everything the child writes until it closes its stdout, exits or runs out of time."""
    deadline = time.monotonic() + timeout
    fd, chunks, size = proc.stdout.fileno(), [], 0
    while size < MAX_OUTPUT:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            data = os.read(fd, 1 << 20)
            if not data:
                break
            chunks.append(data)
            size += len(data)
        elif proc.poll() is not None:  # exited, but a process it started holds the pipe open
            break
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:  # it closed its stdout and went on
        return b"".join(chunks), True
    return b"".join(chunks), False


def _kill(proc: subprocess.Popen) -> None:
    """The child and everything it started in its session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    proc.stdout.close()
    with _LOCK:
        _LIVE.discard(proc)


def kill_all() -> None:
    """Every child still running (an interrupted `derive grade`)."""
    with _LOCK:
        live = list(_LIVE)
    for proc in live:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def parse(data: bytes, meta: dict) -> Outcome:
    """The records in ``data``, up to the first one that is cut short or not a record."""
    out, pos = Outcome(), 0
    while pos + 12 <= len(data) and data[pos:pos + 4] == MAGIC:
        n = int.from_bytes(data[pos + 4:pos + 12], "little")
        if pos + 12 + n > len(data):
            break
        try:
            with np.load(io.BytesIO(data[pos + 12:pos + 12 + n]), allow_pickle=False) as f:
                arrays = {k: np.asarray(f[k], dtype=np.float64) for k in f.files if k != "__meta__"}
                record = json.loads(f["__meta__"].tobytes())
        except Exception:  # not an npz the runner wrote: stop reading here
            break
        pos += 12 + n
        kind = record.get("type") if isinstance(record, dict) else None
        if kind == "import_failed":
            out.import_error = f"exited during import: {record.get('error')}" \
                if "sys.exit" in str(record.get("error")) else f"fails to import: {record.get('error')}"
        elif kind == "imported":
            out.imported = True
            out.defined = tuple(n for n in record.get("defined", ()) if n in meta["functions"])
        elif kind == "start" and isinstance(record.get("task"), int):
            out.running = record["task"]
        elif kind == "done" and record.get("task") == out.running:
            out.done[out.running] = (record.get("fault"), arrays)
            out.running = None
        elif kind == "end":
            out.ended = True
            break
    return out
