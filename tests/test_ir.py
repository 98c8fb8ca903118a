"""The kernel IR (derive/ir): one rule for names, one schedule, and a user's layer gets every backend.

Each failure of the issue "One kernel IR" is a test here: a user graph that numba got wrong with no
error, names that crashed the kernels, a running rule torch's backend replaced, a build without torch
or JAX kernels.  Each user graph is built with `derive build` (proved for m <= 2) and its kernels are
compared with torch autograd of the same forward, written in plain torch.
"""
from __future__ import annotations

import importlib
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

from derive import cli
from derive.ir.names import Names
from derive.math.algebra import Elem

torch = pytest.importorskip("torch")


# --------------------------------------------------------------------------- names


def test_names_keep_the_documents_names_and_rename_only_what_cannot_be_used():
    names = Names(reserved={"g", "cache"})
    mu, g, lam, cache = sp.Symbol("mu"), sp.Symbol("g"), sp.Symbol("lambda"), Elem("cache")
    names.add([mu, g, lam, cache])
    assert names.name(mu) == "mu"
    assert names.name(g) != "g" and names.name(lam) != "lambda" and names.name(cache) != "cache"
    assert isinstance(names[cache], Elem)   # a per-element symbol stays one
    names.check()


def test_names_that_python_reads_as_one_are_told_apart():
    micro, mu = sp.Symbol("\u00b5"), sp.Symbol("\u03bc")   # MICRO SIGN and GREEK SMALL LETTER MU
    names = Names()
    names.add([micro, mu])
    import unicodedata
    a, b = (unicodedata.normalize("NFKC", names.name(s)) for s in (micro, mu))
    assert a != b
    names.check()


def test_a_local_of_a_backend_never_takes_a_graph_name():
    names = Names()
    names.add([sp.Symbol("std_g"), sp.Symbol("std")])
    assert names.local("std_g") != "std_g"
    assert names.local("std_g") == names.local("std_g")   # asked twice, the same name


# --------------------------------------------------------------------------- user layers, built


LAYOUT = 'from derive.forward import Spec\nLAYOUT = Spec({name!r}, {title!r}, {layout!r}, {reduce}, {params}, "p"{extra})\n'

GRAPHS = {
    # batch norm with a learned epsilon, all in the output (numba's dgamma was off by 7.4, deps by 52)
    "learned_eps": ("N,D", (0,), (1,), """
        def forward(g):
            x, gamma, beta, e = g.input("x"), g.param("gamma"), g.param("beta"), g.param("e")
            eps = g.constant("eps", 1e-5)
            mu = g.mean("mu", x)
            var = g.mean("var", (x - mu) ** 2)
            g.output(gamma * (x - mu) / g.sqrt(var + eps + e ** 2) + beta)
    """, lambda x, gamma, beta, e: gamma * (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5 + e ** 2)
        + beta),
    # batch norm in one line (numba's dgamma was 6.77 where torch gives -5.39)
    "one_line": ("N,D", (0,), (1,), """
        def forward(g):
            x, gamma, beta = g.input("x"), g.param("gamma"), g.param("beta")
            mu = g.mean("mu", x)
            var = g.mean("var", (x - mu) ** 2)
            g.output(gamma * (x - mu) / g.sqrt(var + g.constant("eps", 1e-5)) + beta)
    """, lambda x, gamma, beta: gamma * (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5) + beta),
    # ScaleNorm's own name g, one gain for the layer, grouped over the last axis (numba: TypingError at x[g, i])
    "scalenorm": ("...,D", (-1,), (), """
        def forward(graph):
            x, g = graph.input("x"), graph.param("g")
            norm = graph.let("norm", graph.sqrt(graph.sum("sq", x ** 2)))
            graph.output(g * x / norm)
    """, lambda x, g: g * x / torch.sqrt((x ** 2).sum(-1, keepdim=True))),
    # layer norm in one line, groups of one allowed (torch's rule): no normalized node, so the compact dx was
    # printed in x, whose coefficients (1/eps**1.5 times terms that sum to 0) cancelled to 3e-9 where dx is 0
    # at a group of one, and derive build refused it; it is printed in x - mu
    "ln_one_line": ("N,D", (1,), (1,), """
        def forward(g):
            x, gamma, beta = g.input("x"), g.param("gamma"), g.param("beta")
            mu = g.mean("mu", x)
            var = g.mean("var", (x - mu) ** 2)
            g.output(gamma * (x - mu) / g.sqrt(var + g.constant("eps", 1e-5)) + beta)
    """, lambda x, gamma, beta: torch.nn.functional.layer_norm(x, (4,), gamma, beta, 1e-5), ", min_group=1"),
    # names Python reads as one (micro sign, Greek mu): the numba kernel was 72% off
    "micro": ("N,D", (0,), (1,), """
        def forward(g):
            x, gamma = g.input("x"), g.param("gamma")
            a = g.mean("\u00b5", x)
            b = g.mean("\u03bc", x ** 2)
            g.output(gamma * (x - a) / g.sqrt(b - a ** 2 + g.constant("eps", 1e-5)))
    """, lambda x, gamma: gamma * (x - x.mean(0)) / torch.sqrt((x ** 2).mean(0) - x.mean(0) ** 2 + 1e-5)),
}


