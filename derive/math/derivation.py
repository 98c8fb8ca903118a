"""Run the derivation pipeline for one entry: graph -> lemmas -> stages -> compact -> proofs.

Equal math is derived and proved once: results are kept by a key made of the
graph (its nodes, in both modes), M, the extra claims and the engine's own
source, in memory for the run and on disk between runs (see :func:`cache_dir`).
``use_cache=False`` proves from scratch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from ..forward.graph import Model
from ..forward.layout import Spec
from ..forward.library import Entry
from ..proofs import first as proofs
from ..proofs import hints, leaves, rules
from ..proofs import second as proofs_second
from . import closed_form, second_order, stages
from . import domains as domains_mod
from . import domains_second as domains_second_mod
from . import lemmas as lemmas_mod

ENGINE = ("math/algebra", "proofs/exact", "forward/graph", "math/lemmas", "math/stages", "math/closed_form",
          "proofs/first", "math/derivation", "forward/claims",
          "math/second_order", "proofs/second", "proofs/tape", "proofs/ring",
          "forward/functions", "forward/model", "math/domains", "math/domains_second", "proofs/leaves",
          "proofs/rules", "proofs/hints")


@dataclass(frozen=True)
class Derivation:
    spec: Spec
    model: Model
    lemmas: lemmas_mod.Lemmas
    stages: tuple[stages.Stage, ...]
    params: tuple[stages.Stage, ...]
    compact: closed_form.Compact
    coefficients: list[tuple[sp.Expr, sp.Expr]]
    jacobian: sp.Expr
    symbolic: proofs.Symbolic
    test_model: Model | None
    test_stages: tuple[stages.Stage, ...]
    proofs: tuple[proofs.Proof, ...]
    max_m: int
    timings: dict[str, float]
    second: second_order.SecondOrder | None = None   #: the double backward (training mode); None at order 1
    cache_key: str = ""   #: the key of the math (see key): the same for a fresh and a kept derivation
    kept: bool = False    #: taken from earlier proofs (this process's or the disk cache), not proved by this call
    #: one per leaf besides x (params, other inputs, imported statistics): staged, compact, collected
    grads: tuple[closed_form.Gradient, ...] = ()
    test_grads: tuple[closed_form.Gradient, ...] = ()   #: the same in test mode (no lemmas used)
    domains: tuple = ()   #: one derive.math.domains.DomainGradient per input with its own groups
    order: int = 2        #: 1: first order only (no second); 2: the double backward too
    domains_second: tuple = ()  #: one derive.math.domains_second.DomainSecond per input with its own groups

    @property
    def running_stats(self) -> bool:
        return bool(self.model.running)


def cache_dir() -> Path:
    root = os.environ.get("NORMDERIVE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "normderive")
    return Path(root) / "proofs"


def engine_version() -> str:
    here = Path(__file__).resolve().parents[1]
    text = "".join((here / f"{m}.py").read_text(encoding="utf-8") for m in ENGINE)
    return hashlib.sha256((text + sp.__version__).encode()).hexdigest()[:16]


def key(entry: Entry, max_m: int, order: int = 2) -> str:
    def math(model: Model) -> str:
        return sp.srepr((model.x, model.params, [(c.symbol, c.default) for c in model.constants],
                         [(n.symbol, n.definition, n.kind) for n in model.lets + model.nodes],
                         model.stats, [(r.buffer, r.stat, r.update) for r in model.running],
                         model.reads_running, model.inputs,
                         [(d.input, [(n.symbol, n.definition) for n in d.nodes], d.outputs) for d in model.domains]))
    g = entry.graph()
    text = "|".join([math(g.model(True)), math(g.model(False)), str(max_m), engine_version(),
                     ",".join(getattr(e, "__name__", repr(e)) for e in entry.extras)]
                    + ([f"order {order}"] if order != 2 else []))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


_MEMORY: dict[str, Derivation] = {}

#: what derive's progress line says of a derivation taken from earlier proofs
KEPT = "kept from an earlier run"


def _kept(k: str) -> Derivation | None:
    """The proofs of key ``k`` from this process or the disk cache, if any."""
    found = _MEMORY.get(k)
    if found is None:
        found = load(k)
        if found is not None:
            _MEMORY[k] = found
    return found


def derive(entry: Entry, max_m: int, progress=None, use_cache: bool = True, order: int = 2) -> Derivation:
    """Derive and prove everything about ``entry`` (``order`` 1: no second order); raises ProofError on
    the first failure.  A derivation taken from earlier proofs has ``kept`` set, and ends its progress
    line so."""
    k = key(entry, max_m, order)
    found = _kept(k) if use_cache else None
    if found is None:
        found = _derive(entry, max_m, progress, order)
        _MEMORY[k] = found
        store(k, found)  # fresh proofs are kept even with use_cache=False
    else:
        found = dataclasses.replace(found, kept=True)
        if progress is not None:
            getattr(progress, "finish", progress)(KEPT)
    if found.cache_key != k:
        found = dataclasses.replace(found, cache_key=k)
    return rename(found, entry.spec)


def derive_many(entries, max_m: int, progress=None, use_cache: bool = True,
                workers: int | None = None, order: int = 2) -> list[Derivation]:
    """Every entry; equal math is derived once, and what is not cached is proved in parallel
    worker processes (one per core).  ``progress``: a derive.progress.Progress, or None."""
    keys = [key(e, max_m, order) for e in entries]
    todo: dict[str, Entry] = {}
    for k, e in zip(keys, entries):
        if k not in todo and not (use_cache and _kept(k) is not None):
            todo[k] = e
    workers = min(len(todo), workers or os.cpu_count() or 1)
    if threading.active_count() > 1 or "jax" in sys.modules:
        workers = 1  # forking a multithreaded process (JAX's, a test runner's) can deadlock the child
    if workers > 1:
        import concurrent.futures as cf
        import multiprocessing
        if progress:
            progress.line(f"proving {len(todo)} graphs (m <= {max_m} and symbolic m) in {workers} processes: "
                          + ", ".join(e.spec.name for e in todo.values()))
        _FORKED[:] = list(todo.values())  # the workers inherit the entries: their claims are closures
        fork = multiprocessing.get_context("fork")
        ignore_ctrl_c = {"initializer": signal.signal, "initargs": (signal.SIGINT, signal.SIG_IGN)}
        with cf.ProcessPoolExecutor(workers, mp_context=fork, **ignore_ctrl_c) as pool:
            try:  # the workers ignore Ctrl-C: this process stops them, now rather than after their queue
                futures = {pool.submit(_derive_forked, n, max_m, order): k for n, k in enumerate(todo)}
                for future in cf.as_completed(futures):
                    k = futures[future]
                    _MEMORY[k] = future.result()
                    store(k, _MEMORY[k])  # fresh proofs are kept even with use_cache=False
                    if progress:
                        took = sum(_MEMORY[k].timings.values())
                        progress.line(f"  {todo[k].spec.name}: proved in {took:.1f} s")
            except BaseException:
                for process in list((pool._processes or {}).values()):  # noqa: SLF001 (public in 3.14)
                    process.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    out: list[Derivation] = []
    first: dict[str, str] = {}
    for e, k in zip(entries, keys):
        name = e.spec.name
        if k in todo and (workers > 1 or k in first):  # proved by this call
            if k in first and progress:
                progress.line(f"  {name}: the same graphs as {first[k]}, proved above")
            out.append(rename(dataclasses.replace(_MEMORY[k], cache_key=k), e.spec))
        else:
            say = progress.variant(name) if progress else None
            out.append(derive(e, max_m, say, use_cache=use_cache, order=order))
            if progress:
                progress.end()
        first.setdefault(k, name)
    return out


_FORKED: list = []


def _derive_forked(n: int, max_m: int, order: int = 2) -> Derivation:
    return _derive(_FORKED[n], max_m, order=order)


def rename(d: Derivation, spec: Spec) -> Derivation:
    """The same math under another entry's layout and name."""
    if d.spec == spec:
        return d
    model = dataclasses.replace(d.model, name=spec.name)
    test = dataclasses.replace(d.test_model, name=spec.name) if d.test_model is not None else None
    return dataclasses.replace(d, spec=spec, model=model, test_model=test,
                               symbolic=dataclasses.replace(d.symbolic, model=model))


