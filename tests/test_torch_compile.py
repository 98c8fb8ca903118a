"""generated.torch with torch's tools (issue 20, item 3) and its kernel dispatch (item 2), on the CPU.

* torch.compile (fullgraph, the aot_eager backend: dynamo and AOTAutograd, as the default backend
  runs them, without inductor's C++ build) of a model and of the functions, float64 and bfloat16;
* torch.func.grad, vmap (per-sample gradients too), jvp, and torch.export;
* dispatch: a CPU tensor runs the numba kernels of generated.numba (through Tensor.numpy(), with
  the same results as the printed operations), and a stand-in for generated.triton, registered
  for the CPU, is called with the printed functions' names and keywords.

Every comparison is with torch's own layers, or with the printed operations, on the same input.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import os
import pkgutil
import sys
import types

import pytest

# generated.triton's kernels run here under Triton's interpreter, on CPU tensors: read when triton is
# imported (torch.compile's dynamo imports it), so set first, as tests/test_triton.py does
os.environ["TRITON_INTERPRET"] = "1"
torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import generated.torch as gt  # noqa: E402
from generated.torch import _runtime as rt  # noqa: E402

D64 = torch.float64


def rand(*shape, seed=0, dtype=D64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def close(a, b, tol=1e-12):
    scale = max(a.abs().max().item(), b.abs().max().item(), 1.0)
    return (a - b).abs().max().item() <= tol * scale


class Net(torch.nn.Module):
    """Batch, group and layer norm of torch.nn, to be replaced by generated.torch's."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.gn = torch.nn.GroupNorm(4, 8)
        self.ln = torch.nn.LayerNorm(8 * 4 * 4)
        self.out = torch.nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        x = self.gn(torch.relu(self.bn(self.conv(x))))
        return self.out(self.ln(x.flatten(1)))


def _model():
    torch.manual_seed(0)
    theirs = Net().to(D64)
    with torch.no_grad():
        for m in (theirs.bn, theirs.gn, theirs.ln):
            m.weight.uniform_(0.5, 2.0)
            m.bias.normal_()
    return theirs, gt.replace_norm_layers(copy.deepcopy(theirs))


def _loss_and_grads(model, x):
    loss = model(x).pow(2).sum()
    return loss, torch.autograd.grad(loss, list(model.parameters()))


def test_compiled_model_trains_like_torchs():
    """torch.compile(model, fullgraph=True): one graph (the passes are custom operators with fake
    implementations), the same loss, gradients and running statistics as torch's own model."""
    theirs, ours = _model()
    assert isinstance(ours.bn, gt.BatchNorm2d)
    compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
    x = rand(6, 3, 4, 4, seed=1)
    for _ in range(2):
        la, ga = _loss_and_grads(theirs, x)
        lb, gb = _loss_and_grads(compiled, x)
        assert close(la, lb, 1e-10)
        assert all(close(a, b, 1e-10) for a, b in zip(ga, gb))
    assert close(theirs.bn.running_var, ours.bn.running_var)
    theirs.eval(), ours.eval()
    assert close(theirs(x), compiled(x), 1e-10)


def test_compiled_bfloat16_layer_norm_gives_gradients_of_the_parameters_shape():
    """The issue's failure: torch.compile of generated.torch.layer_norm in bfloat16 returned a
    gradient of shape [4096] where [1, 4096] was expected."""
    x = rand(16, 64, seed=2, dtype=torch.bfloat16).requires_grad_()
    w = (rand(64, seed=3).abs() + 0.5).to(torch.bfloat16).requires_grad_()
    b = rand(64, seed=4, dtype=torch.bfloat16).requires_grad_()
    fn = torch.compile(lambda x, w, b: gt.layer_norm(x, (64,), w, b), backend="aot_eager", fullgraph=True)
    y = fn(x, w, b)
    grads = torch.autograd.grad(y.float().pow(2).sum(), (x, w, b))
    want = torch.autograd.grad(F.layer_norm(x, (64,), w, b).float().pow(2).sum(), (x, w, b))
    for g, t, ref in zip(grads, (x, w, b), want):
        assert g.shape == t.shape and g.dtype == torch.bfloat16
        assert close(g.double(), ref.double(), 2e-2)


