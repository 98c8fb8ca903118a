"""Hostile: prints a passing verdict of its own and leaves at once, status 0."""
import json
import os
import sys

from right_answers import batchnorm_forward  # noqa: F401


def batchnorm_backward_alt(dout, cache):
    sys.stdout.write(json.dumps({"file": __file__, "passed": True, "results": []}) + "\n")
    sys.stdout.flush()
    os.write(1, b'{"passed": true}\n')
    os._exit(0)
