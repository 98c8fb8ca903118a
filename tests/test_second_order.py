"""The second order (derive.math.second_order): derived for every library graph, proved, caught
when wrong, and what generated.torch computes for a second derivative."""
from __future__ import annotations

import dataclasses

import pytest
import sympy as sp
from _derived import derived

from derive.forward.library import ENTRIES
from derive.proofs import second as proofs_second
from derive.proofs.first import ProofError

NAMES = [e.spec.name for e in ENTRIES]


@pytest.mark.parametrize("name", NAMES)
def test_every_graph_has_a_proved_second_order(name):
    d = derived(name)
    so = d.second
    assert so is not None
    assert [r.wrt for r in so.results][:2] == [d.model.x, d.model.dy]
    claims = {(p.claim, p.size) for p in d.proofs if "second order" in p.claim}
    sizes = {size for _, size in claims}
    assert {f"m={k}" for k in range(2, d.max_m + 1)} <= sizes, sizes
    assert "symbolic m" in sizes
    assert any("forward-mode Jacobian" in c for c, _ in claims)


def _broken(so, result: int, factor):
    """The second order with one result's compact form changed."""
    symbol = so.results[result].symbol
    compact = dict(so.compact)
    compact[symbol] = compact[symbol] * factor
    return dataclasses.replace(so, compact=compact)


@pytest.mark.parametrize("result", [0, 1, 2])
def test_a_wrong_compact_form_fails_the_brute_force_proof(result):
    d = derived("batchnorm")
    wrong = _broken(d.second, result, sp.Rational(101, 100))
    with pytest.raises(ProofError, match="second order"):
        proofs_second.prove_sizes(d.model, wrong, 3)


def test_a_wrong_compact_form_fails_the_symbolic_proof():
    from derive.proofs import first as proofs
    d = derived("batchnorm")
    jac = proofs.jacobian_entry(d.model, d.lemmas)
    wrong = _broken(d.second, 0, -1)
    with pytest.raises(ProofError, match="staged"):
        proofs_second.prove_symbolic(d.model, wrong, jac, d.lemmas)
    dy = next(k for k, r in enumerate(d.second.results) if r.wrt == d.model.dy)
    wrong_dy = d.second.compact[d.second.results[dy].symbol] + d.model.x
    assert proofs_second.prove_jvp(d.model, d.second, jac, d.lemmas)
    with pytest.raises(ProofError, match="forward-mode"):
        proofs_second.prove_jvp(d.model, dataclasses.replace(
            d.second, compact={**d.second.compact, d.second.results[dy].symbol: wrong_dy}), jac, d.lemmas)


def test_reverse_mode_must_see_paths_through_abbreviations():
    """dx reads std, an abbreviation of var: a backward graph that kept std a leaf (no path
    x -> var -> std) gives a wrong second order, and the proof at m = 2 says so."""
    from derive.math import second_order
    d = derived("batchnorm")
    blind = [dataclasses.replace(let, definition=let.symbol) for let in d.model.lets]
    model = dataclasses.replace(d.model, lets=tuple(blind))
    so = second_order.derive(model, d.lemmas, d.compact, d.params, d.stages[-1].symbol)
    with pytest.raises(ProofError, match="second order"):
        proofs_second.prove_sizes(d.model, so, 2)


def test_torch_second_derivative_matches_torch_native():
    """Double backward of generated.torch (the derived formulas) against torch's own, float64."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    import generated.torch as gt
    g = torch.Generator().manual_seed(0)
    cases = [
        (lambda f, x, w, b: f.batch_norm(x, None, None, w, b, training=True), (6, 3), 3),
        (lambda f, x, w, b: f.batch_norm(x, None, None, w, b, training=True), (4, 3, 2, 2), 3),
        (lambda f, x, w, b: f.layer_norm(x, (5,), w, b), (4, 5), 5),
        (lambda f, x, w, b: f.group_norm(x, 2, w, b), (3, 4, 2, 2), 4),
        (lambda f, x, w, b: f.instance_norm(x, weight=w, bias=b), (2, 3, 4), 3),
        (lambda f, x, w, b: f.rms_norm(x, (5,), w), (4, 5), 5),
    ]
    for call, shape, c in cases:
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        w, b = torch.randn(c, generator=g, dtype=torch.float64), torch.randn(c, generator=g, dtype=torch.float64)
        dy = torch.randn(*shape, generator=g, dtype=torch.float64)
        v = torch.randn(*shape, generator=g, dtype=torch.float64)
        out = []
        for f in (gt, F):
            xs = [t.clone().requires_grad_() for t in (x, w, b, dy)]
            y = call(f, *xs[:3])
            gx, gw = torch.autograd.grad(y, xs[:2], xs[3], create_graph=True)
            second = torch.autograd.grad((gx * v).sum() + gw.sum(), [xs[0], xs[1], xs[3]], allow_unused=True)
            out.append([s if s is not None else torch.zeros(()) for s in second])
        for ours, theirs in zip(*out):
            assert torch.allclose(ours, theirs, rtol=0, atol=1e-10 * max(1.0, theirs.abs().max().item())), shape


def test_torch_second_derivative_runs_the_derived_double_backward(monkeypatch):
    """generated.torch's second derivative is computed by backward2_train: break it, and
    gradgradcheck fails."""
    torch = pytest.importorskip("torch")
    import generated.torch as gt
    import generated.torch.batchnorm as k
    saved = k.backward2_train

    def wrong(*a, **kw):
        bar_dout, bar_x, *rest = saved(*a, **kw)
        return (bar_dout, bar_x * 1.01, *rest)
    monkeypatch.setattr(k, "backward2_train", wrong)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: gt.batch_norm(t, None, None, training=True), (x,))
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        torch.autograd.gradgradcheck(lambda t: gt.batch_norm(t, None, None, training=True), (x,))


def test_torch_third_derivative_is_autograds_of_the_derived_double_backward():
    """A third derivative differentiates the printed double backward (values recomputed from x):
    it equals autograd's third derivative of the layer written out in torch operations."""
    torch = pytest.importorskip("torch")
    import generated.torch as gt

    def explicit_bn(x, w):
        mu = x.mean(0, keepdim=True)
        var = ((x - mu) ** 2).mean(0, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * w

    def explicit_ln(x, w):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * w

    g = torch.Generator().manual_seed(0)
    cases = [(lambda x, w: gt.batch_norm(x, None, None, w, None, training=True), explicit_bn, (6, 3), 3),
             (lambda x, w: gt.layer_norm(x, (4,), w), explicit_ln, (5, 4), 4)]
    for ours, explicit, shape, c in cases:
        x, dy, v, u = (torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(4))
        w = torch.randn(c, generator=g, dtype=torch.float64)
        third = []
        for f in (ours, explicit):
            xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
            (gx,) = torch.autograd.grad(f(xs, ws), xs, dy, create_graph=True)
            hx, hw = torch.autograd.grad((gx * v).sum(), (xs, ws), create_graph=True)
            third.append(torch.autograd.grad((hx * u).sum() + hw.sum(), (xs, ws)))
        for a, b in zip(*third):
            assert torch.allclose(a, b, rtol=0, atol=1e-10 * max(1.0, b.abs().max().item())), shape
