"""How a working view is laid onto the Triton kernels' iteration space, and how they are launched.
No derivation math here.

Each axis of the working view gets a role, and the kernels see the view as (O, G, K*I), the axes
of each role merged in this order:

    O  reduced axes before the first group axis (the batch axis of batch norm)
    G  the group axes: one mean and one variance for each g; those the parameters span last,
       so that the parameter row of group g is p = g % P (P their size)
    K  reduced axes that the parameters span (layer norm's features, group norm's channels)
    I  reduced axes after the first group axis (H and W)

A view whose axes are in another order is copied once into this order (a permutation); one that
is not contiguous is made so.  Per-group values are vectors of G, parameters (P, K) arrays.

Kernels are compiled by triton.jit on their first launch, so that ``TRITON_INTERPRET=1`` set
before the first call (not before the import) runs them on the CPU through Triton's interpreter.
Block sizes and the split of a pass across programs depend on the shape only, so a result does not
depend on the device it ran on.
"""
import functools
import math

import torch
import triton
import triton.language as tl

#: the most positions q = k*I + i of one group that a tile of the rows family holds
MAX_BLOCK = 4096
#: the elements of one tile
TILE = 4096
#: about how many programs a launch needs: below half of it, a pass is split across the rows O
#: (each program sums a slice into partial sums, added in order by the next launch)
PROGRAMS = 512


def div(a, b):
    """a/b rounded to nearest, as torch divides: Triton's float32 ``/`` is approximate."""
    if b.dtype == tl.float32:
        return tl.div_rn(a, b)
    return a / b


def sqrt(a):
    """The square root rounded to nearest (Triton's float32 ``tl.sqrt`` is approximate)."""
    if a.dtype == tl.float32:
        return tl.sqrt_rn(a)
    return tl.sqrt(a)


#: the helpers a kernel calls by these names (jitted with it)
HELPERS = ("_div", "_sqrt")


class Kernel:
    """A kernel function, jitted by Triton on its first launch (``kernel[grid](...)``), and its number
    of passes before the elementwise one."""

    def __init__(self, fn, loops):
        self.fn = fn
        self.loops = loops
        self.jitted = None
        functools.update_wrapper(self, fn)

    def jit(self):
        if self.jitted is None:
            scope = self.fn.__globals__
            for name in HELPERS:
                if not hasattr(scope[name], "fn"):
                    scope[name] = triton.jit(scope[name])
            self.jitted = triton.jit(self.fn)
        return self.jitted

    def __getitem__(self, grid):
        return self.jit()[grid]


def kernel(loops):
    """The decorator of a kernel with ``loops`` passes before the elementwise one."""
    return lambda fn: Kernel(fn, loops)


def _pow2(n):
    return 1 << max(0, int(n) - 1).bit_length()


