"""Compiling a derivation document with pdflatex, and the README's picture of its first page.

Everything here works in a temporary folder: pdflatex's by-products (.aux, .log,
.pdf) never land beside the source.  :func:`overfull` reads how far each line of
the compiled document runs past the page; :func:`first_page_png` renders page 1
to a PNG that records, in a text chunk, the SHA-256 of the LaTeX it was rendered
from (:func:`source_hash`), so a test can tell a current picture from a stale one
without TeX.

``python -m derive.docs.pdf`` (in a checkout) re-renders ``docs/derivation.png``
from ``generated/derivations/batchnorm.tex``.
"""
from __future__ import annotations

import hashlib
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

#: the document the README shows, and where its first page goes (relative to a checkout)
PICTURE_SOURCE = Path("generated/derivations/batchnorm.tex")
PICTURE = Path("docs/derivation.png")
#: the PNG text chunk's keyword under which the picture records its source's hash
KEYWORD = b"normderive-source-sha256"
OVERFULL = re.compile(r"^Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\) (.*)$", re.M)


def compile_tex(tex: str, folder: Path, timeout: int = 120) -> str:
    """Compile ``tex`` as ``folder/doc.tex`` (doc.pdf beside it); return pdflatex's log.

    Raises RuntimeError, with the end of the log, when pdflatex fails."""
    (folder / "doc.tex").write_text(tex, encoding="utf-8")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                         cwd=folder, capture_output=True, text=True, timeout=timeout, check=False)
    log = (folder / "doc.log").read_text(encoding="utf-8", errors="replace") \
        if (folder / "doc.log").exists() else run.stdout
    if run.returncode != 0:
        raise RuntimeError(f"pdflatex failed (exit {run.returncode}):\n{log[-3000:]}")
    return log


def overfull(log: str) -> list[tuple[float, str]]:
    """(points too wide, where) of every overfull line box in a pdflatex log, widest first."""
    return sorted(((float(pt), where) for pt, where in OVERFULL.findall(log)), reverse=True)


def source_hash(tex: str) -> str:
    return hashlib.sha256(tex.encode("utf-8")).hexdigest()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_text(png: bytes, keyword: bytes, text: str) -> bytes:
    """``png`` with a tEXt chunk ``keyword: text`` right after its header chunk (IHDR)."""
    end_of_header = 8 + 4 + 4 + 13 + 4
    return png[:end_of_header] + png_chunk(b"tEXt", keyword + b"\0" + text.encode("latin-1")) \
        + png[end_of_header:]


def png_text(png: bytes) -> dict[bytes, str]:
    """Every tEXt chunk of ``png``, {keyword: text}."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    out, pos = {}, 8
    while pos + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"tEXt":
            keyword, _, text = png[pos + 8:pos + 8 + length].partition(b"\0")
            out[keyword] = text.decode("latin-1")
        pos += 12 + length
    return out


def first_page_png(tex: str, png: Path, dpi: int = 110) -> None:
    """Compile ``tex`` and render its first page to ``png`` with pdftoppm, recording
    :func:`source_hash` of ``tex`` in the PNG."""
    with tempfile.TemporaryDirectory() as tmp:
        compile_tex(tex, Path(tmp))
        subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-f", "1", "-l", "1", "-singlefile",
                        "doc.pdf", "page"], cwd=tmp, check=True, capture_output=True, timeout=120)
        page = (Path(tmp) / "page.png").read_bytes()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(with_text(page, KEYWORD, source_hash(tex)))


def main() -> int:
    """Re-render the checkout's docs/derivation.png; outside a checkout, write nothing."""
    from ..project import find_checkout
    root = find_checkout(Path.cwd())
    if root is None:
        print(f"python -m derive.docs.pdf: run it in a normderive checkout; it writes {PICTURE} there",
              file=sys.stderr)
        return 2
    source = root / PICTURE_SOURCE
    first_page_png(source.read_text(encoding="utf-8"), root / PICTURE)
    print(f"{root / PICTURE}: page 1 of {source}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