def write_graph(folder, name: str) -> object:
    layout, reduce, params, body = GRAPHS[name][:4]
    extra = GRAPHS[name][5] if len(GRAPHS[name]) > 5 else ""
    path = folder / f"{name}.py"
    path.write_text(LAYOUT.format(name=name, title=name, layout=layout, reduce=reduce, params=params, extra=extra)
                    + textwrap.dedent(body), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every graph above, built by `derive build` into one folder on sys.path."""
    root = tmp_path_factory.mktemp("user_layers")
    for name in GRAPHS:
        assert cli.main(["-q", "--max-m", "2", "build", str(write_graph(root, name)),
                         "--out", str(root / f"{name}_kernels")]) == 0, name
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


def reference(name: str, x: np.ndarray, weights: list, dout: np.ndarray):
    """torch autograd of the plain torch forward: (out, dx, *dweights)."""
    xt = torch.tensor(x, requires_grad=True)
    wt = [torch.tensor(w, requires_grad=True) for w in weights]
    out = GRAPHS[name][4](xt, *wt)
    grads = torch.autograd.grad(out, [xt, *wt], torch.tensor(dout))
    return [out.detach().numpy()] + [g.numpy() for g in grads]


def inputs(name: str):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 4)) * 1.5 + 0.3
    n_params = GRAPHS[name][3].count("param(")
    shape = (4,) if GRAPHS[name][2] else ()    # a parameter per feature, or one for the layer
    weights = [rng.uniform(0.5, 1.5, shape) for _ in range(n_params)]
    return x, weights, rng.standard_normal((6, 4))


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("backend", ["numpy", "numba", "torch", "jax"])
def test_a_user_layer_gets_every_backend_and_each_agrees_with_torch_autograd(built, name, backend):
    if backend in ("numba", "jax"):
        pytest.importorskip(backend)
    x, weights, dout = inputs(name)
    want = reference(name, x, weights, dout)
    package = f"{name}_kernels"
    if backend in ("numpy", "numba"):
        module = importlib.import_module(f"{package}.{name}" if backend == "numpy" else f"{package}.numba.{name}")
        out, cache = getattr(module, f"{name}_forward")(x, *weights, {})
        got = [out, *getattr(module, f"{name}_backward")(dout, cache)]
    elif backend == "torch":
        fn = getattr(importlib.import_module(f"{package}.torch"), name)
        xt = torch.tensor(x, requires_grad=True)
        wt = [torch.tensor(w, requires_grad=True) for w in weights]
        out = fn(xt, *wt)
        got = [out.detach().numpy()] + [g.numpy() for g in torch.autograd.grad(out, [xt, *wt], torch.tensor(dout))]
    else:
        import jax
        jax.config.update("jax_enable_x64", True)
        fn = getattr(importlib.import_module(f"{package}.jax"), name)
        out, vjp = jax.vjp(fn, x, *weights)
        got = [out, *vjp(dout)]
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(np.asarray(g).reshape(w.shape), w, rtol=1e-10, atol=1e-10,
                                   err_msg=f"{backend} {name} output {k}")


# --------------------------------------------------------------------------- running statistics


RUNNING = """
from derive.forward import Spec
LAYOUT = Spec("torchrule", "Batch norm, torch's running rule", "N,D", (0,), (1,), "bn_param")


def forward(g):
    x, gamma, beta = g.input("x"), g.param("gamma"), g.param("beta")
    eps = g.constant("eps", 1e-5)
    mom = g.constant("momentum", 0.1, fraction=True)
    mu = g.mean("mu", x)
    var = g.mean("var", (x - mu) ** 2)
    g.output(gamma * (x - mu) / g.sqrt(var + eps) + beta)
    g.running("running_mean", mu, lambda r, b, c: (1 - c["momentum"]) * r + c["momentum"] * b)
    g.running("running_var", var, lambda r, b, c: (1 - c["momentum"]) * r + c["momentum"] * b * g.m / (g.m - 1))
"""


@pytest.fixture(scope="module")
def torchrule(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrule")
    (root / "torchrule.py").write_text(RUNNING, encoding="utf-8")
    assert cli.main(["-q", "--max-m", "2", "build", str(root / "torchrule.py"), "--out", str(root / "tr")]) == 0
    sys.path.insert(0, str(root))
    yield importlib.import_module("tr")
    sys.path.remove(str(root))


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_every_backend_applies_the_graphs_own_running_rule(torchrule, backend):
    """A graph's own rule, m/(m - 1) included (numba's forward raised NameError: _blocks), is what every
    backend applies; torch's backend used to put torch's momentum average in its place."""
    if backend == "numba":
        pytest.importorskip("numba")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3)) + 2
    gamma, beta = np.ones(3), np.zeros(3)
    mean0, var0 = rng.uniform(0, 1, 3), rng.uniform(1, 2, 3)
    m = x.shape[0]
    want_mean = 0.9 * mean0 + 0.1 * x.mean(0)
    want_var = 0.9 * var0 + 0.1 * x.var(0) * m / (m - 1)
    if backend == "torch":
        rm, rv = torch.tensor(mean0), torch.tensor(var0)
        importlib.import_module("tr.torch").torchrule(torch.tensor(x), torch.tensor(gamma), torch.tensor(beta), rm, rv,
                                                      training=True, momentum=0.1)
        got = rm.numpy(), rv.numpy()
    else:
        module = importlib.import_module("tr.torchrule" if backend == "numpy" else "tr.numba.torchrule")
        params = {"mode": "train", "running_mean": mean0.copy(), "running_var": var0.copy(), "momentum": 0.1}
        module.torchrule_forward(x, gamma, beta, params)
        got = params["running_mean"], params["running_var"]
    np.testing.assert_allclose(got[0], want_mean, rtol=1e-12)
    np.testing.assert_allclose(got[1], want_var, rtol=1e-12)


# --------------------------------------------------------------------------- nothing wrong is written


def test_a_kernel_that_disagrees_with_the_proved_expressions_is_not_written(tmp_path, monkeypatch, capsys):
    """A printed kernel whose arithmetic is off (here numba's dx, one coefficient's sign) stops derive
    build: exit 1, one line naming the backend, the function and the output, nothing written."""
    from derive.output import render
    real = render.render_all

    def broken(derivations, templates=None, **kw):
        files = real(derivations, templates, **kw)
        rel = "numba/one_line.py"
        # the compact dx, in the loops of every strategy (a small input runs the columns')
        broken = (files[rel].replace(" + coef_1[j]", " - coef_1[j]").replace(" + coef_1[q]", " - coef_1[q]")
                  .replace(" + coef_1\n", " - coef_1\n"))
        assert broken != files[rel], "the kernel to break has changed: pick another term"
        files[rel] = broken
        return files
    monkeypatch.setattr(render, "render_all", broken)
    out = tmp_path / "pkg"
    assert cli.main(["-q", "--no-cache", "--max-m", "2", "build", str(write_graph(tmp_path, "one_line")),
                     "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "backend numba" in err and "one_line_backward" in err and "dx" in err
    assert not out.exists()


@pytest.mark.parametrize("strategy", ["wide", "rows"])
def test_a_kernel_wrong_in_one_strategy_only_is_not_written(strategy, tmp_path, monkeypatch, capsys):
    """A small verification case lays out in cols, so derive runs it in every strategy too
    (derive/backends/numba/verify.py).  Broken only in wide (each tile of k one element short) or only
    in rows (the run-constant factors of its sums dropped), layer norm's numba kernels stop derive
    build, naming the strategy."""
    from derive.backends.numba import kernels, wide
    if strategy == "wide":
        monkeypatch.setattr(wide, "BOUNDS", "k0, k1 = t * K // KT, max(t * K // KT, (t + 1) * K // KT - 1)")
    else:
        factors = kernels.Printed.run_factors
        monkeypatch.setattr(kernels.Printed, "run_factors",
                            lambda self, ph: (factors(self, ph)[0], [(1, name) for _, name in factors(self, ph)[1]]))
    out = tmp_path / "pkg"
    assert cli.main(["-q", "--no-cache", "--max-m", "2", "build", str(write_graph(tmp_path, "ln_one_line")),
                     "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "backend numba" in err and f"({strategy})" in err
    assert not out.exists()


def test_a_kernel_contract_wrong_in_one_strategy_only_is_not_written(tmp_path, monkeypatch, capsys):
    """The drivers of the kernel contract (forward_train, backward_train_fused: what generated.torch runs
    on CPU tensors) are other functions than the array API's.  Broken only there and only in wide (each
    tile of k one element short), layer norm's kernels stop derive build: the torch backend runs the
    contract in every strategy too."""
    import re

    from derive.output import render
    real = render.render_all

    def broken(derivations, templates=None, **kw):
        files = real(derivations, templates, **kw)
        rel = "numba/ln_one_line.py"
        blocks = re.split(r"(?m)^(?=@numba|def )", files[rel])
        short = "k0, k1 = t * K // KT, max(t * K // KT, (t + 1) * K // KT - 1)"
        out = [b.replace("k0, k1 = t * K // KT, (t + 1) * K // KT", short) if "_step_wide" in b else b
               for b in blocks]
        assert sum(short in b for b in out) >= 2, "the kernel to break has changed"
        files[rel] = "".join(out)
        return files
    monkeypatch.setattr(render, "render_all", broken)
    out = tmp_path / "pkg"
    assert cli.main(["-q", "--no-cache", "--max-m", "2", "build", str(write_graph(tmp_path, "ln_one_line")),
                     "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "backend torch" in err and "(numba kernels, wide)" in err
    assert not out.exists()


def test_a_kernel_wrong_for_groups_over_several_rows_only_is_not_written(tmp_path, monkeypatch, capsys):
    """The entry's own layout gives layer norm one row a group (O = 1); the kernel contract also takes
    views whose groups run over several rows.  With every loop over those rows cut to the first one
    (right wherever O = 1), layer norm's kernels stop derive build: the torch backend checks each
    mode on a view with one more reduced axis in front (derive.output.cases.over_rows)."""
    from derive.output import render
    real = render.render_all

    def broken(derivations, templates=None, **kw):
        files = real(derivations, templates, **kw)
        rel = "numba/ln_one_line.py"
        files[rel] = files[rel].replace("for o in range(O):", "for o in range(min(O, 1)):")
        assert files[rel].count("range(min(O, 1))") >= 4, "the kernel to break has changed"
        return files
    monkeypatch.setattr(render, "render_all", broken)
    out = tmp_path / "pkg"
    assert cli.main(["-q", "--no-cache", "--max-m", "2", "build", str(write_graph(tmp_path, "ln_one_line")),
                     "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "backend torch" in err and "numba kernels" in err and "over 3 rows" in err
    assert not out.exists()


# --------------------------------------------------------------------------- second derivatives


def test_sync_batch_norm_has_the_derived_second_derivative():
    """generated.sync's backward was not differentiable: gradgradcheck failed, and a gradient penalty's
    gradient was 2.43 where torch's batch_norm gives 8.85."""
    import torch.nn.functional as F

    from generated.sync import sync_batch_norm
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True) + 0.5
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w, b: sync_batch_norm(x, None, None, w, b, True), (x, w, b))
    probe = torch.randn(6, 3, dtype=torch.float64)

    def penalty_gradient(fn):
        out = fn(x, None, None, w, b, True)
        (gx,) = torch.autograd.grad((out * probe).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum(), w)[0]

    torch.testing.assert_close(penalty_gradient(sync_batch_norm), penalty_gradient(F.batch_norm), rtol=1e-10,
                               atol=1e-12)


