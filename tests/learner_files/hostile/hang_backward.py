"""Hostile: a right forward, a backward that never returns."""
from right_answers import batchnorm_forward  # noqa: F401


def batchnorm_backward_alt(dout, cache):
    while True:
        pass
