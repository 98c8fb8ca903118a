"""Compile generated Triton kernels for a GPU without one: Triton's compiler lowers a kernel to PTX and
a cubin on any machine (its ptxas ships with it), so code that the CPU interpreter accepts but the
compiler would refuse is found here, not on the GPU.

    python -m derive.backends.triton.compile [PACKAGE] [--arch 90] [--entry layernorm ...]

compiles every kernel of PACKAGE.triton (default: generated) in every configuration a launch can
choose (fused with the whole group in one tile, fused with loops, and each staged launch), for
float32, bfloat16 and float64 inputs, and prints one line per kernel.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

#: Triton's names of the torch dtypes the kernels take
TYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}


def configurations(loops: int) -> list[dict]:
    """(_FIRST, _LAST, _ONE) of every launch :func:`generated.triton._runtime.launch` can make."""
    out = [{"_FIRST": 0, "_LAST": loops, "_ONE": True}, {"_FIRST": 0, "_LAST": loops, "_ONE": False}]
    out += [{"_FIRST": j, "_LAST": j, "_ONE": False} for j in range(loops + 1)]
    return out


def compile_kernel(kernel, dtype: str, constexprs: dict, arch: int = 90):
    """Compile ``kernel`` (a generated.triton kernel) for CUDA compute capability ``arch``: every array
    of the working view in ``dtype``, the buffers in the accumulation dtype."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    fn = kernel.jit()
    acc = "fp64" if dtype == "float64" else "fp32"
    signature = {}
    for name in fn.arg_names:
        if name in constexprs or name in ("_BA", "_BB", "_ACC"):
            signature[name] = "constexpr"
        elif name.startswith("_buf_"):
            signature[name] = "*" + acc
        elif name.startswith("_ptr_"):
            signature[name] = "*" + TYPES[dtype]
        else:
            signature[name] = "i32"
    values = {**constexprs, "_ACC": tl.float64 if dtype == "float64" else tl.float32}
    values.setdefault("_BA", 4)
    values.setdefault("_BB", 256)
    source = ASTSource(fn=fn, signature=signature, constexprs=values)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32))


def kernels(module) -> list:
    return [(name, k) for name, k in vars(module).items()
            if type(k).__name__ == "Kernel" and name.startswith("_")]


def check_module(module, dtypes=("float32", "bfloat16", "float64"), arch: int = 90, progress=print,
                 only=None) -> int:
    """Compile every kernel of ``module`` (or those named in ``only``) in every configuration; returns
    how many compiled."""
    count = 0
    for name, k in kernels(module):
        if only and name not in only:
            continue
        loops = k.loops
        columns = name.endswith("_columns")
        for dtype in dtypes:
            for cfg in configurations(loops):
                if columns and cfg["_ONE"]:
                    continue
                start = time.perf_counter()
                compile_kernel(k, dtype, cfg, arch)
                count += 1
                progress(f"  {module.__name__}.{name} {dtype} {cfg}: {time.perf_counter() - start:.1f} s")
    return count


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m derive.backends.triton.compile",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("package", nargs="?", default="generated")
    p.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (90: H100/H200)")
    p.add_argument("--entry", action="append", help="only this entry (repeatable)")
    p.add_argument("--kernel", action="append",
                   help="only this kernel, e.g. _backward_step_rows (repeatable)")
    p.add_argument("--dtype", action="append", choices=sorted(TYPES),
                   help="only this input dtype (repeatable)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        p.error("TRITON_INTERPRET=1 is set: the interpreter compiles nothing (unset it)")
    triton_package = importlib.import_module(f"{args.package}.triton")
    entries = args.entry or list(triton_package.__all__)
    if args.kernel:
        known = {name for entry in entries
                 for name, _ in kernels(importlib.import_module(f"{args.package}.triton.{entry}"))}
        unknown = sorted(set(args.kernel) - known)
        if unknown:
            p.error(f"--kernel: no kernel named {', '.join(unknown)} (there are {', '.join(sorted(known))})")
    total = 0
    for entry in entries:
        total += check_module(importlib.import_module(f"{args.package}.triton.{entry}"), arch=args.arch,
                              dtypes=args.dtype or ("float32", "bfloat16", "float64"), only=args.kernel)
    print(f"{total} kernels compiled for sm_{args.arch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
