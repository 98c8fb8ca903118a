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
  ``bar_dx``, ``bar_dgamma``, ... in, the gradients of dout, x and the parameters out.

Everything is in code names (:mod:`derive.ir.names`); what each function reads comes from free
symbols, and the loop schedule of each (:mod:`derive.ir.schedule`) is decided here, once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import sympy as sp

from ..forward.graph import BATCH, RUNNING, Constant, Model, Running
from ..math.algebra import M, BatchSum, Const, Elem, OuterSum, ParamSum
from ..math.derivation import Derivation
from ..math.lemmas import Lemmas
from .names import Names
from .schedule import Schedule, schedule


@dataclass(frozen=True)
class Assign:
    target: sp.Symbol
    value: sp.Expr

    @property
    def per_element(self) -> bool:
        return isinstance(self.target, Elem)


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
class Second:
    """What the double backward takes and gives, besides its body."""

    upstream: tuple[sp.Symbol, ...]             #: bar_dx, bar_dgamma, ...: adjoints of the backward's outputs
    results: tuple[tuple[sp.Symbol, sp.Symbol | None], ...]  #: (dout, x, each parameter) -> its result or None


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


# --------------------------------------------------------------------------- the forward pass


def abbreviate(expr: sp.Expr, lemmas: Lemmas) -> sp.Expr:
    """Every abbreviation (std = sqrt(var + eps), ...) and its powers written as its symbol."""
    return lemmas.fold(lemmas.abbreviate(expr))


def let_value(model: Model, lemmas: Lemmas, let) -> sp.Expr:
    """A let's definition through the lets before it (r = clip(std/std_run, ...)); an inverted
    abbreviation (std) is its own definition, not its own name."""
    before = model.lets[:model.lets.index(let)]
    others = {other.definition: other.symbol for other in before}
    own = Lemmas(lemmas.roots, lemmas.inverses, lemmas.x_rule, lemmas.variable, lemmas.sums,
                 tuple(f for f in lemmas.folds if f[1] != let.symbol), lemmas.proved)
    value = own.fold(own.abbreviate(let.definition.xreplace(others)))
    return let.definition.xreplace(others) if let.symbol in value.free_symbols else value


def node_value(model: Model, lemmas: Lemmas, node) -> sp.Expr:
    """A node written with the lets (test mode's lets are not among the training folds)."""
    own = {let.definition: let.symbol for let in model.lets}
    return abbreviate(node.definition, lemmas).xreplace(own)


def forward(model: Model, lemmas: Lemmas) -> list[Assign]:
    """Every node in order, each let as soon as its inputs are there."""
    out: list[Assign] = []
    available = {model.x, *model.params, *model.scalars, *model.stats, *model.reads_running}
    done: set = set()

    def ready():
        for let in model.lets:
            value = let_value(model, lemmas, let)
            if let.symbol not in done and value.free_symbols <= available:
                done.add(let.symbol)
                available.add(let.symbol)
                out.append(Assign(let.symbol, value))

    for node in model.nodes:
        ready()
        out.append(Assign(node.symbol, node_value(model, lemmas, node)))
        available.add(node.symbol)
    ready()
    return out


# --------------------------------------------------------------------------- the backward passes


def sum_name(s: BatchSum, target: sp.Symbol | None = None) -> str:
    """sum_dout_xhat for sum_k dout_k*xhat_k; a summand that is not a product of symbols is named
    after what it computes (sum_dgamma)."""
    factors = sp.Mul.make_args(s.args[0])
    if all(f.is_Symbol for f in factors):
        return "sum_" + "_".join(sorted(f.name for f in factors))
    return "sum_" + (target.name if target is not None else "summand")


def coefficient_name(mono: sp.Expr, prefix: str = "") -> str:
    body = "_".join(sorted(str(f) for f in sp.Mul.make_args(mono))) if mono != 1 else "1"
    return f"{prefix}coef_{body}"


class Sums:
    """The named group sums of one function: one symbol per distinct BatchSum."""

    def __init__(self):
        self.by_sum: dict[BatchSum, sp.Symbol] = {}

    def name(self, s: BatchSum, target: sp.Symbol | None = None) -> sp.Symbol:
        if s not in self.by_sum:
            base, k = sum_name(s, target), 1
            name = base
            while name in {v.name for v in self.by_sum.values()}:
                name, k = f"{base}_{k}", k + 1
            self.by_sum[s] = sp.Symbol(name, real=True)
        return self.by_sum[s]


def parameter_gradients(d: Derivation, sums: Sums, body: list[Assign]) -> list[Assign]:
    """One gradient per parameter in the normal form (module docstring): a named group sum summed
    over the outer axes, or, for a parameter that varies inside a group, a ParamSum."""
    out = []
    for p in d.params:
        local = p.expr.args[0]
        if isinstance(p.wrt, Elem):
            out.append(Assign(p.symbol, ParamSum(local)))
            continue
        s = BatchSum(local)
        if s not in sums.by_sum:
            body.append(Assign(sums.name(s, p.symbol), s))
        out.append(Assign(p.symbol, OuterSum(sums.by_sum[s])))
    return out


