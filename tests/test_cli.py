"""The `derive` command: in-process through cli.main, and once end to end through a subprocess.

The in-process tests take the session's derivations and renders (the ``cached`` fixture);
the determinism test runs the real entry point, `python -m derive`, twice.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from derive import cli, project
from derive.math import closed_form
from derive.output import render, write

ROOT = Path(__file__).resolve().parent.parent


def run(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "derive", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)


def main(capsys, *args) -> tuple[int, str, str]:
    """cli.main in-process: (exit status, stdout, stderr); argparse's exits become statuses."""
    try:
        status = cli.main(list(args))
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def test_check_passes_on_the_committed_tree(cached, capsys, monkeypatch):
    monkeypatch.chdir(ROOT / "tests")   # the checkout is found from a subfolder
    status, out, err = main(capsys, "--check")
    assert status == 0, err
    assert f"{ROOT / 'generated'} is up to date" in out
    assert f"templates from {ROOT / 'templates'} (this checkout)" in err
    assert f"checking {ROOT / 'generated'}" in err
    assert all(f"{spec}:" in err for spec in ("batchnorm", "rmsnorm"))   # progress, per variant


def test_quiet_prints_nothing_on_stderr(cached, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    status, out, err = main(capsys, "-q", "--check")
    assert status == 0 and err == "" and "up to date" in out


def test_check_names_an_edited_file_and_the_command(cached, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "generated"
    shutil.copytree(ROOT / "generated", out)
    with (out / "batchnorm.py").open("a") as f:
        f.write("# edited by hand\n")
    (out / "layernorm.py").unlink()
    status, _, err = main(capsys, "--check", "--out", str(out))
    assert status == 1
    lines = err.splitlines()
    assert any(line.startswith("derive --check: 1 stale file(s)") and "batchnorm.py" in line for line in lines)
    assert any(line.startswith("derive --check: 1 missing file(s)") and "layernorm.py" in line for line in lines)
    assert f"with: cd {ROOT} && python3 -m derive --out {out}" in err


def test_check_of_an_empty_folder_reports_missing_files(cached, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = main(capsys, "--check", "--out", str(tmp_path / "gen"))
    assert status == 1
    assert "missing file(s)" in err and "stale" not in err
    assert not (tmp_path / "gen").exists()


def test_outside_a_checkout_nothing_is_written_without_out(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in ([], ["--check"]):
        status, out, err = main(capsys, *args)
        assert status == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and "--out" in err and "checkout" in err
    assert list(tmp_path.iterdir()) == []


def test_the_checkout_is_found_from_below_and_its_templates_win(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "normderive"\n')
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    with (tmp_path / "templates" / "init.py.jinja").open("a") as f:
        f.write("# an edit in this checkout\n")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    place = project.locate(None, cwd=tmp_path / "deep" / "er")
    assert place.checkout == tmp_path.resolve()
    assert place.templates == tmp_path.resolve() / "templates"
    assert place.out == tmp_path.resolve() / "generated"
    text = render.render(render.environment(place.templates), "init.py.jinja", ".py", exports=[])
    assert text.endswith("# an edit in this checkout\n")
    assert "this checkout" in place.notes()[0]
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "someone-else"\n')
    other = project.locate(None, cwd=tmp_path / "deep")
    assert other.checkout is None and other.out is None and "NOT a checkout" in other.notes()[0]


@pytest.mark.parametrize("args", [["--max-m", "0"], ["--max-m", "abc"], ["latex", "nosuchnorm"],
                                  ["--nosuchflag"], ["explain"]])
def test_bad_arguments_are_one_line_and_exit_2(args, capsys):
    status, _, err = main(capsys, *args)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0]


@pytest.mark.parametrize("args", [["--help"], ["latex", "--help"], ["explain", "--help"], ["bench", "--help"]])
def test_help(args, capsys):
    status, out, _ = main(capsys, *args)
    assert status == 0 and "usage" in out


def test_help_says_what_no_command_does(capsys):
    _, out, _ = main(capsys, "--help")
    assert "With no COMMAND, derive does exactly that: derive, prove and write" in out
    assert "-q, --quiet" in out


def test_generate_prints_the_table_and_is_deterministic(tmp_path):
    """The real entry point, twice, under different hash seeds, first proving from scratch and then
    from the proof cache: the same bytes. Progress goes to stderr, and -q silences it.
    With --max-m 1 (issue 14), where epsilon outside the root has no size to prove: it still
    writes every file and prints the table."""
    outs = []
    for seed, quiet in (("1", ["-q"]), ("12345", [])):
        out = tmp_path / f"run{seed}"
        r = run(*quiet, "--max-m", "1", "--out", str(out),
                env={"PYTHONHASHSEED": seed, "NORMDERIVE_CACHE": str(tmp_path / "proofs")})
        assert r.returncode == 0, r.stderr
        assert "batchnorm" in r.stdout and "exact for m" in r.stdout
        table = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()[2:9]}
        assert table["batchnorm"] == "1..1" and table["batchnorm_eps_outside"] == "-"  # --max-m 1
        assert (out / "batchnorm_eps_outside.py").is_file()
        if quiet:
            assert r.stderr == ""
            assert "kept" not in r.stdout   # this run's own times
        else:  # the first run's proofs, from the cache, and said so: not its times again
            assert "batchnorm: kept from an earlier run" in r.stderr and "proved before" not in r.stderr
            assert r.stdout.splitlines()[2].split()[-2:] == ["kept", "kept"]
            assert "kept: proved by an earlier run" in r.stdout
            assert "rendered before" in r.stderr  # and its render: kept proofs give the same render key
            assert f"writing into {out}" in r.stderr
        outs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert outs[0] == outs[1] and len(outs[0]) > 5


def test_refuses_to_overwrite_a_hand_written_file(cached, capsys, tmp_path):
    out = tmp_path / "generated"
    out.mkdir()
    mine = out / "layernorm.py"
    mine.write_text("def my_layernorm(): ...\n")
    status, _, err = main(capsys, "--out", str(out))
    assert status == 1 and "layernorm.py" in err
    assert mine.read_text() == "def my_layernorm(): ...\n"
    assert [p.name for p in out.iterdir()] == ["layernorm.py"]  # nothing else written


def test_a_failed_proof_exits_1_and_writes_nothing(tmp_path, monkeypatch, capsys):
    real = closed_form.compact

    def broken(lemmas, stages):
        c = real(lemmas, stages)
        return closed_form.Compact(c.steps, c.dx + 1)

    monkeypatch.setattr(closed_form, "compact", broken)
    rc = cli.main(["--max-m", "2", "--no-cache", "--out", str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "proof failed: " in err and "compact at m=1" in err and "Nothing was written" in err
    assert not (tmp_path / "out").exists()


def test_an_interrupted_write_leaves_whole_files(tmp_path, monkeypatch):
    files = {f"f{k}.py": f"# This file is generated by `derive` from templates/x. new {k}\n" for k in range(4)}
    for rel in files:
        (tmp_path / rel).write_text(f"# This file is generated by `derive` from templates/x. old\n")
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(KeyboardInterrupt):
        write.write_all(tmp_path, files)
    texts = sorted(p.read_text() for p in tmp_path.iterdir())
    assert all(t.endswith("old\n") or t.endswith(f"new {t[-2]}\n") for t in texts)
    assert sum("new" in t for t in texts) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # no temporary left behind


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = ci.strip().splitlines()[-1]
    assert command in readme


# ------------------------------------------------------------------ issue 22, item 7: derive build's --out

HEADER = "# This file is generated by `derive` from templates/init.py.jinja. Do not edit it.\n"


def _files(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["generated", "generated/mine", "derive-wrote-it"])
def test_build_refuses_an_out_holding_a_package_it_did_not_write(tmp_path, capsys, where):
    """`derive build ok.py --out <checkout>/generated` replaced the project's own package."""
    checkout = tmp_path / "checkout"
    (checkout / "generated").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text('[project]\nname = "normderive"\n')
    (checkout / "generated" / "__init__.py").write_text(HEADER)
    other = tmp_path / "derive-wrote-it"   # written by `derive --out`, which writes no SUMMARY.md
    other.mkdir()
    (other / "__init__.py").write_text(HEADER)
    out = other if where == "derive-wrote-it" else checkout / where
    before = _files(tmp_path)
    status, stdout, err = main(capsys, "build", str(ROOT / "examples" / "pixelnorm.py"), "--out", str(out))
    assert status == 1 and stdout == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"derive build: refusing to build into {out.resolve()}: ")
    assert _files(tmp_path) == before


def test_build_may_rebuild_what_it_built(tmp_path):
    (tmp_path / "__init__.py").write_text(HEADER)
    (tmp_path / "SUMMARY.md").write_text(f"# Pixel normalization\n\n{write.BUILD_MARK}:\n")
    write.check_build_out(tmp_path)   # no error: the package is derive build's own
    write.check_build_out(tmp_path / "new")


# ------------------------------------------------------------------ issue 22, item 8: Ctrl-C anywhere

INTERRUPTED = "derive: interrupted; nothing half-written is left behind"


def _interrupt(args, marker, tmp_path, python=(), delay=0.5):
    """Start `python -m derive ARGS` in a session of its own, press Ctrl-C (SIGINT to the whole
    process group, as a terminal does) once stderr shows ``marker`` (or, for a Path, once that file
    exists); (status, stderr after it)."""
    import signal
    import threading
    import time
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NORMDERIVE_CACHE": str(tmp_path / "cache")}
    p = subprocess.Popen([sys.executable, *python, "-m", "derive", *args], cwd=tmp_path, env=env, text=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        if isinstance(marker, Path):
            deadline = time.monotonic() + 60
            while not marker.exists() and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if not marker.exists():
                pytest.fail(f"{marker} never appeared; exit status {p.wait()}")
        else:
            for line in p.stderr:
                if marker in line:
                    break
            else:
                pytest.fail(f"{marker!r} never appeared; exit status {p.wait()}")
        time.sleep(delay)
        pressed = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)
        guard = threading.Timer(90, os.killpg, (p.pid, signal.SIGKILL))   # never hang the suite
        guard.start()
        rest = p.stderr.read()
        status = p.wait()
        guard.cancel()
        assert time.monotonic() - pressed < 20, "the command went on after Ctrl-C"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:   # the worker processes end too
            try:
                os.killpg(p.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("a process of the interrupted command is still running")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.stderr.close()
    assert not [q for q in tmp_path.rglob("*") if q.name.endswith(".tmp")]   # no temporary files
    return status, [line for line in rest.splitlines() if not line.startswith("import time:")]


def test_ctrl_c_during_start_up(tmp_path):
    """While SymPy imports (the first half second): it printed a 22-128 line traceback."""
    status, err = _interrupt(["--check", "--out", str(tmp_path / "gen")], "sympy", tmp_path,
                             python=("-X", "importtime"), delay=0)
    assert status == 130 and err == [INTERRUPTED]


def test_ctrl_c_in_a_command_while_it_works(tmp_path):
    """`derive check` while it imports the learner's file (a traceback before).  The learner's code
    runs in a process of its own with its output discarded: it says it is there with a file."""
    flag = tmp_path / "imported"
    (tmp_path / "slow.py").write_text(f"import time\nopen({str(flag)!r}, 'w').close()\ntime.sleep(60)\n")
    status, err = _interrupt(["check", "slow.py"], flag, tmp_path)
    assert status == 130 and err == [INTERRUPTED]


def test_ctrl_c_stops_the_proof_workers(tmp_path):
    """`derive --no-cache` proving in forked workers was still running 90 s after Ctrl-C."""
    status, err = _interrupt(["--no-cache", "--out", str(tmp_path / "gen")], "proving ", tmp_path)
    assert status == 130 and err == [INTERRUPTED]
    assert not (tmp_path / "gen").exists()


def test_progress_and_summary_say_what_this_run_did(tmp_path, monkeypatch):
    """Proving says so once (no "proved before" right after proving); a second run keeps the
    proofs and says "kept" in its progress and its table, never the first run's times; every
    progress line ends with a newline."""
    import io

    from derive.forward.library import BY_NAME
    from derive.math import derivation
    from derive.progress import Progress
    monkeypatch.setenv("NORMDERIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(derivation, "_MEMORY", {})
    entries = [BY_NAME["batchnorm"], BY_NAME["spatial_batchnorm"]]   # the same graphs
    runs = []
    for use_cache in (False, True):
        stream = io.StringIO()
        ds = derivation.derive_many(entries, 2, Progress(stream=stream), use_cache=use_cache)
        runs.append((stream.getvalue(), cli.table(ds).splitlines()))
    (cold, cold_table), (warm, warm_table) = runs
    assert cold.endswith("\n") and warm.endswith("\n")
    assert "kept" not in cold and "proved before" not in cold
    assert "spatial_batchnorm: the same graphs as batchnorm" in cold
    assert cold_table[2].split()[-1] == "s" and cold_table[3].split()[-3:] == ["-", "as", "batchnorm"]
    assert [line.split(":")[0] for line in warm.splitlines()] == ["batchnorm", "spatial_batchnorm"]
    assert all(line.endswith(derivation.KEPT) for line in warm.splitlines())
    assert all(row.split()[-2:] == ["kept", "kept"] for row in warm_table[2:4])
    assert warm_table[4].startswith("kept: proved by an earlier run")


def test_a_second_latex_run_ends_its_progress_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NORMDERIVE_CACHE", str(tmp_path))
    monkeypatch.chdir(ROOT)
    errs = []
    for _ in range(2):
        status, out, err = main(capsys, "--max-m", "2", "latex", "meanonly_batchnorm")
        assert status == 0 and "\\begin{document}" in out
        errs.append(err)
    assert all(err.endswith("\n") for err in errs), errs
    assert "kept from" not in errs[0] and "meanonly_batchnorm: kept from an earlier run" in errs[1]


def test_the_code_note_only_where_the_running_code_differs(tmp_path):
    """After `pip install .` in a checkout the installed derive/ has the checkout's bytes: no note.
    An edit in the checkout's derive/ (not the running code) is worth one."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "normderive"\n')
    (tmp_path / "templates").mkdir()
    shutil.copytree(project.CODE, tmp_path / "derive", ignore=shutil.ignore_patterns("__pycache__"))
    place = project.locate(None, cwd=tmp_path)
    assert project.CODE != tmp_path / "derive"
    assert not any("note:" in line for line in place.notes())
    with (tmp_path / "derive" / "cli.py").open("a") as f:
        f.write("# an edit in this checkout\n")
    notes = [line for line in place.notes() if "note:" in line]
    assert len(notes) == 1 and "differs from this checkout's derive/" in notes[0]
