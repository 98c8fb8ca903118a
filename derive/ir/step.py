"""The training step's pair of functions, for generated.torch's operators (and the kernels behind them).

``forward_step`` is ``forward_train`` that keeps only the output, the per-group values the backward
reads and the statistics: no per-element value beside the output is written.  ``backward_step`` is
the compact backward (``backward_compact``, proved) preceded by the forward's own definitions of the
per-element values it reads (``xhat = (x - mu)/std``), so that it reads x and per-group values: a
training step moves x̂ through memory no more (one write and one array fewer), as torch's own
kernels do.  Test mode has the same pair (``forward_test_step``, ``backward_test_step``).  The array
API's cache and its backward functions are unchanged.
"""
from __future__ import annotations

from ..math.algebra import Elem
from .bodies import Assign


def recomputed(forward: tuple[Assign, ...], backward: tuple[Assign, ...]) -> tuple[Assign, ...]:
    """``backward`` after the assignments of ``forward`` that give each per-element value it reads,
    and the per-element values those read in turn, in the forward's order."""
    defs = {a.target: a for a in forward if isinstance(a.target, Elem)}
    assigned = {a.target for a in backward}
    todo = [s for a in backward for s in a.value.free_symbols if s in defs and s not in assigned]
    need: set = set()
    while todo:
        s = todo.pop()
        if s not in need:
            need.add(s)
            todo.extend(t for t in defs[s].value.free_symbols if t in defs)
    clash = need & assigned
    if clash:
        raise ValueError(f"the backward assigns {sorted(s.name for s in clash)}, which it also recomputes")
    return tuple(a for a in forward if a.target in need) + tuple(backward)
