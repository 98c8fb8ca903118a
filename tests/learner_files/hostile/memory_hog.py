"""Hostile: a backward that asks for 3 GiB (more than the grader's limit allows) before it answers."""
import numpy as np

from right_answers import batchnorm_backward_alt as right, batchnorm_forward  # noqa: F401


def batchnorm_backward_alt(dout, cache):
    scratch = np.empty(3 * 2 ** 30, dtype=np.uint8)  # address space only: no page is touched
    scratch[:1] = 0
    return right(dout, cache)
