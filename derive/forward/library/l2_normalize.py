"""L2 normalization, torch.nn.functional.normalize: x / max(||x||_2, eps) along the last axis."""
from ..layout import Facades, Spec

LAYOUT = Spec("l2_normalize", "L2 normalization", "...,D", (-1,), (), "l2_param", min_group=1,
              group_word="row",
              facades=Facades(torch=("normalize",)))


def forward(g):
    x = g.input("x")
    eps = g.constant("eps", 1e-12)
    sq = g.sum("sq", x ** 2, "sum of squares")
    norm = g.let("norm", g.sqrt(sq))
    den = g.let("den", g.clamp_min(norm, eps))
    g.output(x / den)
