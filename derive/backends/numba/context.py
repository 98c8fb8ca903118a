"""The numba backend: the same proved expressions, printed as fused scalar loops.

The working view of every variant is laid onto at most four loop letters, in
memory order (``pattern``):

    o  reduced axes before the group axes (the batch axis of batch norm)
    g  the group axes: one mean and one variance for each g
    k  reduced axes that gamma spans (layer norm's features, group norm's channels)
    i  reduced axes after the group axes (H and W)

A kernel is a :class:`Program`: phases, each one reduction loop over the elements
of a group (every BatchSum becomes a float64 accumulator of its summand) followed
by per-group assignments, then one elementwise loop.  The backward pass of the
compact form is one phase (sum_dout, sum_dout_xhat, then the coefficients) and the
elementwise dx = coef_dout*dout + coef_xhat*xhat + coef_1; the forward pass has
one phase per statistic (mu, then var).

Two loop families lay a program out (templates/numba_kernels.py.jinja):

* ``columns`` (pattern ``og``, batch norm): a group is a column.  Each reduction
  pass runs over chunks of rows, four rows per accumulator update, into float64
  partial sums per chunk, which are then added in chunk order; the elementwise
  pass runs over the same chunks of rows.
* ``rows`` (any other pattern): a group is a contiguous run; one parallel loop
  over chunks of groups does every pass of a group while it is in cache.

Chunk counts depend on the shape only, so results do not depend on the thread count.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sympy as sp

from ...forward.graph import Model
from ...math.algebra import BatchSum, Const, Elem, M
from ...math.derivation import Derivation
from ...math.lemmas import Lemmas
from ..numpy.kernels import abbreviate, coefficient_name, exact_means, kernel_stages, reduction_name
from .printer import NumbaPrinter, Widen

#: rows of the columns family summed into an accumulator per update
UNROLL = 4

Assignment = tuple[sp.Symbol, sp.Expr]


# --------------------------------------------------------------------------- layout


def pattern(spec) -> str:
    """The loop letters of ``spec``'s working view, e.g. ``og`` for batch norm over (N, D)."""
    ndim = (spec.ndim or 2) + (1 if spec.groups else 0)
    reduced = {a % ndim for a in spec.reduce_axes}
    params = {a % ndim for a in spec.param_axes}
    first_group = min(a for a in range(ndim) if a not in reduced)
    letters = ""
    for a in range(ndim):
        letter = ("g" if a not in reduced else "k" if a in params
                  else "o" if a < first_group else "i")
        if not letters.endswith(letter):
            letters += letter
    if letters not in ("og", "ogi", "gk", "gki", "gi") or (("k" in letters) != spec.gamma_varies):
        raise ValueError(f"{spec.name}: no numba loop layout for the letters {letters!r}")
    return letters


# --------------------------------------------------------------------------- programs


@dataclass(frozen=True)
class Phase:
    sums: tuple[Assignment, ...]     #: (accumulator, per-element summand)
    group: tuple[Assignment, ...]    #: per-group assignments after the loop


@dataclass(frozen=True)
class Program:
    """One kernel: reduction phases, then one elementwise loop."""

    phases: tuple[Phase, ...]
    elements: tuple[Assignment, ...]   #: per-element assignments of the last loop
    stores: tuple[sp.Symbol, ...]      #: per-element results written to arrays
    group_out: tuple[sp.Symbol, ...]   #: per-group results written to arrays
    params: tuple[Assignment, ...]     #: (dgamma, accumulator) or, when gamma varies, (dgamma, summand)

    @property
    def assigned(self) -> set[sp.Symbol]:
        return {s for p in self.phases for s, _ in p.sums + p.group} | {s for s, _ in self.elements}


def inline(expr: sp.Expr, elements: list[Assignment]) -> sp.Expr:
    """``expr`` with every per-element local substituted, so a summand reads only inputs."""
    for symbol, value in reversed(elements):
        expr = expr.xreplace({symbol: value})
    return expr


