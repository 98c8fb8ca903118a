"""Nothing unimportable is written: every generated Python file is compiled, and the
package is imported in a scratch directory, before derive writes anything."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path


class ImportCheckError(RuntimeError):
    """A generated file does not compile or its package does not import."""


def check(files: dict[str, str], package: str = "generated") -> None:
    """Compile every .py of ``files``, then import ``package`` (and its numba subpackage when
    numba is installed) from a scratch copy in a fresh interpreter."""
    for rel, text in sorted(files.items()):
        if rel.endswith(".py"):
            try:
                compile(text, f"{package}/{rel}", "exec")
            except SyntaxError as e:
                raise ImportCheckError(f"{package}/{rel} does not compile: {e.msg} (line {e.lineno})") from None
    modules = sorted({package + "." + rel[:-3].replace("/", ".").removesuffix(".__init__")
                      for rel in files if rel.endswith(".py") and not rel.startswith("__main__")})
    for optional in ("numba", "torch", "jax"):
        if importlib.util.find_spec(optional) is None:
            modules = [m for m in modules if f".{optional}" not in m]
    if importlib.util.find_spec("torch") is None:   # generated.sync needs torch
        modules = [m for m in modules if ".sync" not in m]
    with tempfile.TemporaryDirectory(prefix="derive-import-") as tmp:
        root = Path(tmp) / package
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text, encoding="utf-8")
        code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
        run = subprocess.run([sys.executable, "-c", code, *modules], cwd=tmp, capture_output=True,
                             text=True, env={**_env(), "PYTHONPATH": tmp})
    if run.returncode:
        last = (run.stderr.strip().splitlines() or ["(no message)"])[-1]
        where = [line.strip() for line in run.stderr.splitlines() if line.strip().startswith("File")]
        raise ImportCheckError(f"the generated package does not import: {last}"
                               + (f" ({where[-1]})" if where else ""))


def _env() -> dict:
    import os
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env
