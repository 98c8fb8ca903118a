"""Issue 14: hard stops of the `derive` command.  Each failed before its fix: a traceback after
minutes of proving, a crash after writing, or a temporary file left behind."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from derive import cli
from derive.forward.library import BY_NAME
from derive.math import derivation
from derive.output import render, write

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def quick(monkeypatch, tmp_path):
    """derive with the session's derivations and renders (tests/_derived.py); records the variants
    it was asked for.  It runs outside the checkout, so the templates are the installed ones
    (render.templates_dir)."""
    from _derived import derived, rendered_files

    calls = []

    def fake(entry, max_m, progress=None, use_cache=True):
        calls.append(entry.spec.name)
        return derived(entry.spec.name, max_m)

    monkeypatch.setattr(derivation, "derive", fake)
    monkeypatch.setattr(derivation, "derive_many",
                        lambda entries, max_m, *args, **kw: [fake(e, max_m) for e in entries])
    monkeypatch.setattr(render, "render_all", rendered_files)
    monkeypatch.chdir(tmp_path)
    return calls


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------ items 1 and 2: --max-m


# --max-m 1 writes everything and prints the table: tests/test_cli.py, in the real `derive` runs
# of test_generate_prints_the_table_and_is_deterministic.


def test_max_m_beyond_the_cap_is_refused_with_its_cost(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.parser().parse_args(["--max-m", "100"])
    assert stop.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert f"at most {cli.MAX_M}" in line and "M**4" in line


# ------------------------------------------------------------------ item 3: one line, before proving


def test_read_only_folder_is_refused_before_proving(tmp_path, monkeypatch, quick, capsys):
    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert cli.main(["-q", "--out", str(tmp_path / "gen")]) == 1
    assert "Read-only file system" in _one_line(capsys.readouterr().err) and quick == []


def test_out_that_is_a_file_is_refused_before_proving(tmp_path, quick, capsys):
    target = tmp_path / "file"
    target.write_text("mine\n")
    assert cli.main(["-q", "--out", str(target)]) == 1
    assert "is a file, not a folder" in _one_line(capsys.readouterr().err) and quick == []
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize("check", [False, True])
def test_folder_in_the_place_of_a_generated_file_is_refused_before_proving(tmp_path, quick, capsys, check):
    (tmp_path / "layernorm.py").mkdir()
    assert cli.main(["-q", "--out", str(tmp_path)] + (["--check"] if check else [])) == 1
    assert "layernorm.py is a folder" in _one_line(capsys.readouterr().err) and quick == []


def test_missing_template_is_refused_before_proving(tmp_path, monkeypatch, quick, capsys):
    templates = tmp_path / "templates"
    shutil.copytree(render.templates_dir(), templates)
    (templates / "numpy_kernels.py.jinja").unlink()
    monkeypatch.setattr(render, "templates_dir", lambda: templates)
    assert cli.main(["-q", "--out", str(tmp_path / "gen")]) == 1
    assert "numpy_kernels.py.jinja is missing" in _one_line(capsys.readouterr().err) and quick == []


def test_every_template_rendering_reads_is_checked():
    used = {p.name for p in render.templates_dir().glob("*.jinja")}
    assert set(write.TEMPLATES) == used


def test_a_generated_file_with_a_non_utf8_byte_is_stale_and_rewritten(tmp_path, quick, capsys):
    out = tmp_path / "gen"
    assert cli.main(["-q", "--out", str(out)]) == 0
    target = out / "layernorm.py"
    good = target.read_bytes()
    target.write_bytes(good.replace(b"forward", b"forw\xffrd", 1))
    capsys.readouterr()
    assert cli.main(["-q", "--out", str(out), "--check"]) == 1
    assert "layernorm.py" in capsys.readouterr().err
    assert cli.main(["-q", "--out", str(out)]) == 0
    assert target.read_bytes() == good


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(derivation, "derive_many", interrupted)
    from derive.__main__ import main   # the command's entry point (cli.main lets it propagate)
    assert main(["-q", "--out", str(tmp_path / "gen")]) == 130
    assert "interrupted" in _one_line(capsys.readouterr().err)


# ------------------------------------------------------------------ item 4: temporary files


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from derive.output import write
        real = os.replace
        def killed(src, dst):
            os.kill(os.getpid(), signal.SIGTERM)
            real(src, dst)
        os.replace = killed
        header = "# This file is generated by `derive` from templates/x.\\n"
        write.write_all(Path({str(tmp_path)!r}), {{"a.py": header, "b.py": header}})
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 143, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("check", [False, True])
def test_leftover_temporary_files_are_reported_and_removed(tmp_path, quick, capsys, check):
    out = tmp_path / "gen"
    assert cli.main(["-q", "--out", str(out)]) == 0
    ours, theirs = out / ".__init__.py.k2j4_x9a.tmp", out / ".notes.tmp"
    ours.write_text("half")
    theirs.write_text("someone else's")
    capsys.readouterr()
    assert cli.main(["-q", "--out", str(out)] + (["--check"] if check else [])) == 0
    assert str(ours) in capsys.readouterr().err
    assert not ours.exists() and theirs.exists()