def schedule(assignments: list[Assignment], stores, group_out, params=(), varying=False) -> Program:
    """Order ``assignments`` into phases.

    A per-group assignment joins the current phase unless one of its reductions
    reads a value that phase assigns (var needs mu): then a new loop starts.
    Parameter gradients are sums over the group too: when gamma is constant in a
    group, ParamSum(f) is the group sum BatchSum(f) summed over the groups that
    share a gamma, so it reuses (or adds) that accumulator.
    """
    elements: list[Assignment] = []
    phases: list[tuple[list, list]] = [([], [])]
    names: dict[BatchSum, sp.Symbol] = {}

    def accumulate(s: BatchSum, target: sp.Symbol, phase) -> sp.Symbol:
        if s not in names:
            base = reduction_name(s) if reduction_name(s).isidentifier() else f"sum_{target.name}"
            name, j = base, 1
            while name in {n.name for n in names.values()}:
                name, j = f"{base}_{j}", j + 1
            names[s] = sp.Symbol(name, real=True)
            phase[0].append((names[s], inline(s.args[0], elements)))
        return names[s]

    for symbol, expr in assignments:
        if isinstance(symbol, Elem):
            elements.append((symbol, expr))
            continue
        sums = sorted(expr.atoms(BatchSum), key=sp.default_sort_key)
        current = {s for s, _ in phases[-1][1]}
        if any(inline(s.args[0], elements).free_symbols & current for s in sums if s not in names):
            phases.append(([], []))
        renamed = {s: accumulate(s, symbol, phases[-1]) for s in sums}
        phases[-1][1].append((symbol, expr.xreplace(renamed)))
    grads = []
    for grad, summand in params:
        if varying:
            grads.append((grad, inline(summand, elements)))
        else:
            grads.append((grad, accumulate(BatchSum(summand), grad, phases[0])))
    kept = [(s, g) for s, g in phases if s or g]  # a kernel without reductions has no group loop
    return Program(tuple(Phase(tuple(s), tuple(g)) for s, g in kept), tuple(elements),
                   tuple(stores), tuple(group_out), tuple(grads))


def let_value(model: Model, lemmas: Lemmas, let) -> sp.Expr:
    """A let's definition through the lets before it (r = clip(std/std_run, ...)); an inverted
    abbreviation (std) is its own definition, not its own name."""
    before = model.lets[:model.lets.index(let)]
    others = {other.definition: other.symbol for other in before}
    own = dataclasses.replace(lemmas, folds=tuple(f for f in lemmas.folds if f[1] != let.symbol))
    value = own.fold(own.abbreviate(let.definition.xreplace(others)))
    return let.definition.xreplace(others) if let.symbol in value.free_symbols else value


def lets_ready(model: Model, lemmas: Lemmas, available: set, done: set) -> list[Assignment]:
    """The lets computable from ``available``, in definition order (kernels.lets_ready's rule)."""
    out = []
    for let in model.lets:
        value = let_value(model, lemmas, let)
        if let.symbol not in done and value.free_symbols <= available:
            done.add(let.symbol)
            available.add(let.symbol)
            out.append((let.symbol, value))
    return out


def node_value(model: Model, lemmas: Lemmas, node) -> sp.Expr:
    """A node written with the lets (test mode's lets are not among the training folds)."""
    own = {let.definition: let.symbol for let in model.lets}
    return abbreviate(node.definition, lemmas).xreplace(own)


def forward_program(model: Model, lemmas: Lemmas, cached: set[str]) -> Program:
    """Every node in order, each let as soon as its inputs are there; the per-element and
    per-group values the cache keeps (and the running statistics' batch values) are written out."""
    assignments: list[Assignment] = []
    available = {model.x, *model.params, *model.scalars, *model.stats, *model.reads_running}
    done: set = set()
    for node in model.nodes:
        assignments += lets_ready(model, lemmas, available, done)
        assignments.append((node.symbol, node_value(model, lemmas, node)))
        available.add(node.symbol)
    assignments += lets_ready(model, lemmas, available, done)
    keep = cached | {r.stat.name for r in model.running}
    stores = tuple(s for s, _ in assignments
                   if isinstance(s, Elem) and (s.name in cached or s == model.output.symbol))
    group = tuple(s for s, _ in assignments if not isinstance(s, Elem) and s.name in keep)
    return schedule(assignments, stores, group)