def compact(d: Derivation) -> list[Assign]:
    """The compact form: its group sums, its per-group coefficients, dx, the parameter gradients."""
    sums = Sums()
    body = [Assign(sums.name(s), s) for s in d.compact.reductions]
    names = dict(sums.by_sum)
    terms = []
    for c, mono in d.coefficients:
        if c.is_Number:
            terms.append(c * mono)
            continue
        coef = sp.Symbol(coefficient_name(mono), real=True)
        body.append(Assign(coef, c.xreplace(names)))
        terms.append(coef * mono)
    dx = Assign(d.stages[-1].symbol, sp.Add(*terms))
    grads = parameter_gradients(d, sums, body)
    return body + [dx] + grads


def staged(d: Derivation, stages) -> list[Assign]:
    """The stages as the kernels compute them: the sums proved to vanish are 0, and x is written
    through the cached normalized node (x = mu + std*xhat), so the backward needs neither the
    caller's x nor a rebuilt copy of it; then the parameter gradients."""
    zero = {s: sp.Integer(0) for s in d.symbolic.vanishing}
    body = []
    for st in stages:
        expr = st.expr.xreplace(zero).xreplace(d.lemmas.x_rule)
        body.append(Assign(st.symbol, sp.factor_terms(abbreviate(expr, d.lemmas))))
    sums = Sums()
    grads = parameter_gradients(d, sums, body)
    return body + grads


def second(d: Derivation) -> tuple[list[Assign], Second] | None:
    """The double backward: its group sums, per result its coefficients and the result; a result
    with no path from its input (mean-only batch norm's x) is None."""
    so = d.second
    if so is None:
        return None
    sums = Sums()
    body = [Assign(sums.name(s), s) for s in so.reductions]
    names = dict(sums.by_sum)
    by_input = {}
    for r in so.results:
        terms = []
        for c, mono in so.coefficients(r.symbol):
            if c.is_Number:
                terms.append(c * mono)
                continue
            coef = sp.Symbol(coefficient_name(mono, f"{r.symbol.name}_"), real=True)
            body.append(Assign(coef, d.lemmas.fold(c.xreplace(names))))
            terms.append(coef * mono)
        value = sp.Add(*terms)
        if value == 0:
            continue
        target = r.symbol
        if r.wrt in d.model.params:   # a parameter's gradient has the parameter's shape, not x's
            value = ParamSum(value) if isinstance(r.wrt, Elem) else OuterSum(value)
            target = sp.Symbol(r.symbol.name, real=True)
        body.append(Assign(target, value))
        by_input[r.wrt] = target
    inputs = (d.model.dy, d.model.x, *d.model.params)
    return body, Second(tuple(so.graph.upstream), tuple((v, by_input.get(v)) for v in inputs))


def name_sums(body: list[Assign]) -> list[Assign]:
    """Every group sum inside an expression becomes an assignment of its own, named by
    :func:`sum_name` (mu = sum_x/m), so that a loop backend accumulates into a named value and every
    backend prints the same steps.  A sum is computed once, where it is first needed: a later
    assignment of the same sum is dropped (same name) or reads the first one (another name)."""
    sums = Sums()
    taken = {a.target.name for a in body}
    out = []
    for a in body:
        if isinstance(a.value, BatchSum):
            first = sums.by_sum.get(a.value)
            if first is None:
                sums.by_sum[a.value] = a.target
                out.append(a)
            elif first != a.target:
                out.append(Assign(a.target, first))
            continue
        inner = sorted(a.value.atoms(BatchSum), key=sp.default_sort_key)
        for s in inner:
            if s not in sums.by_sum:
                later = next((b.target for b in body if b.value == s), None)   # its own name, if it has one
                name = later if later is not None else sums.name(s, a.target)
                while later is None and name.name in taken:
                    name = sp.Symbol(name.name + "_", real=True)
                sums.by_sum[s] = name
                out.append(Assign(name, s))
        out.append(Assign(a.target, a.value.xreplace({s: sums.by_sum[s] for s in inner})))
    return out


def split_bodies(d: Derivation, forward_body: list[Assign], compact_body: list[Assign]):
    """The split of the training functions across processes (see :class:`Split`), in graph names."""
    from ..math.split import COUNT, split
    s = split(d.model, d.compact.dx)
    m_local = sp.Symbol("m_local", positive=True)
    to_local = {mg.stat: mg.local for mg in s.forward}
    local = [Assign(mg.local, mg.definition.xreplace(to_local).xreplace({M: m_local})) for mg in s.forward]
    merged = [Assign(mg.stat, mg.merged) for mg in s.forward]
    stats = {mg.stat for mg in s.forward}
    rest = [a for a in forward_body if not isinstance(a.value, BatchSum) and a.target not in stats]
    sums = [a for a in compact_body if isinstance(a.value, BatchSum)]
    backward = [a for a in compact_body if not isinstance(a.value, BatchSum)]
    return COUNT, m_local, local, merged, rest, sums, backward


