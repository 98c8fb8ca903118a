"""generated.triton without a GPU: every entry's Triton kernels run under Triton's interpreter
(TRITON_INTERPRET=1) on small shapes and agree with torch autograd of generated.torch's printed
operations, in float32 and float64, in training and test mode; in every way a launch can be laid out
(the whole group in one tile, loops over chunks, a pass split across programs, rows and columns);
and in bfloat16 their error against float64 is no worse than torch's own layers'.
"""
from __future__ import annotations

import importlib
import inspect
import os

import pytest

os.environ["TRITON_INTERPRET"] = "1"   # read when a kernel is first jitted (generated.triton jits lazily)
torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import generated.torch._runtime as trt  # noqa: E402
from generated.triton import _runtime as rt  # noqa: E402
from generated.triton import __all__ as ENTRIES  # noqa: E402

TOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def modules(entry):
    return tuple(importlib.import_module(f"generated.{backend}.{entry}") for backend in ("torch", "triton"))


def x_shape(T, groups):
    """A small input of the entry's generic API: (6, 5), or (3, 4, 2, 3) for an image layout."""
    ndim = max([a for a in T._REDUCE_AXES + T._PARAM_AXES if a >= 0] + [1]) + 1 - bool(groups)
    return (6, 5) if ndim == 2 else (3, 4, 2, 3)[:ndim]


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiles of a few elements and a target of 4 programs: groups span several chunks, a pass is split
    across programs, and a program takes several blocks of groups."""
    monkeypatch.setattr(rt, "MAX_BLOCK", 4)
    monkeypatch.setattr(rt, "TILE", 8)
    monkeypatch.setattr(rt, "PROGRAMS", 4)
    rt._layout.cache_clear()
    yield
    rt._layout.cache_clear()


def inputs(entry, dtype, shape=None, seed=0):
    T, K = modules(entry)
    g = torch.Generator().manual_seed(seed)
    groups = 2 if "num_groups" in inspect.signature(getattr(T, entry)).parameters else None
    x = torch.randn(shape or x_shape(T, groups), generator=g, dtype=dtype) * 2 + 0.5
    view, layout, pshape, _ = trt.working_view(x, T._REDUCE_AXES, T._PARAM_AXES, groups)
    params = [(torch.rand(pshape, generator=g, dtype=dtype) + 0.5) for _ in T.PARAMS]
    dout = torch.randn(view.shape, generator=g, dtype=dtype)
    return T, K, view, layout, params, dout, g


def constants(K):
    names = [n for n, p in inspect.signature(K.forward_train).parameters.items() if p.kind == p.KEYWORD_ONLY]
    chosen = {"momentum": 0.1, "r_max": 1.5, "d_max": 0.5}
    return {n: chosen.get(n, 1e-5) for n in names if n not in ("m", "axes")}


def arguments(fn, known):
    return {n: known[n] for n, p in inspect.signature(fn).parameters.items()
            if p.kind == p.POSITIONAL_OR_KEYWORD and n != "dout"}


def close(got, want, dtype, what):
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1)).item()
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g}"


def check_mode(T, K, view, layout, params, dout, const, dtype, training, g):
    """K's forward and backward of one mode against autograd of T's printed forward."""
    x = view.clone().requires_grad_()
    ps = [p.clone().requires_grad_() for p in params]
    known = {"x": x, **dict(zip(T.PARAMS, ps))}
    if training:
        reads = {n: torch.rand(layout["stat_shape"], generator=g, dtype=dtype) + 0.5 for n in T.READS_RUNNING}
        want = T.forward_train(x, *ps, **reads, **const, **layout)
        got = K.forward_train(view, *params, **reads, **const, **layout)
        backward = K.backward_train_fused
    else:
        stats = {s: torch.rand(layout["stat_shape"], generator=g, dtype=dtype) + 0.5
                 for s in T.STATS.values()}
        reads = stats
        want = T.forward_test(x, *ps, **stats, **const, **layout)
        got = K.forward_test(view, *params, **stats, **const, **layout)
        backward = K.backward_test
    for key, value in got.items():   # (a test-mode value of constants alone is a number in torch's)
        expected = torch.as_tensor(want[key], dtype=dtype).detach().expand_as(value)
        close(value, expected, dtype, f"forward {key}")
    grads = torch.autograd.grad(want[K.OUTPUT], [x, *ps], dout, allow_unused=True)
    known.update(reads)
    known.update({k: v.detach() for k, v in got.items()})
    found = backward(dout, **arguments(backward, known), **const, **layout)
    assert len(found) == 1 + len(params)
    for k, (a, b) in enumerate(zip(found, grads)):
        close(a, b if b is not None else torch.zeros_like(a), dtype, f"gradient {k}")


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("dtype, blocks", [(torch.float64, "default"), (torch.float32, "default"),
                                           (torch.float64, "small")])
def test_every_entry_against_autograd(entry, dtype, blocks, request):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    T, K, view, layout, params, dout, g = inputs(entry, dtype)
    const = constants(K)
    for training in (True, False) if T.STATS else (True,):
        check_mode(T, K, view, layout, params, dout, const, dtype, training, g)


#: working views the entries get from generated.torch.functional, beside their generic API's:
#: batch norm of images as (N, C, H*W), normalize along a middle axis (a permuted copy), and a view
#: that is not contiguous
VIEWS = [
    ("batchnorm", (3, 4, 5), (0, 2), (1, 4, 1)),
    ("instancenorm", (2, 3, 5), (2,), (1, 3, 1)),
    ("l2_normalize", (3, 4, 2), (1,), None),
    ("layernorm", (4, 1), (1,), (1, 1)),
]


@pytest.mark.parametrize("entry, shape, axes, pshape", VIEWS)
def test_functional_views(entry, shape, axes, pshape, small_blocks):
    T, K = modules(entry)
    g = torch.Generator().manual_seed(1)
    view = torch.randn(*shape, 2, generator=g, dtype=torch.float64)[..., 0]   # every other element
    assert not view.is_contiguous()
    params = [torch.rand(pshape, generator=g, dtype=torch.float64) + 0.5 for _ in T.PARAMS]
    layout = trt.layout(shape, axes, pshape or (1,) * len(shape))
    dout = torch.randn(shape, generator=g, dtype=torch.float64)
    check_mode(T, K, view, layout, params, dout, constants(K), torch.float64, True, g)


def test_bad_argument_is_named():
    T, K, view, layout, params, dout, g = inputs("layernorm", torch.float32)
    with pytest.raises(ValueError, match="gamma"):
        K.forward_train(view, params[0][:, :2], params[1], eps=1e-5, **layout)


@pytest.mark.parametrize("entry, torch_fn", [
    ("layernorm", lambda x, w, b: torch.nn.functional.layer_norm(x, x.shape[-1:], w.reshape(-1),
                                                                 b.reshape(-1))),
    ("rmsnorm", lambda x, w: torch.nn.functional.rms_norm(x, x.shape[-1:], w.reshape(-1), eps=1e-5)),
    ("batchnorm", lambda x, w, b: torch.nn.functional.batch_norm(x, None, None, w.reshape(-1), b.reshape(-1),
                                                                 training=True)),
])
def test_bfloat16_error_no_worse_than_torch(entry, torch_fn):
    """bfloat16 in, statistics and sums in float32: the output's and dx's error against float64 is at
    most torch's own (plus 10% for rounding ties).

    Triton's interpreter rounds float32 to bfloat16 by truncation where the GPU rounds to nearest, so
    the kernels' arithmetic is taken on the bfloat16 values in float32 (what the GPU loads) and each
    stored bfloat16 value (the output, the per-element values the backward reads, dx) is rounded by
    torch; the kernels on bfloat16 tensors give the same values to one bfloat16 step."""
    T, K, view, layout, params, dout, g = inputs(entry, torch.float64, shape=(64, 48))
    const = constants(K)
    half = [t.to(torch.bfloat16) for t in (view, *params, dout)]
    exact = [t.double().requires_grad_() for t in half[:-1]]
    ref = torch_fn(*exact)
    ref_dx, = torch.autograd.grad(ref, exact[0], half[-1].double())
    xb = half[0].clone().requires_grad_()
    theirs = torch_fn(xb, *half[1:-1])
    their_dx, = torch.autograd.grad(theirs, xb, half[-1])

    wide = [t.float() for t in half]
    values = K.forward_train(*wide[:-1], **const, **layout)
    stored = {k: v.bfloat16().float() if v.shape == view.shape else v for k, v in values.items()}
    known = {"x": wide[0], **dict(zip(K.PARAMS, wide[1:-1])), **stored}
    backward = K.backward_train_fused
    ours_dx = backward(wide[-1], **arguments(backward, known), **const, **layout)[0]

    def err(a, b):
        return ((a.double() - b.detach()).abs().max() / b.detach().abs().max()).item()

    assert err(stored[K.OUTPUT], ref) <= 1.1 * err(theirs, ref)
    assert err(ours_dx.bfloat16(), ref_dx) <= 1.1 * err(their_dx, ref_dx)
    on_half = K.forward_train(*half[:-1], **const, **layout)[K.OUTPUT]
    assert on_half.dtype == torch.bfloat16
    step = 2.0 ** -7 * stored[K.OUTPUT].abs()
    assert ((on_half.float() - stored[K.OUTPUT]).abs() <= step).all()


# --------------------------------------------------------------------------- derive bench --device cuda

BENCH_SHAPES = {"batch_norm": (6, 4), "layer_norm": (4, 6), "rms_norm": (4, 6), "group_norm": (2, 4, 1, 2)}


@pytest.mark.parametrize("name, shape", BENCH_SHAPES.items())
def test_gpu_bench_runs_the_kernels_of_torchs_layer(name, shape, monkeypatch):
    """The bench's generated contender (derive/bench/gpu.py) computes torch's own layer: output and the
    gradients of x and the parameters, float64, here under the interpreter (group norm with 2 groups)."""
    from derive.bench import gpu
    monkeypatch.setattr(gpu, "GROUPS", 2)
    x, params, dy = gpu.inputs(torch, name, shape, torch.float64, "cpu")
    fn, backward_alone = gpu.generated(torch, name, shape)
    base = gpu.native(torch, name, shape)
    got, want = fn(x, *params), base(x, *params)
    close(got, want.detach(), torch.float64, f"{name} output")
    for a, b in zip(torch.autograd.grad(got, [x, *params], dy), torch.autograd.grad(want, [x, *params], dy)):
        close(a, b, torch.float64, f"{name} gradient")
    call, moved = backward_alone(x.detach(), *(p.detach() for p in params))
    assert call()[0].shape == gpu.NORMS[name].view(shape)
    assert moved >= 3 * x.numel() * x.element_size()   # dout and one saved value read, dx written


def test_gpu_bench_lists_its_cases_and_refuses_without_cuda(capsys):
    from derive.bench import cpu, gpu
    assert cpu.main(["--device", "cuda", "--dry-run"]) == 0
    listed = capsys.readouterr().out.splitlines()[1:]
    assert len(listed) == len(gpu.CASES) * len(gpu.DTYPES)
    for name, shape in gpu.CASES:
        assert any(line.split()[0] == name and str(shape) in line for line in listed)
    if not torch.cuda.is_available():
        assert cpu.main(["--device=cuda", "--case", "rms_norm"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_kernels_compile_for_the_gpu():
    """Triton's compiler (no GPU needed) lowers a rows and a columns kernel to a cubin for sm_90 in each
    configuration a launch can choose: code the interpreter runs but the compiler refuses fails here.
    (`python -m derive.backends.triton.compile` compiles every kernel; the interpreter must be off.)"""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "derive.backends.triton.compile", "--entry", "layernorm",
                          "--kernel", "_backward_step_rows", "--kernel", "_forward_step_columns",
                          "--dtype", "bfloat16"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "8 kernels compiled for sm_90"


def test_printer_powers_and_quotients_evaluate_as_sympy():
    """The Triton printer's spelling of powers, quotients and clamps, evaluated in Python with _div as
    division and _sqrt as math.sqrt, gives SymPy's value (a compound base keeps its parentheses)."""
    import math
    import operator

    import sympy as sp

    from derive.backends.triton.printer import TritonPrinter
    from derive.forward.graph import ClampMax, ClampMin
    a, b, c = sp.symbols("a b c", positive=True)
    exprs = [(a + b) ** sp.Rational(3, 2), (a + b) ** sp.Rational(-3, 2), (a + b) ** sp.Rational(5, 2),
             -c * a / (b + c ** 2 + a) ** sp.Rational(3, 2), (a - b) ** 2 / (c * (a + b)), 1 / sp.sqrt(a + c),
             ClampMax(ClampMin(a - b, -c), c) * sp.Rational(1, 3)]
    values = {a: 1.3, b: 0.4, c: 2.1}
    scope = {"_div": operator.truediv, "_sqrt": math.sqrt, "a": 1.3, "b": 0.4, "c": 2.1,
             "tl": type("tl", (), {"maximum": staticmethod(max), "minimum": staticmethod(min),
                                   "where": staticmethod(lambda q, x, y: x if q else y)})}
    for e in exprs:
        text = TritonPrinter().doprint(e)
        assert math.isclose(eval(text, scope), float(e.subs(values)), rel_tol=1e-14), text
