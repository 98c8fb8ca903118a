"""The proofs: they pass for every variant, and they reject wrong formulas."""
from __future__ import annotations

import dataclasses

import pytest
import sympy as sp
from _derived import derived

from derive.forward.library import BY_NAME, ENTRIES
from derive.math import stages
from derive.math.algebra import BatchSum, M, ParamSum
from derive.proofs import first as proofs


def bn_symbols(d):
    """The batch-norm names, from the derivation's own graph."""
    s = d.model.symbols
    return d.model.dy, s["eps"], s["mu"], s["std"], s["var"], d.model.x, s["xhat"]


@pytest.mark.parametrize("name", [e.spec.name for e in ENTRIES])
def test_every_entry_is_proved(name):
    d = derived(name)
    sizes = [p.size for p in d.proofs if p.size.startswith("m=") and not p.claim.startswith(("test", "left", "second order"))]
    left_out = sorted({p.size for p in d.proofs if p.claim.startswith("left out")})
    assert sizes == [f"m={m}" for m in range(1 + len(left_out), d.max_m + 1)] and d.max_m >= 3
    assert left_out in ([], ["m=1"])
    assert any(p.size == "symbolic m" and p.claim == "staged == compact" for p in d.proofs)
    assert any(p.size == "symbolic m" and p.claim.startswith("sum_j dy_j") for p in d.proofs)


def test_only_epsilon_outside_leaves_out_m_1():
    left = {e.spec.name for e in ENTRIES if any(p.claim.startswith("left out") for p in derived(e.spec.name).proofs)}
    assert left == {"batchnorm_eps_outside"}


def test_batchnorm_compact_form_is_the_textbook_one():
    """The tool's own compact form equals (1/m) gamma/sigma (m dy - sum dy - xhat sum dy xhat)."""
    d = derived("batchnorm")
    DY, EPS, MU, STD, VAR, X, XHAT = bn_symbols(d)
    gamma = d.model.gamma
    textbook = gamma / (M * STD) * (M * DY - BatchSum(DY) - XHAT * BatchSum(DY * XHAT))
    assert sp.simplify(d.compact.dx - textbook) == 0
    assert d.compact.reductions == [BatchSum(DY), BatchSum(DY * XHAT)]


def test_batchnorm_jacobian_entry():
    """dy_j/dx_i = (gamma/sigma)(delta_ij - 1/m - xhat_i xhat_j / m), for a symbolic m."""
    d = derived("batchnorm")
    DY, EPS, MU, STD, VAR, X, XHAT = bn_symbols(d)
    delta = sp.KroneckerDelta(proofs.I, proofs.J)
    expected = d.model.gamma / STD * (delta - 1 / M - proofs.copy_i(XHAT) * XHAT / M)
    assert sp.simplify(d.jacobian - expected) == 0


def test_second_term_of_dmu_vanishes():
    d = derived("batchnorm")
    DY, EPS, MU, STD, VAR, X, XHAT = bn_symbols(d)
    dmu = next(s for s in d.stages if s.symbol.name == "dmu")
    assert BatchSum(X - MU) in dmu.expr.atoms(BatchSum)
    assert d.lemmas.canonical(BatchSum(X - MU)) == 0
    assert BatchSum(X - MU) in d.symbolic.vanishing


def test_invariants():
    d = derived("batchnorm")
    DY, EPS, MU, STD, VAR, X, XHAT = bn_symbols(d)
    assert d.symbolic.sum_dx == 0
    expected = EPS * d.model.gamma * BatchSum(DY * XHAT) / STD**3
    assert sp.simplify(d.symbolic.sum_dx_xhat - expected) == 0


def test_staged_stages_are_the_textbook_ones():
    d = derived("batchnorm")
    DY, EPS, MU, STD, VAR, X, XHAT = bn_symbols(d)
    by = {s.symbol.name: s.expr for s in d.stages}
    g = d.model.gamma
    dxhat, dvar, dmu = (s.symbol for s in d.stages[:3])
    assert by["dxhat"] == g * DY
    assert sp.simplify(by["dvar"] - BatchSum(dxhat * (X - MU)) * sp.Rational(-1, 2) * (VAR + EPS) ** sp.Rational(-3, 2)) == 0
    assert sp.simplify(by["dmu"] - (BatchSum(dxhat * -1 / sp.sqrt(VAR + EPS)) + dvar * (-2 / M) * BatchSum(X - MU))) == 0
    assert sp.simplify(by["dx"] - (dxhat / sp.sqrt(VAR + EPS) + dvar * 2 * (X - MU) / M + dmu / M)) == 0


