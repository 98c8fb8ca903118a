"""Nothing wrong is written: before derive writes a file, every backend's kernels run on small
random inputs and must agree with the proved expressions evaluated directly from SymPy.

This runs in a fresh interpreter, in the scratch folder where :mod:`derive.output.importcheck`
wrote the rendered package: ``python -m derive.output.verify DIR PACKAGE DERIVATIONS MODULE...``
imports every module, then, for each entry and each case of :mod:`derive.output.cases`, calls
each backend's ``verify`` module (``run(package, build, case)`` -> ``[(function, key, value)]``),
compares every output with the SymPy answer (relative error 1e-10 in float64), and runs
``check(package, build, cases)`` for what a backend checks itself (torch: gradgradcheck of the
derived double backward).  The first disagreement is one line naming the backend, the function,
the output and the case, exit status 1.  numba runs with NUMBA_DISABLE_JIT (the printed loops as
plain Python: the same arithmetic and indexing, no minutes of compiling); a backend's
``options["environment"]`` is set before any module imports (Triton's TRITON_INTERPRET=1: its kernels
run on the CPU through Triton's interpreter).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import sys

TOLERANCE = 1e-10


def facade_rule(d):
    """The running update of the entry's torch names, in graph symbols, when it is torch's."""
    from ..ir.program import facade_updates
    if d.spec.facades.running != "torch":
        return None
    return [a.value for a in facade_updates(d.model, d.spec.facades)]


def label(key: str, build) -> str:
    """'dgamma' for 'grad:1', 'running_var' for 'running:running_var'."""
    if key.startswith("grad:"):
        return build.ir.grads[int(key[5:])].name
    if key.startswith("grad2:"):   # the double backward's gradient of dout, x or a parameter
        which = key[6:]
        return "bar_dout" if which == "dout" else f"bar_{(build.ir.x, *build.ir.params)[int(which)].name}"
    return key.split(":", 1)[-1]


def verify(package: str, builds, backends) -> str | None:
    """The first disagreement, as one line, or None."""
    from .cases import agree, cases
    for build in builds:
        found = cases(build.derivation, facade_rule(build.derivation))
        for backend in backends:
            runner = importlib.import_module(backend.verify)
            if not backend.covers(build) or not runner.covers(build):
                continue
            for case in found:
                if hasattr(runner, "selects") and not runner.selects(case):
                    continue
                try:
                    outputs = runner.run(package, build, case)
                except Exception as e:  # a kernel that raises is wrong too
                    return (f"backend {backend.name}: {build.spec.name} raised {type(e).__name__}: {e} "
                            f"(case {case.name})")
                for function, key, value in outputs:
                    expected = case.facade.get(key, case.expected[key]) if runner.FACADE else case.expected[key]
                    err = agree(value, expected, TOLERANCE)
                    if err is not None:
                        return (f"backend {backend.name}: {function}: {label(key, build)} differs from the proved "
                                f"expression by {err:.3g} (relative; case {case.name})")
            problem = runner.check(package, build, found) if hasattr(runner, "check") else None
            if problem:
                return f"backend {backend.name}: {build.spec.name}: {problem}"
    return None


def main(argv: list[str]) -> int:
    folder, package, derivations, *modules = argv
    os.environ["NUMBA_DISABLE_JIT"] = "1"
    from .. import backends
    for backend in backends.BACKENDS:   # what a backend's kernels read when their libraries import
        os.environ.update(backend.options.get("environment", {}))
    sys.path.insert(0, folder)
    for m in modules:
        importlib.import_module(m)
    from .render import builds
    with open(derivations, "rb") as f:
        found = builds(pickle.load(f))
    usable = [b for b in backends.BACKENDS if b.verify and all(importlib.util.find_spec(r) for r in b.requires)]
    problem = verify(package, found, usable)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
