"""`derive bench`: the quick mode runs end to end, and the timing and goal logic is right."""
from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from derive import cli
from derive.bench import cpu as bench


def test_quick_mode_through_the_cli(tmp_path, capsys, monkeypatch):
    """Two small shapes, float32, every norm and every installed contender, in a few seconds
    once numba's cache is warm (the first run compiles the kernels).  On a busy machine (a load
    average above the core count; here a pretended one) it says so."""
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    assert cli.main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "warning: the machine is busy (load average 99.0" in err
    assert "warning: the machine is busy" in (tmp_path / "bench_table.md").read_text()
    lines = out.splitlines()
    header = [n for n, line in enumerate(lines) if line.startswith("| norm | shape | dtype | pass |")]
    rows = [line for line in lines if line.startswith("| batchnorm |") or line.startswith("| layernorm |")]
    assert len(header) == 1 and rows and lines.index(rows[0]) > header[0]   # the header comes first
    assert len(rows) == len(set(rows)), "a row is printed twice"
    assert "MISSED" not in out and " met " not in out   # no goal verdicts from tiny shapes
    table = (tmp_path / "bench_table.md").read_text()
    for norm in bench.NORMS:
        for direction in ("forward", "backward"):
            assert f"| {norm} | 64x256 | float32 | {direction} |" in table
    for line in table.splitlines():
        if line.startswith("| batchnorm | 64x256"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert float(cells[4]) > 0 and float(cells[7]) > 0      # floor and numpy timed
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:  # generated.torch beside torch's native kernels: one table, its ratios in words
        assert out.count("generated.torch against torch's native kernels") == 1
        ratios = [line for line in out.splitlines() if line.startswith(("| batch norm | (", "| group norm | ("))]
        assert ratios and all(line.endswith(("x slower |", "x faster |")) for line in ratios)
        # the second process, keeping glibc's memory, timed the same cases: four more cells each
        for line in ratios:
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert len(cells) == 12 and float(cells[8]) > 0 and float(cells[9]) > 0
            assert cells[7].endswith(("x slower", "x faster")) and cells[11].endswith(("x slower", "x faster"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "bench_float32.png").stat().st_size > 0


def test_a_busy_machine_is_one_whose_load_exceeds_its_cores():
    assert bench.busy(2.0, 2) is None and bench.busy(0.3, 1) is None
    assert "busy (load average 2.5 on 2 cores)" in bench.busy(2.5, 2)


def test_the_torch_ratio_says_which_is_faster():
    from derive.bench import torch as bench_torch
    assert bench_torch.direction(2.0) == "2.00x slower"      # generated takes twice native's time
    assert bench_torch.direction(1 / 1.3) == "1.30x faster"
    assert bench_torch.direction(1.0) == "1.00x slower"
    row = bench_torch.table([("batch norm", (4, 8), "numba", 3.0, 1.5, 2.0, 0.5)]).splitlines()[-1]
    assert row == "| batch norm | (4, 8) | numba | 3.00 | 1.50 | 2.00 | 2.00x slower | 2.00x faster |"
    two = [("batch norm", (4, 8), "numba", 3.0, 1.5, 2.0, 1.1), ("layer norm", (2, 8), "numba", 1.0, 2.0, 0.5, 0.4)]
    rows = bench_torch.table(two, [("batch norm", (4, 8), "numba", 1.2, 1.5, 0.8, 1.3)]).splitlines()
    assert rows[2] == ("| batch norm | (4, 8) | numba | 3.00 | 1.50 | 2.00 | 2.00x slower | 1.10x slower "
                       "| 1.20 | 1.50 | 1.25x faster | 1.30x slower |")
    assert rows[3].endswith("| 2.50x faster | - | - | - | - |")   # a case the second process did not time


def test_the_torch_timings_keep_each_sides_calls_apart_and_run_all_of_them():
    """In a row, each side runs ``block`` times a round and its first call, which pays for the switch
    from the other side, is not counted; in turn, once a round; every round runs every side."""
    from derive.bench import torch as bench_torch
    calls = {"a": 0, "b": 0}
    last = [None]

    def side(name):
        def fn():
            calls[name] += 1
            if last[0] != name:   # the switch-over: 4 ms
                time.sleep(0.004)
            last[0] = name
        return fn
    a, b = bench_torch._medians([side("a"), side("b")], 3, 2)
    assert calls == {"a": 1 + 3 * 2, "b": 1 + 3 * 2}
    assert a < 0.002 and b < 0.002   # counting the first call of each pair would give 2 ms
    calls.update(a=0, b=0)
    bench_torch._medians([side("a"), side("b")], 5)
    assert calls == {"a": 6, "b": 6}
    assert bench_torch.BLOCK > 1


def test_help_shows_the_benchmark_options(capsys):
    """`derive bench --help` is bench's own parser, not a placeholder for its arguments."""
    with pytest.raises(SystemExit) as exit:
        cli.main(["bench", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: derive bench") and all(
        option in out for option in ("--quick", "--out", "--dtype", "--repeats", "--norm", "--no-torch"))


def test_rounds_are_interleaved_and_rotated():
    calls = []
    runners = [bench.Contender(name, functools.partial(calls.append, name)) for name in "abc"]
    medians = bench.measure(runners, max_rounds=6, budget_s=0.0)
    timed = calls[2 * 3:]                      # after two warm-up calls each
    rounds = [timed[i:i + 3] for i in range(0, len(timed), 3)]
    assert len(rounds) == bench.MIN_ROUNDS
    assert [r[0] for r in rounds] == ["a", "b", "c", "a", "b"]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert set(medians) == {"a", "b", "c"} and all(v >= 0 for v in medians.values())


def _result(shape, direction="backward", dtype="float32", norm="batchnorm", **ms):
    return bench.Result(norm, shape, dtype, direction, {k: v / 1e3 for k, v in ms.items()})


def test_goals_are_judged_on_the_worst_ratio():
    good = [_result((4096, 1024), floor=1.0, staged=30.0, numpy=2.0, numba=1.4, torch1=3.0, torch2=2.0),
            _result((1024, 8192), floor=2.0, staged=60.0, numpy=5.0, numba=2.9, torch1=6.0, torch2=4.0)]
    text = bench.goals(good)
    assert "MISSED" not in text and text.count("met") == 5
    slow = good + [_result((64, 256), floor=0.01, numpy=0.2, numba=0.02, torch1=0.05, torch2=0.03)]
    lines = bench.goals(slow).splitlines()
    assert "MISSED" in lines[0] and "2.00" in lines[0] and "64x256" in lines[0]
    assert "met" in lines[1]
    staged_close = [_result((4096, 1024), floor=1.0, staged=9.0, numpy=2.0, numba=1.0, torch1=3.0, torch2=2.0)]
    assert "MISSED" in bench.goals(staged_close).splitlines()[-1]


def test_table_has_times_and_ratios():
    row = bench.table([_result((64, 256), floor=1.0, numpy=3.0, numba=1.5, torch1=2.0, torch2=1.0)])
    cells = [c.strip() for c in row.splitlines()[-1].strip("|").split("|")]
    assert cells[:4] == ["batchnorm", "64x256", "float32", "backward"]
    assert cells[4] == "1.000" and cells[5] == "-" and cells[6] == "-" and cells[7] == "3.000"
    assert cells[-5:] == ["3.00", "1.50", "1.50", "1.50", "-"]


def test_every_norm_runs_on_every_shape():
    for norm in bench.NORMS:
        for shape in bench.SHAPES + bench.QUICK_SHAPES:
            _, vshape, extra = bench.variant(norm, shape)
            assert int(np.prod(vshape)) == int(np.prod(shape))
            if "G" in extra:
                assert vshape[1] % extra["G"] == 0
