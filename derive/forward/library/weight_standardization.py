"""Weight standardization (Qiao et al. 2019): each output channel of a conv weight (O, I, kH, kW)
standardized over (I, kH, kW)."""
from ..claims import gradient_sums_to_zero, sum_vanishes
from ..layout import Facades, Spec

LAYOUT = Spec("weight_standardization", "Weight standardization", "O,I,H,W", (1, 2, 3), (0,), "ws_param",
              group_word="output channel",
              facades=Facades(torch=("weight_standardization",)))
EXTRAS = (sum_vanishes("x - mu"), gradient_sums_to_zero)


def forward(g):
    x = g.input("x")
    eps = g.constant("eps", 1e-5)
    mu = g.mean("mu", x, "mean")
    var = g.mean("var", (x - mu) ** 2, "variance")
    std = g.let("std", g.sqrt(var + eps))
    g.output((x - mu) / std)
