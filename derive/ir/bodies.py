"""The bodies of the kernel IR's functions, built from a derivation (see :mod:`derive.ir.program`).

Each builder returns a list of :class:`Assign` in the graph's own symbols, in order: the forward pass
(every node and abbreviation as soon as its inputs are there), the compact backward, the staged
backward, the double backward, the split across processes, and torch's running rule where an entry's
facades ask for it.  :func:`name_sums` then gives every group sum inside an expression a name.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..forward.graph import Model
from ..math.algebra import BatchSum, Elem, M, OuterSum, ParamSum, split_by_elements
from ..math.derivation import Derivation
from ..math.lemmas import Lemmas
from .centered import centered


@dataclass(frozen=True)
class Assign:
    target: sp.Symbol
    value: sp.Expr

    @property
    def per_element(self) -> bool:
        return isinstance(self.target, Elem)


@dataclass(frozen=True)
class Second:
    """What the double backward takes and gives, besides its body."""

    upstream: tuple[sp.Symbol, ...]             #: bar_dx, bar_dgamma, ...: adjoints of the backward's outputs
    results: tuple[tuple[sp.Symbol, sp.Symbol | None], ...]  #: (dout, x, each parameter) -> its result or None



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
    available = {model.x, *model.params, *model.scalars, *model.stats, *model.reads_running, *model.imports}
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
    """One gradient per parameter (then per input that broadcasts against x) in the normal form (module
    docstring): a named group sum summed over the outer axes, or, for a leaf that varies inside a group,
    a ParamSum."""
    out = []
    inputs = tuple(g.collected for g in d.grads if g.leaf in d.model.inputs)   # inputs that broadcast: the same
    for p in d.params + inputs:
        local = p.expr.args[0]
        if isinstance(p.expr, OuterSum):   # a per-group value that is not a group sum: summed over the groups
            out.append(Assign(p.symbol, p.expr))
            continue
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
    shifted = centered(d)
    pairs = d.coefficients if shifted is None else shifted[2]
    reductions = sorted({s for c, _ in pairs for s in c.atoms(BatchSum)}, key=sp.default_sort_key) \
        if shifted is not None else d.compact.reductions
    sums = Sums()
    body = ([Assign(shifted[0], shifted[1])] if shifted is not None else []) + [Assign(sums.name(s), s)
                                                                               for s in reductions]
    names = dict(sums.by_sum)
    terms = []
    for c, mono in pairs:
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
        expr = sp.factor_terms(abbreviate(st.expr.xreplace(zero).xreplace(d.lemmas.x_rule), d.lemmas))
        body += collected(st.symbol, expr) if isinstance(st.symbol, Elem) else [Assign(st.symbol, expr)]
    sums = Sums()
    grads = parameter_gradients(d, sums, body)
    return body + grads


def collected(target: sp.Symbol, expr: sp.Expr) -> list[Assign]:
    """A per-element stage with the per-group factors of each of its terms computed first, as one
    per-group coefficient each (dx = dxhat/std + xhat*dx_coef_xhat + dx_coef_1, dx_coef_xhat = 2*dvar*std/m):
    the same stage, but no per-group factor is rounded to the working dtype on its own, where it may
    be far out of range (dvar of a float32 spread of 1e30 is below float32's smallest number while
    2*dvar*std is not)."""
    if expr.has(BatchSum):
        return [Assign(target, expr)]
    try:
        pairs = split_by_elements(expr)
    except sp.PolynomialError:   # a per-element factor inside a function: left as it is
        return [Assign(target, expr)]
    out, terms = [], []
    for coef, mono in pairs:
        if coef.is_Number or coef.is_Symbol:
            terms.append(coef * mono)
            continue
        name = sp.Symbol(coefficient_name(mono, f"{target.name}_"), real=True)
        out.append(Assign(name, coef))
        terms.append(name * mono)
    return out + [Assign(target, sp.Add(*terms))]


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
        # over one denominator, not factored: sympy.factor of these multivariate coefficients picks random
        # evaluation points and took minutes for some draws (seen: 8 min for a graph that factors in 0.2 s;
        # derive.math.seeded now makes each expression's draws the same every run, but a slow one would stay
        # slow), and the kernels are built at every derive build and again where they are verified
        pairs = [(sp.factor_terms(sp.together(c)), mono) for c, mono in split_by_elements(so.compact[r.symbol])]
        for c, mono in pairs:
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
