"""Nothing unimportable or wrong is written: every generated Python file is compiled, the package is
imported in a scratch directory, and (given the derivations) every backend's kernels are run there
against the proved expressions (:mod:`derive.output.verify`), before derive writes anything."""
from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path


class ImportCheckError(RuntimeError):
    """A generated file does not compile or its package does not import."""


class VerifyError(ImportCheckError):
    """A backend's kernels disagree with the proved expressions (the message names the backend, the
    function, the output and the case)."""


def check(files: dict[str, str], package: str = "generated", derivations=None) -> None:
    """Compile every .py of ``files``, then import ``package`` (every subpackage whose backend's
    modules are installed) from a scratch copy in a fresh interpreter, and there run every backend's
    kernels against the proved expressions of ``derivations`` (when given)."""
    for rel, text in sorted(files.items()):
        if rel.endswith(".py"):
            try:
                compile(text, f"{package}/{rel}", "exec")
            except SyntaxError as e:
                raise ImportCheckError(f"{package}/{rel} does not compile: {e.msg} (line {e.lineno})") from None
    modules = sorted({package + "." + rel[:-3].replace("/", ".").removesuffix(".__init__")
                      for rel in files if rel.endswith(".py") and not rel.startswith("__main__")})
    from .. import backends
    for backend in backends.BACKENDS:
        if backend.package and not all(importlib.util.find_spec(r) for r in backend.requires):
            modules = [m for m in modules if not m.startswith(f"{package}.{backend.package}")]
    with tempfile.TemporaryDirectory(prefix="derive-import-") as tmp:
        root = Path(tmp) / package
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text, encoding="utf-8")
        if derivations is not None:
            pickled = Path(tmp) / ".derivations.pickle"
            pickled.write_bytes(pickle.dumps(list(derivations)))
            command = ["-m", "derive.output.verify", tmp, package, str(pickled)]
        else:
            command = ["-c", "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"]
        code = Path(__file__).resolve().parents[2]   # the folder that holds the running derive/
        run = subprocess.run([sys.executable, *command, *modules], cwd=tmp, capture_output=True, text=True,
                             env={**_env(), "PYTHONPATH": os.pathsep.join([tmp, str(code)])})
    if run.returncode:
        lines = run.stderr.strip().splitlines() or ["(no message)"]
        if lines[-1].startswith("backend "):
            raise VerifyError(f"the generated kernels are wrong: {lines[-1]}")
        where = [line.strip() for line in lines if line.strip().startswith("File")]
        raise ImportCheckError(f"the generated package does not import: {lines[-1]}"
                               + (f" ({where[-1]})" if where else ""))


def _env() -> dict:
    import os
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env
