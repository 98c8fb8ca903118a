"""Batch normalization (Ioffe & Szegedy 2015), CS231n's batchnorm_forward."""
from ..claims import gradient_sums_to_zero, sum_vanishes
from ..layout import Facades, Spec

LAYOUT = Spec("batchnorm", "Batch normalization", "N,D", (0,), (1,), "bn_param",
              batch_axis_option=True, textbook=True, group_word="feature",
              facades=Facades(torch=("batch_norm",), running="torch", unbiased=("running_var",), sync=True))
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
