"""Runs the JAX backend's generic API on a verification case (see derive.output.verify)."""
from __future__ import annotations

import importlib

FACADE = True   #: the running statistics follow the convention of the entry's torch names


def covers(build) -> bool:
    return True


def selects(case) -> bool:
    """JAX compiles each shape anew (a third of a second each): groups of 2 and 3 in each mode."""
    return case.m in (2, 3)


def run(package: str, build, case) -> list:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    ir = build.ir
    fn = getattr(importlib.import_module(f"{package}.jax.{build.spec.name}"), build.spec.name)
    kw = {c.symbol.name: case.constants[ir.names.original(c.symbol).name] for c in ir.constants}
    if build.spec.groups:
        kw["num_groups"] = case.groups
    buffers = {r.buffer: jnp.asarray(case.running[ir.names.original(r.symbol).name]) for r in ir.running}
    if ir.has_running:
        kw["training"] = case.training

    running = case.training and ir.has_running

    def f(x, *params):
        return fn(x, *params, **buffers, **kw)

    @jax.jit   # one compilation of the whole case instead of one per operation
    def everything(dout, *inputs):
        out, vjp = jax.vjp(f, *inputs)
        new = fn(*inputs, **buffers, **kw, return_running=True)[1] if running else {}
        return out, vjp(dout), new

    # after x, as the generic API takes them: the inputs with their own groups, those that broadcast, the parameters
    own = [jnp.asarray(case.inputs[ir.names.original(s).name]) for s in (*(dm.input for dm in ir.domains), *ir.inputs)]
    inputs = [jnp.asarray(case.x), *own] + [jnp.asarray(w) for w in case.weights]
    out, grads, new = everything(jnp.asarray(case.dout), *inputs)
    nd = len(ir.domains)   # the gradients as the cases give them: dx, the parameters', the inputs', own groups last
    grads = [grads[0], *grads[1 + len(own):], *grads[1 + nd:1 + len(own)], *grads[1:1 + nd]]
    name = build.spec.name
    found = [(name, "out", out)] + [(f"{name} (vjp)", f"grad:{k}", g) for k, g in enumerate(grads)]
    found += [(name, f"running:{ir.names.original(r.symbol).name}", new[r.buffer]) for r in ir.running if running]
    return found
