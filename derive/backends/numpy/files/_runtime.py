"""Input checks, dtype rules and array layout shared by every generated kernel.

Nothing here is derivation math: the kernels' arithmetic is printed from the
proved SymPy expressions.  This module only decides what arrays the kernels
see and rejects what they cannot take, naming the argument at fault.
"""
import warnings

import numpy

MODES = ("train", "test")
#: the floating dtypes the kernels compute in; others (longdouble) are refused alike by both backends
FLOATS = (numpy.dtype(numpy.float16), numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
#: torch's rule for a normalization group of a single value: F.layer_norm and F.group_norm accept
#: it (out = beta, dx = 0), F.batch_norm and F.instance_norm refuse it when training


def as_array(name, value):
    """``value`` as a plain ndarray: a masked array is refused (the kernels would ignore its mask),
    an np.matrix becomes an ndarray, and NumPy's own conversion errors name the argument."""
    if isinstance(value, numpy.ma.MaskedArray):
        raise TypeError(f"{name} must not be a masked array: the kernels would ignore its mask; "
                        f"pass {name}.filled(...) or the unmasked values")
    try:
        return numpy.asarray(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} must be a rectangular array of numbers: {error}") from None


def float_dtype(**arrays):
    """The common floating dtype of the arguments, after checking each one.

    Integers (and Python numbers) are promoted to float64 as NumPy promotes
    them; complex, string, object and boolean arrays are a TypeError that
    names the argument.
    """
    dtypes = []
    for name, value in arrays.items():
        dtype = as_array(name, value).dtype
        if dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a real floating-point or integer array, got dtype {dtype}")
        if dtype.kind == "f" and dtype not in FLOATS:
            raise TypeError(f"{name} must be float16, float32, float64 or integer, got dtype {dtype}; "
                            f"convert it with {name}.astype(numpy.float64)")
        dtypes.append(dtype if dtype.kind == "f" else numpy.dtype(numpy.float64))
    return numpy.result_type(*dtypes)


def work_dtype(dtype):
    """Reductions accumulate in at least float32: float16 is computed in float32."""
    return numpy.promote_types(dtype, numpy.float32)


def running_dtype(dtype):
    """Running statistics are kept in at least float32: a float16 running_var overflows to inf
    once a feature's std passes 256, and test mode would then silently return beta."""
    return work_dtype(dtype)


def as_work(value, dtype, copy=False):
    """``value`` as an array of the working dtype.

    With ``copy`` it is always a new array: whatever the cache keeps must not
    change when the caller later changes gamma in place (an optimizer step, a
    gradient check).  Arrays only read during the call are not copied.
    """
    array = numpy.asarray(value)
    return numpy.array(array, dtype=work_dtype(dtype), copy=True) if copy else array.astype(
        work_dtype(dtype), copy=False)


def check_array(name, value, ndim, layout):
    """``value`` as an array with ``ndim`` dimensions (None: at least one)."""
    array = as_array(name, value)
    if ndim is None and array.ndim < 1:
        raise ValueError(f"{name} must have at least one dimension ({layout}), got a scalar")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array ({layout}), got shape {array.shape}")
    return array


def check_param_shape(name, value, allowed, description):
    """gamma/beta must have one of the ``allowed`` shapes."""
    as_array(name, value)
    shape = param_shape(value, allowed[0])
    if shape not in allowed:
        expected = " or ".join(str(s) for s in allowed)
        raise ValueError(f"{name} must have shape {description}, here {expected}, got {shape}")


def param_shape(value, features):
    """The shape a parameter's gradient is returned in: the parameter's own, but an np.matrix
    (always 2-D) of the right size is taken as the documented shape ``features``."""
    if isinstance(value, numpy.matrix) and value.size == numpy.prod(features, dtype=int):
        return tuple(features)
    return numpy.shape(value)


def check_keys(name, params, known, tolerated=()):
    """Warn (once per call) about keys that the function does not read: a misspelt
    'epsilon' would otherwise fall back to the default eps without a word.  ``tolerated``
    keys are read by nothing but passed by common callers (CS231n's {'mode': 'train'})."""
    unknown = sorted(str(k) for k in params if k not in known and k not in tolerated)
    if unknown:
        warnings.warn(f"{name} has key(s) {', '.join(map(repr, unknown))} that are not used; "
                      f"the keys read are {', '.join(map(repr, known))}", UserWarning, stacklevel=3)


def running_stats(name, params, keys, features, stat_shape, dtype):
    """{'running_mean': ..., ...} for each of ``keys`` from ``params``, each of shape ``features``
    (zeros when absent), in the working dtype and laid out as ``stat_shape``."""
    running = {}
    for key in keys:
        label = f"{name}['{key}']"
        value = params.get(key)
        if value is None:
            value = numpy.zeros(features, dtype=running_dtype(dtype))
        float_dtype(**{label: value})
        value = as_array(label, value)
        if value.shape != tuple(features):
            raise ValueError(f"{label} must have shape {tuple(features)}, got {value.shape}")
        running[key] = as_work(value, dtype).reshape(stat_shape)
    return running


def initial_running(name, params, initial, mode, features, dtype):
    """Running buffers absent from ``params`` start at their ``initial`` value ({key: value}), not
    at zeros: torch's and Ioffe's variance 1 where training reads the buffer.  Test mode reads
    them from a copy (the caller's dict is not changed); training creates them in ``params``,
    where it writes them anyway, once the buffers given there are known to be valid."""
    missing = [key for key in initial if params.get(key) is None]
    if not missing:
        return params
    filled = dict(params)
    for key in missing:
        filled[key] = numpy.full(features, initial[key], dtype=running_dtype(dtype))
    running_stats(name, filled, tuple(initial), features, features, dtype)
    if mode != "train":
        return filled
    for key in missing:
        params[key] = filled[key]
    return params


def check_dict(name, value):
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
    return value


def check_mode(name, params):
    """The 'mode' key: required, 'train' or 'test'."""
    if "mode" not in params:
        raise ValueError(f"{name}['mode'] is required: 'train' or 'test'")
    mode = params["mode"]
    if mode not in MODES:
        raise ValueError(f"{name}['mode'] must be 'train' or 'test', got {mode!r}")
    return mode


def check_positive(name, value):
    """eps must be a positive, finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, numpy.floating, numpy.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not 0 < value < float("inf"):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return float(value)


def check_eps(name, value, dtype):
    """eps must be positive and finite, and must not round to 0 in the working dtype of x:
    a constant group would divide 0 by 0."""
    eps = check_positive(name, value)
    work = work_dtype(dtype)
    if work.type(eps) == 0:
        tiny = numpy.finfo(work).smallest_subnormal
        raise ValueError(f"{name}={value} rounds to 0 in {work}, the working dtype of x; "
                         f"use eps >= {tiny} or float64 data")
    return eps


def check_minimum(name, value, minimum):
    """A constant that may be as small as ``minimum`` (batch renormalization's d_max = 0 and
    r_max = 1: its clips closed, plain batch norm), and is finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float, numpy.floating, numpy.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not minimum <= value < float("inf"):
        raise ValueError(f"{name} must be at least {minimum} and finite, got {value}")
    return float(value)


def check_fraction(name, value):
    """momentum must lie in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, numpy.floating, numpy.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def check_axis(name, value, ndim):
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or not -ndim <= value < ndim:
        raise ValueError(f"{name} must be an axis of x (0 or 1), got {value!r}")
    return int(value) % ndim


def check_groups(name, groups, channels):
    if isinstance(groups, bool) or not isinstance(groups, (int, numpy.integer)) or groups < 1:
        raise ValueError(f"{name} must be a positive integer, got {groups!r}")
    if channels % groups:
        raise ValueError(f"{name}={groups} must divide the number of channels C={channels}")
    return int(groups)


def group_size(shape, axes):
    """m: how many values one mean and one variance are taken over."""
    size = 1
    for axis in axes:
        size *= shape[axis]
    return size


def leaf_axes(ndim, spans):
    """The axes of the working view a parameter or input spans (None: every axis, x's shape)."""
    return tuple(range(ndim)) if spans is None else tuple(sorted(a % ndim for a in spans))


def union_axes(ndim, *spans):
    """The axes some leaf spans: the kernels' parameter axes when the leaves span different ones."""
    return tuple(sorted(set().union(*(leaf_axes(ndim, s) for s in spans))))


def leaf(name, value, view_shape, spans, description, dtype):
    """A parameter or input that spans its own axes of the working view: checked, in the working dtype
    (a copy), laid out along those axes; and the shape its gradient is returned in."""
    ndim = len(view_shape)
    own = leaf_axes(ndim, spans)
    features = tuple(view_shape[a] for a in own)
    allowed = (features, broadcast_shape(ndim, own, features))
    check_param_shape(name, value, allowed, description)
    return as_work(value, dtype, copy=True).reshape(allowed[1]), param_shape(value, features)


def leaf_gradient(grad, ndim, spans, shape):
    """A leaf's gradient, summed over the axes it does not span, in its own ``shape``."""
    own = leaf_axes(ndim, spans)
    grad = numpy.asarray(grad)
    other = tuple(a for a in range(grad.ndim) if a not in own and grad.shape[a] != 1)
    return (numpy.sum(grad, axis=other, keepdims=True) if other else grad).reshape(shape)


def group_shape(shape, axes):
    """The shape of one value per group: ``shape`` with the reduced axes of length 1."""
    return tuple(1 if a in axes else n for a, n in enumerate(shape))


def own_groups(name, value, ndim, layout, reduce_axes, view_shape, axes, dtype, training):
    """An input with its own groups (AdaIN's style features): the array in the working dtype, its
    reduced axes and its group size.  Its other axes must be those of x's groups, in order."""
    array = check_array(name, value, ndim, layout)
    own = tuple(sorted(a % array.ndim for a in reduce_axes))
    kept = tuple(n for a, n in enumerate(array.shape) if a not in own)
    groups = tuple(n for a, n in enumerate(view_shape) if a not in axes)
    if kept != groups:
        raise ValueError(f"{name} of shape {array.shape} must have the sizes of x's groups {groups} on its axes "
                         f"outside {own}, got {kept}")
    m = group_size(array.shape, own)
    if training:
        check_nonempty(m, f"group of {name}", array.shape)
    return as_work(array, dtype, copy=True), own, m


def check_group_size(m, what, minimum=2):
    """Batch statistics of a single value are meaningless: every output would equal beta.
    As in torch, layer norm and group norm still accept one value per group (minimum 1)."""
    if m < minimum:
        raise ValueError(f"Expected more than 1 value per {what} when training, got m={m}")


def check_nonempty(m, what, x_shape):
    """A group of no values has no mean: every variant refuses it alike when training."""
    if m == 0:
        raise ValueError(f"x of shape {x_shape} has no values per {what} to normalize over (m=0)")


def other_axes(ndim, axes):
    """The axes of an ndim array that are not in ``axes``."""
    return tuple(a for a in range(ndim) if a not in axes)


def broadcast_shape(ndim, axes, shape):
    """Shape that lays a parameter of ``shape`` along ``axes`` of an ndim array."""
    out = [1] * ndim
    for axis, size in zip(axes, shape):
        out[axis] = size
    return tuple(out)


def _complete(cache):
    """The cache with the axis keys of the other backend filled in from its own: a cache of
    generated.numba works in generated's backward and the other way round."""
    if not isinstance(cache, dict) or "view_shape" not in cache or "axes" not in cache:
        return cache
    ndim, axes = len(cache["view_shape"]), cache["axes"]
    cache = dict(cache)
    if "param_axes" not in cache and "param_sum_axes" in cache:
        cache["param_axes"] = other_axes(ndim, cache["param_sum_axes"])
    if "param_axes" in cache:
        cache.setdefault("param_sum_axes", other_axes(ndim, cache["param_axes"]))
        cache.setdefault("outer_axes", tuple(a for a in cache["param_sum_axes"] if a not in axes))
    return cache


def check_cache(cache, name, keys, variant):
    """The cache must come from the forward function of the same variant (of either backend)."""
    cache = _complete(cache)
    if not isinstance(cache, dict) or any(key not in cache for key in keys):
        raise ValueError(f"{name} must be the cache returned by {variant}_forward")
    if cache["variant"] != variant:
        raise ValueError(f"{name} comes from {cache['variant']}_forward, not {variant}_forward")
    return cache


def check_dout(dout, cache):
    """dout must be real, and shaped like the x of the forward pass."""
    float_dtype(dout=dout)
    dout = as_array("dout", dout)
    if dout.shape != cache["x_shape"]:
        raise ValueError(f"dout must have the shape of x in cache, {cache['x_shape']}, got {dout.shape}")
    return dout


def divide_or_zero(numerator, denominator):
    """numerator / denominator, and 0 where the denominator is 0: the proved limit of a formula whose
    denominator vanishes with its numerator (epsilon outside the root at a constant group)."""
    numerator, denominator = numpy.broadcast_arrays(numerator, denominator)
    out = numpy.zeros(numerator.shape, dtype=numpy.result_type(numerator, denominator))
    return numpy.divide(numerator, denominator, out=out, where=denominator != 0)
