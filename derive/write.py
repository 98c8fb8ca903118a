"""Writing generated files: the header check, atomic replacement and the drift check."""
from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path

from .render import HEADER_MARK


class WriteError(RuntimeError):
    """derive refused to write: a file it would replace was not written by derive."""


def is_generated(path: Path) -> bool:
    """True when the file's first lines carry the generated-file header."""
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            head = "".join(f.readline() for _ in range(3))
    except OSError:
        return False
    return HEADER_MARK in head


def foreign_files(root: Path, files: dict[str, str]) -> list[Path]:
    """Existing files that derive would overwrite but did not generate."""
    return [root / rel for rel in files if (root / rel).exists() and not is_generated(root / rel)]


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_all(root: Path, files: dict[str, str]) -> list[str]:
    """Write every file whose text changed; refuse before writing anything if one is foreign.

    Returns the relative paths that were (re)written.
    """
    foreign = foreign_files(root, files)
    if foreign:
        names = ", ".join(str(p) for p in foreign)
        raise WriteError(f"refusing to overwrite {names}: it has no `derive` header, so derive "
                         f"did not write it. Move it away and run derive again.")
    written = []
    for rel, text in files.items():
        path = root / rel
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        atomic_write(path, text)
        written.append(rel)
    return written


def stale(root: Path, files: dict[str, str]) -> list[str]:
    """Relative paths whose content on disk differs from what derive would write now."""
    out = []
    for rel, text in files.items():
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            out.append(rel)
    return out


def unified_diff(root: Path, rel: str, text: str) -> str:
    path = root / rel
    old = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    return "".join(difflib.unified_diff(old, text.splitlines(keepends=True),
                                        fromfile=f"{rel} (on disk)", tofile=f"{rel} (derive now)"))
