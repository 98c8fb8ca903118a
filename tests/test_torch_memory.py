"""What a training step through generated.torch keeps and makes, as torch's own layers do: the backward
saves x and per-group values only (x̂ is recomputed from x, derive.ir.step; in training and in eval
mode), and it makes no tensor of x's size for the statistics' gradients, which nothing reads.  On the printed operations (a small
input) and on the numba kernels (a large float32 one, when numba imports)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch.utils._python_dispatch import TorchDispatchMode

import generated.torch as gt

CASES = [("batch_norm", (64, 32), lambda x, w, b: gt.batch_norm(x, None, None, w, b, training=True)),
         ("batch_norm", (8, 16, 5, 5), lambda x, w, b: gt.batch_norm(x, None, None, w, b, training=True)),
         ("layer_norm", (64, 32), lambda x, w, b: gt.layer_norm(x, (x.shape[-1],), w, b)),
         ("group_norm", (4, 16, 5, 5), lambda x, w, b: gt.group_norm(x, 4, w, b)),
         ("rms_norm", (64, 32), lambda x, w, b: gt.rms_norm(x, (x.shape[-1],), w)),
         ("batch_norm_eval", (64, 32), lambda x, w, b: gt.batch_norm(x, torch.zeros(x.shape[1]), torch.ones(x.shape[1]),
                                                                     w, b, training=False))]
SIZES = {"small": 1, "large": 64}   # large: the numba kernels' size (generated.torch._runtime.NUMBA_MIN_ELEMENTS)


def leaves(name, shape, scale):
    shape = (shape[0] * scale, *shape[1:])
    c = shape[-1] if name in ("layer_norm", "rms_norm") else shape[1]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).requires_grad_()
    return x, torch.randn(c, generator=g).requires_grad_(), torch.randn(c, generator=g).requires_grad_()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name,shape,fn", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_the_backward_saves_no_per_element_value_but_x(name, shape, fn, size):
    x, w, b = leaves(name, shape, SIZES[size])
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x, w, b)
    full = [t for t in saved if t.numel() == x.numel() and t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()]
    assert not full, [tuple(t.shape) for t in full]
    assert any(t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() for t in saved)
    out.backward(torch.ones_like(out))
    assert x.grad is not None and torch.isfinite(x.grad).all()


class Fills(TorchDispatchMode):
    """The tensors of ``numel`` elements that an operation fills with one value (zeros, full, fill_)."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.found = numel, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if name in ("zeros", "zeros_like", "full", "full_like", "fill_", "zero_", "new_zeros") \
                and isinstance(out, torch.Tensor) and out.numel() == self.numel:
            self.found.append(str(func))
        return out


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name,shape,fn", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_the_backward_makes_no_zeros_of_xs_size(name, shape, fn, size):
    x, w, b = leaves(name, shape, SIZES[size])
    out = fn(x, w, b)
    dy = torch.randn(out.shape)
    with Fills(x.numel()) as mode:
        out.backward(dy)
    assert not mode.found, mode.found


class Calls(TorchDispatchMode):
    """The operators called under it, by name."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name,shape,fn", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_a_plain_call_skips_the_dispatcher_and_gives_the_operators_bits(name, shape, fn, size):
    """A plain eager call runs each pass's implementation directly (generated.torch._runtime._eager);
    under a dispatch mode (as under torch.compile, torch.export and torch.func) the custom operator
    runs, and is seen as one call.  Both give the same bits, forward and backward."""
    results = []
    for mode in (None, Calls()):
        x, w, b = leaves(name, shape, SIZES[size])
        if mode is None:
            out = fn(x, w, b)
            out.backward(torch.ones_like(out))
        else:
            with mode:
                out = fn(x, w, b)
                out.backward(torch.ones_like(out))
            stage = "test" if name.endswith("_eval") else "train"
            assert any(f"_forward_{stage}" in n for n in mode.names), mode.names
            assert any(f"_backward_{stage}" in n for n in mode.names), mode.names
        results.append((out.detach(), x.grad, w.grad, b.grad))
    for a, b in zip(*results):
        assert (a is None and b is None) or torch.equal(a, b)