FUNCS = {   # (ours, torch's, input shape, args)
    "layer_norm": (gt.layer_norm, F.layer_norm, (4, 6), lambda: ((6,), rand(6, seed=1), rand(6, seed=2))),
    "group_norm": (gt.group_norm, F.group_norm, (3, 4, 5), lambda: (2, rand(4, seed=1), rand(4, seed=2))),
    "rms_norm": (gt.rms_norm, F.rms_norm, (4, 6), lambda: ((6,), rand(6, seed=1))),
    "batch_norm_eval": (gt.batch_norm, F.batch_norm, (5, 3), lambda: (rand(3, seed=1), rand(3, seed=2).abs() + 0.5,
                                                                       rand(3, seed=3), rand(3, seed=4), False)),
    "batch_norm_train": (gt.batch_norm, F.batch_norm, (5, 3), lambda: (None, None, rand(3, seed=3),
                                                                        rand(3, seed=4), True)),
}


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_func_grad_vmap_and_jvp_match_torchs(name):
    ours, theirs, shape, make = FUNCS[name]
    x = rand(*shape, seed=5)
    fixed = make()

    def args():   # fresh running buffers for each call (batch norm's training mode updates them)
        return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in fixed)

    def loss(fn):
        return lambda x: fn(x, *args()).pow(2).sum()

    assert close(torch.func.grad(loss(ours))(x), torch.func.grad(loss(theirs))(x))
    batch = rand(3, *shape, seed=6)
    assert close(torch.vmap(lambda x: ours(x, *args()))(batch), torch.vmap(lambda x: theirs(x, *args()))(batch))
    # per-sample gradients: vmap over grad runs the backward under vmap too
    assert close(torch.vmap(torch.func.grad(loss(ours)))(batch), torch.vmap(torch.func.grad(loss(theirs)))(batch))
    t = rand(*shape, seed=7)
    _, a = torch.func.jvp(lambda x: ours(x, *args()), (x,), (t,))
    _, b = torch.func.jvp(lambda x: theirs(x, *args()), (x,), (t,))
    assert close(a, b)


def test_func_grad_of_the_parameters_and_second_order():
    """grad with respect to the weight, and grad of grad (the derived double backward) under torch.func."""
    x, w, b = rand(4, 6, seed=1), rand(6, seed=2), rand(6, seed=3)

    def f(fn):
        return lambda w: torch.func.grad(lambda x: fn(x, (6,), w, b).pow(3).sum())(x).pow(2).sum()

    assert close(torch.func.grad(f(gt.layer_norm))(w), torch.func.grad(f(F.layer_norm))(w), 1e-10)


def test_export_runs_the_same_model():
    theirs, ours = _model()
    theirs.eval(), ours.eval()
    x = rand(2, 3, 4, 4, seed=8)
    program = torch.export.export(ours, (x,))
    assert any("normderive" in str(node.target) for node in program.graph.nodes)
    assert close(program.module()(x), theirs(x), 1e-10)


# --------------------------------------------------------------------------- dispatch


@pytest.fixture
def fast_everywhere(monkeypatch):
    """Every CPU tensor goes to the compiled kernels (the threshold for small ones off)."""
    pytest.importorskip("numba")
    monkeypatch.setattr(rt, "NUMBA_MIN_ELEMENTS", 0)
    monkeypatch.setattr(rt, "_LOADED", {})


