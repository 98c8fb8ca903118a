"""generated.torch against torch itself: same results as torch.nn.functional (float64, 1e-12),
gradcheck and gradgradcheck for every function in training and eval mode, modules with
torch's state_dicts, and a small CNN trained both ways."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

import generated.torch as gt  # noqa: E402

D64 = torch.float64


def rand(*shape, seed=0, scale=1.0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=D64) * scale + offset)


def close(a, b, tol=1e-12):
    scale = max(a.abs().max().item(), b.abs().max().item(), 1.0)
    return (a - b).abs().max().item() <= tol * scale


# (name, our function, torch's function, input shape, makes (args, kwargs) from x)
def bn_args(training):
    def make(x):
        c = x.shape[1]
        return (rand(c, seed=3), rand(c, seed=4).abs() + 0.5, rand(c, seed=5), rand(c, seed=6)), \
            {"training": training, "momentum": 0.1, "eps": 1e-5}
    return make


def inputs_batch_norm(x, params, training):
    rm, rv, w, b = params
    return (x, rm.clone(), rv.clone(), w, b), {"training": training, "momentum": 0.1, "eps": 1e-5}


CASES = {
    "batch_norm_train": (gt.batch_norm, TF.batch_norm, (6, 3, 4),
                         lambda x: ((rand(3, seed=1), rand(3, seed=2).abs() + .5, rand(3, seed=3), rand(3, seed=4)),
                                    {"training": True})),
    "batch_norm_eval": (gt.batch_norm, TF.batch_norm, (6, 3, 4),
                        lambda x: ((rand(3, seed=1), rand(3, seed=2).abs() + .5, rand(3, seed=3), rand(3, seed=4)),
                                   {"training": False})),
    "batch_norm_2d_noaffine": (gt.batch_norm, TF.batch_norm, (5, 4),
                               lambda x: ((rand(4, seed=1), rand(4, seed=2).abs() + .5, None, None),
                                          {"training": True})),
    "layer_norm": (gt.layer_norm, TF.layer_norm, (3, 2, 4, 5),
                   lambda x: (((4, 5), rand(4, 5, seed=1), rand(4, 5, seed=2)), {"eps": 1e-5})),
    "layer_norm_noaffine": (gt.layer_norm, TF.layer_norm, (3, 6), lambda x: (((6,),), {})),
    "group_norm": (gt.group_norm, TF.group_norm, (2, 6, 3, 2),
                   lambda x: ((3, rand(6, seed=1), rand(6, seed=2)), {"eps": 1e-5})),
    "instance_norm": (gt.instance_norm, TF.instance_norm, (3, 2, 5),
                      lambda x: ((), {"weight": rand(2, seed=1), "bias": rand(2, seed=2)})),
    "instance_norm_eval": (gt.instance_norm, TF.instance_norm, (3, 2, 5),
                           lambda x: ((rand(2, seed=1), rand(2, seed=2).abs() + .5, rand(2, seed=3), rand(2, seed=4),
                                       False), {})),
    "rms_norm": (gt.rms_norm, TF.rms_norm, (4, 2, 3), lambda x: (((2, 3), rand(2, 3, seed=1)), {"eps": 1e-6})),
    "rms_norm_default_eps": (gt.rms_norm, TF.rms_norm, (4, 5), lambda x: (((5,),), {})),
    "normalize": (gt.normalize, TF.normalize, (3, 4, 2), lambda x: ((), {"dim": 1})),
    "normalize_last": (gt.normalize, TF.normalize, (3, 5), lambda x: ((), {"dim": -1, "eps": 1e-3})),
}


def call(fn, x, make):
    args, kwargs = make(x)
    args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
    return fn(x, *args, **kwargs), args


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_as_torch_forward_and_backward(name):
    ours, theirs, shape, make = CASES[name]
    x = rand(*shape, offset=0.5, scale=2.0)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    args, kwargs = make(x)
    pa = [a.clone().requires_grad_() if isinstance(a, torch.Tensor) and a.dim() and i >= 2 or
          (isinstance(a, torch.Tensor) and name.startswith(("layer", "group", "rms"))) else
          (a.clone() if isinstance(a, torch.Tensor) else a) for i, a in enumerate(args)]
    pb = [a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in pa]
    ya, yb = ours(xa, *pa, **kwargs), theirs(xb, *pb, **kwargs)
    assert close(ya, yb), (ya - yb).abs().max()
    dy = rand(*shape, seed=9)
    ya.backward(dy)
    yb.backward(dy)
    assert close(xa.grad, xb.grad), (xa.grad - xb.grad).abs().max()
    for a, b in zip(pa, pb):
        if isinstance(a, torch.Tensor):
            assert close(a, b)  # running statistics, updated in place
            if a.requires_grad:
                assert close(a.grad, b.grad)


GRAD_CASES = {
    **{k: (v[0], v[2], v[3]) for k, v in CASES.items()},
    "mean_only_batch_norm_train": (gt.mean_only_batch_norm, (5, 3), lambda x: ((rand(3, seed=1),),
                                                                                 {"training": True})),
    "mean_only_batch_norm_eval": (gt.mean_only_batch_norm, (5, 3), lambda x: ((rand(3, seed=1),),
                                                                                {"training": False})),
    # r and d carry no gradient: the running values put them at their clips, where they are constant
    "batch_renorm_train": (gt.batch_renorm, (6, 3), lambda x: ((rand(3, seed=1) + 50, rand(3, seed=2).abs() * .01),
                                                               {"training": True, "r_max": 1.5, "d_max": 0.5})),
    "batch_renorm_eval": (gt.batch_renorm, (6, 3), lambda x: ((rand(3, seed=1), rand(3, seed=2).abs() + .5),
                                                              {"training": False})),
    "weight_standardization": (gt.weight_standardization, (3, 2, 2, 2), lambda x: ((), {})),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradcheck_and_gradgradcheck(name):
    fn, shape, make = GRAD_CASES[name]
    x = rand(*shape, offset=0.3).requires_grad_()
    args, kwargs = make(x)
    args = list(args)
    # the affine parameters are differentiated too
    weights = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)
               and not (name.startswith(("batch", "mean_only", "instance_norm_eval")) and i < 2)]
    for i in weights:
        args[i] = args[i].clone().requires_grad_()
    diff = [x] + [args[i] for i in weights]

    def f(*tensors):
        a = list(args)
        for i, t in zip(weights, tensors[1:]):
            a[i] = t
        a = [t.detach().clone() if isinstance(t, torch.Tensor) and not t.requires_grad else t for t in a]
        return fn(tensors[0], *a, **kwargs)

    assert torch.autograd.gradcheck(f, diff)
    assert torch.autograd.gradgradcheck(f, diff)


def test_gradcheck_can_fail():
    """The checks above see a wrong gradient: a first-order backward (the fused one, run when
    autograd records nothing) with a wrong coefficient fails gradcheck."""
    import generated.torch.batchnorm as k
    saved = k.backward_train_fused

    def wrong(*a, **kw):
        dx, dgamma, dbeta = saved(*a, **kw)
        return dx * 1.01, dgamma, dbeta
    k.backward_train_fused = wrong
    try:
        x = rand(5, 3).requires_grad_()
        with pytest.raises(RuntimeError, match="Jacobian mismatch"):
            torch.autograd.gradcheck(lambda t: gt.batch_norm(t, None, None, training=True), (x,))
    finally:
        k.backward_train_fused = saved


def first_derivatives(name, dtype, create_graph):
    """The gradients of one GRAD_CASES call in ``dtype``: with create_graph the differentiable
    backward runs (backward_train), without it the fused one (backward_train_fused)."""
    fn, shape, make = GRAD_CASES[name]
    x = rand(*shape, offset=0.3).to(dtype).requires_grad_()
    args, kwargs = make(x)
    args = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in args]
    kwargs = {k: a.to(dtype) if isinstance(a, torch.Tensor) else a for k, a in kwargs.items()}  # torch's rule
    diff = [x] + [a.requires_grad_() for i, a in enumerate(args) if isinstance(a, torch.Tensor)
                  and not (name.startswith(("batch", "mean_only", "instance_norm_eval")) and i < 2)]
    y = fn(x, *args, **kwargs)
    dy = rand(*shape, seed=9).to(dtype)
    return [g.detach() for g in torch.autograd.grad(y, diff, dy, create_graph=create_graph)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_fused_backward_is_the_differentiable_one(name, dtype):
    """Both backwards print the same assignments: the fused first-order backward (written in
    place, what a plain .backward() runs) and the differentiable one (under create_graph, what
    gradgradcheck differentiates) agree in every float dtype, up to the dtype's rounding."""
    fused = first_derivatives(name, dtype, create_graph=False)
    plain = first_derivatives(name, dtype, create_graph=True)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 4e-2}[dtype]
    for a, b in zip(fused, plain):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        assert close(a.double(), b.double(), tol), (a.double() - b.double()).abs().max()