def backward_program(assignments: list[Assignment], d: Derivation, model: Model,
                     cached: set[str]) -> Program:
    """dx from ``assignments`` (stages or coefficients), and dgamma/dbeta from their ParamSums.
    A let the assignments read that the cache does not keep is computed from what it keeps."""
    dx = d.stages[-1].symbol
    params = [(p.symbol, p.expr.args[0]) for p in d.params]
    assigned = {s for s, _ in assignments}
    needed = set().union(*(e.free_symbols for _, e in assignments), *(e.free_symbols for _, e in params))
    values = {let.symbol: let_value(model, d.lemmas, let) for let in model.lets}
    lets = []
    for let in reversed(model.lets):
        if let.symbol in needed and let.symbol.name not in cached and let.symbol not in assigned:
            lets.insert(0, (let.symbol, values[let.symbol]))
            needed |= values[let.symbol].free_symbols
    return schedule(lets + list(assignments), (dx,), (), params, d.spec.gamma_varies)


def compact_assignments(d: Derivation) -> list[Assignment]:
    """The per-group coefficients of the compact form, then dx = sum of coefficient*monomial."""
    coefs = [(sp.Symbol(coefficient_name(mono), real=True), c) for c, mono in d.coefficients]
    dx = sp.Add(*[symbol * mono for (symbol, _), (_, mono) in zip(coefs, d.coefficients)])
    return coefs + [(d.stages[-1].symbol, dx)]


# --------------------------------------------------------------------------- printing


def python_scalar(s: sp.Symbol) -> bool:
    """m and the layer's constants are Python numbers, kernel arguments rather than arrays."""
    return s == M or isinstance(s, Const)


@dataclass(frozen=True)
class Roles:
    """What each symbol of a program is to the kernel: how it is passed and read."""

    element_in: tuple[str, ...]
    element_out: tuple[str, ...]
    group_in: tuple[str, ...]
    group_out: tuple[str, ...]
    params: tuple[str, ...]
    varying: tuple[str, ...]       #: the params that vary inside a group
    partials: tuple[str, ...]
    scalars: tuple[str, ...]


def roles(program: Program, model: Model) -> Roles:
    """Inputs and outputs from free symbols: m and the constants are Python numbers."""
    used: set[sp.Symbol] = set()
    for phase in program.phases:
        for _, e in phase.sums + phase.group:
            used |= e.free_symbols
    for _, e in program.elements + program.params:
        used |= e.free_symbols
    params = set(model.params)
    free = used - program.assigned - params

    def names(symbols):
        return tuple(sorted(s.name for s in symbols))

    return Roles(
        element_in=names(s for s in free if isinstance(s, Elem)),
        element_out=tuple(s.name for s in program.stores),
        group_in=names(s for s in free if not isinstance(s, Elem) and not python_scalar(s)),
        group_out=tuple(s.name for s in program.group_out),
        params=names(params & used),
        varying=names(p for p in params & used if isinstance(p, Elem)),
        partials=tuple(g.name for g, _ in program.params),
        scalars=names(s for s in free if python_scalar(s)),
    )


def loads(program: Program, r: Roles, family: str, letters: str) -> dict[str, str]:
    """How each symbol is read inside the loops of ``family``, by name; any other symbol is a
    local (an accumulator, a per-element stage) or a kernel argument of that name."""
    index = ", ".join(letters)
    locals_ = {s.name for s, _ in program.elements} - {s.name for s in program.stores}
    out = {name: f"{name}[{index}]" for name in r.element_in + r.element_out}
    out.update({name: f"{name}_p[p, k]" for name in r.varying})
    if family == "columns":
        group = [s.name for ph in program.phases for s, _ in ph.group] + list(r.group_in)
        out.update({name: f"{name}_g[g]" for name in group})
        out.update({name: f"{name}_p[g]" for name in r.params if name not in r.varying})
    return {k: v for k, v in out.items() if k not in locals_}


def unrolled(expr: sp.Expr, table: dict[str, str]) -> tuple[sp.Expr, dict[str, str]]:
    """The sum of ``expr`` over the rows o, o+1, ..., o+UNROLL-1 of the columns family, each term
    in float64, and the loads of its row-shifted elements: one accumulator update per UNROLL rows."""
    copies, shifted = [], dict(table)
    for r in range(UNROLL):
        swap = {e: sp.Symbol(f"{e.name}__{r}", real=True) for e in expr.atoms(Elem)}
        shifted.update({s.name: f"{e.name}[o{f' + {r}' if r else ''}, g]" for e, s in swap.items()})
        copies.append(Widen(expr.xreplace(swap)))
    return sp.Add(*copies), shifted