def _both_ways(fn, x, args, kwargs, monkeypatch):
    """(out, grads) through the compiled kernels, and through the printed operations; the tensors in
    ``args`` are differentiated, those in ``kwargs`` (running statistics) are not."""
    found = []
    for threshold in (0, 10**12):
        monkeypatch.setattr(rt, "NUMBA_MIN_ELEMENTS", threshold)
        xs = x.clone().requires_grad_()
        params = [a.clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
        out = fn(xs, *params, **{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
        leaves = [xs] + [p for p in params if isinstance(p, torch.Tensor)]
        found.append((out, torch.autograd.grad(out, leaves, rand(*out.shape, seed=9))))
    return found


def _bn(fn, c, training, **more):
    """(function of x and the affine parameters, make) for a batch norm with running statistics."""
    def call(x, w, b, **kw):
        return fn(x, kw.pop("running_mean"), kw.pop("running_var"), w, b, **kw)

    def make():
        return (rand(c, seed=3), rand(c, seed=4)), {"running_mean": rand(c, seed=1),
                                                    "running_var": rand(c, seed=2).abs() + .5,
                                                    "training": training, **more}
    return call, make


def _affine(*shape, first=()):
    return lambda: ((*first, rand(*shape, seed=1), rand(*shape, seed=2)), {})


DISPATCH = {   # views of torch.nn.functional that differ from the entries' own layouts, and each
    # function of the kernel contract (forward_train, backward_train_fused; forward_test, backward_test)
    "batch_norm (N, C, L)": (_bn(gt.batch_norm, 4, True)[0], (3, 4, 5), _bn(gt.batch_norm, 4, True)[1]),
    "batch_norm eval": (_bn(gt.batch_norm, 4, False)[0], (3, 4, 5), _bn(gt.batch_norm, 4, False)[1]),
    "layer_norm": (gt.layer_norm, (5, 7), _affine(7, first=((7,),))),
    "group_norm (N, G, C/G, L)": (gt.group_norm, (2, 6, 5), _affine(6, first=(3,))),
    "normalize dim 0 (a transposed view)": (gt.normalize, (9, 4, 2), lambda: ((), {"dim": 0})),
}


def _spy(kernels, calls, monkeypatch, check=None):
    """Each function of the kernel contract that the module ``kernels`` has, wrapped: its name goes to
    ``calls``, and ``check(name, args, result)`` sees each call."""
    for name in ("forward_train", "backward_train_fused", "forward_test", "backward_test"):
        if not hasattr(kernels, name):   # no test mode
            continue

        def record(*args, _fn=getattr(kernels, name), _name=name, **kwargs):
            result = _fn(*args, **kwargs)
            if check is not None:
                check(_name, args, result)
            calls.append(_name)
            return result
        monkeypatch.setattr(kernels, name, record)


def _own_arrays(name, args, result):
    """A plain call takes what the numba kernels return as it is (torch.from_numpy, no copy), so every
    array must be one they made (sharing no memory with an argument), in the input's dtype."""
    import numpy as np
    for k, v in enumerate(result.values() if isinstance(result, dict) else result):
        assert isinstance(v, np.ndarray) and v.dtype == args[0].dtype, (name, k, type(v), v.dtype)
        assert not any(np.shares_memory(v, a) for a in args if isinstance(a, np.ndarray)), (name, k)


@pytest.mark.parametrize("name", sorted(DISPATCH))
def test_cpu_tensors_run_the_numba_kernels_with_the_same_results(name, fast_everywhere, monkeypatch):
    fn, shape, make = DISPATCH[name]
    args, kwargs = make()
    x = rand(*shape, seed=4) * 2 + 0.5
    calls = []
    for entry in ("batchnorm", "layernorm", "spatial_groupnorm", "l2_normalize"):
        _spy(importlib.import_module(f"generated.numba.{entry}"), calls, monkeypatch, _own_arrays)
    (out, grads), (want, want_grads) = _both_ways(fn, x, args, kwargs, monkeypatch)
    assert any(backend == "numba" and module is not None for (backend, _), module in rt._LOADED.items())
    assert len(calls) == 2 and calls[0].startswith("forward_") and calls[1].startswith("backward_")
    assert close(out, want)
    assert all(close(a, b) for a, b in zip(grads, want_grads))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_running_update_runs_on_the_compiled_kernels_statistics_as_numpy_arrays(dtype, fast_everywhere,
                                                                                     monkeypatch):
    """Where the numba kernels made the batch statistics, the printed running update takes them as NumPy
    arrays (running_values), and its arithmetic there gives the buffers of the same update on tensors,
    to the bit; the buffers still count the write in their version."""
    import numpy as np
    import generated.torch.batchnorm as tb
    seen = []
    original = tb.update_running

    def spy(buffers, **values):
        seen.append(dict(values))
        return original(buffers, **values)

    monkeypatch.setattr(tb, "update_running", spy)
    x = rand(6, 4, 5, seed=3, dtype=dtype) * 2 + 0.5
    for threshold in (0, 10**12):
        monkeypatch.setattr(rt, "NUMBA_MIN_ELEMENTS", threshold)
        rm, rv = torch.full((4,), 0.3, dtype=dtype), torch.full((4,), 1.7, dtype=dtype)
        before = rm._version, rv._version
        gt.batch_norm(x, rm, rv, training=True, momentum=0.2)
        assert rm._version > before[0] and rv._version > before[1]
    assert [type(v["mu"]) for v in seen] == [np.ndarray, torch.Tensor]
    stats = {k: torch.from_numpy(v.copy()) for k, v in seen[0].items() if isinstance(v, np.ndarray)}
    kw = {"eps": 1e-5, "momentum": 0.2, **rt.layout((6, 4, 5), (0, 2), (1, 4, 1))}
    on_arrays = {"running_mean": torch.full((4,), 0.3, dtype=dtype), "running_var": torch.full((4,), 1.7, dtype=dtype)}
    on_tensors = {k: v.clone() for k, v in on_arrays.items()}
    original(on_arrays, **{k: v.numpy() for k, v in stats.items()}, **kw)
    original(on_tensors, **stats, **kw)
    for k in on_arrays:
        assert torch.equal(on_arrays[k], on_tensors[k]), k
        assert not torch.equal(on_arrays[k], torch.full((4,), 0.3 if k == "running_mean" else 1.7, dtype=dtype)), k


def test_a_running_buffer_saved_for_backward_and_then_updated_is_caught(fast_everywhere):
    """The update written by NumPy still bumps the buffer's version, so autograd refuses a backward through
    a value that saved the buffer before the update, as with torch's own batch norm."""
    x = rand(6, 4, 5, seed=3)
    rm, rv = torch.zeros(4, dtype=x.dtype), torch.ones(4, dtype=x.dtype)
    scale = torch.ones(4, dtype=x.dtype, requires_grad=True)
    kept = (scale * rm).sum()   # saves rm for the gradient of scale
    gt.batch_norm(x, rm, rv, training=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        kept.backward()


def test_the_runtimes_functions_take_numpy_arrays_as_they_take_tensors():
    """Each function the printed running update may call gives on a NumPy array what it gives on a tensor."""
    import numpy as np
    a = np.array([-2.5, -1.0, 0.0, 0.5, 3.0])
    pos = np.abs(a) + 0.25
    cases = [("exp", (a,)), ("log", (pos,)), ("tanh", (a,)), ("sigmoid", (a,)), ("softplus", (a,)),
             ("sign", (a,)), ("abs", (a,)), ("sqrt", (pos,)), ("clamp_min", (a, 0.2)), ("clamp_max", (a, 0.2)),
             ("step", (a, 0.5)), ("divide_or_zero", (a, a)), ("divide_or_zero", (a, 4.0)), ("stop_gradient", (a,))]
    for name, args in cases:
        fn = getattr(rt, name)
        got = fn(*args)
        want = fn(*(torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in args))
        assert isinstance(got, np.ndarray), name
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-15, atol=1e-15, err_msg=name)


def test_numba_kernels_take_the_tensors_without_a_copy(fast_everywhere, monkeypatch):
    """Tensor.numpy() in, torch.from_numpy out: the kernel reads the tensor's own memory."""
    import generated.numba.layernorm as nl
    seen = {}
    original = nl.forward_train

    def spy(x, *args, **kwargs):
        seen["x"] = x
        return original(x, *args, **kwargs)

    monkeypatch.setattr(nl, "forward_train", spy)
    x = rand(4, 8)
    gt.layer_norm(x, (8,))
    assert seen["x"].__array_interface__["data"][0] == x.data_ptr()


def test_a_second_derivative_runs_the_printed_double_backward(fast_everywhere):
    x = rand(5, 4, seed=1).requires_grad_()
    w = (rand(4, seed=2).abs() + 0.5).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x, w: gt.layer_norm(x, (4,), w), (x, w))


def _standin(calls):
    """A module with generated.triton's contract (the printed functions' names and keyword
    signatures), that records its calls and runs the printed functions."""
    import generated.torch.layernorm as printed
    module = types.ModuleType("standin")
    for name in ("forward_train", "backward_train_fused"):
        fn = getattr(printed, name)

        def record(*args, _fn=fn, _name=name, **kwargs):
            inspect.signature(_fn).bind(*args, **kwargs)   # the contract: the printed function's signature
            calls.append((_name, args[0].device.type))
            return _fn(*args, **kwargs)

        setattr(module, name, record)
    return module


def test_a_devices_kernel_module_is_called_with_the_printed_functions_contract(monkeypatch):
    """generated.triton's place in the dispatch, tested with a stand-in registered for the CPU
    (no GPU here): the operator calls the stand-in's functions with the printed names and keywords,
    and the result is the stand-in's."""
    calls = []
    monkeypatch.setitem(sys.modules, f"{rt._PACKAGE}.standin", types.ModuleType("standin"))
    monkeypatch.setitem(sys.modules, f"{rt._PACKAGE}.standin.layernorm", _standin(calls))
    monkeypatch.setitem(rt.FAST, "cpu", "standin")
    monkeypatch.setattr(rt, "_LOADED", {})
    x, w = rand(6, 5).requires_grad_(), rand(5, seed=1).requires_grad_()
    out = gt.layer_norm(x, (5,), w)
    grads = torch.autograd.grad(out, (x, w), rand(6, 5, seed=2))
    assert calls == [("forward_train", "cpu"), ("backward_train_fused", "cpu")]
    want = F.layer_norm(x, (5,), w)
    assert close(out, want)
    assert all(close(a, b) for a, b in zip(grads, torch.autograd.grad(want, (x, w), rand(6, 5, seed=2))))


def test_without_a_kernel_module_the_printed_operations_run(monkeypatch):
    monkeypatch.setitem(rt.FAST, "cpu", "no_such_backend")
    monkeypatch.setattr(rt, "_LOADED", {})
    monkeypatch.setattr(rt, "NUMBA_MIN_ELEMENTS", 0)
    x = rand(6, 5)
    assert close(gt.layer_norm(x, (5,)), F.layer_norm(x, (5,)))
    assert rt._LOADED == {("no_such_backend", "layernorm"): None}



#: every entry of generated.torch (a module with the printed functions of the kernel contract)
ENTRIES = sorted(m.name for m in pkgutil.iter_modules(gt.__path__)
                 if hasattr(importlib.import_module(f"generated.torch.{m.name}"), "forward_train"))


def _generic_call(entry, training):
    """(fn, x, params) for the generic API of ``entry`` on a small input: a function of x and the
    parameters that gives the running buffers (fresh ones at each call) and the mode."""
    T = importlib.import_module(f"generated.torch.{entry}")
    fn = getattr(T, entry)
    keywords = inspect.signature(fn).parameters
    groups = 2 if "num_groups" in keywords else None
    ndim = max([a for a in T._REDUCE_AXES + T._PARAM_AXES if a >= 0] + [1]) + 1 - bool(groups)
    x = rand(*((6, 4) if ndim == 2 else (3, 4, 2, 3)[:ndim]), seed=11) * 2 + 0.5
    _, layout, pshape, _ = rt.working_view(x, T._REDUCE_AXES, T._PARAM_AXES, groups)
    params = [rand(*pshape, seed=12 + k).abs() + 0.5 for k in range(len(T.PARAMS))]
    extra = {"num_groups": groups} if groups else {}
    if "training" in keywords:
        extra["training"] = training

    def call(x, *params):
        stat = layout["stat_shape"]
        buffers = {k: v + 0.25 * rand(*stat, seed=20).abs() for k, v in
                   ((k, torch.full(stat, v, dtype=D64)) for k, v in getattr(T, "BUFFER_INIT", {}).items())}
        return fn(x, *params, **buffers, **extra)
    return call, x, params


@pytest.mark.parametrize("entry, training", [(e, t) for e in ENTRIES for t in (True, False)
                                             if t or importlib.import_module(f"generated.torch.{e}").STATS])
def test_generated_tritons_own_modules_take_the_dispatch(entry, training, monkeypatch):
    """The real generated.triton, under Triton's interpreter on CPU tensors (registered for the CPU
    here; CUDA's in the dispatch): each pass of the generic API goes to its function of the kernel
    contract (forward_train and backward_train_fused, or forward_test and backward_test), with the
    results of the printed operations."""
    pytest.importorskip("triton")
    kernels = importlib.import_module(f"generated.triton.{entry}")
    calls = []
    _spy(kernels, calls, monkeypatch)
    fn, x, params = _generic_call(entry, training)
    found = []
    for backend in ("triton", "no_such_backend"):
        monkeypatch.setitem(rt.FAST, "cpu", backend)
        monkeypatch.setattr(rt, "_LOADED", {})
        leaves = [x.clone().requires_grad_()] + [p.clone().requires_grad_() for p in params]
        out = fn(*leaves)
        found.append((out, torch.autograd.grad(out, leaves, rand(*out.shape, seed=9))))
    mode = ("forward_train", "backward_train_fused") if training else ("forward_test", "backward_test")
    assert calls == list(mode)
    (out, grads), (want, want_grads) = found
    assert close(out, want)
    assert all(close(a, b) for a, b in zip(grads, want_grads))


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_forward_ad_dual_tensors_match_torchs(name):
    """torch.autograd.forward_ad (dual tensors, no torch.func transform): the forward-mode rule inside the
    open dual level, which takes no nested one."""
    fwad = torch.autograd.forward_ad
    ours, theirs, shape, make = FUNCS[name]
    x, t = rand(*shape, seed=5), rand(*shape, seed=7)
    found = []
    for fn in (ours, theirs):
        args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in make())
        with fwad.dual_level():
            out = fwad.unpack_dual(fn(fwad.make_dual(x, t), *args))
        found.append((out.primal, out.tangent))
    (y, dy), (want, want_dy) = found
    assert dy is not None and close(y, want) and close(dy, want_dy)
