"""Batch renormalization (Ioffe 2017): the batch statistics, corrected towards the running ones by
r and d, which are clipped and carry no gradient.  Training reads the running statistics, so
they start as in torch and Ioffe's paper (mean 0, variance 1), not at CS231n's zeros."""
from ..claims import sum_vanishes
from ..layout import Facades, Spec

LAYOUT = Spec("batch_renorm", "Batch renormalization", "N,D", (0,), (1,), "bn_param", group_word="feature",
              facades=Facades(torch=("batch_renorm",), running="torch", unbiased=("running_var",)),
              minimums=(("r_max", 1.0), ("d_max", 0.0)), initial_running=(("running_var", 1.0),))
EXTRAS = (sum_vanishes("x - mu"),)


def forward(g):
    x, gamma, beta = g.input("x"), g.param("gamma"), g.param("beta")
    eps = g.constant("eps", 1e-5)
    # r in [1/r_max, r_max], d in [-d_max, d_max]: r_max = 1, d_max = 0 is batch norm (Ioffe's warm-up)
    r_max, d_max = g.constant("r_max", 3.0, minimum=1), g.constant("d_max", 5.0, minimum=0)
    mu = g.mean("mu", x, "mean")
    var = g.mean("var", (x - mu) ** 2, "variance")
    std = g.let("std", g.sqrt(var + eps))
    std_run = g.let("std_run", g.sqrt(g.running_value("running_var") + eps))
    r = g.let("r", g.stop_gradient(g.clip(std / std_run, 1 / r_max, r_max)))
    d = g.let("d", g.stop_gradient(g.clip((mu - g.running_value("running_mean")) / std_run, -d_max, d_max)))
    xhat = g.elementwise("xhat", (x - mu) / std * r + d, "renormalized input")
    g.output(gamma * xhat + beta)
    g.running("running_mean", mu)
    g.running("running_var", var)
