"""The kernel IR: every function a backend prints, built once per derivation.

A :class:`Function` is an ordered list of assignments ``target = value`` over one working
view.  A value is per element (its target is an :class:`~derive.math.algebra.Elem`) or per
group, and may hold three kinds of sums, each printed by every backend its own way:

    BatchSum(f)   the sum of f over one group (kept for broadcasting)
    ParamSum(f)   the sum of f over every axis a parameter does not span
    OuterSum(s)   group sums s summed again over the groups that share a parameter

Parameter gradients have one normal form: a parameter that is one value per group
(batch norm's gamma) gets ``dgamma = OuterSum(sum)`` of a named group sum (the compact form's
own sums are reused); one that varies inside a group (layer norm's gamma) gets
``dgamma = ParamSum(...)``.

Functions (those the derivation has):

* ``forward_train`` / ``forward_test``: every node of the graph and each abbreviation as soon as
  its inputs are there (test mode reads the running statistics);
* ``backward_compact``: the compact form: named group sums, per-group coefficients, dx as the
  sum of coefficient * monomial, then the parameter gradients;
* ``backward_staged``: the staged chain rule of the training graph (the sums proved to vanish are
  0, x written through the normalized node so the cache need not keep x);
* ``backward_test``: the staged chain rule of the test-mode (affine) graph;
* ``backward2``: the double backward (reverse mode over the backward graph), its upstream adjoints
  ``bar_dx``, ``bar_dgamma``, ... in, the gradients of dout, x and the parameters out;
* ``forward_step`` / ``backward_step``: generated.torch's training pair (:mod:`derive.ir.step`): the
  forward without the per-element values, the compact backward recomputing them from x; and
  ``forward_test_step`` / ``backward_test_step``, the same of test mode.

Everything is in code names (:mod:`derive.ir.names`); what each function reads comes from free
symbols, and the loop schedule of each (:mod:`derive.ir.schedule`) is decided here, once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import sympy as sp

from ..forward.graph import BATCH, RUNNING, Constant, Model, Running
from ..math.algebra import Const, Elem, M
from ..math.derivation import Derivation
from .bodies import (
    Assign,
    Second,
    abbreviate,
    compact,
    facade_updates,
    forward,
    name_sums,
    second,
    split_bodies,
    staged,
)
from .domains import domain_bodies, import_gradients
from .names import Names
from .schedule import Schedule, schedule
from .step import recomputed

__all__ = ["Assign", "DomainIR", "Function", "KernelIR", "Second", "Split", "abbreviate", "build", "facade_updates",
           "is_scalar"]


def is_scalar(s: sp.Symbol) -> bool:
    """m and the layer's constants: Python numbers in every kernel, not arrays."""
    return s == M or isinstance(s, Const)


@dataclass(frozen=True)
class Function:
    """One generated function: what it reads, what it assigns in order, what it returns."""

    name: str
    doc: str
    body: tuple[Assign, ...]
    results: tuple[sp.Symbol, ...]      #: what it returns, in order (None-less)
    schedule: Schedule                  #: the same body as loops: passes of group sums, then elements

    @property
    def assigned(self) -> tuple[sp.Symbol, ...]:
        return tuple(a.target for a in self.body)

    @property
    def reads(self) -> tuple[sp.Symbol, ...]:
        """Every symbol it reads that it does not assign, sorted by name."""
        free = set().union(*(a.value.free_symbols for a in self.body)) - set(self.assigned)
        return tuple(sorted(free, key=lambda s: s.name))

    @property
    def arrays(self) -> tuple[sp.Symbol, ...]:
        """What it reads that is an array (not m, not a constant of the layer)."""
        return tuple(s for s in self.reads if not is_scalar(s))

    @property
    def scalars(self) -> tuple[sp.Symbol, ...]:
        return tuple(s for s in self.reads if is_scalar(s))


@dataclass(frozen=True)
class Split:
    """The training functions across processes, for an entry whose groups span the batch
    (:mod:`derive.math.split`): each rank's own statistics, their proved merge, the rest of the
    forward, and the compact backward's group sums (all-reduced in one collective) before the rest."""

    count: sp.Symbol                   #: m_r: a rank's number of elements per group
    m_local: sp.Symbol                 #: the same, as the local statistics divide by it
    local: tuple[Assign, ...]          #: mu_r = (sum of the rank's x)/m_local, ...
    merged: tuple[Assign, ...]         #: mu = PartSum(m_r*mu_r)/PartSum(m_r), ...: PartSum over the ranks
    forward: tuple[Assign, ...]        #: the forward after its statistics (std, xhat, out)
    sums: tuple[Assign, ...]           #: the compact backward's group sums
    backward: tuple[Assign, ...]       #: the rest of it (coefficients, dx, the parameter gradients)


