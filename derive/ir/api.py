"""The calling convention the array backends share (NumPy and numba): CS231n's functions
``<name>_forward(x, <params>, [G,] <name>_param) -> (out, cache)`` and ``<name>_backward(dout, cache)``.

The argument checks, the param dict's keys, the cache's keys and the backward functions' names are
decided here once, from the IR and the layout, so that a cache from one backend works with the
other's backward.
"""
from __future__ import annotations

from .program import KernelIR

#: what a layout adds to every cache, beside the values the backward reads
LAYOUT_KEYS = ("variant", "mode", "axes", "param_axes", "param_sum_axes", "outer_axes", "dtype",
               "x_shape", "view_shape")


def cache_keys(ir: KernelIR) -> list[str]:
    own = {k for dm in ir.domains for k in (dm.axes, dm.m.name)}   # an input's own groups
    shapes = {f"{p.name}_shape" for p in (*ir.params, *ir.inputs)}
    return list(LAYOUT_KEYS) + sorted({s.name for s in ir.cache_values} | shapes | own)


def backward_functions(ir: KernelIR) -> list[tuple[str, str, str]]:
    """(public name, IR function, description) of each backward function, CS231n's names first."""
    spec = ir.spec
    stages = [a.target.name for a in ir["backward_staged"].body
              if a.target in ir.stage_symbols]
    staged = ("backward_staged", "the staged chain rule (" + ", ".join(stages) + ")")
    compact = ("backward_compact", "the compact form, collected into per-group coefficients")
    if spec.textbook:
        return [(f"{spec.name}_backward", *staged), (f"{spec.name}_backward_alt", *compact)]
    return [(f"{spec.name}_backward", *compact), (f"{spec.name}_backward_staged", *staged)]


def param_description(spec) -> str:
    letters = spec.layout.split(",")
    if not spec.param_axes:
        return "() (one value for the layer)"
    if spec.any_rank:
        return f"({letters[-1]},)"
    if spec.groups:
        return "(1, C, 1, 1) or (C,)"
    along = [letters[a] for a in spec.param_axes]
    return f"({', '.join(along)},)"


def leaf_description(spec, spans) -> str:
    """The shape a parameter or input spanning ``spans`` of the working view is given in, as letters."""
    letters = spec.layout.split(",")
    if spans is None:
        return "(" + ", ".join(letters) + ") (the shape of x)"
    if not spans:
        return "() (one value for the layer)"
    if spec.any_rank:
        return f"the sizes of x's axes {tuple(spans)}"
    return "(" + ", ".join(letters[a] for a in spans) + ",)" if len(spans) == 1 else \
        "(" + ", ".join(letters[a] for a in spans) + ")"


def axes_description(spec) -> str:
    letters = spec.layout.split(",")
    if spec.groups:
        return "(C/G, H, W) within each group of channels, for each sample"
    if spec.any_rank:
        return f"({letters[-1]}) (the last axis)"
    return "(" + ", ".join(letters[a] for a in spec.reduce_axes) + ")"


def common(ir: KernelIR) -> dict:
    """The context both array backends' templates share: names, checks, param dict, cache."""
    spec, names = ir.spec, ir.names
    keys = cache_keys(ir)
    copied = {ir.x.name, ir.output.name}   # (an input with its own groups is a copy already: own_groups)
    constants = [(names.original(c.symbol).name, c.symbol.name, repr(c.default), c.fraction) for c in ir.constants]
    running = [(names.original(r.symbol).name, r.symbol.name, r.stat.name) for r in ir.running]
    return {
        "spec": spec,
        "variant": spec.name,
        "x": ir.x.name,
        "output": ir.output.name,
        "param_names": [p.name for p in ir.params],
        "domain_inputs": [dm.input.name for dm in ir.domains],
        "input_names": [s.name for s in ir.inputs],
        "leaf_spans": {name: repr(spans) for name, spans in ir.spans},
        "leaf_descriptions": {name: leaf_description(spec, spans) for name, spans in ir.spans},
        "leaf_grads": [(g.name, leaf.name, dict(ir.spans).get(leaf.name, "default"))
                       for g, leaf in zip(ir.grads[1:], (*ir.params, *ir.inputs))],
        "grads": [g.name for g in ir.grads],
        "dx": ir.grads[0].name,
        "constants": constants,
        "running": running,
        "reads_running": [s.name for s in ir.reads_running],
        "has_running": ir.has_running,
        "param_keys": [key for key, *_ in constants]
        + (["mode", *(key for key, *_ in running)] if ir.has_running else [])
        + (["axis"] if spec.batch_axis_option else []),
        "check_group": spec.min_group > 1,
        "x_param_axes": (1,) if spec.groups else spec.param_axes,
        "param_description": param_description(spec),
        "axes_description": axes_description(spec),
        "group_word": spec.group_word,
        "layout_text": "(" + ", ".join(spec.layout.split(",")) + ")",
        "cache_keys": keys,
        "cache_values": {key: f"{key}.copy()" if key in copied else key for key in keys},
    }


def call(module, build, case) -> list:
    """forward, then every backward function of ``module`` (a generated array-API module) on a verification
    case (derive.output.cases): [(function, output key, value)]."""
    ir, spec = build.ir, build.spec
    params = {ir.names.original(c.symbol).name: case.constants[ir.names.original(c.symbol).name]
              for c in ir.constants}
    if ir.has_running:
        params["mode"] = "train" if case.training else "test"
        params.update({buffer: value.copy() for buffer, value in case.running.items()})
    leaves = [*(dm.input for dm in ir.domains), *ir.inputs]   # after x, in this order, then the parameters
    args = ([case.x.copy(), *(case.inputs[ir.names.original(s).name].copy() for s in leaves),
             *(w.copy() for w in case.weights)] + ([case.groups] if spec.groups else []))
    forward = getattr(module, f"{spec.name}_forward")
    out, cache = forward(*args, params)
    found = [(forward.__name__, "out", out)]
    if case.training:
        found += [(forward.__name__, f"running:{buffer}", params[buffer]) for buffer in case.running]
    for name, _, _ in backward_functions(ir):
        grads = getattr(module, name)(case.dout.copy(), cache)
        found += [(name, f"grad:{k}", g) for k, g in enumerate(grads)]
    return found
