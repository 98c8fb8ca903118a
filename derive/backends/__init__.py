"""The backends: each a folder that prints the kernel IR, found here by discovery.

A backend folder ``derive/backends/<name>/`` has an ``__init__.py`` defining ``BACKEND``, a
:class:`Backend`: where its files go, what its generated code needs to import, the names its
templates use themselves (so that no graph name collides with them), how to lay out its files
(``jobs``), and the module that runs its kernels against the proved expressions before anything is
written (``verify``, see :mod:`derive.output.verify`).  Nothing outside this folder names a backend.

Adding a backend is one folder: a context builder that reads :class:`~derive.ir.program.KernelIR`,
a SymPy printer, templates, and ``BACKEND``.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Build:
    """One entry as the backends see it: its derivation (for the layout and documents' names) and its IR."""

    derivation: object
    ir: object

    @property
    def spec(self):
        return self.derivation.spec


@dataclass(frozen=True)
class Backend:
    name: str                        #: e.g. "numba"
    order: int                       #: the order of the registry (the NumPy package first)
    package: str                     #: the subpackage under the generated package ("" for the top level)
    summary: str                     #: one line for `python -m generated`
    requires: tuple[str, ...] = ()   #: modules its generated code imports (the package is skipped without them)
    reserved: frozenset = frozenset()  #: identifiers its templates use themselves
    jobs: Callable = None            #: jobs(builds) -> {path: (template, context)}
    verify: str = ""                 #: module with run(module, build, case) -> outputs (derive.output.verify)
    extra: str = ""                  #: the pip extra that installs ``requires``
    options: dict = field(default_factory=dict)
    prints: Callable = None          #: prints(build) -> bool: the entries it prints (None: every entry)

    def covers(self, build: Build) -> bool:
        """Whether this backend prints ``build`` (a graph it has no kernels for yet is left out, and said)."""
        return self.prints is None or bool(self.prints(build))


def _discover() -> tuple[Backend, ...]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            module = importlib.import_module(f"{__name__}.{info.name}")
            if isinstance(getattr(module, "BACKEND", None), Backend):
                found.append(module.BACKEND)
    return tuple(sorted(found, key=lambda b: (b.order, b.name)))


BACKENDS: tuple[Backend, ...] = _discover()


def reserved() -> frozenset:
    """Every identifier some backend's templates use: no graph name may print as one of them."""
    return frozenset().union(*(b.reserved for b in BACKENDS))