def test_fused_check_can_fail():
    """The check above sees a wrong differentiable backward (one that gradgradcheck alone would
    not: it differentiates whatever the backward computes)."""
    import generated.torch.batchnorm as k
    saved = k.backward_train

    def wrong(*a, **kw):
        dx, dgamma, dbeta = saved(*a, **kw)
        return dx * 1.01, dgamma, dbeta
    k.backward_train = wrong
    try:
        with pytest.raises(AssertionError):
            test_fused_backward_is_the_differentiable_one("batch_norm_train", torch.float64)
    finally:
        k.backward_train = saved


@pytest.mark.parametrize("training, eps", [(True, 0.0), (True, -1e-5), (False, -1e-5)])
def test_batch_norm_refuses_the_eps_torch_refuses(training, eps):
    """torch.nn.functional.batch_norm's own checks: eps > 0 in training, eps >= 0 in evaluation."""
    x, stats = rand(4, 3), (torch.zeros(3, dtype=D64), torch.ones(3, dtype=D64))
    messages = []
    for fn in (TF.batch_norm, gt.batch_norm):
        with pytest.raises(ValueError) as error:
            fn(x, *stats, training=training, eps=eps)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


def test_normalize_other_p_raises():
    with pytest.raises(NotImplementedError, match="p=2"):
        gt.normalize(rand(3, 4), p=1)


