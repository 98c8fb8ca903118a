"""Hostile: dx times 10 with one NaN, dgamma times 3; layer norm's dbeta has an inf."""
import numpy as np

from right_answers import batchnorm_backward_alt as right, batchnorm_forward  # noqa: F401
from right_answers import layernorm_backward as right_ln, layernorm_forward  # noqa: F401


def batchnorm_backward_alt(dout, cache):
    dx, dgamma, dbeta = right(dout, cache)
    dx = 10 * dx
    dx[0, 0] = np.nan
    return dx, 3 * dgamma, dbeta


def layernorm_backward(dout, cache):
    dx, dgamma, dbeta = right_ln(dout, cache)
    dbeta = dbeta.copy()
    dbeta[-1] = np.inf
    return dx, dgamma, dbeta
