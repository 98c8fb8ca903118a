"""Group normalization (Wu & He 2018): statistics over (C/G, H, W) of each sample."""
from ..claims import gradient_sums_to_zero
from ..layout import Facades, Spec

LAYOUT = Spec("spatial_groupnorm", "Group normalization", "N,C,H,W", (2, 3, 4), (1, 2), "gn_param",
              groups=True, param_shape="broadcast", min_group=1,
              facades=Facades(torch=("group_norm",)))
EXTRAS = (gradient_sums_to_zero,)


def forward(g):
    x, gamma, beta = g.input("x"), g.param("gamma"), g.param("beta")
    eps = g.constant("eps", 1e-5)
    mu = g.mean("mu", x, "mean")
    var = g.mean("var", (x - mu) ** 2, "variance")
    std = g.let("std", g.sqrt(var + eps))
    xhat = g.elementwise("xhat", (x - mu) / std, "normalized input")
    g.output(gamma * xhat + beta)
