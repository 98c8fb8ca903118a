"""Every function of the assignment: layer norm as batch norm of the transpose (the CS231n hint),
spatial batch norm and group norm by reshaping, the backward both staged and compact."""
import numpy as np


def batchnorm_forward(x, gamma, beta, bn_param):
    mode, eps = bn_param["mode"], bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    N, D = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(D))
    running_var = bn_param.get("running_var", np.zeros(D))
    if mode == "train":
        out, cache = _normalize(x, gamma, beta, eps, axis=0)
        mu, var = cache["mu"], cache["var"]
        bn_param["running_mean"] = momentum * running_mean + (1 - momentum) * mu
        bn_param["running_var"] = momentum * running_var + (1 - momentum) * var
        return out, cache
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta, None


def _normalize(x, gamma, beta, eps, axis):
    mu = x.mean(axis=axis, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axis, keepdims=True)
    std = np.sqrt(var + eps)
    xhat = (x - mu) / std
    cache = {"x": x, "mu": mu.squeeze(axis), "var": var.squeeze(axis), "std": std, "xhat": xhat,
             "gamma": gamma, "axis": axis}
    return gamma * xhat + beta, cache


def batchnorm_backward(dout, cache):
    x, std, xhat, gamma, axis = cache["x"], cache["std"], cache["xhat"], cache["gamma"], cache["axis"]
    m = x.shape[axis]
    mu = x.mean(axis=axis, keepdims=True)
    dxhat = dout * gamma
    dvar = np.sum(dxhat * (x - mu), axis=axis, keepdims=True) * -0.5 * std ** -3
    dmu = -np.sum(dxhat, axis=axis, keepdims=True) / std + dvar * np.sum(-2 * (x - mu), axis=axis, keepdims=True) / m
    dx = dxhat / std + dvar * 2 * (x - mu) / m + dmu / m
    return dx, np.sum(dout * xhat, axis=0), np.sum(dout, axis=0)


def batchnorm_backward_alt(dout, cache):
    xhat, std, gamma, axis = cache["xhat"], cache["std"], cache["gamma"], cache["axis"]
    m = dout.shape[axis]
    dxhat = dout * gamma
    dx = (m * dxhat - dxhat.sum(axis=axis, keepdims=True)
          - xhat * (dxhat * xhat).sum(axis=axis, keepdims=True)) / (m * std)
    return dx, np.sum(dout * xhat, axis=0), np.sum(dout, axis=0)


def layernorm_forward(x, gamma, beta, ln_param):
    return _normalize(x, gamma, beta, ln_param.get("eps", 1e-5), axis=1)


def layernorm_backward(dout, cache):
    return batchnorm_backward_alt(dout, cache)


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    out, cache = batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, C), gamma, beta, bn_param)
    return out.reshape(N, H, W, C).transpose(0, 3, 1, 2), cache


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dx, dgamma, dbeta = batchnorm_backward(dout.transpose(0, 2, 3, 1).reshape(-1, C), cache)
    return dx.reshape(N, H, W, C).transpose(0, 3, 1, 2), dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    mu = xg.mean(axis=2, keepdims=True)
    var = xg.var(axis=2, keepdims=True)
    xhat = ((xg - mu) / np.sqrt(var + eps)).reshape(N, C, H, W)
    return gamma * xhat + beta, (xhat, gamma, np.sqrt(var + eps), G)


def spatial_groupnorm_backward(dout, cache):
    xhat, gamma, std, G = cache
    N, C, H, W = dout.shape
    dbeta = dout.sum(axis=(0, 2, 3), keepdims=True)
    dgamma = (dout * xhat).sum(axis=(0, 2, 3), keepdims=True)
    dxhat = (dout * gamma).reshape(N, G, -1)
    xh = xhat.reshape(N, G, -1)
    m = xh.shape[2]
    dx = (m * dxhat - dxhat.sum(axis=2, keepdims=True) - xh * (dxhat * xh).sum(axis=2, keepdims=True)) / (m * std)
    return dx.reshape(N, C, H, W), dgamma, dbeta
