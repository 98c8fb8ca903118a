"""The layout of a normalization: which axes form a group, the parameters' shapes, and
the param dict.  No math here: the math is the entry's forward graph (derive.graph).

Axes refer to the *working view* of ``x``: the input itself, except for group
norm, whose (N, C, H, W) input is viewed as (N, G, C/G, H, W).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Facades:
    """How an entry appears in the tensor frameworks' own APIs, beside the generic API every entry gets:
    the ``torch.nn.functional`` names it computes (generated.torch.functional, generated.jax.functional),
    the running-statistics convention of those names, and whether it has a form synchronized across
    processes (generated.sync)."""

    torch: tuple[str, ...] = ()      #: e.g. ("batch_norm",)
    running: str = "graph"           #: "graph": the graph's own update rule; "torch": torch's (momentum
    #: weights the batch, and the buffers in ``unbiased`` track the unbiased statistic m/(m - 1))
    unbiased: tuple[str, ...] = ()
    sync: bool = False               #: groups span the batch and generated.sync prints this entry


@dataclass(frozen=True)
class Spec:
    """Where one normalization's groups and parameters lie, and how it is called."""

    name: str                      #: prefix of the public functions, e.g. ``layernorm``
    title: str                     #: human name used in documents and tables
    layout: str                    #: axis letters of ``x``, e.g. ``"N,D"``; ``"...,D"`` means any rank
    reduce_axes: tuple[int, ...]   #: axes of the working view that one group covers
    param_axes: tuple[int, ...]    #: axes of the working view along which the parameters vary
    param_arg: str                 #: name of the dict argument (``bn_param``, ``ln_param``, ...)
    groups: bool = False           #: takes a group count G (group norm)
    param_shape: str = "vector"    #: "vector": gamma is (C,) / (D,); "broadcast": (1, C, 1, 1)
    batch_axis_option: bool = False  #: ``bn_param['axis']`` selects the batch axis (seed 002's layout)
    textbook: bool = False         #: CS231n's pair: <name>_backward is the staged form, _alt the compact
    min_group: int = 2             #: training needs at least this many values per group (torch's rule)
    group_word: str = "group"      #: what one group is called in messages ("feature", "row", ...)
    facades: Facades = Facades()   #: its names in torch's and JAX's APIs (see :class:`Facades`)
    #: param-dict constants that may be as small as a given bound, ((name, least), ...); the others
    #: are positive (or fractions).  The graph declares the same bound: g.constant(..., minimum=)
    minimums: tuple[tuple[str, float], ...] = ()
    #: running buffers that the param dict gets at another value than CS231n's zeros when it has
    #: none, ((buffer, value), ...): torch's variance 1 where training reads the buffer
    initial_running: tuple[tuple[str, float], ...] = ()

    @property
    def gamma_varies(self) -> bool:
        """True when the parameters take different values inside one normalization group."""
        return bool(set(self.reduce_axes) & set(self.param_axes))

    @property
    def any_rank(self) -> bool:
        return self.layout.startswith("...")

    @property
    def ndim(self) -> int | None:
        return None if self.any_rank else len(self.layout.split(","))
