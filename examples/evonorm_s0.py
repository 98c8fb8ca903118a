"""EvoNorm-S0 (Liu et al. 2020, Table 1 and its Algorithm): a sample-based layer with a
swish-like numerator over a group standard deviation,

    out = x * sigmoid(v*x) / group_std(x) * gamma + beta,
    group_std(x) = sqrt(var over (C/G, H, W) of x + eps)   (the biased variance)

for (N, C, H, W) in G groups of channels, with gamma, beta and v learned per channel.
Not in the library: `derive build examples/evonorm_s0.py --out evonorm_kernels`."""
from derive.forward import Spec

LAYOUT = Spec("evonorm_s0", "EvoNorm-S0", "N,C,H,W", (2, 3, 4), (1, 2), "evo_param", groups=True,
              param_shape="broadcast", min_group=1)


def forward(g):
    x = g.input("x")
    gamma, beta, v = g.param("gamma"), g.param("beta"), g.param("v")
    eps = g.constant("eps", 1e-5)
    mu = g.mean("mu", x, "group mean")
    var = g.mean("var", (x - mu) ** 2, "group variance")
    std = g.let("std", g.sqrt(var + eps), "group standard deviation")
    num = g.elementwise("num", x * g.sigmoid(v * x), "numerator")
    g.output(num / std * gamma + beta)