def print_program(program: Program, model: Model, family: str, letters: str,
                  printer: NumbaPrinter) -> dict:
    """The template's view of one kernel: printed (lhs, rhs) pairs, grouped by loop."""
    r = roles(program, model)
    table = loads(program, r, family, letters)

    def p(expr: sp.Expr) -> str:
        return printer.print_with(expr, table)

    def lhs(symbol: sp.Symbol) -> str:
        return table.get(symbol.name, symbol.name)

    # a summand reads its operands in float64, so x**2 of a float32 x near 1e19 does not overflow
    wide = {k: f"{printer._module_format('numpy.float64')}({v})" for k, v in table.items()}
    phases = []
    for n, phase in enumerate(program.phases):
        sums = [{"acc": lhs(acc), "rhs": printer.print_with(summand, wide),
                 "unrolled": printer.print_with(*unrolled(summand, table)) if family == "columns" else ""}
                for acc, summand in phase.sums]
        partials = [(g.name, p(e)) for g, e in program.params] if n == 0 and r.varying else []
        phases.append({"sums": sums, "partials": partials,
                       "group": [(lhs(s), p(e)) for s, e in phase.group]})
    stores = [] if family == "columns" else [(f"{s.name}_g[g]", s.name) for s in program.group_out]
    if not r.varying:
        stores += [(f"{g.name}_g[g]", lhs(acc)) for g, acc in program.params]
    temporaries = [s.name for ph in program.phases for s, _ in ph.group if s not in program.group_out]
    return {
        "roles": r,
        "phases": phases,
        "elements": [(lhs(s), p(e)) for s, e in program.elements],
        "group_loads": [(n, f"{n}_g[g]") for n in r.group_in]
        + [(n, f"{n}_p[p]") for n in r.params if n not in r.varying],
        "group_stores": stores,
        "temporaries": temporaries,
        "uses_p": family == "rows" and bool(r.params or r.partials),
        # only what the elementwise pass reads is rounded to the working dtype: var of a float32
        # x near 1e20 passes float32's range while std (and out) do not
        "read": {lhs(s) for ph in program.phases for s, _ in ph.group
                 if any(s in e.free_symbols for _, e in program.elements)},
    }


# --------------------------------------------------------------------------- rendering


def kernel(name: str, doc: str, program: Program, model: Model, family: str, letters: str,
           printer: NumbaPrinter) -> dict:
    """One kernel's template context: its printed program, argument list and docstring."""
    k = print_program(program, model, family, letters, printer)
    r = k["roles"]
    k.update(
        name=name,
        doc=doc + " " + passes(program),
        args=[*r.element_in, *r.element_out, *(f"{n}_g" for n in r.group_in + r.group_out),
              *(f"{n}_p" for n in r.params + r.partials), *r.scalars, "P", "chunks"],
        first=(r.element_in + r.element_out)[0],
        # Per-group values are float64 in the loops, except where the elementwise pass never
        # subtracts a mean: there they are rounded to the working dtype once per group, so a
        # float32 pass runs in float32 (nothing cancels: dx = coef_dout*dout + ... is O(1)).
        narrow=not any(e.free_symbols & exact_means(model) for _, e in program.elements),
    )
    return k


def passes(program: Program) -> str:
    """The docstring's summary of the loops, e.g. 'Pass 1 sums sum_dout, sum_dout_xhat (float64) ...'."""
    out, n = [], 0
    for phase in program.phases:
        sums = ", ".join(s.name for s, _ in phase.sums)
        group = ", ".join(s.name for s, _ in phase.group)
        n += bool(sums)
        text = f"Pass {n} sums {sums} (float64) in each group" if sums else ""
        if group:
            text += ("; then " if sums else "Per group: ") + group
        out.append(text)
    last = ", ".join(s.name for s in program.stores)
    return ". ".join([o for o in out if o] + [f"Pass {n + 1}: {last}, elementwise."])


