"""The kernel IR of the tensor backends (PyTorch, JAX): symbolic (lhs, rhs) assignments.

Everything is taken from one :class:`~derive.derivation.Derivation`; the torch and JAX
printers only print these assignments, so both backends compute the same proved
expressions as the NumPy and numba kernels:

* ``forward_train`` / ``forward_test``: every let and node in order (numba's schedule);
* ``running``: the running statistics in torch's convention (see :func:`torch_running`);
* ``backward_train``: the compact form: its named reductions, its per-group coefficients,
  ``dx = sum coefficient * monomial``, then dgamma/dbeta (reusing the group sums);
* ``backward_test``: the staged chain rule of the test-mode graph, then dgamma/dbeta.

What each backward reads (``reads_train``, ``reads_test``) comes from free symbols.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..backends.numba.context import lets_ready, node_value
from ..backends.numpy.kernels import coefficient_name, kernel_stages, reduction_name
from ..forward.graph import BATCH, RUNNING, Model
from ..math.algebra import BatchSum, M, OuterSum, ParamSum
from ..math.derivation import Derivation

Assignment = tuple[sp.Symbol, sp.Expr]
MOMENTUM = sp.Symbol("momentum", positive=True)

#: torch's running statistics: running <- (1 - momentum)*running + momentum*batch
TORCH_UPDATE = (1 - MOMENTUM) * RUNNING + MOMENTUM * BATCH
#: the batch value torch tracks for a buffer, by buffer name: running_var is the unbiased variance
TORCH_BATCH = {"running_var": M / (M - 1)}


@dataclass(frozen=True)
class TensorKernels:
    forward_train: tuple[Assignment, ...]
    forward_test: tuple[Assignment, ...]
    running: tuple[Assignment, ...]
    backward_train: tuple[Assignment, ...]
    backward_test: tuple[Assignment, ...]
    grads: tuple[sp.Symbol, ...]          #: dx, then one gradient per parameter
    reads_train: tuple[str, ...]          #: forward values the training backward reads
    reads_test: tuple[str, ...]


def forward(model: Model, lemmas) -> tuple[Assignment, ...]:
    """Every node in order, each let as soon as its inputs are there."""
    out: list[Assignment] = []
    available = {model.x, *model.params, *model.scalars, *model.stats, *model.reads_running}
    done: set = set()
    for node in model.nodes:
        out += lets_ready(model, lemmas, available, done)
        out.append((node.symbol, node_value(model, lemmas, node)))
        available.add(node.symbol)
    out += lets_ready(model, lemmas, available, done)
    return tuple(out)


def torch_running(model: Model) -> tuple[Assignment, ...]:
    """Each buffer's update in torch's convention, from the graph's running statistics."""
    out = []
    for r in model.running:
        batch = r.stat * TORCH_BATCH.get(r.buffer, 1)
        out.append((r.symbol, TORCH_UPDATE.xreplace({RUNNING: r.symbol, BATCH: batch})))
    return tuple(out)


def parameter_gradients(d: Derivation, names: dict) -> list[Assignment]:
    """dgamma, dbeta; a group sum already computed is summed once more over the outer axes."""
    out = []
    for p in d.params:
        local = p.expr.args[0]
        if not d.spec.gamma_varies and BatchSum(local) in names:
            out.append((p.symbol, OuterSum(names[BatchSum(local)])))
        else:
            out.append((p.symbol, ParamSum(local)))
    return out


def backward_train(d: Derivation) -> tuple[Assignment, ...]:
    names = {s: sp.Symbol(reduction_name(s), real=True) for s in d.compact.reductions}
    out: list[Assignment] = [(names[s], s) for s in d.compact.reductions]
    terms = []
    for c, mono in d.coefficients:
        if c.is_Number:
            terms.append(c * mono)
            continue
        coef = sp.Symbol(coefficient_name(mono), real=True)
        out.append((coef, c.xreplace(names)))
        terms.append(coef * mono)
    out.append((d.stages[-1].symbol, sp.Add(*terms)))
    return tuple(out + parameter_gradients(d, names))


def backward_test(d: Derivation) -> tuple[Assignment, ...]:
    return tuple(kernel_stages(d, d.test_stages)) + tuple((p.symbol, p.expr) for p in d.params)


def reads(assignments, defined=()) -> tuple[str, ...]:
    assigned = {s for s, _ in assignments}
    free = set().union(*(e.free_symbols for _, e in assignments)) - assigned
    return tuple(sorted(s.name for s in free if s.name not in defined))


def build(d: Derivation) -> TensorKernels:
    test = d.test_model
    model = d.model
    skip = {"dout", "m", *(c.symbol.name for c in model.constants)}
    train_b = backward_train(d)
    test_b = backward_test(d) if test is not None else ()
    return TensorKernels(
        forward_train=forward(model, d.lemmas),
        forward_test=forward(test, d.lemmas) if test is not None else (),
        running=torch_running(model),
        backward_train=train_b,
        backward_test=test_b,
        grads=(d.stages[-1].symbol, *(p.symbol for p in d.params)),
        reads_train=reads(train_b, skip),
        reads_test=reads(test_b, skip),
    )
