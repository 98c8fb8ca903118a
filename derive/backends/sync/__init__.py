"""The sync backend: generated.<package>.sync, an entry whose groups span the batch, with its
statistics and backward sums taken over every process of a torch.distributed group."""
from __future__ import annotations

from .. import Backend, Build
from .context import sync_context

#: identifiers templates/torch_sync.py.jinja uses itself
RESERVED = frozenset({"torch", "dist", "dist_nn", "dims", "packed", "parts", "shape", "stats", "values",
                      "group", "local_sums", "C", "ctx", "grads", "saved", "dparams", "m_r"})


def jobs(builds: list[Build]) -> dict[str, tuple[str, dict]]:
    found = [b for b in builds if b.ir.split is not None]
    return {"__init__.py": ("torch_sync.py.jinja", sync_context(found[0].ir))} if found else {}


BACKEND = Backend(name="sync", order=4, package="sync", requires=("torch",),
                  summary="statistics across the processes of a torch.distributed group",
                  reserved=RESERVED, jobs=jobs, verify="derive.backends.sync.verify")
