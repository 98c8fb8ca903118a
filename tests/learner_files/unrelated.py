"""An error that is no known slip: dx scaled by 2."""
import numpy as np
from compact_dict import batchnorm_forward  # noqa: F401  (found on the file's own folder)


def batchnorm_backward_alt(dout, cache):
    xhat, gamma, istd = cache["xhat"], cache["gamma"], cache["istd"]
    N = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    return 2 * gamma * istd / N * (N * dout - dbeta - xhat * dgamma), dgamma, dbeta
