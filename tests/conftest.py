"""Test-session settings: numba's cache in a temporary folder of this run, never in generated/,
shared by pytest-xdist's workers (pyproject.toml runs the tests on every core: ``-n auto``); and,
in a run on one process (``-n 0``), a second process that compiles the numba kernels into it while
the other tests run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Set before any test imports generated.numba (its cache locator reads it when the kernels are
# decorated), and inherited by the subprocesses that the tests start.  The process that makes the
# folder (the one pytest was started in) hands it to xdist's workers, which it starts, through
# _OWNED, and removes it at the end; a kernel one worker compiled, another loads.
_OWNED = "NORMDERIVE_TEST_NUMBA_CACHE"
_MADE_HERE = _OWNED not in os.environ
_NUMBA_CACHE = os.environ.get(_OWNED) or tempfile.mkdtemp(prefix="normderive-numba-")
os.environ[_OWNED] = os.environ["NORMDERIVE_NUMBA_CACHE"] = _NUMBA_CACHE

#: the modules whose tests call generated.numba; in a run on one process they run last (see
#: pytest_collection_modifyitems)
NUMBA_MODULES = ("test_bench.py", "test_graph_oracle.py", "test_hard_inputs.py", "test_numba.py",
                 "test_torch_compile.py")
#: fewer numba tests than this compile their few kernels themselves
WARMUP_FROM = 100
_warmup: list[subprocess.Popen] = []


def pytest_collection_modifyitems(session, config, items):
    """In a run on one process: the numba tests last, and meanwhile tests/_numba_warmup.py compiles
    their kernels into this run's cache on the other core (numba compiles each kernel for each dtype
    and memory layout, seconds each, in one thread).  Only the order changes: every test still runs
    and calls every kernel it checks, loaded from the cache or compiled on the spot.  Under xdist
    the workers keep every core busy already."""
    if os.environ.get("PYTEST_XDIST_WORKER") or getattr(config.option, "numprocesses", None):
        for item in items:
            if item.path.name in NUMBA_MODULES:
                item.add_marker(pytest.mark.xdist_group("numba"))
        return
    numba = [item for item in items if item.path.name in NUMBA_MODULES]
    items[:] = [item for item in items if item.path.name not in NUMBA_MODULES] + numba
    if len(numba) >= WARMUP_FROM and not _warmup and not config.option.collectonly:
        import generated

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(generated.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
        _warmup.append(subprocess.Popen([sys.executable, str(Path(__file__).with_name("_numba_warmup.py"))],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def pytest_sessionfinish(session, exitstatus):
    for process in _warmup:
        process.kill()
        process.wait()
    if _MADE_HERE:
        shutil.rmtree(_NUMBA_CACHE, ignore_errors=True)


@pytest.fixture
def cached(monkeypatch):
    """In-process CLI runs use the session's derivations and renders (tests/_derived.py)."""
    from _derived import use_cache
    use_cache(monkeypatch)
