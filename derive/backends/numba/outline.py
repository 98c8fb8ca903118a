"""A numba driver as a Python function whose parallel loops are serial kernels run by threads.

The drivers of :mod:`.kernels` and :mod:`.columns` are printed as one function whose parallel
loops read ``for v in numba.prange(n):``.  numba's parallel compilation of such a function costs
seconds for each dtype and memory layout (more than all its inner loops together), so each
parallel loop is printed instead as a serial kernel over a block of its items,

    @numba.njit(fastmath=<flags>, error_model="numpy", cache=True, nogil=True)
    def <driver>_l<k>(<what the loop reads>, v0, v1):
        for v in range(v0, v1):
            <the loop's body>

A line of the loop's body that ends in ``# once a block`` (ONCE: a scratch array of the largest
item's size, which each item then slices) is moved before the kernel's loop, so that a block of
items allocates it once; it may read only what the driver passes in.
The driver, plain Python, hands the items to ``_layout.parallel(kernel, n, args, size)``,
which runs blocks of them on threads (the kernels release the GIL).  The items of a loop write
disjoint parts of its outputs, and every sum over items is added afterwards in item order, so
the results do not depend on how the items are split between threads.

Every kernel and inner loop takes NumPy's error model: a float division by zero gives inf or nan,
as in NumPy and torch, where Python's model raises ZeroDivisionError, which puts a branch into
every loop that divides and keeps LLVM from vectorizing it (a loop over 2**20 groups computing
std and 1/std: 5.3 ms against 1.2 ms).
"""
from __future__ import annotations

import ast
import builtins
import re

#: names every generated numba module defines or imports
MODULE_NAMES = frozenset({"math", "numba", "numpy", "_layout", "_FASTMATH"}) | frozenset(dir(builtins))
KERNEL = '@numba.njit(fastmath={flags}, error_model="numpy", cache=True, nogil=True)'
#: the end of a loop body's line that runs once a block of items, before the kernel's loop
ONCE = "  # once a block"
_LOOP = re.compile(r"^    for (\w+) in numba\.prange\((.+)\):$")
DEF = re.compile(r"^def (\w+)\((.*)\):$")


def _depth(line: str) -> int:
    return (len(line) - len(line.lstrip(" "))) // 4


def reads(body: list[str], var: str, known: frozenset) -> list[str]:
    """The names the loop ``body`` (lines at depth 2 or more) reads from the driver's scope, in
    the order of their first read: every name loaded and never stored in the body, other than
    the loop variable and ``known`` (module-level functions, imports and builtins)."""
    tree = ast.parse("\n".join(line[8:] for line in body))
    stored, loaded = {var}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            stored.add(node.id)
    names = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)),
                   key=lambda n: (n.lineno, n.col_offset))
    for node in names:
        if node.id not in stored and node.id not in known and node.id not in loaded:
            loaded.append(node.id)
    return loaded


def outline(lines: list[str], functions: set[str], flags: str = "_FASTMATH") -> list[list[str]]:
    """The blocks that replace the driver ``lines`` (decorators, ``def``, body at depth 1): one
    serial kernel per parallel loop, then the driver as a Python function.  ``functions``: the
    module-level functions the driver may call; ``flags``: the module's name of the kernels'
    fast-math flags."""
    start = next(i for i, line in enumerate(lines) if line.startswith("def "))
    name, args = DEF.match(lines[start]).groups()
    params = [a.strip() for a in args.split(",")]
    first = params[0]
    known = MODULE_NAMES | frozenset(functions)
    blocks: list[list[str]] = []
    driver = [lines[start]]
    body = lines[start + 1:]
    i = 0
    while i < len(body):
        loop = _LOOP.match(body[i])
        if not loop:
            driver.append(body[i])
            i += 1
            continue
        var, count = loop.groups()
        j = i + 1
        while j < len(body) and (not body[j].strip() or _depth(body[j]) >= 2):
            j += 1
        inner = body[i + 1:j]
        read = reads(inner, var, known)
        free = sorted(read, key=lambda n: (params.index(n), 0) if n in params else (len(params), read.index(n)))
        kernel = f"{name}_l{len(blocks)}"
        bounds = [f"{var}0", f"{var}1"]
        clash = set(bounds) & (set(free) | {var})
        if clash:
            raise ValueError(f"{name}: the loop bounds {sorted(clash)} clash with a name the loop reads")
        once = [line for line in inner if line.endswith(ONCE)]
        if any(_depth(line) != 2 for line in once):
            raise ValueError(f"{name}: a line run once a block must be at the top level of the loop's body")
        blocks.append([KERNEL.format(flags=flags), f"def {kernel}({', '.join(free + bounds)}):",
                       *dict.fromkeys(line[4:-len(ONCE)] for line in once),
                       f"    for {var} in range({', '.join(bounds)}):", *(line for line in inner if line not in once)])
        packed = f"({', '.join(free)},)" if free else "()"
        driver.append(f"    _layout.parallel({kernel}, {count}, {packed}, {first}.size)")
        i = j
    return blocks + [driver]
