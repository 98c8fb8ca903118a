"""derive demo: the derived backward keeps the bias before batch norm still; the naive one lets it drift."""
import pytest

pytest.importorskip("sklearn")
from derive.learners import demo  # noqa: E402


def test_bias_drifts_only_under_the_naive_backward(monkeypatch):
    monkeypatch.setattr(demo, "EPOCHS", 1)
    quiet = lambda it, desc="": it  # noqa: E731
    derived, naive = demo.train("derived", quiet), demo.train("naive", quiet)
    assert derived["bias"][-1] < 1e-8
    assert naive["bias"][-1] > 1e-2
    assert derived["accuracy"][-1] > 0.8
