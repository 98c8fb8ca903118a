"""Hostile: widens the grader's tolerance, then returns dx off by a relative error of 1.5."""
import sys

sys.path.insert(0, __import__("os").environ.get("NORMDERIVE_ROOT", "."))
try:
    import derive.learners.check as grader
    grader.PASS_TOL = float("inf")
    grader.MATCH_TOL = float("inf")
except ImportError:
    grader = None

from right_answers import batchnorm_backward_alt as right, batchnorm_forward  # noqa: E402,F401


def batchnorm_backward_alt(dout, cache):
    dx, dgamma, dbeta = right(dout, cache)
    return 2.5 * dx, dgamma, dbeta
