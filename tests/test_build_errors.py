"""`derive build` on malformed graph files: one line on stderr naming the file or the node,
a non-zero exit, nothing written, never a traceback (issue 19's list, and a few more)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from derive import cli

ROOT = Path(__file__).resolve().parent.parent
HEAD = "import sympy as sp\nfrom derive.forward import Input, Spec\n"
LAYOUT = "LAYOUT = Spec('mine', 'Mine', 'N,D', (0,), (1,), 'p')\n"
FORWARD = "def forward(g):\n    x = g.input('x')\n    mu = g.mean('mu', x)\n    g.output(x - mu)\n"

CASES = {
    # (file text, what the one line must say)
    "raising_forward": (HEAD + LAYOUT + "def forward(g):\n    x = g.input('x')\n    1 / 0\n",
                        "forward(g) raised ZeroDivisionError at line 6: division by zero"),
    "import_error": (HEAD + "import no_such_module_here\n" + LAYOUT + FORWARD,
                     "importing it raised ModuleNotFoundError at line 3"),
    "exit_in_file": (HEAD + "import sys\nsys.exit(0)\n" + LAYOUT + FORWARD, "SystemExit(0) (sys.exit)"),
    "exit_in_forward": (HEAD + LAYOUT + "def forward(g):\n    raise SystemExit(3)\n", "forward(g) raised SystemExit(3)"),
    "syntax_error": (HEAD + LAYOUT + "def forward(g)\n    pass\n", "line 4"),
    "library_name": (HEAD + "LAYOUT = Spec('batchnorm', 'BN', 'N,D', (0,), (1,), 'p')\n" + FORWARD,
                     "LAYOUT name 'batchnorm' is a library entry's"),
    "axis_out_of_range": (HEAD + "LAYOUT = Spec('mine', 'Mine', 'N,D', (2,), (1,), 'p')\n" + FORWARD,
                          "LAYOUT reduce_axes: axis 2 is out of range for a working view of 2 axes"),
    "param_axis_out_of_range": (HEAD + "LAYOUT = Spec('mine', 'Mine', 'N,D', (0,), (1,), 'p', axes={'w': (5,)})\n"
                                + FORWARD, "LAYOUT axes['w']: axis 5 is out of range"),
    "output_named_dx": (HEAD + LAYOUT + "def forward(g):\n    x = g.input('x')\n    mu = g.mean('mu', x)\n"
                        "    g.output(x - mu, name='dx')\n", "node 'dx': the name d<name> of a named quantity"),
    "undefined_symbol": (HEAD + LAYOUT + "def forward(g):\n    x = g.input('x')\n    g.output(x * sp.Symbol('w'))\n",
                         "node 'out': undefined symbol w"),
    "second_input_without_layout": (HEAD + LAYOUT + "def forward(g):\n    x, s = g.input('x'), g.input('s')\n"
                                    "    g.output(x * s)\n", "input 's': a second input needs its layout"),
    "own_input_read_outside_its_reductions": (
        HEAD + "LAYOUT = Spec('mine', 'Mine', 'N,D', (1,), (), 'p', inputs={'s': Input('N,E', reduce_axes=(1,))})\n"
        "def forward(g):\n    x, s = g.input('x'), g.input('s')\n    mu = g.mean('mu', x)\n    g.output(x - mu + s)\n",
        "node 'out': reads the input 's', which has its own groups"),
    "no_layout": ("def forward(g):\n    pass\n", "defines no LAYOUT"),
    # proved, but a scalar parameter beside per-feature ones with running statistics is not laid out by
    # the kernels yet: refused, never printed as one more per-feature parameter
    "scalar_beside_per_feature_with_running": (
        HEAD + "LAYOUT = Spec('mine', 'Mine', 'N,D', (0,), (1,), 'p', axes={'t': ()})\n"
        "def forward(g):\n    x, gamma, t = g.input('x'), g.param('gamma'), g.param('t')\n"
        "    mu = g.mean('mu', x)\n    g.output(gamma * (x - mu) * t)\n    g.running('running_mean', mu)\n",
        "leaves span other axes than param_axes=(1,) (t) and running statistics are not printed yet"),
    "unknown_function": (HEAD + LAYOUT + "def forward(g):\n    x = g.input('x')\n    g.output(sp.erf(x))\n",
                         "node 'out': erf has no derivative rule"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_line_nothing_written(case, tmp_path, capsys):
    text, expected = CASES[case]
    path = tmp_path / f"{case}.py"
    path.write_text(text)
    out = tmp_path / "kernels"
    code = cli.main(["-q", "build", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0, err
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err, err
    assert "Traceback" not in err and not out.exists()
    assert str(path) in err or "node" in err or "input" in err


def test_a_missing_file(tmp_path, capsys):
    assert cli.main(["build", str(tmp_path / "nowhere.py"), "--out", str(tmp_path / "k")]) == 1
    assert "nowhere.py: no such file" in capsys.readouterr().err


def test_an_out_folder_that_is_not_a_package_name(tmp_path, capsys):
    out = tmp_path / "my-kernels"
    assert cli.main(["build", str(ROOT / "examples" / "pixelnorm.py"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "'my-kernels'" in err and "'my_kernels'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_sys_exit_0_in_the_file_is_an_error_from_the_command_line(tmp_path):
    """The issue's case: sys.exit(0) in the graph file gave exit 0 and no message."""
    path = tmp_path / "exits.py"
    path.write_text(CASES["exit_in_file"][0])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "derive", "build", str(path), "--out", str(tmp_path / "k")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "SystemExit(0)" in run.stderr


def test_an_input_whose_groups_do_not_match_xs(tmp_path, capsys):
    path = tmp_path / "mismatch.py"
    path.write_text(HEAD + "LAYOUT = Spec('mine', 'Mine', 'N,C,H,W', (2, 3), (), 'p', "
                    "inputs={'y': Input('N,L', reduce_axes=(1,))})\n" + FORWARD)
    assert cli.main(["build", str(path), "--out", str(tmp_path / "k")]) == 1
    assert "inputs['y']: its groups must match x's one to one" in capsys.readouterr().err
