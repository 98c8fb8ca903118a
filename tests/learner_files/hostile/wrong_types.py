"""Hostile: outputs that are no arrays: a str, a dict, a ragged list; and a KeyboardInterrupt."""
from right_answers import batchnorm_forward, layernorm_forward, spatial_batchnorm_forward  # noqa: F401
from right_answers import spatial_groupnorm_forward  # noqa: F401


def batchnorm_backward(dout, cache):
    return "dx", dout.sum(axis=0), dout.sum(axis=0)


def batchnorm_backward_alt(dout, cache):
    return {"dx": dout}, dout.sum(axis=0), dout.sum(axis=0)


def layernorm_backward(dout, cache):
    return [[1.0, 2.0], [3.0]], dout.sum(axis=0), dout.sum(axis=0)


def spatial_batchnorm_backward(dout, cache):
    raise KeyboardInterrupt


def spatial_groupnorm_backward(dout, cache):
    return dout
