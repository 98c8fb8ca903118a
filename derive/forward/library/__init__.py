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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..graph import Graph, GraphError, Model
from ..layout import Spec


@dataclass(frozen=True)
class Entry:
    spec: Spec
    forward: Callable[[Graph], None]
    extras: tuple = ()
    source: str = ""               #: the text of the file that defines it (part of the cache key)

    def graph(self) -> Graph:
        g = Graph(self.spec.name, self.spec.gamma_varies)
        self.forward(g)
        return g

    def model(self, training: bool = True) -> Model:
        return self.graph().model(training)

    @property
    def running_stats(self) -> bool:
        return self.graph().has_running


def from_module(module, where: str) -> Entry:
    spec, forward = getattr(module, "LAYOUT", None), getattr(module, "forward", None)
    if not isinstance(spec, Spec):
        raise GraphError(f"{where}: defines no LAYOUT = derive.forward.Spec(...)")
    if not callable(forward):
        raise GraphError(f"{where}: defines no function forward(g)")
    source = Path(module.__file__).read_text(encoding="utf-8") if getattr(module, "__file__", None) else ""
    return Entry(spec, forward, tuple(getattr(module, "EXTRAS", ())), source)


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
    finally:
        sys.path.remove(str(path.parent))
    return from_module(module, str(path))


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
