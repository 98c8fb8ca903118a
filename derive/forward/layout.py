"""The layout of a normalization: which axes form a group, the parameters' shapes, and
the param dict.  No math here: the math is the entry's forward graph (derive.graph).

Axes refer to the *working view* of ``x``: the input itself, except for group
norm, whose (N, C, H, W) input is viewed as (N, G, C/G, H, W).

Every leaf of the graph other than ``x`` -- a parameter, or an input that broadcasts
against ``x`` -- spans some axes of the working view: ``axes[name]`` when given, else
``param_axes`` for a parameter.  It is *per element* when it spans an axis of the group
(it takes several values inside one group; e.g. a per-sample weight in batch norm) and
*per group* otherwise (one value per group; ``()`` is a single scalar).  Its gradient is
summed over every axis it does not span.  See docs/graph.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


class LayoutError(ValueError):
    """A layout that cannot be used; the message names the field at fault."""


@dataclass(frozen=True)
class Input:
    """An input of the graph besides ``x`` (give it in ``Spec.inputs`` under its g.input name).

    * neither ``axes`` nor ``reduce_axes``: the shape of ``x`` (one value per element);
    * ``axes``: it broadcasts against x's working view and spans these axes (a conditioning
      tensor giving a per-sample gamma spans the sample and feature axes);
    * ``reduce_axes``: it has its own groups -- these axes of ITS tensor (laid out as
      ``layout``) form one group, and its remaining axes match x's remaining axes one to one
      (AdaIN's style features: their own spatial size, the same samples and channels).  The
      graph reads it only inside its own reductions (g.mean, g.sum).
    """

    layout: str = ""                          #: axis letters of this tensor; "" for x's layout
    axes: tuple[int, ...] | None = None       #: axes of x's working view it spans (broadcast)
    reduce_axes: tuple[int, ...] | None = None  #: axes of its own tensor that one of its groups covers

    @property
    def own_groups(self) -> bool:
        return self.reduce_axes is not None


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
    #: per leaf (parameter or broadcast input): the axes of the working view it spans; () = a scalar
    axes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    #: the inputs besides x, by their g.input name (see :class:`Input`)
    inputs: Mapping[str, Input] = field(default_factory=dict)

    def __post_init__(self):
        # kept as sorted pairs, so that a Spec stays hashable and prints the same every time
        for name in ("axes", "inputs"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, tuple(sorted(value.items())))

    def __repr__(self) -> str:
        extra = "".join(f", {n}={dict(getattr(self, n))!r}" for n in ("axes", "inputs") if getattr(self, n))
        base = (f"Spec(name={self.name!r}, title={self.title!r}, layout={self.layout!r}, "
                f"reduce_axes={self.reduce_axes!r}, param_axes={self.param_axes!r}, param_arg={self.param_arg!r}, "
                f"groups={self.groups!r}, param_shape={self.param_shape!r}, "
                f"batch_axis_option={self.batch_axis_option!r}, textbook={self.textbook!r}, "
                f"min_group={self.min_group!r}, group_word={self.group_word!r}")
        return base + extra + ")"

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

    @property
    def view_ndim(self) -> int | None:
        """The number of axes of the working view (group norm's has one more than x)."""
        return None if self.any_rank else self.ndim + (1 if self.groups else 0)

    def leaf_axes(self, name: str) -> tuple[int, ...]:
        """The axes of the working view that the parameter or broadcast input ``name`` spans."""
        found = dict(self.axes)
        if name in found:
            return tuple(found[name])
        given = dict(self.inputs).get(name)
        if given is not None and given.axes is not None:
            return tuple(given.axes)
        return tuple(self.param_axes)

    def _norm(self, axes) -> set:
        n = self.view_ndim
        return {a % n for a in axes} if n else set(axes)

    def kind(self, name: str, is_input: bool = False) -> str:
        """How the graph sees the leaf ``name``: "element" (a value per element of a group),
        "group" (one value per group) or "own" (an input with its own groups)."""
        given = dict(self.inputs).get(name) if is_input else None
        if is_input and (given is None or (given.axes is None and not given.own_groups)):
            return "element"
        if given is not None and given.own_groups:
            return "own"
        return "element" if self._norm(self.leaf_axes(name)) & self._norm(self.reduce_axes) else "group"

    def check(self, where: str) -> None:
        """Every axis in range, every name a name: one LayoutError naming the field."""
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise LayoutError(f"{where}: LAYOUT name {self.name!r} is not a Python identifier")
        n = self.view_ndim

        def in_range(what: str, axes, ndim) -> None:
            if not isinstance(axes, tuple) or not all(isinstance(a, int) for a in axes):
                raise LayoutError(f"{where}: LAYOUT {what} must be a tuple of integers, got {axes!r}")
            for a in axes:
                if ndim is not None and not -ndim <= a < ndim:
                    raise LayoutError(f"{where}: LAYOUT {what}: axis {a} is out of range for a working view "
                                      f"of {ndim} axes (layout {self.layout!r}"
                                      + (", viewed as (N, G, C/G, ...)" if self.groups else "") + ")")
                if ndim is None and a >= 0:
                    raise LayoutError(f"{where}: LAYOUT {what}: axis {a} of an any-rank layout "
                                      f"({self.layout!r}) must count from the end (negative)")
        in_range("reduce_axes", self.reduce_axes, n)
        in_range("param_axes", self.param_axes, n)
        if not self.reduce_axes:
            raise LayoutError(f"{where}: LAYOUT reduce_axes is empty: a group must cover at least one axis")
        for name, axes in self.axes:
            in_range(f"axes[{name!r}]", tuple(axes), n)
        for name, given in self.inputs:
            if not isinstance(given, Input):
                raise LayoutError(f"{where}: LAYOUT inputs[{name!r}] must be derive.forward.Input(...)")
            if given.axes is not None:
                in_range(f"inputs[{name!r}].axes", given.axes, n)
            if given.own_groups:
                own = len(given.layout.split(",")) if given.layout and not given.layout.startswith("...") else None
                in_range(f"inputs[{name!r}].reduce_axes", given.reduce_axes, own)
                if own is not None and n is not None and own - len(given.reduce_axes) != n - len(self.reduce_axes):
                    raise LayoutError(f"{where}: LAYOUT inputs[{name!r}]: its groups must match x's one to one, "
                                      f"but it keeps {own - len(given.reduce_axes)} axes outside its groups "
                                      f"and x keeps {n - len(self.reduce_axes)}")
