"""Mean-only batch normalization (Salimans & Kingma 2016): subtract the batch mean, add a bias."""
from ..claims import gradient_sums_to_zero
from ..layout import Facades, Spec

LAYOUT = Spec("meanonly_batchnorm", "Mean-only batch normalization", "N,D", (0,), (1,), "bn_param",
              group_word="feature",
              facades=Facades(torch=("mean_only_batch_norm",), running="torch"))
EXTRAS = (gradient_sums_to_zero,)


def forward(g):
    x, beta = g.input("x"), g.param("beta")
    mu = g.mean("mu", x, "mean")
    xc = g.elementwise("xc", x - mu, "centred input")
    g.output(xc + beta)
    g.running("running_mean", mu)