def _cdiv(a, b):
    return -(-a // b)


def accumulator(dtype):
    """The dtype sums and statistics are taken in: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


@functools.lru_cache(maxsize=64)
def _scalars(values, dtype, device):
    return torch.tensor(values, dtype=dtype, device=device)


def scalars(values, dtype, device):
    """m and the layer's constants as one small tensor of the accumulation dtype (a float argument
    of a Triton kernel would be float32), kept for the next call with the same values."""
    values = tuple(float(v) for v in values) or (0.0,)
    return _scalars(values, dtype, device)


@functools.lru_cache(maxsize=16)
def _dummy(dtype, device):
    return torch.zeros(1, dtype=dtype, device=device)


class Config:
    """Block sizes and grid of one launch."""

    def __init__(self, lay):
        if lay.family == "rows":
            ki = lay.K * lay.I
            groups = lay.G // lay.P if lay.P else 0
            self.one = ki <= MAX_BLOCK and lay.O == 1
            if self.one:   # a whole group in one tile
                self.bb = _pow2(ki)
                self.ba = max(1, min(_pow2(groups), TILE // self.bb))
            else:          # a few groups of one parameter row per tile (fewer partial sums of the
                self.ba = 1   # parameter gradients), while the launch keeps PROGRAMS // 2 programs
                while (self.ba < 8 and 2 * self.ba <= _pow2(groups)
                       and lay.P * _cdiv(groups, 2 * self.ba) >= PROGRAMS // 2):
                    self.ba *= 2
                self.bb = min(_pow2(ki), MAX_BLOCK, max(1, TILE // self.ba))
            blocks = _cdiv(groups, self.ba)
            if self.one:   # a program keeps its parameter partial sums over several blocks of groups
                self.npn = max(1, min(blocks, PROGRAMS // lay.P))
                self.nbp = _cdiv(blocks, self.npn)
                self.npn = _cdiv(blocks, self.nbp) if blocks else 1
            else:
                self.npn, self.nbp = max(1, blocks), 1
            self.s = 1
            if not self.one and lay.O > 1 and 2 * lay.P * self.npn <= PROGRAMS:
                self.s = min(lay.O, _cdiv(PROGRAMS, lay.P * self.npn))
            self.grid = (lay.P * self.npn, self.s)
        else:
            self.ba = min(_pow2(lay.G), 64)
            self.bb = max(1, min(_pow2(lay.O), TILE // self.ba))
            self.one, self.npn, self.nbp = False, 1, 1
            programs = _cdiv(lay.G, self.ba)
            self.s = max(1, min(_cdiv(lay.O, self.bb), PROGRAMS // max(1, programs)))
            self.grid = (programs, self.s)
        tile = self.ba * self.bb
        self.warps = 16 if tile >= 8192 else 8 if tile >= 2048 else 4

    def partials(self, lay, count):
        """The shape of the parameter gradients' partial sums: per program row and position (rows),
        per slice and group (columns)."""
        if lay.family == "rows":
            return (count, self.s * self.npn, lay.P, lay.K * lay.I)
        return (count, self.s, lay.G)


class Layout:
    """The iteration space (O, G, K*I) of a working view of shape ``view_shape``."""

    def __init__(self, view_shape, axes, param_axes):
        ndim = len(view_shape)
        reduced, params = set(axes), set(param_axes)
        groups = [a for a in range(ndim) if a not in reduced]
        first = groups[0] if groups else ndim
        outer = [a for a in range(ndim) if a in reduced and a not in params and a < first]
        inner = [a for a in range(ndim) if a in reduced and a not in params and a > first]
        spans = [a for a in range(ndim) if a in reduced and a in params]
        shared = [a for a in groups if a in params]
        plain = [a for a in groups if a not in params]
        self.perm = tuple(outer + plain + shared + spans + inner)
        self.inverse = tuple(sorted(range(ndim), key=self.perm.__getitem__))
        self.view_shape = tuple(view_shape)

        def size(which):
            return math.prod(view_shape[a] for a in which)

        self.O, self.G, self.P = size(outer), size(groups), size(shared)
        self.K, self.I = size(spans), size(inner)
        self.permuted = tuple(view_shape[a] for a in self.perm)
        self.stat_shape = tuple(1 if a in reduced else n for a, n in enumerate(view_shape))
        self.stat_permuted = tuple(self.stat_shape[a] for a in self.perm)
        self.param_shape = tuple(n if a in params else 1 for a, n in enumerate(view_shape))
        self.param_permuted = tuple(self.param_shape[a] for a in self.perm)
        self.family = "columns" if self.K * self.I == 1 else "rows"
        self.empty = math.prod(view_shape) == 0

    @functools.cached_property
    def config(self):
        return Config(self)

    # ------------------------------------------------------------------ element arrays
    def elements(self, t, name):
        if tuple(t.shape) != self.view_shape:
            raise ValueError(f"{name} must have the working view's shape {self.view_shape}, "
                             f"got {tuple(t.shape)}")
        return t.permute(self.perm).reshape(self.O, self.G, self.K * self.I).contiguous()

    def new_elements(self, dtype, device):
        return torch.empty((self.O, self.G, self.K * self.I), dtype=dtype, device=device)

    def elements_out(self, t):
        return t.reshape(self.permuted).permute(self.inverse)

    # ------------------------------------------------------------------ per-group values
    def groups(self, t, name):
        try:
            t = t.expand(self.stat_shape)
        except RuntimeError:
            raise ValueError(f"{name} must have one value per group, shape {self.stat_shape}, "
                             f"got {tuple(t.shape)}") from None
        return t.permute(self.perm).reshape(self.G).contiguous()

    def new_groups(self, dtype, device):
        return torch.empty(self.G, dtype=dtype, device=device)

    def groups_out(self, v):
        return v.reshape(self.stat_permuted).permute(self.inverse)

    # ------------------------------------------------------------------ parameters
    def param(self, t, name):
        if tuple(t.shape) != self.param_shape:
            raise ValueError(f"{name} must have the parameters' view shape {self.param_shape}, "
                             f"got {tuple(t.shape)}")
        return t.permute(self.perm).reshape(self.P, self.K).contiguous()

    def _param_out(self, pk, dtype):
        return pk.reshape(self.param_permuted).permute(self.inverse).to(dtype)

    def partial_grad(self, buf, dtype):
        """A gradient that varies inside a group: its partial sums added over the programs, the
        groups of one parameter row and the positions i."""
        if self.family == "rows":
            total = buf.reshape(-1, self.P, self.K, self.I).sum(dim=(0, 3))
        else:
            total = buf.reshape(-1, self.G // max(self.P, 1), self.P).sum(dim=(0, 1)).reshape(self.P, 1)
        return self._param_out(total, dtype)

    def outer_grad(self, buf, dtype):
        """A gradient that is one value per group: its group sums added over the groups of one
        parameter row."""
        return self._param_out(buf.reshape(-1, self.P).sum(dim=0).reshape(self.P, 1), dtype)


@functools.lru_cache(maxsize=256)
def _layout(view_shape, axes, param_axes):
    return Layout(view_shape, axes, param_axes)


def layout(like, axes, params=(), param_sum_axes=None):
    """The layout of ``like`` (the working view) with groups along ``axes``: the parameters span the
    axes where ``params`` (view-shaped tensors) are not of length 1, or, without them, every axis
    but ``param_sum_axes``."""
    shape = tuple(like.shape)
    ndim = len(shape)
    axes = tuple(sorted({a % ndim for a in axes})) if ndim else ()
    if params:
        first = params[0]
        if first.dim() != ndim:
            raise ValueError(f"a parameter must have the working view's {ndim} dimensions, got shape "
                             f"{tuple(first.shape)}")
        spans = tuple(a for a in range(ndim) if first.shape[a] != 1)
    elif param_sum_axes is not None:
        summed = {a % ndim for a in param_sum_axes}
        spans = tuple(a for a in range(ndim) if a not in summed and shape[a] != 1)
    else:
        spans = ()
    return _layout(shape, axes, spans)


def launch(kernels, lay, arrays, scal, sums, npartials, nouter):
    """Run one function's kernel (rows or columns, by the layout) on ``arrays``: fused in one launch,
    or, when its groups are few and long, one launch per pass.  Returns the parameter gradients'
    partial sums and the group sums that OuterSum gradients add (see :class:`Layout`)."""
    acc, device = scal.dtype, scal.device
    cfg = lay.config
    fill = torch.zeros if lay.empty else torch.empty
    dummy = _dummy(acc, device)
    partials = fill(cfg.partials(lay, npartials), dtype=acc, device=device) if npartials else dummy
    outer = fill((nouter, lay.G), dtype=acc, device=device) if nouter else dummy
    if lay.G == 0:
        return partials, outer
    staged = cfg.s > 1
    parts = torch.empty((sums, cfg.s, lay.G), dtype=acc, device=device) if staged and sums else dummy
    fn = kernels[0] if lay.family == "rows" else kernels[1]
    launches = [(j, j) for j in range(fn.loops + 1)] if staged else [(0, fn.loops)]
    for first, last in launches:
        fn[cfg.grid](*arrays, parts, partials, outer, scal, lay.O, lay.G, lay.P, lay.K, lay.I, cfg.s, cfg.npn,
                     cfg.nbp, _FIRST=first, _LAST=last, _ONE=cfg.one, _BA=cfg.ba, _BB=cfg.bb, _ACC=_tl(acc),
                     num_warps=cfg.warps)
    return partials, outer
