"""RMS normalization (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps), scaled; no mean, no shift."""
from ..layout import Facades, Spec

LAYOUT = Spec("rmsnorm", "RMS normalization", "...,D", (-1,), (-1,), "rms_param", min_group=1,
              group_word="row",
              facades=Facades(torch=("rms_norm",)))


def forward(g):
    x, gamma = g.input("x"), g.param("gamma")
    eps = g.constant("eps", 1e-5)
    var = g.mean("var", x ** 2, "mean square")
    std = g.let("std", g.sqrt(var + eps))
    xhat = g.elementwise("xhat", x / std, "normalized input")
    g.output(gamma * xhat)
