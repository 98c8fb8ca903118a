"""derive check: correct files pass, each slipped file fails and its slip is named, other errors are not."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from derive import cli
from derive.learners import cases, check

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
    (STAGED, "batchnorm_backward", "no-gamma-in-dxhat", [("dxhat = dout * gamma", "dxhat = dout")]),
    (COMPACT, "batchnorm_backward_alt", "no-gamma-in-dxhat", [("dx = gamma * istd / N", "dx = istd / N")]),
    (COMPACT, "layernorm_backward", "no-gamma-in-dxhat", [("dxhat = dout * gamma", "dxhat = dout")]),
    (TEXTBOOK, "batchnorm_forward (train mode)", "whole-array", [
        ("mu = np.mean(x, axis=0)", "mu = np.mean(x)"),
        ("var = np.sum((x - mu) ** 2, axis=0) / N", "var = np.sum((x - mu) ** 2) / (N * D)")]),
    (COMPACT, "layernorm_forward", "whole-array", [("x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)",
                                                    "x.mean(), x.var()")]),
    (COMPACT, "batchnorm_forward (test mode)", "eps-1e-8", [('eps = bn_param.get("eps", 1e-5)', "eps = 1e-8")]),
    (COMPACT, "batchnorm_backward_alt", "eps-1e-8", [('eps = bn_param.get("eps", 1e-5)', "eps = 1e-8")]),
    (COMPACT, "layernorm_forward", "eps-1e-8", [('eps = ln_param.get("eps", 1e-5)', "eps = 1e-8")]),
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


# ----------------------------------------------------------------------------- hostile and careless files

HOSTILE = FILES / "hostile"
ROOT = FILES.parent.parent


def run_check(capsys, path, *options):
    code = cli.main(["check", *options, str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


@pytest.mark.parametrize("name, where, says", [
    ("hang_import.py", "err", "hang_import.py timed out after 2 s during import"),
    ("hang_backward.py", "out", "FAIL  batchnorm_backward_alt\n        timed out after 2 s"),
    ("exit_import.py", "err", "exit_import.py exited during import: called sys.exit(0)"),
    ("exit_backward.py", "out", "FAIL  batchnorm_backward_alt\n        called sys.exit(0) in case 0"),
    ("forged_at_import.py", "err", "forged_at_import.py exited (exit code 0) during import"),
    ("forged_json.py", "out", "FAIL  batchnorm_backward_alt\n        exited (exit code 0)"),
])
def test_hang_exit_and_forgery_fail_in_one_line(name, where, says):
    # a process of its own, as a course runs it: its exit status is the verdict's
    proc = subprocess.run([sys.executable, "-m", "derive", "check", "--timeout", "2", str(HOSTILE / name)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 1, (out, err)
    assert says in (err if where == "err" else out), (out, err)
    assert '"passed": true' not in out and "Traceback" not in out + err
    if where == "err":
        assert out == "" and len(err.strip().splitlines()) == 1
    else:  # the functions before the one that hangs or exits are still judged
        assert "PASS  batchnorm_forward (train mode)" in out


def test_tampering_with_the_grader_changes_nothing(capsys, monkeypatch):
    monkeypatch.setenv("NORMDERIVE_ROOT", str(ROOT))
    code, out, _ = run_check(capsys, HOSTILE / "tamper_tolerance.py")
    assert code == 1
    assert "FAIL  batchnorm_backward_alt   largest relative error 1.5e+00" in out
    assert check.PASS_TOL == 1e-6 and check.MATCH_TOL == 1e-6


def test_nan_and_inf_are_wrong(capsys):
    code, out, _ = run_check(capsys, HOSTILE / "nan_outputs.py")
    assert code == 1
    fails = re.findall(r"^  FAIL  (\S+)\n.*?(got \S+),", out, re.MULTILINE | re.DOTALL)
    assert fails == [("batchnorm_backward_alt", "got nan"), ("layernorm_backward", "got nan"),
                     ("spatial_batchnorm_backward", "got inf")], out
    assert out.count("PASS") == 5


@pytest.mark.parametrize("got, expected", [([1.0, np.nan], [1.0, 2.0]), ([np.inf, 2.0], [1.0, 2.0]),
                                           ([-np.inf], [0.5]), ([np.nan, np.nan], [0.0, 0.0])])
def test_rel_error_of_nan_and_inf_is_infinite(got, expected):
    assert check.rel_error(np.array(got), np.array(expected)) == float("inf")


def test_outputs_that_are_no_arrays_are_named(capsys):
    code, out, _ = run_check(capsys, HOSTILE / "wrong_types.py")
    assert code == 1
    results = {line.split()[1]: line for line in out.splitlines() if line.startswith("  FAIL")}
    assert set(results) == {"batchnorm_backward", "batchnorm_backward_alt", "layernorm_backward",
                            "spatial_batchnorm_backward", "spatial_groupnorm_backward"}
    for says in ("returned a str for dx where an array was expected",
                 "returned a dict for dx where an array was expected",
                 "returned a ragged list for dx where an array was expected",
                 "raised KeyboardInterrupt in case 0",
                 "returned a NumPy array where (dx, dgamma, dbeta) was expected"):
        assert says in out
    assert out.count("PASS") == 6


def test_memory_is_limited():
    r = by_name(check.check_file(HOSTILE / "memory_hog.py"))["batchnorm_backward_alt"]
    assert r["status"] == "error" and r["error"].startswith("raised MemoryError"), r


def test_learner_writes_nothing_where_the_grader_works(capsys, monkeypatch, tmp_path):
    work = tmp_path / "grader"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("PWD", str(work))
    code, out, _ = run_check(capsys, HOSTILE / "writes_files.py")
    assert code == 1 and "raised ValueError: not written yet" in out
    assert sorted(p.name for p in work.iterdir()) == []


def test_json_to_a_closed_pipe_is_no_traceback():
    proc = subprocess.Popen([sys.executable, "-m", "derive", "check", "--json", str(FILES / "unrelated.py")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head` that has already gone
    err = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# ----------------------------------------------------------------------------- blame the right function

VAR_M_1 = {STAGED: ("batchnorm_backward", "var = 1. / N * np.sum(sq", "var = 1. / (N - 1) * np.sum(sq"),
           TEXTBOOK: ("batchnorm_backward", "axis=0) / N", "axis=0) / (N - 1)"),
           COMPACT: ("batchnorm_backward_alt", "x.var(axis=0)", "x.var(axis=0, ddof=1)")}


@pytest.mark.parametrize("name", list(VAR_M_1))
def test_a_right_backward_fed_a_wrong_forward_blames_the_forward(tmp_path, name):
    function, old, new = VAR_M_1[name]
    path = tmp_path / name
    path.write_text((FILES / name).read_text().replace(old, new))
    results = by_name(check.check_file(path))
    assert results["batchnorm_forward (train mode)"]["slip"]["id"] == "var-m-1"
    r = results[function]
    report = check.text(path, [r])
    assert r["status"] == "fail" and r["blame"] == "forward", report
    assert r["note"].startswith("your backward is right") and "fix the forward first" in r["note"]
    assert "var-m-1" in r["note"] and "not a known slip" not in report


OWN_FORWARD = '''
import numpy as np
from compact_dict import batchnorm_backward_alt as right, batchnorm_forward as right_forward


def batchnorm_forward(x, gamma, beta, bn_param):
    out, cache = right_forward(x, gamma, beta, bn_param)
    return out + x ** 2, (cache, x)   # no slip anyone makes: out gains x**2


def batchnorm_backward_alt(dout, cache):
    dx, dgamma, dbeta = right(dout, cache[0])
    return dx + 2 * cache[1] * dout * EXTRA, dgamma, dbeta
'''


@pytest.mark.parametrize("extra, says", [(1, "your backward is right for your forward (it matches central differences"),
                                         (-1, "your forward is wrong, and this backward is not its derivative either")])
def test_a_backward_is_checked_against_the_learners_own_forward(tmp_path, extra, says):
    (tmp_path / "compact_dict.py").write_text((FILES / COMPACT).read_text())
    path = tmp_path / "own.py"
    path.write_text(OWN_FORWARD.replace("EXTRA", str(extra)))
    r = by_name(check.check_file(path))["batchnorm_backward_alt"]
    assert r["status"] == "fail" and r["blame"] == "forward" and r["note"].startswith(says), r


PER_POSITION = '''
import numpy as np


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    mu, var = x.mean(axis=0), x.var(axis=0)   # x as (N, C*H*W): statistics per (c, h, w)
    xhat = (x - mu) / np.sqrt(var + bn_param.get("eps", 1e-5))
    return gamma[None, :, None, None] * xhat + beta[None, :, None, None], None
'''


def test_per_position_statistics_are_named(tmp_path):
    path = tmp_path / "per_position.py"
    path.write_text(PER_POSITION)
    results = by_name(check.check_file(path))
    assert results["spatial_batchnorm_forward (train mode)"]["slip"]["id"] == "per-position"


def test_each_case_says_its_shape_mode_seed_and_scale(capsys):
    code, out, _ = run_check(capsys, FILES / "unrelated.py")
    found = re.search(r"differs most in case (\d+) \(shape \(([\d, ]+)\), (train|test) mode, seed (\d), "
                      r"scale ([\de.-]+)\) at", out)
    assert code == 1 and found, out
    case = cases.cases("batchnorm")[int(found[1])]
    assert tuple(int(n) for n in found[2].split(",")) == case.shape
    assert (int(found[4]), float(found[5])) == (case.seed, case.scale)
