"""Issue 22's inputs for generated.torch and generated.jax, held against torch: float16/bfloat16
inputs (item 1), arguments torch refuses (item 2), zero-size batches (item 3).

The inputs are torch tensors; the JAX tests convert them.  What torch returns or raises is not
restated here: each test asks torch itself."""
from __future__ import annotations

import math

import torch

F32, F64, C64, I64, HALF, BF16 = (torch.float32, torch.float64, torch.complex64, torch.int64, torch.float16,
                                  torch.bfloat16)


def t(*shape, dtype=F32):
    """Values -1..1 of ``shape`` (deterministic; their values do not matter to a refusal)."""
    n = math.prod(shape)
    return torch.linspace(-1, 1, n).reshape(shape).to(dtype)


def ones(n, dtype=F32):
    return torch.ones(n, dtype=dtype)


#: (label, function, args, kwargs, the argument the message must name, whether generated.jax
#: takes these arguments too)
BN, LN, GN, IN, RMS, NORM = "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "normalize"
TRAIN = {"training": True}
REFUSED = [
    ("bn-1-D", BN, (t(5), None, None), TRAIN, "input", True),
    ("bn-0-D", BN, (torch.tensor(1.0), None, None), TRAIN, "input", True),
    ("bn-batch-of-1", BN, (t(1, 3), None, None), TRAIN, "input", True),
    ("bn-running_mean-shape", BN, (t(4, 3), ones(4), ones(3)), TRAIN, "running_mean", True),
    ("bn-running_var-shape", BN, (t(4, 3), ones(3), ones(4)), TRAIN, "running_var", True),
    ("bn-weight-shape", BN, (t(4, 3), None, None, ones(4)), TRAIN, "weight", True),
    ("bn-bias-shape", BN, (t(4, 3), None, None, None, ones(4)), TRAIN, "bias", True),
    ("bn-complex", BN, (t(4, 3, dtype=C64), None, None), TRAIN, "input", True),
    ("bn-int", BN, (t(4, 3, dtype=I64), None, None), TRAIN, "input", True),
    ("bn-eval-no-buffers", BN, (t(4, 3), None, None), {}, "running_mean", True),
    ("bn-eval-no-running_var", BN, (t(4, 3), ones(3), None), {}, "running_var", True),
    ("bn-train-one-buffer", BN, (t(4, 3), ones(3), None), TRAIN, "running_var", True),
    ("bn-weight-float64", BN, (t(4, 3), None, None, ones(3, F64)), TRAIN, "weight", True),
    ("bn-half-weight-bfloat16", BN, (t(4, 3, dtype=HALF), None, None, ones(3, BF16)), TRAIN, "weight", True),
    ("bn-half-mixed-parameters", BN, (t(4, 3, dtype=HALF), None, None, ones(3, HALF), ones(3)), TRAIN, "bias",
     True),
    ("ln-shape-mismatch", LN, (t(4, 3), (4,)), {}, "normalized_shape", True),
    ("ln-shape-longer-than-input", LN, (t(3), (1, 3)), {}, "normalized_shape", True),
    ("ln-empty-shape", LN, (t(3), ()), {}, "normalized_shape", True),
    ("ln-weight-shape", LN, (t(4, 3), (3,), ones(4)), {}, "weight", True),
    ("ln-bias-shape", LN, (t(4, 3), (3,), None, ones(4)), {}, "bias", True),
    ("ln-complex", LN, (t(4, 3, dtype=C64), (3,)), {}, "input", True),
    ("ln-int", LN, (t(4, 3, dtype=I64), (3,)), {}, "input", True),
    ("ln-weight-float64", LN, (t(4, 3), (3,), ones(3, F64)), {}, "weight", True),
    ("gn-not-divisible", GN, (t(2, 6, 3), 4), {}, "num_groups", True),
    ("gn-1-D", GN, (t(6), 2), {}, "input", True),
    ("gn-zero-groups", GN, (t(2, 6, 3), 0), {}, "num_groups", True),
    ("gn-negative-groups", GN, (t(2, 4, 3), -2), {}, "num_groups", True),
    ("gn-weight-shape", GN, (t(2, 6, 3), 2, ones(4)), {}, "weight", True),
    ("gn-weight-2-D", GN, (t(4, 4), 2, torch.ones(4, 1)), {}, "weight", True),
    ("gn-complex", GN, (t(2, 6, 3, dtype=C64), 2), {}, "input", True),
    ("gn-one-value-per-group", GN, (t(1, 6), 6), {}, "input", True),
    ("in-one-spatial-element", IN, (t(2, 3, 1),), {}, "input", True),
    ("in-2-D", IN, (t(2, 3),), {}, "input", True),
    ("in-weight-shape", IN, (t(2, 3, 4),), {"weight": ones(4)}, "weight", True),
    ("in-complex", IN, (t(2, 3, 4, dtype=C64),), {}, "input", True),
    ("in-running_mean-shape", IN, (t(2, 3, 4), ones(4), ones(4)), {}, "running_mean", False),
    ("in-eval-no-buffers", IN, (t(2, 3, 4),), {"use_input_stats": False}, "running_mean", False),
    ("rms-shape-mismatch", RMS, (t(4, 3), (4,)), {}, "normalized_shape", True),
    ("rms-weight-shape", RMS, (t(4, 3), (3,), ones(4)), {}, "weight", True),
    ("rms-int", RMS, (t(4, 3, dtype=I64), (3,)), {}, "input", True),
    ("normalize-dim-2-of-2-D", NORM, (t(4, 3),), {"dim": 2}, "dim", True),
    ("normalize-dim-minus-3", NORM, (t(4, 3),), {"dim": -3}, "dim", True),
    ("normalize-0-D-default-dim", NORM, (torch.tensor(3.0),), {}, "dim", True),
    ("normalize-int", NORM, (t(4, 3, dtype=I64),), {}, "input", True),
]


