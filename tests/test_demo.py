"""derive demo: the derived backward keeps the bias before batch norm still; the naive one lets it drift."""
import pytest

pytest.importorskip("sklearn")
from derive import cli  # noqa: E402
from derive.learners import demo  # noqa: E402


def test_bias_drifts_only_under_the_naive_backward(monkeypatch):
    monkeypatch.setattr(demo, "EPOCHS", 1)
    quiet = lambda it, desc="": it  # noqa: E731
    derived, naive = demo.train("derived", quiet), demo.train("naive", quiet)
    assert derived["bias"][-1] < 1e-8
    assert naive["bias"][-1] > 1e-2
    assert derived["accuracy"][-1] > 0.8


def quick_train(kind, progress):
    """A stand-in for the training: these tests are about where the plots go."""
    return {"loss": [1.0 / (n + 1) for n in range(40)], "accuracy": [0.9] * demo.EPOCHS, "bias": [0.0, 0.1]}


@pytest.fixture
def quick(monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(demo, "EPOCHS", demo.EPOCHS)   # main() sets it; restored afterwards
    monkeypatch.setattr(demo, "train", quick_train)


def test_outside_a_checkout_the_demo_writes_nothing_unless_asked(quick, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert demo.main(epochs=1) == 0
    assert list(tmp_path.iterdir()) == []
    out, err = capsys.readouterr()
    assert "| batch norm, derived backward |" in out and "--out DIR" in err


def test_demo_out_puts_the_plots_there(quick, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--epochs", "1", "--out", "plots"]) == 0
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["demo_bias.png", "demo_curves.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["plots"]


def test_in_a_checkout_the_plots_go_to_its_docs(quick, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "normderive"\n')
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert demo.main(epochs=1) == 0
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["demo_bias.png", "demo_curves.png"]
    assert list((tmp_path / "sub").iterdir()) == []


def test_demo_out_must_be_a_folder(quick, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert demo.main(epochs=1, out=tmp_path / "file") == 2
    assert "--out" in capsys.readouterr().err
