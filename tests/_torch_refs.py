"""Plain torch implementations of the graphs in tests/test_examples.py, written from the papers
(not from the graphs): torch autograd differentiates them, and the derivations must agree."""
from __future__ import annotations

import torch


def frn(x, gamma, beta, tau, eps=1e-6):
    """Singh & Krishnan 2019, eqs. 1-3 (their reference code, in NCHW)."""
    nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)
    x = x * torch.rsqrt(nu2 + eps)
    return torch.max(gamma * x + beta, tau)


def evonorm_s0(x, gamma, beta, v, groups, eps=1e-5):
    """Liu et al. 2020, Algorithm 1 (group_std with the biased variance)."""
    n, c, h, w = x.shape
    xg = x.reshape(n, groups, c // groups, h, w)
    var = xg.var(dim=(2, 3, 4), keepdim=True, unbiased=False)
    std = torch.sqrt(var + eps).expand_as(xg).reshape(n, c, h, w)
    return x * torch.sigmoid(v * x) / std * gamma + beta


def adain(x, y, eps=1e-5):
    """Huang & Belongie 2017, eq. 8, with sigma = sqrt(variance + eps) (the biased variance)."""
    def stats(t):
        mu = t.mean(dim=(2, 3), keepdim=True)
        return mu, torch.sqrt(t.var(dim=(2, 3), keepdim=True, unbiased=False) + eps)
    mu_x, sigma_x = stats(x)
    mu_y, sigma_y = stats(y)
    return sigma_y * (x - mu_x) / sigma_x + mu_y


def mad_norm(x, gamma, beta, eps=1e-5):
    """Normalized by the mean absolute deviation over the batch (L1 batch norm), per feature of (N, D)."""
    mu = x.mean(dim=0, keepdim=True)
    mad = (x - mu).abs().mean(dim=0, keepdim=True)
    return gamma * (x - mu) / (mad + eps) + beta


def softmax_norm(x):
    """exp inside the reduction: softmax over the last axis."""
    e = torch.exp(x)
    return e / e.sum(dim=-1, keepdim=True)


def scale_norm(x, g, eps=1e-5):
    """ScaleNorm (Nguyen & Salazar 2019): one learned scalar g, x / max(||x||, eps) along the last axis."""
    return g * x / torch.clamp_min(x.norm(dim=-1, keepdim=True), eps)


def weighted_rms(x, w, eps=1e-5):
    """A per-feature weight inside the reduction: x / sqrt(mean(w * x**2) + eps) along the last axis."""
    return x / torch.sqrt((w * x * x).mean(dim=-1, keepdim=True) + eps)


def conditional_in(x, gamma_c, beta_c, eps=1e-5):
    """Conditional instance norm: per-sample gamma and beta (N, C) given as inputs."""
    mu = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    return gamma_c[:, :, None, None] * (x - mu) / torch.sqrt(var + eps) + beta_c[:, :, None, None]


def bn_swish(x, gamma, beta, v, running_mean, running_var, training, eps=1e-5, momentum=0.9):
    """Batch norm, then y*sigmoid(v*y) with v learned per feature; (N, D); CS231n's momentum."""
    if training:
        mu = x.mean(dim=0)
        var = x.var(dim=0, unbiased=False)
    else:
        mu, var = running_mean, running_var
    y = gamma * (x - mu) / torch.sqrt(var + eps) + beta
    return y * torch.sigmoid(v * y)


def log_norm(x, gamma):
    """log inside the reduction, exp of the group value: x / geometric mean of (1 + x**2) along the last axis."""
    return gamma * x * torch.exp(-torch.log(x ** 2 + 1).mean(dim=-1, keepdim=True))


def sign_clamp(x, t):
    """clamp against group values, sign, min against a scalar parameter; per feature of (N, D)."""
    mu = x.mean(dim=0, keepdim=True)
    bound = x.abs().mean(dim=0, keepdim=True)
    return torch.max(torch.min(x - mu, bound), -bound) + torch.sign(x) * torch.clamp_max(x ** 2, t)


def linf_like(x, c):
    """max against a parameter inside a reduction: (x - mu) / mean(max(|x - mu|, c)) per feature."""
    mu = x.mean(dim=0, keepdim=True)
    return (x - mu) / torch.clamp_min((x - mu).abs(), c).mean(dim=0, keepdim=True)


def gated_ln(x, gate, gamma, eps=1e-5):
    """A second input of x's shape: layer norm of x, gated elementwise by sigmoid(gate) (N, D)."""
    mu = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return gamma * (x - mu) / torch.sqrt(var + eps) * torch.sigmoid(gate)