def render_key(derivations, templates: Path, package: str) -> str:
    """The key of one render: the derivations, every template and every module of derive."""
    here = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(package.encode())
    for path in sorted(here.rglob("*.py")) + sorted(Path(templates).glob("*.jinja")):
        h.update(path.name.encode() + path.read_bytes())
    for d in derivations:  # the math by its key (a pickle of a kept derivation differs from a fresh one's)
        h.update((d.cache_key or pickle.dumps(d).hex()).encode() + repr(d.spec).encode())
    return h.hexdigest()[:24]


def load(k: str, kind: str = "proofs"):
    path = cache_dir().parent / kind / f"{k}.pickle"
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception:  # a missing, partial or older cache entry is proved again
        return None


def store(k: str, d, kind: str = "proofs") -> None:
    path = cache_dir().parent / kind / f"{k}.pickle"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_bytes(pickle.dumps(d))
            os.replace(tmp, path)
        except BaseException:  # Ctrl-C included: no temporary file is left behind
            tmp.unlink(missing_ok=True)
            raise
    except OSError:  # an unwritable cache only costs time
        pass


def _derive(entry: Entry, max_m: int, progress=None, order: int = 2) -> Derivation:
    say = progress or (lambda _: None)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    graph = entry.graph()
    train = graph.model(training=True)
    say("lemmas")
    lem = lemmas_mod.find(train, min(max_m, 3))
    say("stages")
    staged = stages.backward(train)
    grads = closed_form.gradients(train, lem)
    params = tuple(g.collected for g in grads if g.leaf in train.params)
    collected = tuple(g.collected for g in grads)
    domains = domains_mod.derive_all(train)
    say("compact form")
    compact = closed_form.compact(lem, staged)
    jac = proofs.jacobian_entry(train, lem)
    second, domains_second = None, ()
    if order == 2:
        say("second order")
        second = second_order.derive(train, lem, compact, collected, staged[-1].symbol)
        domains_second = domains_second_mod.derive_all(train, domains, second)
    timings["derive"] = time.perf_counter() - t

    t = time.perf_counter()
    try:
        log = rules.prove(train)
        log += proofs.prove_sizes(train, staged, compact, jac, collected, max_m, lem,
                                  (lambda s: say(f"proving {s}")) if progress else None)
        say("proving symbolic m")
        symbolic = proofs.prove_symbolic(train, staged, compact, jac, lem, entry.extras)
        log += symbolic.proofs + leaves.prove_compact(train, grads, lem)
        for dg in domains:
            log += leaves.prove_domain(train, dg, max_m)
        if second is not None:
            log += proofs_second.prove_sizes(train, second, max_m,
                                             (lambda s: say(f"proving {s}")) if progress else None)
            say("proving the second order for symbolic m")
            log += proofs_second.prove_symbolic(train, second, jac, lem)
            for ds in domains_second:
                log += leaves.prove_domain_second(train, ds, max_m)
        test_model, test_stages, test_grads = None, (), ()
        if graph.has_running:
            say("test mode")
            test_model = graph.model(training=False)
            test_stages = stages.backward(test_model)
            log += proofs.prove_test_mode(test_model, test_stages, max_m)
            if test_model.differentiable and any(g.compact is not g.stage.expr for g in grads):
                test_grads = closed_form.gradients(test_model, lemmas_mod.Lemmas())
                log += leaves.prove_test_mode(test_model, test_grads, max_m)
    except proofs.ProofError as e:
        raise hints.explained(e, train, order) from None
    timings["prove"] = time.perf_counter() - t
    return Derivation(entry.spec, train, lem, staged, params, compact,
                      closed_form.coefficients(compact.dx), jac, symbolic,
                      test_model, test_stages, tuple(log), max_m, timings, second,
                      grads=grads, test_grads=test_grads, domains=domains, order=order,
                      domains_second=domains_second)
