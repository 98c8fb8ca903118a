"""The library: one module per normalization, each a forward graph and its layout.

A module here (or a user's file given to ``derive build``) defines

* ``LAYOUT``: a :class:`derive.forward.Spec` (axes, parameter shapes, param dict);
* ``forward(g)``: the forward pass of one group, written with a :class:`derive.graph.Graph`;
* optionally ``EXTRAS``: extra claims to prove (see :mod:`derive.claims`).

Every module in this folder is an entry; nothing else lists them.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..graph import Graph, GraphError, Model
from ..layout import LayoutError, Spec


@dataclass(frozen=True)
class Entry:
    spec: Spec
    forward: Callable[[Graph], None]
    extras: tuple = ()
    source: str = ""               #: the text of the file that defines it (part of the cache key)
    where: str = ""                #: the file (or module) that defines it, for messages

    def graph(self) -> Graph:
        g = Graph(self.spec.name, self.spec.gamma_varies, kinds(self.spec))
        try:
            self.forward(g)
        except GraphError:
            raise
        except BaseException as e:  # a user's forward(g) that raises, or calls sys.exit
            if isinstance(e, KeyboardInterrupt):
                raise
            raise GraphError(f"{self.where}: forward(g) raised {failure(e, self.where)}") from None
        return g

    def model(self, training: bool = True) -> Model:
        return self.graph().model(training)

    @property
    def running_stats(self) -> bool:
        return self.graph().has_running


def kinds(spec: Spec) -> dict[str, str]:
    """Per leaf named in the layout: "element", "group" or "own" (derive.forward.layout.Spec.kind)."""
    out = {name: spec.kind(name) for name, _ in spec.axes}
    out.update({name: spec.kind(name, is_input=True) for name, _ in spec.inputs})
    return out


def failure(e: BaseException, where: str) -> str:
    """``e`` in one line, with the line of ``where`` (the user's file) it was raised at."""
    if isinstance(e, SystemExit):
        return f"SystemExit({e.code!r}) (sys.exit)"
    line = ""
    for frame in traceback.extract_tb(e.__traceback__)[::-1]:
        if where and Path(frame.filename).resolve() == Path(where).resolve():
            line = f" at line {frame.lineno}"
            break
    text = " ".join(str(e).split())
    return f"{type(e).__name__}{line}" + (f": {text}" if text else "")


def from_module(module, where: str) -> Entry:
    spec, forward = getattr(module, "LAYOUT", None), getattr(module, "forward", None)
    if not isinstance(spec, Spec):
        raise GraphError(f"{where}: defines no LAYOUT = derive.forward.Spec(...)")
    if not callable(forward):
        raise GraphError(f"{where}: defines no function forward(g)")
    try:
        spec.check(where)
    except LayoutError as e:
        raise GraphError(str(e)) from None
    source = Path(module.__file__).read_text(encoding="utf-8") if getattr(module, "__file__", None) else ""
    return Entry(spec, forward, tuple(getattr(module, "EXTRAS", ())), source, where)


def load_file(path: Path) -> Entry:
    """A user's entry from ``path``, imported with its own folder on sys.path."""
    path = Path(path).resolve()
    name = f"_normderive_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise GraphError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except SyntaxError as e:
        raise GraphError(f"{path}: line {e.lineno}: {e.msg}") from None
    except BaseException as e:  # an import error, an exception or sys.exit in the file
        raise GraphError(f"{path}: importing it raised {failure(e, str(path))}") from None
    finally:
        sys.path.remove(str(path.parent))
    entry = from_module(module, str(path))
    if entry.spec.name in BY_NAME:
        raise GraphError(f"{path}: LAYOUT name {entry.spec.name!r} is a library entry's; "
                         "choose another name (it names the generated functions)")
    return entry


def entries() -> tuple[Entry, ...]:
    """Every library entry, sorted by name."""
    out = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        out.append(from_module(module, module.__name__))
    return tuple(sorted(out, key=lambda e: e.spec.name))


ENTRIES: tuple[Entry, ...] = entries()
BY_NAME: dict[str, Entry] = {e.spec.name: e for e in ENTRIES}
SPECS: tuple[Spec, ...] = tuple(e.spec for e in ENTRIES)
