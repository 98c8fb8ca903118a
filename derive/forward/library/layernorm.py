"""Layer normalization (Ba et al. 2016): statistics over the features of each row."""
from ..claims import gradient_sums_to_zero
from ..layout import Facades, Spec

LAYOUT = Spec("layernorm", "Layer normalization", "N,D", (1,), (1,), "ln_param", min_group=1, group_word="row",
              facades=Facades(torch=("layer_norm",)))
EXTRAS = (gradient_sums_to_zero,)


def forward(g):
    x, gamma, beta = g.input("x"), g.param("gamma"), g.param("beta")
    eps = g.constant("eps", 1e-5)
    mu = g.mean("mu", x, "mean")
    var = g.mean("var", (x - mu) ** 2, "variance")
    std = g.let("std", g.sqrt(var + eps))
    xhat = g.elementwise("xhat", (x - mu) / std, "normalized input")
    g.output(gamma * xhat + beta)
