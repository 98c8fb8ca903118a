"""Pixel normalization (Karras et al. 2018, ProGAN), channels last: each pixel's feature vector
divided by its root mean square.  A normalization that is not in the library: `derive build` it."""
from derive.forward import Spec

LAYOUT = Spec("pixelnorm", "Pixel normalization", "...,C", (-1,), (), "pn_param", min_group=1,
              group_word="pixel")


def forward(g):
    x = g.input("x")
    eps = g.constant("eps", 1e-8)
    ms = g.mean("ms", x ** 2, "mean square")
    g.output(x / g.sqrt(ms + eps))
