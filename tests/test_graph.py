"""The graph API: bad graphs get one line naming the node, lemmas are found and proved,
and a user's file becomes an importable, proved package (derive build)."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from derive import cli
from derive.forward.graph import Graph, GraphError
from derive.forward.library import BY_NAME, ENTRIES
from derive.math import lemmas
from derive.math.algebra import M

ROOT = Path(__file__).resolve().parent.parent


def build(forward, name="t"):
    g = Graph(name)
    forward(g)
    return g.model()


def test_an_undefined_symbol_is_named():
    def forward(g):
        x = g.input("x")
        g.output(x / sp.Symbol("sigma"))
    with pytest.raises(GraphError, match="node 'out': undefined symbol sigma"):
        build(forward)


def test_a_function_without_a_derivative_rule_is_named():
    def forward(g):
        x = g.input("x")
        mu = g.mean("mu", x)
        g.output(sp.Function("f")(x - mu))
    with pytest.raises(GraphError, match="node 'out': f has no derivative rule"):
        build(forward)


def test_max_of_two_is_a_clamp_and_of_three_is_refused():
    from derive.forward.functions import ClampMin

    def forward(g):
        x = g.input("x")
        s = g.sum("s", x ** 2)
        g.output(x / sp.Max(s, 1))
    assert build(forward).output.definition.has(ClampMin)

    def three(g):
        x = g.input("x")
        s = g.sum("s", x ** 2)
        g.output(x / sp.Max(s, 1, x))
    with pytest.raises(GraphError, match="node 'out': Max of 3 arguments .*g.max"):
        build(three)


def test_a_reduction_without_the_input_and_a_name_used_twice():
    def forward(g):
        x = g.input("x")
        g.param("x")
    with pytest.raises(GraphError, match="param 'x': the name is already used"):
        build(forward)
    with pytest.raises(GraphError, match="reduction 'c': the summand has no per-element"):
        build(lambda g: (g.input("x"), g.mean("c", 1)))


def test_a_graph_without_output():
    with pytest.raises(GraphError, match="no output"):
        build(lambda g: g.input("x"))


def test_batchnorm_lemmas_are_found_from_the_graph():
    model = BY_NAME["batchnorm"].model()
    s = model.symbols
    found = lemmas.find(model, 3)
    assert found.inverses == {s["var"]: s["std"] ** 2 - s["eps"]}
    assert found.x_rule == {model.x: s["mu"] + s["std"] * s["xhat"]}
    assert found.sums[s["xhat"]] == 0
    assert sp.simplify(found.sums[s["xhat"] ** 2] - M * (s["std"] ** 2 - s["eps"]) / s["std"] ** 2) == 0
    assert len(found.proved) == 4


def test_a_graph_without_sum_facts_still_gets_its_backward():
    """L2 normalization: sum_k out_k is not fixed by the graph, so it is not a fact."""
    model = BY_NAME["l2_normalize"].model()
    found = lemmas.find(model, 3)
    out = model.output.symbol
    assert out not in found.sums and out ** 2 in found.sums


def test_a_false_sum_fact_is_caught(monkeypatch):
    """The sum facts are checked with the sums written out, not taken on trust."""
    real = lemmas.sum_of

    def wrong(expr, model, powers):
        value = real(expr, model, powers)
        return None if value is None else value + 1
    monkeypatch.setattr(lemmas, "sum_of", wrong)
    with pytest.raises(lemmas.LemmaError, match="sum_k xhat_k"):
        lemmas.find(BY_NAME["batchnorm"].model(), 2)


def test_every_entry_is_small_and_its_own_file():
    for entry in ENTRIES:
        assert entry.source.count("\n") <= 30, entry.spec.name


def test_derive_build_a_users_file(tmp_path):
    out = tmp_path / "pixelnorm_kernels"
    code = cli.main(["--max-m", "3", "build", str(ROOT / "examples" / "pixelnorm.py"), "--out", str(out)])
    assert code == 0
    assert (out / "derivations" / "pixelnorm.md").exists() and (out / "SUMMARY.md").exists()
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("pixelnorm_kernels")
        x = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
        y, cache = module.pixelnorm_forward(x, {})
        np.testing.assert_allclose(y, x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-8), rtol=1e-12)
        dout = np.random.default_rng(1).normal(size=x.shape)
        (dx,) = module.pixelnorm_backward(dout, cache)
        import torch
        tx = torch.tensor(x, requires_grad=True)
        (tx / torch.sqrt((tx ** 2).mean(-1, keepdim=True) + 1e-8) * torch.tensor(dout)).sum().backward()
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    finally:
        sys.path.remove(str(tmp_path))


def test_derive_build_refuses_a_bad_graph_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("from derive.forward.layout import Spec\n"
                   "LAYOUT = Spec('bad', 'Bad', 'N,D', (0,), (1,), 'b_param')\n"
                   "import sympy as sp\n"
                   "def forward(g):\n    x = g.input('x')\n    g.output(x * sp.Symbol('w'))\n")
    out = tmp_path / "pkg"
    assert cli.main(["build", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "node 'out': undefined symbol w" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_an_unimportable_package_is_not_written(tmp_path, monkeypatch, capsys):
    """A printer that emits code that does not compile is caught before anything is written."""
    from derive.output import render
    real = render.render_all

    def broken(derivations, templates=None, **kw):
        files = real(derivations, templates, **kw)
        rel = "pixelnorm.py"   # the NumPy kernels of the entry
        files[rel] = files[rel].replace("def ", "def (", 1)
        return files
    monkeypatch.setattr(render, "render_all", broken)
    out = tmp_path / "pkg"
    assert cli.main(["--max-m", "2", "build", str(ROOT / "examples" / "pixelnorm.py"), "--out", str(out)]) == 1
    assert "does not compile" in capsys.readouterr().err
    assert not out.exists()


def test_constant_bounds_agree_between_graph_and_layout():
    """A constant's least value is declared twice: in the graph (the symbol the proofs assume,
    g.constant(..., minimum=)) and in the layout (the param-dict check, Spec.minimums)."""
    for entry in ENTRIES:
        declared = {c.symbol.name: c.minimum for c in entry.model().constants if c.minimum is not None}
        assert declared == dict(entry.spec.minimums), entry.spec.name
        assert all(c.symbol.is_nonnegative for c in entry.model().constants)
        assert all(c.symbol.is_positive for c in entry.model().constants if c.minimum != 0)


def test_every_graph_method_and_layout_field_is_documented():
    """docs/graph.md has a section or a table row for each public Graph method and Spec/Input field."""
    import dataclasses
    import re

    from derive.forward.graph import Graph
    from derive.forward.layout import Input, Spec
    text = (ROOT / "docs" / "graph.md").read_text(encoding="utf-8")
    import sympy as sp
    methods = [n for n in vars(Graph) if not n.startswith("_") and n not in ("model", "has_running")
               and not isinstance(vars(Graph)[n], sp.Basic)]
    missing = [n for n in methods if not re.search(rf"`g\.{n}\(", text)]
    missing += [n for n in vars(Graph) if isinstance(vars(Graph)[n], sp.Basic) and f"`g.{n}`" not in text]
    fields = [f.name for f in dataclasses.fields(Spec)]
    missing += [f for f in fields if f"| `{f}` |" not in text]
    missing += [f"Input.{f.name}" for f in dataclasses.fields(Input) if f"`{f.name}`" not in text]
    assert not missing, missing


def test_derive_build_order_1_writes_the_first_order_alone(tmp_path, capsys):
    out = tmp_path / "pn_first"
    code = cli.main(["-q", "--max-m", "2", "build", str(ROOT / "examples" / "pixelnorm.py"), "--out", str(out),
                     "--order", "1"])
    assert code == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["variant", "exact", "for"] and table[2].split()[2] == "-"  # no second order
    document = (out / "derivations" / "pixelnorm.md").read_text(encoding="utf-8")
    assert "second order" not in document.lower()
