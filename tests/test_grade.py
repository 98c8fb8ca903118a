"""derive grade: a folder of submissions in several styles, right, slipped and hostile, graded as
Gradescope reads it; the class summary and its plot."""
import contextlib
import importlib.util
import io
import json
import re
import sys
from pathlib import Path

import pytest

from derive import cli
from derive.learners import cases

FILES = Path(__file__).parent / "learner_files"
spec = importlib.util.spec_from_file_location("make_class", FILES / "make_class.py")
make_class = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_class)

#: a small class: submission file -> the slips it must be given (None: it cannot be run at all)
CLASS = {"full_reshape": set(), "right_full_reshape": set(), "right_staged_tuple": set(), "no-mu-path": {"no-mu-path"},
         "var-m-1": {"var-m-1"}, "no-gamma-in-dxhat": {"no-gamma-in-dxhat"}, "eps-1e-8": {"eps-1e-8"},
         "unknown": set(), "hostile_hang_import": None, "hostile_nan_outputs": set()}


def defined(path: Path) -> set[str]:
    """The functions one of our own right files defines (imported here: they are known to be harmless)."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"_defined_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return {n for n in cases.every_function() if callable(getattr(module, n, None))}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    subs = root / "subs"
    for path in make_class.make_class(root / "all", 100):  # the first file of each kind in CLASS
        what = path.stem.split("_", 1)[-1] if path.stem[:3].isdigit() else path.stem
        if what in CLASS and not (subs / f"{what}.py").exists():
            subs.mkdir(exist_ok=True)
            (subs / f"{what}.py").write_text(path.read_text())
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["grade", str(subs), "--out", str(root / "out"), "--jobs", "2", "--timeout", "3"])
    return code, subs, root / "out", err.getvalue()


def test_grading_runs_and_exits_0(graded, capsys):
    code, subs, out, _ = graded
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*(p.stem for p in subs.glob("*.py")),
                                                           "summary.json", "slips.png"])
    assert (out / "slips.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_are_gradescope_results(graded):
    _, subs, out, _ = graded
    every = cases.checks()
    for path in sorted(subs.glob("*.py")):
        doc = json.loads((out / path.stem / "results.json").read_text())
        assert [t["name"] for t in doc["tests"]] == [c.label for c in every]
        for t in doc["tests"]:
            assert set(t) >= {"name", "score", "max_score", "output"} and t["max_score"] == 1.0
            assert t["score"] in (0.0, 1.0) and t["output"].strip()
        assert doc["score"] == sum(t["score"] for t in doc["tests"])
        if path.stem.startswith("right_") or path.stem == "full_reshape":
            own = [c for c in every if c.function in defined(path)]  # a function it lacks scores 0
            assert doc["score"] == len(own) > 0, path.name


def test_hostile_submissions_score_what_they_earn(graded):
    _, _, out, _ = graded
    hang = json.loads((out / "hostile_hang_import" / "results.json").read_text())
    assert hang["score"] == 0 and all("timed out after 3 s during import" in t["output"] for t in hang["tests"])
    nan = {t["name"]: t for t in json.loads((out / "hostile_nan_outputs" / "results.json").read_text())["tests"]}
    assert nan["batchnorm_backward_alt"]["score"] == 0 and "got nan" in nan["batchnorm_backward_alt"]["output"]
    assert nan["batchnorm_forward (train mode)"]["score"] == 1


def test_summary_counts_each_slip(graded):
    _, subs, out, _ = graded
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["file"]: r for r in summary["submissions"]}
    assert sorted(rows) == sorted(p.name for p in subs.glob("*.py"))
    for stem, slips in CLASS.items():
        row = rows[f"{stem}.py"]
        assert (row["error"] is not None) == (slips is None), row
        assert set(row["slips"]) == (slips or set()), row
    counts = summary["class"]["slips"]
    for slip in set().union(*(s for s in CLASS.values() if s)):
        assert counts[slip] == sum(slip in r["slips"] for r in rows.values())
    assert counts["(did not import or run)"] == 1
    assert counts["(wrong, not a known slip)"] == sum(r["not_a_known_slip"] for r in rows.values()) >= 2


def test_progress_lines(graded):
    _, subs, _, err = graded
    n = len(list(subs.glob("*.py")))
    lines = re.findall(r"^\[(\d+)/" + str(n) + r"\] \S+\.py: ", err, re.MULTILINE)
    assert [int(k) for k in lines] == list(range(1, n + 1))
    assert "Traceback" not in err


def test_only_the_functions_asked_for(tmp_path):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "one.py").write_text((FILES / "full_reshape.py").read_text())
    assert cli.main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out"),
                     "--functions", "batchnorm_forward,layernorm_backward"]) == 0
    doc = json.loads((tmp_path / "out" / "one" / "results.json").read_text())
    assert [t["name"] for t in doc["tests"]] == ["batchnorm_forward (train mode)", "batchnorm_forward (test mode)",
                                                 "layernorm_backward"]


def test_without_matplotlib_one_line_and_no_plot(tmp_path, capsys, monkeypatch):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "one.py").write_text((FILES / "compact_dict.py").read_text())
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "derive grade: matplotlib is not installed: no slips.png" in err
    assert not (tmp_path / "out" / "slips.png").exists() and (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize("make, args", [(False, []), (True, []), (True, ["--functions", "batchnorm_fwd"]),
                                        (True, ["--jobs", "0"]), (True, ["--timeout", "-1"])])
def test_bad_usage_is_one_line_exit_2(tmp_path, capsys, make, args):
    folder = tmp_path / "subs"
    if make:
        folder.mkdir()
        if args:
            (folder / "one.py").write_text("x = 1\n")
    try:
        code = cli.main(["grade", str(folder), "--out", str(tmp_path / "out"), *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