# ----------------------------------------------------------------- proofs can fail

def _broken_compact(d):
    """Drop the sum dy*xhat term: the classic mistake."""
    DY, EPS, MU, STD, VAR, X, XHAT = bn_symbols(d)
    return dataclasses.replace(d.compact, dx=d.compact.dx.xreplace({BatchSum(DY * XHAT): 0}))


def test_dropping_the_variance_term_fails_the_size_proof():
    d = derived("batchnorm")
    with pytest.raises(proofs.ProofError) as e:
        proofs.prove_sizes(d.model, d.stages, _broken_compact(d), d.jacobian, d.params, 3, d.lemmas)
    assert e.value.size == "m=2" and "compact" in e.value.claim


def test_dropping_the_variance_term_fails_the_symbolic_proof():
    d = derived("batchnorm")
    with pytest.raises(proofs.ProofError) as e:
        proofs.prove_symbolic(d.model, d.stages, _broken_compact(d), d.jacobian, d.lemmas)
    assert e.value.size == "symbolic m"


def test_a_wrong_stage_fails():
    """The seed-003 slip: sqrt(var) + beta instead of sqrt(var + eps) in dmu."""
    d = derived("batchnorm")
    DY, EPS, MU, STD, VAR, X, XHAT = bn_symbols(d)
    wrong = [s if s.symbol.name != "dmu" else
             dataclasses.replace(s, expr=s.expr.subs(sp.sqrt(VAR + EPS), sp.sqrt(VAR) + sp.Symbol("beta")))
             for s in d.stages]
    with pytest.raises(proofs.ProofError) as e:
        proofs.prove_sizes(d.model, tuple(wrong), d.compact, d.jacobian, d.params, 2, d.lemmas)
    assert "staged" in e.value.claim


def test_a_wrong_jacobian_fails():
    d = derived("layernorm")
    xhat = d.model.sym("xhat")
    wrong = d.jacobian.xreplace({proofs.copy_i(xhat): xhat})
    with pytest.raises(proofs.ProofError, match="Jacobian entry"):
        proofs.prove_sizes(d.model, d.stages, d.compact, wrong, d.params, 2, d.lemmas)


def test_a_dgamma_without_its_sum_fails():
    """Seed 003's dgamma = dout * xhat, with no sum over the batch, is not dL/dgamma."""
    d = derived("batchnorm")
    wrong = [dataclasses.replace(p, expr=ParamSum(d.model.dy)) if p.symbol.name == "dgamma" else p
             for p in d.params]
    with pytest.raises(proofs.ProofError, match="dgamma"):
        proofs.prove_sizes(d.model, d.stages, d.compact, d.jacobian, tuple(wrong), 2, d.lemmas)


def test_zero_modulo_roots_is_not_fooled():
    from derive.forward.graph import ClampMin
    from derive.proofs.exact import zero_modulo_roots
    x, e = sp.Symbol("x", positive=True), sp.Symbol("e", positive=True)
    assert zero_modulo_roots(sp.sqrt(x + 1) ** 2 - x - 1)
    assert not zero_modulo_roots(sp.sqrt(x + 1) - x)
    assert zero_modulo_roots(ClampMin(sp.sqrt(x), e) - ClampMin(sp.sqrt(x), e))
    assert not zero_modulo_roots(ClampMin(sp.sqrt(x), e) - sp.sqrt(x))
    assert zero_modulo_roots(sp.sqrt(sp.sqrt(x) + 1) ** 2 - sp.sqrt(x) - 1)
    # a clamp's step: 0 or 1, and where it is 1 the clamp lets its argument through
    from derive.math.algebra import Step
    step = Step(sp.sqrt(x) - e, 1)
    assert zero_modulo_roots(step * ClampMin(sp.sqrt(x), e) - step * sp.sqrt(x))
    assert zero_modulo_roots(step ** 2 - step)
    assert not zero_modulo_roots(step * ClampMin(sp.sqrt(x), e) - step * e)
    assert not zero_modulo_roots(step - 1)
    # the sparse-ring route with a shared non-monomial denominator, and a wrong one
    d = sp.sqrt(x) + e
    assert zero_modulo_roots(1 / d ** 3 + x / d ** 2 - (1 + x * d) / d ** 3)
    assert not zero_modulo_roots(1 / d ** 3 + x / d ** 2 - (1 + x * d + e) / d ** 3)


