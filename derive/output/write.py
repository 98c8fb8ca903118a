"""Writing generated files: the header check, atomic replacement and the drift check.

Everything that can go wrong on disk is a :class:`WriteError` with one line that
names the file and the fix; :func:`preflight` finds what it can before any proof
runs, and :func:`write_all` checks every target before it writes the first one.
"""
from __future__ import annotations

import contextlib
import difflib
import os
import re
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from .render import HEADER_MARK

#: the temporary files of atomic_write: ".<name>.<8 random characters>.tmp" (tempfile.mkstemp)
TEMP_FILE = re.compile(r"^\.(?P<name>[^/]+\.(?:py|md|tex))\.[a-z0-9_]{8}\.tmp$")
SUFFIXES = (".py", ".md", ".tex")
#: every template that rendering reads (directly or by import), checked before proving
TEMPLATES = ("derivation.md.jinja", "derivation.tex.jinja", "doc_md.jinja", "doc_tex.jinja", "init.py.jinja",
             "jax_functional.py.jinja", "jax_init.py.jinja", "jax_kernels.py.jinja", "jax_runtime.py.jinja",
             "kernel_arguments.jinja", "main.py.jinja", "nn_checks.jinja", "numba_init.py.jinja",
             "numba_kernels.py.jinja", "numpy_kernels.py.jinja", "torch_functional.py.jinja",
             "torch_init.py.jinja", "torch_kernels.py.jinja", "torch_runtime.py.jinja", "torch_sync.py.jinja",
             "triton_init.py.jinja", "triton_kernels.py.jinja")


#: what the SUMMARY.md that `derive build` writes beside the package it builds says
BUILD_MARK = "Proved by `derive build`"


class WriteError(RuntimeError):
    """derive refused to write, or could not: the message is one line naming the file and the fix."""


def _why(error: OSError) -> str:
    return error.strerror or type(error).__name__


def is_generated(path: Path) -> bool:
    """True when the file's first lines carry the generated-file header."""
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            head = "".join(f.readline() for _ in range(3))
    except OSError:
        return False
    return HEADER_MARK in head


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder``: the only sure test of a read-only file system."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".derive-probe.", dir=folder)
    except OSError as e:
        raise WriteError(f"cannot write into {folder}: {_why(e)}; choose a writable folder with "
                         f"--out DIR") from None
    os.close(fd)
    os.unlink(tmp)


def preflight(root: Path, templates: Path | None = None, names: Iterable[str] = TEMPLATES,
              write: bool = True) -> None:
    """What can be checked before proving: ``root`` is a folder (or can become one) that derive
    can write into, the templates ``names`` exist in ``templates``, and no generated file's
    place is taken by a folder.  Raises WriteError."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise WriteError(f"--out {root} is a file, not a folder; pass a folder (it is created if missing)")
    for name in names:
        if templates is not None and not (templates / name).is_file():
            raise WriteError(f"template {templates / name} is missing; restore it "
                             f"(git checkout -- templates/) or reinstall normderive")
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.suffix in SUFFIXES and path.is_dir():
                raise WriteError(f"{path} is a folder where derive writes a file; move it away "
                                 f"and run derive again")
    if write:
        existing = root
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise WriteError(f"cannot create {root}: {existing} is a file; pass another --out DIR")
        _probe(existing)


def check_build_out(root: Path) -> None:
    """`derive build --out ROOT` writes a package of its own: never inside a checkout's generated/
    (the project's package, which `derive` writes), nor over a package that `derive build` did
    not write (no SUMMARY.md of its own beside the __init__.py).  Raises WriteError."""
    from ..project import find_checkout
    root = Path(root).resolve()
    checkout = find_checkout(root)
    if checkout is not None and root.is_relative_to(checkout / "generated"):
        raise WriteError(f"refusing to build into {root}: it is inside {checkout / 'generated'}, the "
                         f"project's own package (written by `derive`); choose another --out DIR")
    summary = root / "SUMMARY.md"
    if (root / "__init__.py").exists() and not (summary.is_file() and BUILD_MARK in _text(summary)):
        raise WriteError(f"refusing to build into {root}: it holds a package that `derive build` did "
                         f"not write (an __init__.py, and no SUMMARY.md of derive build); choose another "
                         f"--out DIR")


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def leftovers(root: Path) -> list[Path]:
    """Temporary files that an interrupted atomic_write left behind (only derive's own pattern)."""
    if not Path(root).is_dir():
        return []
    return sorted(p for p in Path(root).rglob(".*.tmp") if p.is_file() and TEMP_FILE.match(p.name))


def remove_leftovers(root: Path) -> list[Path]:
    """Remove and return the leftovers of an interrupted write."""
    found = leftovers(root)
    for path in found:
        path.unlink(missing_ok=True)
    return found


class Terminated(SystemExit):
    """SIGTERM while writing: raised so that the temporary file is removed on the way out."""


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM into an exception while the block runs (main thread only), so that
    atomic_write's cleanup runs; the old handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated(128 + signum)

    old = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _read(path: Path) -> bytes | None:
    """The bytes of ``path``, None if it does not exist; a folder or unreadable file is a WriteError."""
    if path.is_dir():
        raise WriteError(f"{path} is a folder where derive writes a file; move it away and run derive again")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise WriteError(f"cannot read {path}: {_why(e)}; fix its permissions or move it away") from None


def foreign_files(root: Path, files: dict[str, str]) -> list[Path]:
    """Existing files that derive would overwrite but did not generate."""
    return [root / rel for rel in files
            if (root / rel).is_file() and not is_generated(root / rel)]


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(f"cannot write {path}: {_why(e)}; choose a writable folder with --out DIR") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {_why(e)}; choose a writable folder with --out DIR") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_all(root: Path, files: dict[str, str]) -> list[str]:
    """Write every file whose text changed; refuse before writing anything if one is foreign,
    a folder or unreadable.

    Returns the relative paths that were (re)written.
    """
    foreign = foreign_files(root, files)
    if foreign:
        names = ", ".join(str(p) for p in foreign)
        raise WriteError(f"refusing to overwrite {names}: it has no `derive` header, so derive "
                         f"did not write it. Move it away and run derive again.")
    changed = [rel for rel, text in files.items() if _read(root / rel) != text.encode("utf-8")]
    with _terminate_cleanly():
        for rel in changed:
            atomic_write(root / rel, files[rel])
    return changed


def stale(root: Path, files: dict[str, str]) -> list[str]:
    """Relative paths whose content on disk differs from what derive would write now
    (a file that is not valid UTF-8 differs, and is named, too)."""
    return [rel for rel, text in files.items() if _read(root / rel) != text.encode("utf-8")]


def unified_diff(root: Path, rel: str, text: str) -> str:
    data = _read(root / rel)
    old = data.decode("utf-8", errors="replace").splitlines(keepends=True) if data is not None else []
    return "".join(difflib.unified_diff(old, text.splitlines(keepends=True),
                                        fromfile=f"{rel} (on disk)", tofile=f"{rel} (derive now)"))
