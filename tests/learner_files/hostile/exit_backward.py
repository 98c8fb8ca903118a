"""Hostile: a right forward, a backward that calls sys.exit(0)."""
import sys

from right_answers import batchnorm_forward  # noqa: F401


def batchnorm_backward_alt(dout, cache):
    sys.exit(0)
