"""Run the derivation pipeline for one variant: model -> stages -> compact -> proofs."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from . import closed_form, model, proofs, stages
from .spec import Spec


@dataclass(frozen=True)
class Derivation:
    spec: Spec
    model: model.Model
    stages: tuple[stages.Stage, ...]
    params: tuple[stages.Stage, ...]
    compact: closed_form.Compact
    coefficients: list[tuple[sp.Expr, sp.Expr]]
    jacobian: sp.Expr
    symbolic: proofs.Symbolic
    test_model: model.Model | None
    test_stages: tuple[stages.Stage, ...]
    proofs: tuple[proofs.Proof, ...]
    max_m: int
    timings: dict[str, float]


def derive(spec: Spec, max_m: int, progress: Callable[[str], None] | None = None) -> Derivation:
    """Derive and prove everything about ``spec``; raises ProofError on the first failure.

    ``progress``, if given, is called with the name of each stage as it starts.
    """
    report = progress or (lambda stage: None)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    report("deriving")
    train = model.build(spec, training=True)
    staged = stages.backward(train)
    params = stages.parameter_gradients(train)
    compact = closed_form.compact(train, staged)
    jac = proofs.jacobian_entry(train)
    timings["derive"] = time.perf_counter() - t

    t = time.perf_counter()
    sizes = proofs.sizes(train, max_m)
    if sizes:
        report(f"proving m={sizes.start}..{sizes.stop - 1}")
    log = list(proofs.prove_sizes(train, staged, compact, jac, params, max_m))
    report("symbolic m")
    symbolic = proofs.prove_symbolic(train, staged, compact, jac)
    log += symbolic.proofs
    test_model, test_stages = None, ()
    if spec.running_stats:
        report("test mode")
        test_model = model.build(spec, training=False)
        test_stages = stages.backward(test_model)
        log += proofs.prove_test_mode(test_model, test_stages, max_m)
    timings["prove"] = time.perf_counter() - t
    return Derivation(spec, train, staged, params, compact,
                      closed_form.coefficients(compact.dx), jac, symbolic,
                      test_model, test_stages, tuple(log), max_m, timings)