def test_modules_have_torch_state_dicts():
    pairs = [(torch.nn.BatchNorm2d(4), gt.BatchNorm2d(4)), (torch.nn.LayerNorm([3, 4]), gt.LayerNorm([3, 4])),
             (torch.nn.GroupNorm(2, 4), gt.GroupNorm(2, 4)), (torch.nn.RMSNorm(5), gt.RMSNorm(5)),
             (torch.nn.InstanceNorm2d(3, affine=True, track_running_stats=True),
              gt.InstanceNorm2d(3, affine=True, track_running_stats=True))]
    for theirs, ours in pairs:
        a, b = theirs.state_dict(), ours.state_dict()
        assert list(a) == list(b)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_instance_norm_running_stats_match_torch():
    x = rand(4, 3, 5, 5)
    theirs = torch.nn.InstanceNorm2d(3, track_running_stats=True, dtype=D64)
    ours = gt.InstanceNorm2d(3, track_running_stats=True, dtype=D64)
    assert close(theirs(x), ours(x))
    assert close(theirs.running_var, ours.running_var) and close(theirs.running_mean, ours.running_mean)
    theirs.eval(), ours.eval()
    assert close(theirs(x), ours(x))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.GroupNorm(4, 8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 4, 3, padding=1), torch.nn.LayerNorm([4, 6, 6]), torch.nn.ReLU())
        self.head = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


def train(model, x, y, steps=4):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = TF.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_cnn_trains_the_same_both_ways():
    torch.manual_seed(0)
    theirs = Net().to(D64)
    ours = gt.replace_norm_layers(copy.deepcopy(theirs))
    assert isinstance(ours.body[1], gt.BatchNorm2d) and isinstance(ours.body[7], gt.LayerNorm)
    x, y = rand(8, 3, 6, 6, seed=1), torch.arange(8) % 5
    la, lb = train(theirs, x, y), train(ours, x, y)
    assert max(abs(a - b) for a, b in zip(la, lb)) <= 1e-10
    sa, sb = theirs.state_dict(), ours.state_dict()
    assert list(sa) == list(sb)
    assert all(close(sa[k].double(), sb[k].double(), 1e-10) for k in sa)
    theirs.eval(), ours.eval()
    assert close(theirs(x), ours(x), 1e-10)
    la, lb = train(theirs, x, y, 2), train(ours, x, y, 2)  # eval mode: running statistics, still trainable
    assert max(abs(a - b) for a, b in zip(la, lb)) <= 1e-10


def test_import_generated_imports_neither_torch_nor_jax():
    code = "import sys, generated; assert 'torch' not in sys.modules and 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_half_module_running_buffers_are_torchs():
    """Issue 22: BatchNorm2d(8).half() on data of std 300 stored an inf running variance (the
    batch variance summed in float16); torch takes it in float32 and stores about 1e4."""
    x = rand(4, 8, 5, 5, seed=2, scale=300).half()
    ours, theirs = gt.BatchNorm2d(8).half(), torch.nn.BatchNorm2d(8).half()
    ya, yb = ours(x), theirs(x)
    for name in ("running_mean", "running_var"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert a.dtype == b.dtype == torch.float16
        assert torch.all(torch.isfinite(a))
        torch.testing.assert_close(a, b, rtol=2e-3, atol=1e-2)
    assert close(ya.double(), yb.double(), 4e-3)


def test_print_of_a_replaced_model_names_the_derived_modules():
    """Issue 23: after replace_norm_layers, print(model) looked exactly like torch's."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.GroupNorm(2, 8),
                                torch.nn.Sequential(torch.nn.LayerNorm(4), torch.nn.RMSNorm(4),
                                                    torch.nn.InstanceNorm1d(3)))
    before = repr(model)
    after = repr(gt.replace_norm_layers(copy.deepcopy(model)))
    for name in ("BatchNorm2d(8,", "GroupNorm(2, 8,", "LayerNorm((4,),", "RMSNorm((4,),",
                 "InstanceNorm1d(3,"):
        assert f": {name}" in before and f": generated.torch.{name}" in after
        assert after.count(name) == 1
    assert ": Conv2d(3, 8" in after  # what is not replaced prints as before
