"""Filter Response Normalization with its Thresholded Linear Unit (Singh & Krishnan 2019, eqs. 1-3):

    nu2 = mean over (H, W) of x**2,    xhat = x / sqrt(nu2 + eps),
    y = gamma*xhat + beta,             z = max(y, tau)

per sample and channel of (N, C, H, W), with gamma, beta and tau learned per channel.
Not in the library: `derive build examples/frn.py --out frn_kernels`."""
from derive.forward import Spec

LAYOUT = Spec("frn", "Filter response normalization with TLU", "N,C,H,W", (2, 3), (1,), "frn_param",
              min_group=1, group_word="channel of one sample")


def forward(g):
    x = g.input("x")
    gamma, beta, tau = g.param("gamma"), g.param("beta"), g.param("tau")
    eps = g.constant("eps", 1e-6)
    nu2 = g.mean("nu2", x ** 2, "mean squared norm")
    xhat = g.elementwise("xhat", x / g.sqrt(nu2 + eps), "normalized input")
    y = g.elementwise("y", gamma * xhat + beta, "affine")
    g.output(g.max(y, tau))   # the TLU
