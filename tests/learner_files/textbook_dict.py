"""The textbook chain rule through dvar and dmu, the cache a dict (CS231n's batchnorm_backward)."""
import numpy as np


def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    N, D = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))
    if mode == "train":
        mu = np.mean(x, axis=0)
        var = np.sum((x - mu) ** 2, axis=0) / N
        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var = momentum * running_var + (1 - momentum) * var
    else:
        mu, var = running_mean, running_var
    std = np.sqrt(var + eps)
    x_hat = (x - mu) / std
    bn_param["running_mean"], bn_param["running_var"] = running_mean, running_var
    cache = {"x": x, "mu": mu, "var": var, "std": std, "x_hat": x_hat, "gamma": gamma}
    return gamma * x_hat + beta, cache


def batchnorm_backward(dout, cache):
    x, mu, var, std = cache["x"], cache["mu"], cache["var"], cache["std"]
    x_hat, gamma = cache["x_hat"], cache["gamma"]
    m = x.shape[0]
    dgamma = np.sum(dout * x_hat, axis=0)
    dbeta = np.sum(dout, axis=0)
    dx_hat = dout * gamma
    dvar = np.sum(dx_hat * (x - mu), axis=0) * -0.5 * std ** -3
    dmu = -np.sum(dx_hat, axis=0) / std + dvar * np.sum(-2 * (x - mu), axis=0) / m
    dx = dx_hat / std + dvar * 2 * (x - mu) / m + dmu / m
    return dx, dgamma, dbeta
