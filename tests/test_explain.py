"""`derive explain`: the answers' numbers against PyTorch and NumPy, and their place in the documents.

The numbers printed by the answers come from the proved expressions in 30-digit
arithmetic; here they are recomputed independently -- PyTorch autograd in
float64 for the true gradients, plain NumPy for the naive ones, the generated
kernels for the layouts -- and compared with what the answers print.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sympy as sp
import torch
from _derived import all_default, derived
from _derived import answers as shared_answers

import generated
from derive import cli
from derive.docs import documents
from derive.docs.blocks import Answer, Equation, Para, Table
from derive.forward.library import ENTRIES
from derive.learners import answers_code, explain, numbers, pieces
from derive.math import derivation

ROOT = Path(__file__).resolve().parent.parent
X5 = np.array([float(v) for v in numbers.DATA_X])
DY5 = np.array([float(v) for v in numbers.DATA_DY])
GAMMA, BETA, EPS = float(numbers.GAMMA), float(numbers.BETA), float(numbers.EPSILON)


@pytest.fixture(scope="module")
def answers() -> dict[str, Answer]:
    return shared_answers()


def tables(a: Answer) -> list[Table]:
    return [b for b in a.blocks if isinstance(b, Table)]


def column(t: Table, n: int) -> np.ndarray:
    return np.array([float(row[n]) for row in t.rows])


def torch_bn(x, gamma=GAMMA, beta=BETA, eps=EPS, outside=False):
    mu = x.mean(0)
    var = ((x - mu) ** 2).mean(0)
    std = torch.sqrt(var) + eps if outside else torch.sqrt(var + eps)
    return gamma * (x - mu) / std + beta


def torch_grad(x, dy, **kw) -> np.ndarray:
    x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    (torch_bn(x, **kw) * torch.tensor(dy, dtype=torch.float64)).sum().backward()
    return x.grad.numpy()


def test_naive_numbers_match_torch_and_the_naive_formula(answers):
    values, errors = tables(answers["naive"])
    np.testing.assert_allclose(column(values, 3), torch_grad(X5, DY5), atol=1e-6)
    naive = GAMMA * DY5 / np.sqrt(X5.var() + EPS)
    np.testing.assert_allclose(column(values, 4), naive, atol=1e-6)
    np.testing.assert_allclose(column(values, 5), torch_grad(X5, DY5), atol=1e-6)
    true_err, naive_err = column(errors, 1)
    assert true_err < 1e-9 and naive_err > 0.1
    assert [row[2] for row in errors.rows] == ["passes", "fails"]


def test_bias_gets_no_gradient_and_the_naive_step_drifts(answers):
    u = torch.tensor(X5, dtype=torch.float64)
    t = torch.tensor([float(v) for v in numbers.DATA_T], dtype=torch.float64)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    loss = ((torch_bn(u + b) - t) ** 2).sum() / 2
    loss.backward()
    assert abs(b.grad.item()) < 1e-12
    (steps,) = tables(answers["bias"])
    b_naive, loss_naive, b_true, loss_true = (column(steps, n) for n in (1, 2, 3, 4))
    moves = np.diff(b_naive)
    assert np.all(moves > 0.1) and np.ptp(moves) < 1e-5, "b drifts by the same step every time"
    assert np.all(b_true == 0)
    np.testing.assert_allclose(loss_naive, loss.item(), atol=1e-6)
    np.testing.assert_allclose(loss_true, loss.item(), atol=1e-6)
    # the naive step is lr * gamma * sum(dy) / sigma_eps, with dy = y - t (plain NumPy)
    y = torch_bn(u).detach().numpy()
    step = 0.5 * GAMMA * np.sum(y - t.numpy()) / np.sqrt(X5.var() + EPS)
    assert moves[0] == pytest.approx(-step, abs=1e-5)


def test_eps_placements_differ_as_printed(answers):
    (rows,) = tables(answers["eps"])
    inside, outside = torch_grad(X5, DY5), torch_grad(X5, DY5, outside=True)
    printed = float(rows.rows[0][1])
    measured = np.max(np.abs(inside - outside)) / np.max(np.abs(np.concatenate([inside, outside])))
    assert printed == pytest.approx(measured, rel=0.05)
    constant = np.ones(5)
    assert np.all(np.isfinite(torch_grad(constant, DY5)))
    assert not np.all(np.isfinite(torch_grad(constant, DY5, outside=True)))   # autograd's 0 * inf
    assert float(rows.rows[2][2]) < 1e-6 and float(rows.rows[2][3]) < 1e-6  # both limits pass FD


def test_eps_outside_at_zero_variance_is_the_limit_the_kernel_returns(answers):
    """At a constant group the outside gradient is not undefined: it is gamma (dy - mean dy) / eps,
    what generated/ returns; the answer prints that limit and never calls the gradient undefined."""
    text = explain.to_text(answers["eps"])
    assert "undefined" not in text and "only the inside placement has a gradient" not in text
    limits = [b.rhs.expr for b in answers["eps"].blocks
              if isinstance(b, Equation) and b.lhs.text == "dx^outside_i" and not b.rhs.expr.has(pieces.bn_names(derived("batchnorm").model).xhat)]
    assert len(limits) == 1
    x = np.ones((5, 1))
    _, cache = generated.batchnorm_eps_outside_forward(x, np.array([GAMMA]), np.array([BETA]),
                                                       {"mode": "train", "eps": EPS})
    dx = generated.batchnorm_eps_outside_backward_alt(DY5[:, None], cache)[0][:, 0]
    expected = GAMMA * (DY5 - DY5.mean()) / EPS                      # typed here, as the oracle
    assert np.allclose(dx, expected, rtol=1e-12)
    values = {"dout": DY5, "gamma": GAMMA, "eps": EPS, "m": 5}
    names = sorted(limits[0].free_symbols, key=str)
    printed = sp.lambdify(names, limits[0], [{"BatchSum": np.sum}, "numpy"])
    assert np.allclose(printed(*[values[str(n)] for n in names]), expected, rtol=1e-12)


def test_generated_kernels_take_the_column_layout(answers):
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((7, 4)), rng.standard_normal((7, 4))
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    out_r, cache_r = generated.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    out_c, cache_c = generated.batchnorm_forward(x.T.copy(), gamma, beta, {"mode": "train", "axis": 1})
    np.testing.assert_allclose(out_c.T, out_r, atol=1e-12)
    for backward in (generated.batchnorm_backward, generated.batchnorm_backward_alt):
        for got, want in zip(backward(dout.T.copy(), cache_c), backward(dout, cache_r)):
            np.testing.assert_allclose(np.asarray(got).T if got.ndim == 2 else got, want, atol=1e-12)
    diffs, first = tables(answers["layout"])
    assert all(float(row[1]) < 1e-12 for row in diffs.rows)
    x5, dy5 = np.array(answers_code.LAYOUT_X), np.array(answers_code.LAYOUT_DY)
    g5, b5 = np.array([1.5, 0.5, -1.0]), np.array([0.2, 0.0, -0.1])
    _, cache = generated.batchnorm_forward(x5, g5, b5, {"mode": "train", "eps": EPS})
    dx = generated.batchnorm_backward(dy5, cache)[0]
    np.testing.assert_allclose(column(first, 1), dx[:, 0], atol=1e-6)
    np.testing.assert_allclose(column(first, 2), dx[:, 0], atol=1e-6)


def test_slips_are_computed_and_seed_002s_formula_is_right(answers):
    eqs = [b for b in answers["slips"].blocks if isinstance(b, Equation)]
    w = pieces.words()
    seed_minus_true = [e for e in eqs if e.lhs.expr == w.dxseed - w.dx]
    assert [e.rhs.expr == 0 for e in seed_minus_true] == [False, True]
    # seed 002's batch_norm_backward, as it is written (column layout), against torch
    z, dz_tilde = np.array(answers_code.LAYOUT_X).T, np.array(answers_code.LAYOUT_DY).T
    gamma = np.array([[1.5], [0.5], [-1.0]])
    m, z_mu = z.shape[1], z - z.mean(axis=1, keepdims=True)
    std_inv = 1.0 / np.sqrt(z.var(axis=1, keepdims=True) + EPS)
    dz = (1.0 / m) * gamma * std_inv * (m * dz_tilde - np.sum(dz_tilde, axis=1, keepdims=True)
                                         - z_mu * std_inv**2 * np.sum(dz_tilde * z_mu, axis=1, keepdims=True))
    zt = torch.tensor(z.T, dtype=torch.float64, requires_grad=True)
    (torch_bn(zt, gamma=torch.tensor(gamma[:, 0])) * torch.tensor(dz_tilde.T)).sum().backward()
    np.testing.assert_allclose(dz.T, zt.grad.numpy(), atol=1e-10)
    # seed 003's dgamma keeps the batch axis; the true one is summed over it
    text = explain.to_text(answers["slips"])
    assert "dgamma = dout * X_norm" in text and "Σ_k(dy_k*x̂_k)" in text


def test_a_false_claim_is_refused(monkeypatch):
    """The answers check what they print: if the checks say "not zero", the answer refuses."""
    ds = {d.spec.name: d for d in all_default()}
    monkeypatch.setattr(answers_code, "is_zero", lambda expr: False)
    with pytest.raises(RuntimeError, match="computed claim failed"):
        answers_code.slips(ds)


@pytest.mark.parametrize("topic", list(explain.TOPICS))
def test_derive_explain_prints_the_answer_of_the_documents(topic, answers, cached, capsys):
    """`derive explain TOPIC`, in-process: the answer is computed afresh from the derivations."""
    assert cli.main(["explain", topic]) == 0
    out, err = capsys.readouterr()
    assert out == explain.to_text(answers[topic])
    assert any(ch.isdigit() for ch in out)
    assert f"answering {topic}" in err
    md = (ROOT / "generated" / "derivations" / "batchnorm.md").read_text(encoding="utf-8")
    layout = documents.Layout(".md")
    for block in answers[topic].blocks:
        if isinstance(block, (Para, Table)):
            shown = layout.block(block)
            for piece in [shown.get("text")] + ["| " + " | ".join(r) + " |" for r in shown.get("rows", [])]:
                if piece:
                    assert piece in md, (topic, piece[:80])


def test_unknown_topic_is_one_line_naming_the_topics(capsys):
    assert explain.main("nosuch", 2) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert all(topic in captured.err for topic in explain.TOPICS)
