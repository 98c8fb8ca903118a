"""The NumPy printer of the array backends: vectorized NumPy over one working view (the NumPy kernels,
and the host code around the numba kernels). Only the ``_print_X`` methods we need are overridden."""
from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import PRECEDENCE

from ..math.algebra import BatchSum, Elem


class KernelPrinter(NumPyPrinter):
    """Prints derivation expressions as vectorized NumPy over one working view.

    Per-element symbols are full arrays, per-group scalars are arrays with the
    reduced axes kept (length 1), so broadcasting does the rest.  The kernel
    defines ``axes`` (the reduced axes), ``param_sum_axes`` (the axes gamma
    does not span), ``outer_axes`` (those of them outside a group), ``shape``
    and ``work`` (the working view's shape and dtype).

    With ``fast``, reductions never build a full-size temporary: a sum of a
    product of arrays is a contraction, any other summand is evaluated in
    blocks of rows (see generated/_blocks.py).
    """

    def __init__(self, fast: bool = False, blocks=None, exact_sums: bool = False, group_axes: str = "axes"):
        super().__init__({"fully_qualified_modules": True, "allow_unknown_functions": False})
        self.group_axes = group_axes  #: the name of the reduced axes (an input with its own groups has its own)
        self.fast = fast
        self.exact_sums = exact_sums  #: return plain sums in float64 (for the mean before split)
        self.blocks = blocks  #: a derive.block_printer.BlockCollector, for fast reductions

    def _reduction(self, arg: sp.Expr, axes: str) -> str:
        factors = sp.Mul.make_args(arg)
        if not self.fast:
            return f"numpy.sum({self._print(arg)}, axis={axes}, keepdims=True)"
        if isinstance(arg, Elem):
            exact = ", numpy.float64" if self.exact_sums else ""
            return f"_blocks.total({self._print(arg)}, {axes}{exact})"
        if all(isinstance(f, Elem) for f in factors):
            return f"_blocks.sum_of_products(({', '.join(self._print(f) for f in factors)},), {axes})"
        params = ", ".join(array_arguments(arg))
        name = self.blocks.name_for(arg, "summand")
        return f"_blocks.reduce({name}, {axes}, shape, work, {params})"

    def _print_BatchSum(self, expr: BatchSum) -> str:
        """A reduction over the group: a sum over the reduced axes, kept for broadcasting."""
        return self._reduction(expr.args[0], self.group_axes)

    def _print_ParamSum(self, expr) -> str:
        """A parameter gradient: summed over every axis that gamma does not span."""
        return self._reduction(expr.args[0], "param_sum_axes")

    def _print_OuterSum(self, expr) -> str:
        """Group sums summed again over the parameter-sum axes outside the group."""
        return f"numpy.sum({self._print(expr.args[0])}, axis=outer_axes, keepdims=True)"

    def _print_Mul(self, expr: sp.Mul) -> str:
        """A quotient whose denominator may vanish is taken as 0 where it does.

        Only epsilon outside the root has such denominators (sqrt(var), eps - sigma_eps):
        at a constant group (var = 0) the numerator vanishes with them, and the proved
        formula's limit there is the value with that term left out.
        """
        num, den = expr.as_numer_denom()
        if den != 1 and not all(f.is_positive for f in sp.Mul.make_args(den) if not f.is_Number):
            module = "_blocks" if self.fast else "_rt"
            return f"{module}.divide_or_zero({self._print(num)}, {self._print(den)})"
        return super()._print_Mul(expr)

    def _print_StopGrad(self, expr) -> str:
        """stop_gradient only changes derivatives: its value is its argument."""
        return self._print(expr.args[0])

    def _print_ClampMin(self, expr) -> str:
        """max(a, lo), elementwise over the per-group arrays."""
        return f"numpy.maximum({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_ClampMax(self, expr) -> str:
        """min(a, hi), elementwise over the per-group arrays."""
        return f"numpy.minimum({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_Heaviside(self, expr) -> str:
        """The step of a clamp's derivative, with its value at 0 (torch's rule at the kink)."""
        return f"numpy.heaviside({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    _print_Step = _print_Heaviside  # derive.algebra.Step: the same step

    def _unary(self, function: str, expr) -> str:
        return f"numpy.{function}({self._print(expr.args[0])})"

    def _print_Exp(self, expr) -> str:
        """The graph's exp (derive.forward.functions.Exp)."""
        return self._unary("exp", expr)

    def _print_Log(self, expr) -> str:
        return self._unary("log", expr)

    def _print_Tanh(self, expr) -> str:
        return self._unary("tanh", expr)

    def _print_Sign(self, expr) -> str:
        return self._unary("sign", expr)

    def _print_Absolute(self, expr) -> str:
        return self._unary("abs", expr)

    def _print_Sigmoid(self, expr) -> str:
        """1/(1 + exp(-u)) as (1 + tanh(u/2))/2: no overflow of exp(-u) for a large negative u."""
        return f"(0.5 + 0.5*numpy.tanh(0.5*{self.parenthesize(expr.args[0], PRECEDENCE['Mul'])}))"

    def _print_Softplus(self, expr) -> str:
        """log(1 + exp(u)) as logaddexp(0, u): no overflow for a large u."""
        return f"numpy.logaddexp(0, {self._print(expr.args[0])})"

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        """Symbols are already named as the kernel's variables."""
        return expr.name

    def _print_Rational(self, expr: sp.Rational) -> str:
        """Keep the literal a Python number: NumPy then keeps the array's float dtype."""
        return f"{expr.p}/{expr.q}"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        """Square roots print as numpy.sqrt; negative powers as divisions."""
        if expr.exp == sp.S.Half:
            return f"numpy.sqrt({self._print(expr.base)})"
        if expr.exp == -sp.S.Half:
            return f"1/numpy.sqrt({self._print(expr.base)})"
        if expr.exp == -1:
            return f"1/{self.parenthesize(expr.base, PRECEDENCE['Pow'])}"
        return super()._print_Pow(expr, rational=rational)