def module_context(d: Derivation, numpy_context: dict) -> dict:
    """The template's context: the NumPy module's names, checks and cache, with numba kernels."""
    spec = d.spec
    letters = pattern(spec)
    family = "columns" if letters == "og" else "rows"
    printer = NumbaPrinter()
    cached = set(numpy_context["cache_keys"])
    forms = {
        "compact": backward_program(compact_assignments(d), d, d.model, cached),
        "staged": backward_program(kernel_stages(d, d.stages), d, d.model, cached),
    }
    docs = {"compact": "Backward pass, the compact form.", "staged": "Backward pass, the staged chain rule."}
    kernels = {f"backward_{form}": kernel(f"_backward_{form}", docs[form], prog, d.model, family, letters,
                                           printer) for form, prog in forms.items()}
    kernels["forward_train"] = kernel("_forward_train", "Forward pass, training mode.",
                                      forward_program(d.model, d.lemmas, cached), d.model, family, letters,
                                      printer)
    if d.test_model is not None:
        kernels["forward_test"] = kernel("_forward_test", "Forward pass, test mode (running statistics).",
                                         forward_program(d.test_model, d.lemmas, cached), d.test_model,
                                         family, letters, printer)
        kernels["backward_test"] = kernel(
            "_backward_test", "Backward pass, test mode.",
            backward_program(kernel_stages(d, d.test_stages), d, d.test_model, cached), d.test_model, family,
            letters, printer)
    staged_pairs = numpy_context["kernels"].backward_staged
    backward = []
    for fn in numpy_context["backward_functions"]:
        train = kernels["backward_staged" if fn["train"] == staged_pairs else "backward_compact"]
        used = [train] + ([kernels["backward_test"]] if d.test_model is not None else [])
        reads = {n for k in used for n in k["roles"].element_in + k["roles"].group_in + k["roles"].params
                 + k["roles"].scalars} - {d.model.dy.name}
        if reads - set(fn["unpack"]):
            raise ValueError(f"{fn['name']}: the numba kernels read {sorted(reads - set(fn['unpack']))}, "
                             "which the cache does not keep")
        backward.append({"name": fn["name"], "description": fn["description"], "train": train,
                         "unpack": fn["unpack"]})
    order = ["forward_train", "forward_test", "backward_compact", "backward_staged", "backward_test"]
    return {
        **{key: numpy_context[key] for key in (
            "spec", "param_names", "x_param_axes", "param_description", "axes_description", "group_word",
            "layout_text", "cache_keys", "cache_values", "constants", "running", "reads_running",
            "has_running", "check_group", "param_keys")},
        "running_pairs": numpy_context["kernels"].running,
        "output": d.model.output.symbol.name,
        "dx": d.stages[-1].symbol.name,
        "letters": letters,
        "family": family,
        "dims": ", ".join(letter.upper() for letter in letters),
        "reduced": [letter for letter in letters if letter != "g"],
        "unroll": UNROLL,
        "kernels": kernels,
        "kernel_list": [kernels[key] for key in order if key in kernels],
        "backward_functions": backward,
        "grads": [p.symbol.name for p in d.params],
        "imports": sorted(set(printer.module_imports) | {"numba", "numpy"}),
    }


def numba_jobs(derivations: list[Derivation], kernel_contexts: dict[str, dict]) -> dict[str, tuple[str, dict]]:
    """{path under generated/: (template, context)} of the numba subpackage generated.numba.

    ``kernel_contexts`` are the NumPy kernels' contexts, by variant name: the numba
    functions keep their names, arguments and checks.
    """
    jobs = {"numba/_layout.py": ("numba_layout.py.jinja", {})}
    exports = []
    for d in derivations:
        numpy_context = kernel_contexts[d.spec.name]
        jobs[f"numba/{d.spec.name}.py"] = ("numba_kernels.py.jinja", module_context(d, numpy_context))
        exports += [(d.spec.name, f"{d.spec.name}_forward")]
        exports += [(d.spec.name, fn["name"]) for fn in numpy_context["backward_functions"]]
    jobs["numba/__init__.py"] = ("numba_init.py.jinja", {"exports": exports})
    return jobs
