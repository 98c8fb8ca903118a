"""Instance normalization (Ulyanov et al. 2016): statistics over (H, W) of each sample's channel."""
from ..claims import gradient_sums_to_zero
from ..layout import Facades, Spec

LAYOUT = Spec("instancenorm", "Instance normalization", "N,C,H,W", (2, 3), (1,), "in_param",
              group_word="channel of one sample",
              facades=Facades(torch=("instance_norm",)))
EXTRAS = (gradient_sums_to_zero,)


def forward(g):
    x, gamma, beta = g.input("x"), g.param("gamma"), g.param("beta")
    eps = g.constant("eps", 1e-5)
    mu = g.mean("mu", x, "mean")
    var = g.mean("var", (x - mu) ** 2, "variance")
    std = g.let("std", g.sqrt(var + eps))
    xhat = g.elementwise("xhat", (x - mu) / std, "normalized input")
    g.output(gamma * xhat + beta)
