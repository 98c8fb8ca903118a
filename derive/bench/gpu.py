"""`derive bench --device cuda`: generated.triton beside torch on a CUDA GPU. No math here.

For each case of issue 20's table (batch norm at (4096, 1024), (32, 64, 56, 56) and
(256, 256, 28, 28); layer and RMS norm at (8192, 4096); group norm at (32, 256, 56, 56), G = 32),
in float32 and bfloat16, the median time of the forward (training, autograd recording) and of
forward + backward (``torch.autograd.grad``) of:

    native    torch.nn.functional's layer, eager
    compile   torch.compile of the same
    liger     Liger-Kernel's LayerNorm / RMSNorm, where liger_kernel is installed
    triton    generated.triton's kernels (through a torch.autograd.Function here)
    floor     one torch.add of tensors of the case's shape (reads two, writes one)

then the Triton backward alone against the limit of its memory traffic: the bytes it must move (its
per-element inputs read once per pass -- one pass where a whole group fits in one tile, two
otherwise -- and dx written once) over the copy bandwidth measured here; and the error of native
and Triton against float64 (output and dx, max relative).  Timings are triton.testing.do_bench
medians (warm-up, L2 flushed between calls).  ``--dry-run`` lists the cases without a GPU.
"""
from __future__ import annotations

import argparse
import inspect
import math
import sys
import time
from dataclasses import dataclass

CASES = (("batch_norm", (4096, 1024)), ("batch_norm", (32, 64, 56, 56)), ("batch_norm", (256, 256, 28, 28)),
         ("layer_norm", (8192, 4096)), ("rms_norm", (8192, 4096)), ("group_norm", (32, 256, 56, 56)))
DTYPES = ("float32", "bfloat16")
GROUPS = 32
EPS = 1e-5
CONTENDERS = ("native", "compile", "liger", "triton", "floor")


@dataclass(frozen=True)
class Norm:
    """How one of torch's layers maps onto a generated entry: its working view and parameters."""

    entry: str              #: generated.triton.<entry>
    nparams: int
    axes: tuple
    view: object            #: x.shape -> the working view's shape
    pshape: object          #: x.shape -> the parameters' view shape
    const: dict


def _rows(s):
    return (math.prod(s[:-1]), s[-1])