@dataclass(frozen=True)
class DomainIR:
    """An input with its own groups (AdaIN's style features y), on its own working view: the input
    itself, its groups over ``layout.reduce_axes`` and its other axes those of x's groups, in order.

    ``forward`` computes its statistics (one value per group of x, read by every function of the IR
    as leaves); the backward functions return their adjoints ``seeds``, from which ``backward``
    computes its gradient ``grad``.  ``m`` is the size of ITS group."""

    input: Elem
    layout: object                     #: its derive.forward.Input (layout letters, reduce_axes)
    m: sp.Symbol
    axes: str                          #: the name of its reduced axes in a kernel
    stats: tuple[sp.Symbol, ...]
    seeds: tuple[sp.Symbol, ...]       #: d<stat>, one per statistic, in the same order
    forward: tuple[Assign, ...]
    backward: tuple[Assign, ...]
    grad: sp.Symbol


@dataclass(frozen=True)
class KernelIR:
    """Every function of one derivation, in code names, and the facts the templates lay out."""

    spec: object
    names: Names
    x: Elem
    dy: Elem
    output: Elem
    params: tuple[sp.Symbol, ...]
    constants: tuple[Constant, ...]
    running: tuple[Running, ...]          #: buffer, the statistic it tracks, the graph's own update rule
    reads_running: tuple[sp.Symbol, ...]
    stats: tuple[sp.Symbol, ...]          #: the statistics test mode reads from the running buffers
    grads: tuple[sp.Symbol, ...]          #: dx, then one gradient per parameter
    stage_symbols: tuple[sp.Symbol, ...]  #: the staged chain rule's stages (dxhat, dvar, dmu, dx)
    functions: dict[str, Function]
    updates: tuple[Assign, ...]           #: each buffer's new value, by the graph's own rule
    facade_updates: tuple[Assign, ...] = ()  #: the same in the convention of the entry's torch/JAX names
    param_init: tuple = ()                #: (parameter, its identity value: 0 where it is added, else 1)
    buffer_init: tuple = ()               #: (buffer, its starting value: 1 for a nonnegative statistic)
    second: Second | None = None
    split: Split | None = None
    cached: dict = field(default_factory=dict)   #: backward function name -> forward values it reads
    domains: tuple[DomainIR, ...] = ()    #: the inputs with their own groups (their gradients end ``grads``)
    inputs: tuple[sp.Symbol, ...] = ()    #: the inputs that broadcast against x (their gradients follow the params')
    #: (leaf, the axes of the working view it spans; None: every axis) for every parameter and input, when an
    #: input broadcasts or a parameter spans other axes than the layout's param_axes (else empty): a kernel
    #: takes each in its own shape and sums its gradient to that shape
    spans: tuple = ()

    def __getitem__(self, name: str) -> Function:
        return self.functions[name]

    def get(self, name: str) -> Function | None:
        return self.functions.get(name)

    @property
    def has_running(self) -> bool:
        return bool(self.running)

    @property
    def cache_values(self) -> tuple[sp.Symbol, ...]:
        """Every forward value (or leaf) some backward function reads, sorted by name."""
        found = set().union(*self.cached.values()) if self.cached else set()
        return tuple(sorted(found, key=lambda s: s.name))


# --------------------------------------------------------------------------- the whole IR


DOCS = {
    "forward_train": "Forward pass, training mode.",
    "forward_test": "Forward pass, test mode (running statistics).",
    "backward_compact": "Backward pass, the compact form.",
    "backward_staged": "Backward pass, the staged chain rule.",
    "backward_test": "Backward pass, test mode.",
    "backward2": "Double backward: reverse mode over the backward graph.",
    "forward_step": "Forward pass, training mode: the output and per-group values only.",
    "backward_step": "Backward pass, the compact form, recomputing from x the per-element values it reads.",
    "forward_test_step": "Forward pass, test mode (running statistics): the output and per-group values only.",
    "backward_test_step": "Backward pass, test mode, recomputing from x the per-element values it reads.",
}


