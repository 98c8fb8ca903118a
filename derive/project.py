"""Where derive reads its templates and writes its package: the checkout, or the installed copy.

Inside a project checkout -- a folder whose pyproject.toml names ``normderive``,
found from the current directory upwards -- derive renders that checkout's
templates/ and writes its generated/.  Anywhere else it renders the templates
installed with it, and writes only where ``--out`` says.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .output import render

NAME = re.compile(r'^\s*name\s*=\s*["\']normderive["\']\s*$', re.MULTILINE)
CODE = Path(__file__).resolve().parent  #: the derive/ package that is running


def find_checkout(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` whose pyproject.toml names normderive."""
    for folder in (start.resolve(), *start.resolve().parents):
        toml = folder / "pyproject.toml"
        if toml.is_file() and NAME.search(toml.read_text(encoding="utf-8", errors="replace")):
            return folder
    return None


@dataclass(frozen=True)
class Place:
    checkout: Path | None  #: the project checkout around the current directory, if any
    templates: Path        #: the templates folder that derive renders
    out: Path | None       #: the generated package to write or check; None: nowhere was given

    def source(self) -> Path | None:
        """The checkout whose templates/ are rendered, if they are a checkout's."""
        root = self.templates.parent
        return root if self.templates.name == "templates" and find_checkout(root) == root else None

    def notes(self, verb: str | None = None) -> list[str]:
        """What derive tells the user before it works (stderr, unless -q)."""
        if self.checkout is not None and self.templates == self.checkout / "templates":
            lines = [f"derive: templates from {self.templates} (this checkout)"]
        else:
            lines = [(f"derive: templates from {self.templates}, the copy beside the derive code that "
                      "is running: NOT a checkout around the current directory, so edits there are "
                      "not used")]
        if self.checkout is not None and not same_code(CODE, self.checkout / "derive"):
            lines.append(f"derive: note: the derive code running is {CODE}, which differs from this "
                         f"checkout's derive/ (run `python3 -m derive` in {self.checkout} to use its code)")
        if verb is not None and self.out is not None:
            lines.append(f"derive: {verb} {self.out}")
        return lines

    def command(self, max_m: int, default_max_m: int) -> str:
        """The exact command that regenerates self.out from the same templates."""
        extra = "" if max_m == default_max_m else f" --max-m {max_m}"
        source = self.source()
        if source is None:
            return f"derive --out {self.out}{extra}"
        out = "" if self.out == source / "generated" else f" --out {self.out}"
        return f"cd {source} && python3 -m derive{out}{extra}"


def same_code(running: Path, checkout: Path) -> bool:
    """Is the derive package at ``running`` the checkout's derive/: the same folder, or the same
    Python files with the same bytes (as after ``pip install .`` inside the checkout)?"""
    if running.resolve() == checkout.resolve():
        return True

    def files(root: Path) -> dict:
        return {p.relative_to(root): p for p in root.rglob("*.py") if "__pycache__" not in p.parts}

    mine, theirs = files(running), files(checkout)
    return mine.keys() == theirs.keys() and all(mine[k].read_bytes() == theirs[k].read_bytes() for k in mine)


def locate(out: Path | None, cwd: Path | None = None) -> Place:
    """Templates and output folder for a run in ``cwd`` (default: the current directory)."""
    checkout = find_checkout(cwd or Path.cwd())
    if checkout is not None and (checkout / "templates").is_dir():
        templates = checkout / "templates"
    else:
        templates = render.templates_dir()
    if out is not None:
        out = out.resolve()
    elif checkout is not None:
        out = checkout / "generated"
    return Place(checkout, templates, out)


def no_output_line(cwd: Path | None = None) -> str:
    here = (cwd or Path.cwd()).resolve()
    return (f"derive: error: {here} is not inside a normderive checkout (no pyproject.toml naming "
            f"normderive here or above), so there is no generated/ to write; give --out DIR")