def facade_updates(model: Model, facades) -> list[Assign]:
    """torch's running statistics: running <- (1 - momentum)*running + momentum*batch, momentum being the
    layer's fraction constant that the graph's own rule reads (torch's meaning of it), and the buffers
    in ``facades.unbiased`` tracking the unbiased statistic batch*m/(m - 1)."""
    out = []
    for r in model.running:
        fractions = [c.symbol for c in model.constants if c.fraction and r.update.has(c.symbol)]
        if len(fractions) != 1:
            raise ValueError(f"{model.name}: torch's running convention needs one momentum in the update of "
                             f"{r.buffer}, found {len(fractions)}")
        mom = fractions[0]
        batch = r.stat * (M / (M - 1) if r.buffer in facades.unbiased else 1)
        out.append(Assign(r.symbol, (1 - mom) * r.symbol + mom * batch))
    return out


# --------------------------------------------------------------------------- the whole IR


DOCS = {
    "forward_train": "Forward pass, training mode.",
    "forward_test": "Forward pass, test mode (running statistics).",
    "backward_compact": "Backward pass, the compact form.",
    "backward_staged": "Backward pass, the staged chain rule.",
    "backward_test": "Backward pass, test mode.",
    "backward2": "Double backward: reverse mode over the backward graph.",
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
    raw: dict[str, list[Assign]] = {"forward_train": forward(model, d.lemmas)}
    if test is not None:
        raw["forward_test"] = forward(test, d.lemmas)
    raw["backward_compact"] = compact(d)
    raw["backward_staged"] = staged(d, d.stages)
    if test is not None:
        raw["backward_test"] = staged(d, d.test_stages)
    two = second(d)
    if two is not None:
        raw["backward2"] = two[0]
    raw = {key: name_sums(body) for key, body in raw.items()}
    updates = [Assign(r.symbol, r.update.xreplace({RUNNING: r.symbol, BATCH: r.stat})) for r in model.running]
    facade = facade_updates(model, d.spec.facades) if d.spec.facades.running == "torch" else updates
    upstream = two[1].upstream if two else ()

    parts = split_bodies(d, raw["forward_train"], raw["backward_compact"]) if d.spec.facades.sync else None
    names = Names(reserved)
    names.fix(model.dy, "dout")
    extra = list(upstream) + (list(parts[:2]) if parts else [])
    names.add(_symbols(list(raw.values()) + [updates, facade] + (list(parts[2:]) if parts else []), model, extra))
    names.check()
    rn = names.apply

    def assigns(body):
        return tuple(Assign(names[a.target], rn(a.value)) for a in body)

    grads = (names[d.stages[-1].symbol], *(names[p.symbol] for p in d.params))
    bodies = {key: assigns(body) for key, body in raw.items()}
    leaves = {names[s] for s in (model.x, *model.params, *model.stats, *model.reads_running)}
    consts = {names[c.symbol] for c in model.constants}
    produced = {a.target for key in ("forward_train", "forward_test") if key in bodies for a in bodies[key]}
    cacheable = produced | leaves | consts | {M}

    def reads(body) -> frozenset:
        free = set().union(*(a.value.free_symbols for a in body)) - {a.target for a in body}
        return frozenset(free & cacheable)

    cached = {key: reads(body) for key, body in bodies.items() if key.startswith("backward") and key != "backward2"}
    kept = set().union(*cached.values()) | {names[model.output.symbol]} | {names[r.stat] for r in model.running}
    sec = None
    if two is not None:
        sec = Second(tuple(names[u] for u in two[1].upstream),
                     tuple((names[v], names[r] if r is not None else None) for v, r in two[1].results))
    functions = {}
    for key, body in bodies.items():
        if key.startswith("forward"):
            results = tuple(a.target for a in body if a.target in kept)
        elif key == "backward2":
            results = tuple(r for _, r in sec.results if r is not None)
        else:
            results = grads
        functions[key] = Function(key, DOCS[key], body, results, schedule(body, results))
    split = Split(names[parts[0]], names[parts[1]], *(assigns(b) for b in parts[2:])) if parts else None
    return KernelIR(
        spec=d.spec, names=names, x=names[model.x], dy=names[model.dy], output=names[model.output.symbol],
        params=tuple(names[p] for p in model.params),
        constants=tuple(dataclasses.replace(c, symbol=names[c.symbol]) for c in model.constants),
        running=tuple(Running(names[r.symbol].name, names[r.stat], rn(r.update)) for r in model.running),
        reads_running=tuple(names[s] for s in model.reads_running),
        stats=tuple(names[r.stat] for r in model.running) if test is not None else (),
        grads=grads, stage_symbols=tuple(names[st.symbol] for st in d.stages),
        param_init=tuple((names[p].name, 0.0 if sp.diff(model.output.definition, p) == 1 else 1.0)
                         for p in model.params),
        buffer_init=tuple((names[r.symbol].name, 1.0 if r.stat.is_nonnegative else 0.0) for r in model.running),
        functions=functions, updates=assigns(updates), facade_updates=assigns(facade), second=sec,
        split=split, cached=cached)
