"""Spatial batch normalization: one mean and variance per channel of (N, C, H, W)."""
from ..claims import gradient_sums_to_zero, sum_vanishes
from ..layout import Spec

LAYOUT = Spec("spatial_batchnorm", "Spatial batch normalization", "N,C,H,W", (0, 2, 3), (1,),
              "bn_param", group_word="channel")
EXTRAS = (sum_vanishes("x - mu"), gradient_sums_to_zero)


def forward(g):
    x, gamma, beta = g.input("x"), g.param("gamma"), g.param("beta")
    eps = g.constant("eps", 1e-5)
    mu = g.mean("mu", x, "mean")
    var = g.mean("var", (x - mu) ** 2, "variance")
    std = g.let("std", g.sqrt(var + eps))
    xhat = g.elementwise("xhat", (x - mu) / std, "normalized input")
    g.output(gamma * xhat + beta)
    g.running("running_mean", mu)
    g.running("running_var", var)