def test_test_mode_is_proved_for_running_stat_variants():
    for name in ("batchnorm", "spatial_batchnorm"):
        d = derived(name)
        assert [p.size for p in d.proofs if p.claim.startswith("test")] == [
            f"m={m}" for m in range(1, d.max_m + 1)]
    assert derived("layernorm").test_model is None


def test_rmsnorm_has_no_mean():
    m = BY_NAME["rmsnorm"].model()
    assert m.sym("mu") is None
    assert [s.symbol.name for s in stages.backward(m)] == ["dxhat", "dvar", "dx"]


# ----------------------------------------------------------------- the brute force on a tape

def _without_fallback(monkeypatch) -> list:
    """TapeZero's fallback (zero_modulo_roots in the leaves) answers False, and the list returned
    records each call: what is proved meanwhile, the tape's own route proved."""
    from derive.proofs import ring
    fell: list = []
    monkeypatch.setattr(ring, "zero_modulo_roots", lambda e: fell.append(e) or False)
    return fell


@pytest.mark.parametrize("inside", [True, False])
def test_the_tape_zero_test_changes_variables_exactly(monkeypatch, inside):
    """sqrt(s + eps) is renamed g with eps = g**2 - s; sqrt(s) + eps (eps outside the root) is
    renamed g with eps = g - sqrt(s) and sqrt(s) keeps its relation.  Identities hold, and what
    holds only at one eps (eps = 0) is not proved."""
    x0, x1, eps, s, t = sp.symbols("x_0 x_1 eps s t")
    steps = {s: 2 * x0 ** 2 + x1 ** 2 + x0 * x1, t: x1 ** 2 + 2 * x0 ** 2 + x1 * x0}  # t = s
    d = sp.sqrt(s + eps) if inside else sp.sqrt(s) + eps
    true = [d * (1 / d) - 1, d ** 2 - (s + eps if inside else s + 2 * eps * sp.sqrt(s) + eps ** 2),
            1 / d ** 3 + x0 / d ** 2 - (1 + x0 * d) / d ** 3, 1 / sp.sqrt(s) - sp.sqrt(s) / t]
    false = [eps / d, eps * d, d - sp.sqrt(s), 1 / d ** 3 + x0 / d ** 2 - (1 + x0 * d + eps) / d ** 3,
             sp.sqrt(s) - x0 - x1]
    from derive.proofs.ring import TapeZero
    fell = _without_fallback(monkeypatch)
    zero = TapeZero(steps, true + false)
    assert [zero(e) for e in true] == [True] * len(true) and not fell
    assert [zero(e) for e in false] == [False] * len(false)


@pytest.mark.parametrize("name", ["batchnorm", "batchnorm_eps_outside", "batch_renorm"])
def test_the_library_proofs_need_no_fallback(monkeypatch, name):
    """Every claim of the first and second order at m <= 3 is proved on the tape alone."""
    from derive.proofs import second as proofs_second
    d = derived(name)
    fell = _without_fallback(monkeypatch)
    proofs.prove_sizes(d.model, d.stages, d.compact, d.jacobian, d.params, 3, d.lemmas)
    proofs_second.prove_sizes(d.model, d.second, 3)
    assert not fell


@pytest.mark.parametrize("name", ["batchnorm", "l2_normalize"])
def test_the_tape_differentiates_like_sympy(name):
    """Reverse mode (dx, dgamma) and forward mode (a Jacobian column) on the tape, written out
    in the leaves, equal sympy.diff of the forward pass written out in the leaves, at m = 3."""
    from derive.proofs import tape
    from derive.proofs.exact import zero_modulo_roots
    from derive.proofs.ring import in_leaves
    d = derived(name)
    c = proofs.concrete(d.model, 3)
    group = tape.forward(d.model, 3, proofs.opaque_values(d.model))
    wrt = group.xs + list(d.model.params)
    back = group.tape.reverse(dict(zip(group.ys, group.dys)), wrt)
    column = group.tape.tangents(group.xs[1], group.nodes)
    for w in wrt:
        brute = sp.Add(*[dy * sp.diff(y, w) for dy, y in zip(c.dys, c.ys)])
        assert zero_modulo_roots(in_leaves(group.tape.steps, back[w]) - brute), w
    for y_tape, y in zip(group.ys, c.ys):
        assert zero_modulo_roots(in_leaves(group.tape.steps, column[y_tape]) - sp.diff(y, c.xs[1]))