def array_arguments(expr: sp.Expr) -> list[str]:
    """The names an expression reads (arrays, and Python numbers such as eps), sorted for determinism."""
    return sorted(s.name for s in expr.free_symbols)


def code(expr: sp.Expr, fast: bool = False, blocks=None, exact_sums: bool = False) -> str:
    return KernelPrinter(fast, blocks, exact_sums).doprint(expr)


def domains(ir, printer_class=KernelPrinter) -> list[dict]:
    """Each input with its own groups (:class:`~derive.ir.program.DomainIR`) for a template: its checks,
    its statistics and its gradient printed over its own view (its sums over ITS reduced axes)."""
    out = []
    for dm in ir.domains:
        printer = printer_class()
        printer.group_axes = dm.axes
        letters = dm.layout.layout.split(",") if dm.layout.layout else ir.spec.layout.split(",")
        out.append({
            "name": dm.input.name, "axes": dm.axes, "m": dm.m.name, "grad": dm.grad.name,
            "ndim": None if letters[0].startswith("...") else len(letters),
            "layout_text": "(" + ", ".join(letters) + ")",
            "reduce_axes": tuple(dm.layout.reduce_axes),
            "stats": [s.name for s in dm.stats], "seeds": [s.name for s in dm.seeds],
            "forward": [(a.target.name, printer.doprint(a.value)) for a in dm.forward],
            "backward": [(a.target.name, printer.doprint(a.value)) for a in dm.backward],
        })
    return out


def elementwise(expr: sp.Expr, blocks, hint: str) -> str:
    """A per-element statement of a fast kernel: a block function swept over blocks of rows."""
    params = ", ".join(array_arguments(expr))
    return f"_blocks.elementwise({blocks.name_for(expr, hint)}, shape, work, {params})"
