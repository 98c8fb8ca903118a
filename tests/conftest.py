"""Test-session settings: numba's cache in a temporary folder of this run, never in generated/."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# Set before any test imports generated.numba (its cache locator reads it when the kernels are
# decorated), and inherited by the subprocesses that the tests start.
_NUMBA_CACHE = tempfile.mkdtemp(prefix="normderive-numba-")
os.environ["NORMDERIVE_NUMBA_CACHE"] = _NUMBA_CACHE


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_NUMBA_CACHE, ignore_errors=True)


@pytest.fixture
def cached(monkeypatch):
    """In-process CLI runs use the session's derivations and renders (tests/_derived.py)."""
    from _derived import use_cache
    use_cache(monkeypatch)