_VERIFY_COMMITTED = """
import sys
from derive import backends
from derive.forward.library import ENTRIES
from derive.output import render, verify
from _derived import all_default
found = render.builds(list(all_default()))
assert {b.spec.name for b in found} == {e.spec.name for e in ENTRIES}
usable = [b for b in backends.BACKENDS if b.name in ("numpy", "torch", "sync")]
problem = verify.verify("generated", found, usable)
sys.exit(problem)
"""


def test_every_library_entry_is_checked_against_the_proved_expressions_to_the_second_order():
    """What derive checks before writing, run here on the committed package, as derive runs it: in a
    fresh interpreter with NUMBA_DISABLE_JIT, so that the numba kernels that generated.torch sends CPU
    tensors to run as the printed Python loops (compiled, they are tests/test_numba.py's; compiling
    them here took 49 s).  Every entry's NumPy, torch and sync kernels against SymPy, first and second
    order, without a hand-written list of entries."""
    import os
    import subprocess
    from pathlib import Path
    here = Path(__file__).resolve().parent
    path = os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", _VERIFY_COMMITTED], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": path})
    assert done.returncode == 0, done.stderr[-3000:]


def test_no_elementwise_loop_divides_by_a_per_group_value():
    """The loop backends (numba, Triton) multiply each element by 1/std, computed once per group
    (``inv_std``), instead of dividing every element by std: in numba, the forward's elementwise pass
    of batch norm at (2048, 1024) float32 took 2.96 ms dividing and 1.38 ms multiplying.  Checked
    on every function of every library entry: no per-element assignment takes a negative or
    fractional power of a value computed per group."""
    from _derived import all_default
    from derive.output import render
    checked = 0
    for build in render.builds(list(all_default())):
        ir = build.ir
        forward = [a.target for key in ("forward_train", "forward_test") if ir.get(key) for a in ir[key].body]
        statistics = {s for s in forward if not isinstance(s, Elem)} | set(ir.stats)
        for f in ir.functions.values():
            # computed per group in the function, or read from the forward's per-group values (backward_step)
            per_group = {s for p in f.schedule.passes for s, _ in p.group + p.sums} | (set(f.reads) & statistics)
            for target, value in f.schedule.elements:
                slow = [p for p in value.atoms(sp.Pow) if p.base.free_symbols & per_group
                        and not (p.exp.is_Integer and p.exp > 0)]
                assert not slow, (build.spec.name, f.name, target, slow)
                checked += 1
            # no factor of a group sum's summand is one value per group (1/std): the sum is multiplied, once;
            # and no summand (of a sum or of a parameter's gradient) divides by one either
            for p in f.schedule.passes:
                for acc, summand in p.sums:
                    slow = [q for q in sp.Mul.make_args(summand) if q.free_symbols and q.free_symbols <= per_group]
                    assert not slow, (build.spec.name, f.name, acc, slow)
                for acc, summand in p.sums + p.partials:
                    slow = [q for q in summand.atoms(sp.Pow) if q.base.free_symbols & per_group
                            and not (q.exp.is_Integer and q.exp > 0)]
                    assert not slow, (build.spec.name, f.name, acc, slow)
                    checked += 1
            hoisted = [s for p in f.schedule.passes for s, _ in p.group if s.name.startswith("inv_")]
            checked += len(hoisted)
    assert checked > 100


