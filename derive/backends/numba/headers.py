"""The loop headers and index expressions of the numba kernels, printed once here so that the
template does no index arithmetic: a chunk of groups, a chunk of rows, the parameter row of a group."""
from __future__ import annotations

from ...ir.layout import Loops


def headers(lay: Loops, unroll: int) -> dict[str, str]:
    """Printed pieces of the loops of ``lay`` (chunk c of the groups or of the rows)."""
    return {
        "group_chunk": "range(c * G // chunks, (c + 1) * G // chunks)",   #: the groups of chunk c
        "param_row": "g % P",                                           #: the parameter row of group g
        "row_chunk": "c * O // chunks, (c + 1) * O // chunks",          #: the rows of chunk c
        "unrolled_rows": f"range(o0, o1 - (o1 - o0) % {unroll}, {unroll})",
        "remaining_rows": f"range(o1 - (o1 - o0) % {unroll}, o1)",
        "row_range": "range(c * O // chunks, (c + 1) * O // chunks)",
    }
