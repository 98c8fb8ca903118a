"""Adaptive Instance Normalization (Huang & Belongie 2017, eq. 8): the content features x take
the channel-wise mean and standard deviation of the style features y,

    AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y),
    mu, sigma: over (H, W) of each sample and channel, sigma = sqrt(variance + eps),

where y has its own spatial size (its own groups) and the same samples and channels.
Both x and y get a gradient.  Not in the library:
`derive build examples/adain.py --out adain_kernels`."""
from derive.forward import Input, Spec

LAYOUT = Spec("adain", "Adaptive instance normalization", "N,C,H,W", (2, 3), (), "adain_param",
              inputs={"y": Input("N,C,H,W", reduce_axes=(2, 3))}, min_group=1,
              group_word="channel of one sample")


def forward(g):
    x, y = g.input("x"), g.input("y")
    eps = g.constant("eps", 1e-5)
    mu_x = g.mean("mu_x", x, "content mean")
    var_x = g.mean("var_x", (x - mu_x) ** 2, "content variance")
    mu_y = g.mean("mu_y", y, "style mean")
    var_y = g.mean("var_y", (y - mu_y) ** 2, "style variance")
    sigma_x = g.let("sigma_x", g.sqrt(var_x + eps), "content standard deviation")
    sigma_y = g.let("sigma_y", g.sqrt(var_y + eps), "style standard deviation")
    xhat = g.elementwise("xhat", (x - mu_x) / sigma_x, "normalized content")
    g.output(sigma_y * xhat + mu_y)
