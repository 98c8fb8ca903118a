"""The forward pass of one normalization group as SymPy expressions.

The model is a small computation graph: each :class:`Node` is defined from
the input ``x``, the parameters and earlier nodes.  Reductions are written
with :class:`~derive.algebra.BatchSum`, so the batch size stays the symbol m.

    mu   = (1/m) sum_k x_k                     (centred variants only)
    var  = (1/m) sum_k (x_k - mu)^2            or (1/m) sum_k x_k^2 (RMSNorm)
    xhat = (x - mu) / sqrt(var + eps)          or (x - mu) / (sqrt(var) + eps)
    y    = gamma * xhat + beta

In test mode mu and var are the running statistics: leaves of the graph, not
functions of x.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .algebra import M, BatchSum, Elem
from .spec import Spec

# Per-element quantities (index i); their names are the kernels' variable names.
X = Elem("x", real=True)
DY = Elem("dout", real=True)
XHAT = Elem("xhat", real=True)
Y = Elem("out", real=True)
# Per-group scalars.
MU = sp.Symbol("mu", real=True)
VAR = sp.Symbol("var", nonnegative=True)
EPS = sp.Symbol("eps", positive=True)
STD = sp.Symbol("std", positive=True)        #: sigma_eps, the denominator of xhat
MOMENTUM = sp.Symbol("momentum", positive=True)
RUNNING = sp.Symbol("running", real=True)     #: a running statistic before its update
BATCH = sp.Symbol("batch", real=True)         #: the batch statistic that updates it


@dataclass(frozen=True)
class Node:
    symbol: sp.Symbol
    definition: sp.Expr
    label: str

    @property
    def per_element(self) -> bool:
        return isinstance(self.symbol, Elem)


@dataclass(frozen=True)
class Model:
    """The forward graph of one variant, in training or in test mode."""

    spec: Spec
    training: bool
    gamma: sp.Symbol
    beta: sp.Symbol | None
    nodes: tuple[Node, ...]        #: topological order, the output last

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    def node(self, symbol: sp.Symbol) -> Node:
        return next(n for n in self.nodes if n.symbol == symbol)

    @property
    def std_definition(self) -> sp.Expr:
        """sigma_eps in terms of var and eps."""
        return sp.sqrt(VAR + EPS) if self.spec.eps == "inside" else sp.sqrt(VAR) + EPS

    @property
    def var_in_std(self) -> sp.Expr:
        """var written through sigma_eps: the inverse of :attr:`std_definition`."""
        return STD**2 - EPS if self.spec.eps == "inside" else (STD - EPS) ** 2

    @property
    def x_in_xhat(self) -> sp.Expr:
        """x written through xhat: x = mu + sigma_eps * xhat."""
        return MU + STD * XHAT if self.spec.centred else STD * XHAT

    @property
    def leaves(self) -> tuple[sp.Symbol, ...]:
        stats = () if self.training else ((MU,) if self.spec.centred else ()) + (VAR,)
        return (X, self.gamma) + ((self.beta,) if self.beta is not None else ()) + stats


def parameters(spec: Spec) -> tuple[sp.Symbol, sp.Symbol | None]:
    """gamma and beta: per-element symbols when they vary inside a group."""
    kind = Elem if spec.gamma_varies else sp.Symbol
    gamma = kind("gamma", real=True)
    beta = kind("beta", real=True) if spec.shift else None
    return gamma, beta


def build(spec: Spec, training: bool = True) -> Model:
    """The forward graph of ``spec``."""
    gamma, beta = parameters(spec)
    centre = X - MU if spec.centred else X
    denominator = sp.sqrt(VAR + EPS) if spec.eps == "inside" else sp.sqrt(VAR) + EPS
    nodes: list[Node] = []
    if training:
        if spec.centred:
            nodes.append(Node(MU, BatchSum(X) / M, "mean"))
        nodes.append(Node(VAR, BatchSum(centre**2) / M,
                          "variance" if spec.centred else "mean square"))
    nodes.append(Node(XHAT, centre / denominator, "normalized input"))
    nodes.append(Node(Y, gamma * XHAT + (beta if beta is not None else 0), "output"))
    return Model(spec, training, gamma, beta, tuple(nodes))


def running_update() -> sp.Expr:
    """The exponential moving average of CS231n: momentum*running + (1 - momentum)*batch."""
    return MOMENTUM * RUNNING + (1 - MOMENTUM) * BATCH