def test_the_training_step_moves_no_per_element_value_but_the_output():
    """generated.torch's training pair (derive.ir.step): forward_step writes the output and per-group
    values only, and backward_step reads x, dout, the leaves and per-group values -- it recomputes x̂
    from x by the forward's own assignment, so a training step neither writes nor reads x̂; the same of
    test mode (forward_test_step, backward_test_step).  Checked for every library entry; its kernels are
    checked against torch autograd by the torch tests."""
    from _derived import all_default

    from derive.output import render
    pairs = 0
    for build in render.builds(list(all_default())):
        ir = build.ir
        for forward, backward, source, proved in (("forward_step", "backward_step", "forward_train", "backward_compact"),
                                                  ("forward_test_step", "backward_test_step", "forward_test",
                                                   "backward_test")):
            if ir.get(forward) is None:
                continue
            pairs += 1
            fwd, bwd = ir[forward], ir[backward]
            written = [s for s in fwd.results if isinstance(s, Elem)]
            assert written == [ir.output], (build.spec.name, forward, written)
            leaves = {ir.x, ir.dy, *ir.params, *ir.inputs, *(dm.input for dm in ir.domains)}
            element_reads = {s for s in bwd.reads if isinstance(s, Elem)}
            assert element_reads <= leaves, (build.spec.name, backward, element_reads - leaves)
            compact = ir[proved]
            recomputed = bwd.body[:len(bwd.body) - len(compact.body)]
            assert bwd.body[len(recomputed):] == compact.body
            assert all(a in ir[source].body and isinstance(a.target, Elem) for a in recomputed)
            assert {a.target for a in recomputed} >= {s for s in compact.reads if isinstance(s, Elem)} - leaves
            assert {s for s in fwd.results if not isinstance(s, Elem)} >= set(bwd.reads) - leaves - set(bwd.scalars) \
                - set(ir.reads_running) - set(ir.stats) - {s for dm in ir.domains for s in dm.stats}
    assert pairs > 11
