"""derive check: correct files pass, each slipped file fails and its slip is named, other errors are not."""
import json
from pathlib import Path

import pytest

from derive import cli
from derive.learners import check

FILES = Path(__file__).parent / "learner_files"
STAGED, COMPACT, TEXTBOOK = "staged_tuple.py", "compact_dict.py", "textbook_dict.py"
MOM = [("running_mean = momentum * running_mean + (1 - momentum) * mu",
        "running_mean = (1 - momentum) * running_mean + momentum * mu"),
       ("running_var = momentum * running_var + (1 - momentum) * var",
        "running_var = (1 - momentum) * running_var + momentum * var")]
TERMS = "(N * dout - dbeta - xhat * dgamma)"

#: (file, the check that must name it, slip id, edits that put the slip into the file)
SLIPPED = [
    (STAGED, "batchnorm_backward", "no-mu-path", [("dx = dx1 + dx2", "dx = dx1")]),
    (STAGED, "batchnorm_backward", "no-var-path", [("dx1 = dxmu1 + dxmu2", "dx1 = dxmu1")]),
    (STAGED, "batchnorm_backward", "naive", [("dx = dx1 + dx2", "dx = dxmu1")]),
    (STAGED, "batchnorm_backward", "dgamma-not-summed", [("dgamma = np.sum(dout * xhat, axis=0)",
                                                          "dgamma = dout * xhat")]),
    (STAGED, "batchnorm_backward", "var-m-1", [("var = 1. / N * np.sum", "var = 1. / (N - 1) * np.sum"),
                                               ("dsq = 1. / N *", "dsq = 1. / (N - 1) *")]),
    (STAGED, "batchnorm_forward (train mode)", "eps-outside", [("np.sqrt(var + eps)\n", "np.sqrt(var) + eps\n")]),
    (STAGED, "batchnorm_backward", "eps-outside", [("np.sqrt(var + eps)\n", "np.sqrt(var) + eps\n"),
                                                   ("1. / np.sqrt(var + eps)", "1. / np.sqrt(var)")]),
    (STAGED, "batchnorm_forward (train mode)", "wrong-axis", [
        ("mu = 1. / N * np.sum(x, axis=0)", "mu = np.mean(x, axis=1, keepdims=True)"),
        ("var = 1. / N * np.sum(sq, axis=0)", "var = np.mean(sq, axis=1, keepdims=True)")]),
    (STAGED, "batchnorm_forward (train mode)", "momentum-swapped", MOM),
    (TEXTBOOK, "batchnorm_backward", "no-mu-path", [("+ dmu / m", "")]),
    (TEXTBOOK, "batchnorm_backward", "no-var-path", [("+ dvar * 2 * (x - mu) / m", "")]),
    (TEXTBOOK, "batchnorm_forward (train mode)", "var-m-1", [("axis=0) / N", "axis=0) / (N - 1)")]),
    (TEXTBOOK, "batchnorm_forward (train mode)", "momentum-swapped", MOM),
    (COMPACT, "batchnorm_backward_alt", "sign-1", [(TERMS, "(-N * dout - dbeta - xhat * dgamma)")]),
    (COMPACT, "batchnorm_backward_alt", "sign-2", [(TERMS, "(N * dout - dbeta + xhat * dgamma)")]),
    (COMPACT, "batchnorm_backward_alt", "sign-3", [(TERMS, "(N * dout + dbeta - xhat * dgamma)")]),
    (COMPACT, "batchnorm_backward_alt", "no-mu-path", [(TERMS, "(N * dout - xhat * dgamma)")]),
    (COMPACT, "batchnorm_backward_alt", "dgamma-not-summed", [("return dx, dgamma, dbeta",
                                                              "return dx, dout * xhat, dbeta")]),
    (COMPACT, "batchnorm_forward (train mode)", "var-m-1", [("x.var(axis=0)", "x.var(axis=0, ddof=1)")]),
    (COMPACT, "layernorm_backward", "no-var-path", [("\n                     - xhat * (dxhat * xhat)"
                                                    ".sum(axis=1, keepdims=True)", "")]),
    (COMPACT, "spatial_batchnorm_backward", "sign-3", [(TERMS, "(N * dout + dbeta - xhat * dgamma)")]),
]


def by_name(results):
    return {r["function"]: r for r in results}


@pytest.mark.parametrize("name", [STAGED, COMPACT, TEXTBOOK])
def test_correct_files_pass(name):
    results = check.check_file(FILES / name)
    assert results and all(r["status"] == "pass" for r in results), check.text(FILES / name, results)


@pytest.mark.parametrize("name, function, slip, edits", SLIPPED, ids=[f"{s[0][:-3]}-{s[2]}" for s in SLIPPED])
def test_slip_is_named(tmp_path, name, function, slip, edits):
    text = (FILES / name).read_text()
    for old, new in edits:
        assert old in text, f"the edit for {slip} does not apply to {name}"
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    results = by_name(check.check_file(path))
    assert results[function]["status"] == "fail"
    assert (results[function]["slip"] or {}).get("id") == slip, check.text(path, list(results.values()))
    named = {r["slip"]["id"] for r in results.values() if r["slip"]}
    assert named == {slip}, "another slip was claimed"


def test_unrelated_error_is_not_a_known_slip(capsys):
    assert cli.main(["check", str(FILES / "unrelated.py")]) == 1
    out = capsys.readouterr().out
    assert "wrong, but not a known slip" in out and "known slip " not in out.replace("not a known slip", "")


def test_learner_exception_is_one_line(tmp_path, capsys):
    path = tmp_path / "raises.py"
    path.write_text((FILES / COMPACT).read_text().replace("N = dout.shape[0]", "N = dout.shape[7]"))
    assert cli.main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  batchnorm_backward_alt" in out and "raised IndexError: tuple index out of range" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("content, code", [(None, 2), ("x = 1\n", 2), ("import nowhere_at_all\n", 1)])
def test_bad_input_is_one_line(tmp_path, capsys, content, code):
    path = tmp_path / "learner.py"
    if content is not None:
        path.write_text(content)
    assert cli.main(["check", str(path)]) == code
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err


def test_json_for_autograders(capsys):
    assert cli.main(["check", "--json", str(FILES / "unrelated.py")]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is False
    assert [r["status"] for r in data["results"]] == ["pass", "pass", "fail"]


def test_list_prints_the_catalogue(capsys):
    assert cli.main(["check", "--list"]) == 0
    out = capsys.readouterr().out
    for slip in ("no-mu-path", "naive", "var-m-1", "eps-outside", "wrong-axis", "sign-1", "momentum-swapped"):
        assert slip in out
