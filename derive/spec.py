"""What a normalization is: the data that every later stage derives from.

A variant is one frozen :class:`Spec`. The derivation only needs three facts
about it -- whether the input is centred, where epsilon goes, and whether
gamma varies inside one normalization group -- and the kernels additionally
need the layout: which axes are reduced and which axes gamma spans.
Adding a variant means adding an entry to :data:`SPECS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Eps = Literal["inside", "outside"]


@dataclass(frozen=True)
class Spec:
    """One member of the normalization family.

    Axes refer to the *working view* of ``x``: the input itself, except for
    group norm, whose (N, C, H, W) input is viewed as (N, G, C/G, H, W).
    """

    name: str                      #: prefix of the public functions, e.g. ``layernorm``
    title: str                     #: human name used in documents and tables
    layout: str                    #: axis letters of ``x``, e.g. ``"N,D"``; ``"...,D"`` means any rank
    reduce_axes: tuple[int, ...]   #: axes of the working view that one mean/variance covers
    param_axes: tuple[int, ...]    #: axes of the working view along which gamma and beta vary
    param_arg: str                 #: name of the dict argument (``bn_param``, ``ln_param``, ...)
    centred: bool = True           #: subtract the mean (False for RMSNorm)
    eps: Eps = "inside"            #: sqrt(var + eps) or sqrt(var) + eps
    shift: bool = True             #: has a beta
    running_stats: bool = False    #: train/test modes with running mean and variance
    groups: bool = False           #: takes a group count G (group norm)
    param_shape: str = "vector"    #: "vector": gamma is (C,) / (D,); "broadcast": (1, C, 1, 1)
    batch_axis_option: bool = False  #: ``bn_param['axis']`` selects the batch axis (seed 002's layout)
    textbook: bool = False         #: CS231n's pair: <name>_backward is the staged form, _alt the compact

    @property
    def gamma_varies(self) -> bool:
        """True when gamma takes different values inside one normalization group."""
        return bool(set(self.reduce_axes) & set(self.param_axes))

    @property
    def signature(self) -> tuple[bool, str, bool]:
        """The facts the symbolic derivation depends on; equal signatures share proofs."""
        return (self.centred, self.eps, self.gamma_varies)

    @property
    def any_rank(self) -> bool:
        return self.layout.startswith("...")

    @property
    def ndim(self) -> int | None:
        return None if self.any_rank else len(self.layout.split(","))


SPECS: tuple[Spec, ...] = (
    Spec("batchnorm", "Batch normalization", "N,D", (0,), (1,), "bn_param",
         running_stats=True, batch_axis_option=True, textbook=True),
    Spec("batchnorm_eps_outside", "Batch normalization, epsilon outside the root", "N,D",
         (0,), (1,), "bn_param", eps="outside", running_stats=True, batch_axis_option=True,
         textbook=True),
    Spec("spatial_batchnorm", "Spatial batch normalization", "N,C,H,W", (0, 2, 3), (1,),
         "bn_param", running_stats=True),
    Spec("layernorm", "Layer normalization", "N,D", (1,), (1,), "ln_param"),
    Spec("spatial_groupnorm", "Group normalization", "N,C,H,W", (2, 3, 4), (1, 2), "gn_param",
         groups=True, param_shape="broadcast"),
    Spec("instancenorm", "Instance normalization", "N,C,H,W", (2, 3), (1,), "in_param"),
    Spec("rmsnorm", "RMS normalization", "...,D", (-1,), (-1,), "rms_param",
         centred=False, shift=False),
)

BY_NAME: dict[str, Spec] = {s.name: s for s in SPECS}