def randn(*shape, seed=0, scale=1.0, offset=0.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale + offset).to(dtype)


#: (label, function, input, args, kwargs): float16/bfloat16 inputs whose sums overflow or lose
#: the statistics in their own dtype (issue 22's cases); torch takes them in float32
HALF_INPUTS = [
    ("layer_norm", "layer_norm", randn(8, 4096, scale=10, dtype=torch.float16), ((4096,),), {}),
    ("batch_norm-mean-100", "batch_norm", randn(4096, 4, offset=100, dtype=torch.float16), (None, None),
     {"training": True}),
    ("group_norm", "group_norm", randn(4, 8, 32, 32, scale=10, dtype=torch.float16), (2,), {}),
    ("instance_norm", "instance_norm", randn(2, 4, 64, 64, scale=10, dtype=torch.float16), (), {}),
    ("rms_norm", "rms_norm", randn(8, 4096, scale=10, dtype=torch.float16), ((4096,),), {}),
    ("normalize", "normalize", randn(8, 4096, scale=10, dtype=torch.float16), (), {}),
    ("bfloat16-mean-1000-std-2", "layer_norm", randn(8, 16, scale=2, offset=1000, dtype=torch.bfloat16),
     ((16,),), {}),
    ("float16-eps-1e-8-constant-row", "layer_norm", torch.ones(2, 8, dtype=torch.float16), ((8,),),
     {"eps": 1e-8}),
    ("rms_norm-bfloat16-default-eps", "rms_norm",
     torch.tensor([0.01, 0.02, -0.01, 0.015], dtype=torch.bfloat16), ((4,),), {}),
]


def buffers(c):
    return torch.full((c,), 2.0), torch.full((c,), 3.0)


#: (label, function, input shape, makes (args, kwargs) from the channel count)
ZERO_SIZE = [
    ("batch_norm-N=0", "batch_norm", (0, 3), lambda c: ((*buffers(c), torch.ones(c), torch.zeros(c)),
                                                         {"training": True})),
    ("batch_norm-spatial-0", "batch_norm", (4, 3, 0), lambda c: ((*buffers(c), torch.ones(c)),
                                                                 {"training": True})),
    ("batch_norm-eval-N=0", "batch_norm", (0, 3), lambda c: ((*buffers(c),), {})),
    ("group_norm-N=0", "group_norm", (0, 4, 5, 5), lambda c: ((2, torch.ones(c), torch.zeros(c)), {})),
    ("instance_norm-N=0", "instance_norm", (0, 4, 5, 5), lambda c: (buffers(c), {})),
    ("instance_norm-spatial-0", "instance_norm", (2, 4, 0), lambda c: ((), {})),
    ("layer_norm-N=0", "layer_norm", (0, 5), lambda c: (((5,), torch.ones(5)), {})),
    ("layer_norm-D=0", "layer_norm", (3, 0), lambda c: (((0,),), {})),
    ("rms_norm-N=0", "rms_norm", (0, 5), lambda c: (((5,), torch.ones(5)), {})),
    ("normalize-N=0", "normalize", (0, 5), lambda c: ((), {})),
    ("normalize-D=0", "normalize", (3, 0), lambda c: ((), {})),
]