NORMS = {
    "batch_norm": Norm("batchnorm", 2, (0, 2), lambda s: (s[0], s[1], math.prod(s[2:])),
                       lambda s: (1, s[1], 1), {"eps": EPS, "momentum": 0.1}),
    "layer_norm": Norm("layernorm", 2, (1,), _rows, lambda s: (1, s[-1]), {"eps": EPS}),
    "rms_norm": Norm("rmsnorm", 1, (1,), _rows, lambda s: (1, s[-1]), {"eps": EPS}),
    "group_norm": Norm("spatial_groupnorm", 2, (2, 3),
                       lambda s: (s[0], GROUPS, s[1] // GROUPS, math.prod(s[2:])),
                       lambda s: (1, GROUPS, s[1] // GROUPS, 1), {"eps": EPS}),
}


def native(torch, name, shape):
    """torch.nn.functional's layer as f(x, *params)."""
    F = torch.nn.functional
    return {"batch_norm": lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=EPS),
            "layer_norm": lambda x, w, b: F.layer_norm(x, shape[-1:], w, b, EPS),
            "rms_norm": lambda x, w: F.rms_norm(x, shape[-1:], w, EPS),
            "group_norm": lambda x, w, b: F.group_norm(x, GROUPS, w, b, EPS)}[name]


def liger(name):
    """Liger-Kernel's layer as f(x, *params), or None where it has none or is not installed."""
    try:
        from liger_kernel.transformers.functional import liger_layer_norm, liger_rms_norm
    except ImportError:
        return None
    return {"layer_norm": lambda x, w, b: liger_layer_norm(x, w, b, EPS),
            "rms_norm": lambda x, w: liger_rms_norm(x, w, EPS, 0.0, "llama", False)}.get(name)


def generated(torch, name, shape):
    """generated.triton's kernels of ``name`` as f(x, *params), differentiable once."""
    import importlib

    import generated.torch._runtime as rt
    norm = NORMS[name]
    K = importlib.import_module(f"generated.triton.{norm.entry}")
    view, pshape = norm.view(shape), norm.pshape(shape)
    layout = rt.layout(view, norm.axes, pshape)
    x_name = next(iter(inspect.signature(K.forward_train).parameters))
    reads = [n for n, p in inspect.signature(K.backward_train_fused).parameters.items()
             if p.kind == p.POSITIONAL_OR_KEYWORD][1:]

    class Generated(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *params):
            ps = [p.reshape(pshape) for p in params]
            values = K.forward_train(x.reshape(view), *ps, **norm.const, **layout)
            known = {x_name: x.reshape(view), **dict(zip(K.PARAMS, ps)), **values}
            ctx.save_for_backward(*(known[n] for n in reads))
            return values[K.OUTPUT].reshape(x.shape)

        @staticmethod
        def backward(ctx, dout):
            grads = K.backward_train_fused(dout.reshape(view), **dict(zip(reads, ctx.saved_tensors)),
                                           **norm.const, **layout)
            return (grads[0].reshape(shape), *(g.reshape(-1) for g in grads[1:]))

    def backward_alone(x, *params):
        """The backward's call on saved values, and the bytes its limit moves."""
        ps = [p.reshape(pshape) for p in params]
        values = K.forward_train(x.reshape(view), *ps, **norm.const, **layout)
        known = {x_name: x.reshape(view), **dict(zip(K.PARAMS, ps)), **values}
        args = {n: known[n] for n in reads}
        dout = torch.randn_like(x).reshape(view)
        read = [t for t in args.values() if t.numel() == x.numel()] + [dout]   # per-element inputs
        passes = 1 if K._rt.layout(dout, norm.axes, ps).config.one else 2
        moved = passes * sum(t.numel() * t.element_size() for t in read) + dout.numel() * dout.element_size()
        return (lambda: K.backward_train_fused(dout, **args, **norm.const, **layout)), moved

    return (lambda x, *params: Generated.apply(x, *params)), backward_alone


def inputs(torch, name, shape, dtype, device):
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(shape, generator=g, device=device, dtype=dtype).requires_grad_()
    n = shape[1] if name in ("batch_norm", "group_norm") else shape[-1]
    params = [(torch.rand(n, generator=g, device=device, dtype=dtype) + 0.5).requires_grad_()
              for _ in range(NORMS[name].nparams)]
    return x, params, torch.randn(shape, generator=g, device=device, dtype=dtype)


def errors(torch, fn, ref, x, params, dy):
    """Max relative error of ``fn``'s output and dx against ``ref`` in float64."""
    exact = [t.detach().double().requires_grad_() for t in (x, *params)]
    want = ref(*exact)
    want_dx, = torch.autograd.grad(want, exact[0], dy.double())
    got = fn(x, *params)
    got_dx, = torch.autograd.grad(got, x, dy)

    def err(a, b):
        return ((a.double() - b).abs().max() / b.abs().max()).item()

    return err(got, want.detach()), err(got_dx, want_dx)


def bench_case(torch, do_bench, name, shape, dtype, compile_native=True):
    """One row of each table: {contender: (forward ms, forward+backward ms)}, the backward against its
    limit, and the errors."""
    x, params, dy = inputs(torch, name, shape, getattr(torch, dtype), "cuda")
    base = native(torch, name, shape)
    triton_fn, backward_alone = generated(torch, name, shape)
    fns = {"native": base, "compile": torch.compile(base) if compile_native else None, "liger": liger(name),
           "triton": triton_fn}
    timings = {}
    for key, fn in fns.items():
        if fn is None:
            continue

        def both(fn=fn):
            torch.autograd.grad(fn(x, *params), [x, *params], dy)

        timings[key] = (do_bench(lambda fn=fn: fn(x, *params)), do_bench(both))
    a, b, c = (torch.empty(shape, device="cuda", dtype=x.dtype) for _ in range(3))
    floor = do_bench(lambda: torch.add(a, b, out=c))
    timings["floor"] = (floor, floor)
    call, moved = backward_alone(x.detach(), *(p.detach() for p in params))
    errs = {key: errors(torch, fns[key], base, x, params, dy) for key in ("native", "triton")}
    return timings, (do_bench(call), moved), errs


def bandwidth(torch, do_bench) -> float:
    """Bytes per ms of a device-to-device copy of 1 GiB (read and write counted)."""
    src = torch.empty(2**28, device="cuda", dtype=torch.float32)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / do_bench(lambda: dst.copy_(src))


def requested(argv: list[str]) -> list[str] | None:
    """The arguments for :func:`main` when ``argv`` (derive bench's) asks for ``--device cuda``, else None."""
    for k, arg in enumerate(argv):
        if arg == "--device=cuda" or (arg == "--device" and argv[k + 1:k + 2] == ["cuda"]):
            return argv[:k] + argv[k + (1 if "=" in arg else 2):]
    return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="derive bench --device cuda", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="list the cases and contenders; needs no GPU")
    p.add_argument("--no-compile", action="store_true",
                   help="leave torch.compile out (it compiles each case)")
    p.add_argument("--case", action="append", choices=sorted(NORMS), help="only this layer (repeatable)")
    p.add_argument("--dtype", action="append", choices=DTYPES, help="only this dtype (repeatable)")
    return p


def cases(args) -> list[tuple]:
    return [(name, shape, dtype) for name, shape in CASES if not args.case or name in args.case
            for dtype in args.dtype or DTYPES]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    found = cases(args)
    if args.dry_run:
        print("cases (layer, shape, dtype; forward and forward + backward of " + ", ".join(CONTENDERS) + "):")
        for name, shape, dtype in found:
            print(f"  {name} {shape} {dtype} -> generated.triton.{NORMS[name].entry}")
        return 0
    import torch
    if not torch.cuda.is_available():
        print("derive bench --device cuda: no CUDA device here (torch.cuda.is_available() is False); "
              "--dry-run lists the cases", file=sys.stderr)
        return 2
    from triton.testing import do_bench as bench

    def do_bench(fn):
        return bench(fn, warmup=10, rep=50, return_mode="median")

    started = time.perf_counter()
    bw = bandwidth(torch, do_bench)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; copy bandwidth {bw / 1e6:.0f} GB/s\n")
    print("| case | dtype | pass | " + " | ".join(f"{c} ms" for c in CONTENDERS)
          + " | triton/native | triton/liger |")
    print("|" + "---|" * (len(CONTENDERS) + 5), flush=True)
    limits, errs = [], []
    for name, shape, dtype in found:
        timings, (alone, moved), err = bench_case(torch, do_bench, name, shape, dtype, not args.no_compile)
        for k, label in enumerate(("forward", "forward + backward")):
            cells = [f"{timings[c][k]:.3f}" if c in timings else "—" for c in CONTENDERS]
            ratio = f"{timings['triton'][k] / timings['native'][k]:.2f}x"
            versus = f"{timings['triton'][k] / timings['liger'][k]:.2f}x" if "liger" in timings else "—"
            print(f"| {name} {shape} | {dtype} | {label} | " + " | ".join(cells) + f" | {ratio} | {versus} |",
                  flush=True)
        limits.append((name, shape, dtype, alone, moved / bw))
        errs.append((name, shape, dtype, err))
    print("\n| case | dtype | triton backward ms | limit ms | ratio |\n|---|---|---|---|---|")
    for name, shape, dtype, alone, limit in limits:
        print(f"| {name} {shape} | {dtype} | {alone:.3f} | {limit:.3f} | {alone / limit:.2f}x |")
    print("\n| case | dtype | native out err | triton out err | native dx err | triton dx err |\n"
          "|---|---|---|---|---|---|")
    for name, shape, dtype, err in errs:
        (no, nd), (to, td) = err["native"], err["triton"]
        print(f"| {name} {shape} | {dtype} | {no:.2g} | {to:.2g} | {nd:.2g} | {td:.2g} |")
    print(f"\n{len(found)} cases in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