def _symbols(bodies, model: Model, extra=()) -> set:
    found = set(extra)
    for body in bodies:
        for a in body:
            found.add(a.target)
            found |= a.value.free_symbols
    found |= {model.x, *model.params, *(c.symbol for c in model.constants), *model.reads_running,
              *(r.symbol for r in model.running), *(r.stat for r in model.running)}
    return found - {M, model.dy}


def build(d: Derivation, reserved=()) -> KernelIR:
    """The kernel IR of ``d``: every function, named by one rule (``reserved``: the backends' own names)."""
    model, test = d.model, d.test_model
    refused = _unprinted(d)
    if refused:
        raise NotImplementedError(f"the kernels of {refused} are not printed yet; its derivation is proved")
    raw: dict[str, list[Assign]] = {"forward_train": forward(model, d.lemmas)}
    if test is not None:
        raw["forward_test"] = forward(test, d.lemmas)
    raw["backward_compact"] = compact(d) + import_gradients(d, staged_form=False)
    raw["backward_staged"] = staged(d, d.stages) + import_gradients(d, staged_form=True)
    if test is not None:
        raw["backward_test"] = staged(d, d.test_stages)
    # the double backward of the parameters only (other inputs' adjoints and leaves of their own shapes: not yet;
    # the torch backend then differentiates the printed backward)
    leaves_apart = model.domains or model.inputs or any(_spans(d.spec, p) != tuple(d.spec.param_axes)
                                                        for p in model.params)
    two = second(d) if not leaves_apart else None
    if two is not None:
        raw["backward2"] = two[0]
    raw = {key: name_sums(body) for key, body in raw.items()}
    updates = [Assign(r.symbol, r.update.xreplace({RUNNING: r.symbol, BATCH: r.stat})) for r in model.running]
    facade = facade_updates(model, d.spec.facades) if d.spec.facades.running == "torch" else updates
    upstream = two[1].upstream if two else ()

    parts = split_bodies(d, raw["forward_train"], raw["backward_compact"]) if d.spec.facades.sync else None
    own = {dg.input: sp.Symbol(f"m_{dg.input.name}", positive=True) for dg in d.domains}
    domain_raw = {dg.input: domain_bodies(dg, own[dg.input]) for dg in d.domains}
    names = Names(reserved)
    names.fix(model.dy, "dout")
    extra = list(upstream) + (list(parts[:2]) if parts else []) + list(own.values())
    names.add(_symbols(list(raw.values()) + [updates, facade] + (list(parts[2:]) if parts else [])
                       + [b for pair in domain_raw.values() for b in pair], model, extra))
    names.check()
    rn = names.apply

    def assigns(body):
        return tuple(Assign(names[a.target], rn(a.value)) for a in body)

    domains = tuple(DomainIR(names[dg.input], dict(d.spec.inputs)[dg.input.name], names[own[dg.input]],
                             names.local(f"axes_{names[dg.input].name}"), tuple(names[o] for o in dg.domain.outputs),
                             tuple(names[dg.seeds[o]] for o in dg.domain.outputs),
                             *(assigns(b) for b in domain_raw[dg.input]), names[dg.stages[-1].symbol])
                    for dg in d.domains)
    input_grads = tuple(names[g.collected.symbol] for g in d.grads if g.leaf in model.inputs)
    grads = (names[d.stages[-1].symbol], *(names[p.symbol] for p in d.params), *input_grads,
             *(dm.grad for dm in domains))
    seeds = tuple(s for dm in domains for s in dm.seeds)
    bodies = {key: assigns(body) for key, body in raw.items()}
    leaves = {names[s] for s in (model.x, *model.params, *model.inputs, *model.stats, *model.reads_running,
                                 *model.imports)}
    leaves |= {dm.input for dm in domains}
    consts = {names[c.symbol] for c in model.constants}
    produced = {a.target for key in ("forward_train", "forward_test") if key in bodies for a in bodies[key]}
    cacheable = produced | leaves | consts | {M}
    groupwise = {s for s in produced if not isinstance(s, Elem)} | {names[s] for s in model.stats}

    def reads(body) -> frozenset:
        free = set().union(*(a.value.free_symbols for a in body)) - {a.target for a in body}
        return frozenset(free & cacheable)

    # an input with its own groups: its backward reads it and its statistics (after any backward function)
    domain_reads = frozenset().union(*(reads(dm.backward) - set(dm.seeds) - {dm.m} | {dm.input} for dm in domains))
    cached = {key: reads(body) | domain_reads for key, body in bodies.items()
              if key.startswith("backward") and key != "backward2"}
    stats = {names[model.output.symbol]} | {names[r.stat] for r in model.running}
    kept = set().union(*cached.values()) | stats
    bodies["forward_step"] = bodies["forward_train"]
    bodies["backward_step"] = recomputed(bodies["forward_train"], bodies["backward_compact"])
    kept_for = {"forward_step": reads(bodies["backward_step"]) | domain_reads | stats}
    if "forward_test" in bodies:
        bodies["forward_test_step"] = bodies["forward_test"]
        bodies["backward_test_step"] = recomputed(bodies["forward_test"], bodies["backward_test"])
        kept_for["forward_test_step"] = reads(bodies["backward_test_step"]) | {names[model.output.symbol]}
    sec = None
    if two is not None:
        sec = Second(tuple(names[u] for u in two[1].upstream),
                     tuple((names[v], names[r] if r is not None else None) for v, r in two[1].results))
    functions = {}
    for key, body in bodies.items():
        if key.startswith("forward"):
            results = tuple(a.target for a in body if a.target in kept_for.get(key, kept))
        elif key == "backward2":
            results = tuple(r for _, r in sec.results if r is not None)
        else:
            results = grads[:len(grads) - len(domains)] + seeds
        given = reads(body) & groupwise
        functions[key] = Function(key, DOCS[key], body, results, schedule(body, results, names.local, given))
    split = Split(names[parts[0]], names[parts[1]], *(assigns(b) for b in parts[2:])) if parts else None
    return KernelIR(
        spec=d.spec, names=names, x=names[model.x], dy=names[model.dy], output=names[model.output.symbol],
        params=tuple(names[p] for p in model.params), inputs=tuple(names[s] for s in model.inputs),
        spans=tuple((names[s].name, _spans(d.spec, s)) for s in (*model.params, *model.inputs))
        if model.inputs or any(_spans(d.spec, p) != tuple(d.spec.param_axes) for p in model.params) else (),
        constants=tuple(dataclasses.replace(c, symbol=names[c.symbol]) for c in model.constants),
        running=tuple(Running(names[r.symbol].name, names[r.stat], rn(r.update)) for r in model.running),
        reads_running=tuple(names[s] for s in model.reads_running),
        stats=tuple(names[r.stat] for r in model.running) if test is not None else (),
        grads=grads, stage_symbols=tuple(names[st.symbol] for st in d.stages),
        param_init=tuple((names[p].name, 0.0 if sp.diff(model.output.definition, p) == 1 else 1.0)
                         for p in model.params),
        buffer_init=tuple((names[r.symbol].name, 1.0 if r.stat.is_nonnegative else 0.0) for r in model.running),
        functions=functions, updates=assigns(updates), facade_updates=assigns(facade), second=sec,
        split=split, cached=cached, domains=domains)


def _spans(spec, leaf: sp.Symbol):
    """The axes of the working view a parameter or input spans, as the layout gives them (None: x's shape)."""
    given = dict(spec.inputs).get(leaf.name)
    if given is not None and given.axes is None and not given.own_groups:
        return None
    return tuple(spec.leaf_axes(leaf.name))


def _unprinted(d: Derivation) -> str:
    """What of ``d`` no backend prints yet ("" when every part is printed)."""
    model, spec = d.model, d.spec
    own = [s.name for s in (*model.params, *model.inputs) if _spans(spec, s) != tuple(spec.param_axes)]
    if own and (spec.groups or d.test_model is not None or spec.batch_axis_option):
        return (f"a graph whose leaves span other axes than param_axes={spec.param_axes} ({', '.join(own)}) "
                "and " + ("groups of channels" if spec.groups else "running statistics"))
    if model.domains and (d.spec.groups or d.test_model is not None):
        return (f"a graph with an input with its own groups ({', '.join(dm.input.name for dm in model.domains)}) "
                "and " + ("groups of channels" if d.spec.groups else "running statistics"))
    return ""
