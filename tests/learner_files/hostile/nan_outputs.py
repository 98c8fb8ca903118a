"""Hostile: dx times 10 with one NaN and dgamma times 3 (the issue's case); right layer-norm
gradients but for one NaN in dbeta, the last output; an inf in spatial batch norm's dx."""
import numpy as np

from right_answers import batchnorm_backward_alt as right, batchnorm_forward  # noqa: F401
from right_answers import layernorm_backward as right_ln, layernorm_forward  # noqa: F401
from right_answers import spatial_batchnorm_backward as right_sbn, spatial_batchnorm_forward  # noqa: F401


def batchnorm_backward_alt(dout, cache):
    dx, dgamma, dbeta = right(dout, cache)
    dx = 10 * dx
    dx[0, 0] = np.nan
    return dx, 3 * dgamma, dbeta


def layernorm_backward(dout, cache):
    dx, dgamma, dbeta = right_ln(dout, cache)
    dbeta = dbeta.copy()
    dbeta[-1] = np.nan
    return dx, dgamma, dbeta


def spatial_batchnorm_backward(dout, cache):
    dx, dgamma, dbeta = right_sbn(dout, cache)
    dx[-1, -1, -1, -1] = np.inf
    return dx, dgamma, dbeta
